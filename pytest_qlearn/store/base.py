"""The one ``Store`` interface and the records that cross it.

A run reads one :class:`Snapshot` at start and writes one :class:`EpisodeWrite` at the end,
in one transaction. Q-values, visit counts, episode counters and pattern counts travel as
deltas that the store *adds* to what it holds, and test histories as observations that it
applies to the stored history, so concurrent writers never lose each other's learning.
"""

from __future__ import annotations

import concurrent.futures
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from ..engine.agent_type import AgentType
from ..engine.history import TestHistory
from ..engine.qlearner import QEntry
from ..engine.signatures import SignatureStats

#: The agent whose patterns are failure signatures (``agents/flaky_hunter.py``).
SIGNATURE_AGENT = "flaky-hunter"
#: The pattern kind of order-dependence suspects (``suspects.py``): one row per suspected
#: test, its id as the pattern; occurrences = times flagged, hits = clean runs since the last
#: flag, reruns = the episode its suspicion started in.
SUSPECT_AGENT = "order-suspect"

#: Schema version this code writes; a store with a higher one is refused.
#: 2: file_hashes (which test files changed since the last episode);
#: 3: pending_skips (the selector's skips of deselected tests, until they next run);
#: 4: checkpoints, checkpoint_results (results so far of runs in progress, see
#: :mod:`pytest_qlearn.store.checkpoint`).
#: 5: coverage_maps, coverage_runs, coverage_files (``--qlearn-cov``).
#: 6: test_history.fixture_mean (setup + teardown seconds per test); sessions.partial (a
#: narrowed or stopped-early run: learned from, but not counted in :attr:`Snapshot.episodes`).
#: 7: test_history.flaky (runs that passed only on a rerun); patterns.reruns, rerun_passes,
#: reward_sum (what reruns of a failure signature did, for the ``flaky-hunter`` agent).
#: 8: test_history.duration_recent (a recent, outlier-capped duration: the budget's estimate).
#: 9: sessions.time_to_first_failure, collection_time_to_first_failure,
#: first_failure_position, collection_first_failure_position (how early the first failure
#: showed up in the run's order and in collection order; NULL in older rows).
#: 10: SQLite only — q_values keyed by an integer scope (``q_scopes``: one per project,
#: environment and agent) instead of the three texts (PostgreSQL: nothing changes).
#: 11: SQLite only — test_history keyed by an integer partition (``partition_keys``).
#: 12: sessions.narrowing (what narrowed the run on the command line, so that a job that
#: always narrows the same way counts as full episodes from its second run on).
SCHEMA_VERSION = 12
DEFAULT_TTL_DAYS = 30
SECONDS_PER_DAY = 86_400.0
#: Automatic TTL cleanup runs at most this often per project.
CLEANUP_INTERVAL = SECONDS_PER_DAY
#: Cleanup keeps the trajectories of this many newest sessions per partition (and drops
#: older ones even inside the TTL): they are the bulky per-decision log, one row per test
#: per run, and a store cached between CI jobs must stay small.
KEEP_TRAJECTORY_SESSIONS = 100


class StoreError(Exception):
    """The store could not do what was asked (unreachable, corrupt, unwritable...)."""


class StoreDataError(StoreError):
    """The store refused the data itself (a value out of range, text it cannot hold...), not
    for want of a connection or of space: writing the same data again fails the same way, so
    a spooled entry that gets this is set aside instead of being retried forever."""


class SchemaTooNewError(StoreError):
    def __init__(self, found: int, known: int, where: str) -> None:
        super().__init__(
            f"the qlearn store at {where} has schema version {found}, newer than the "
            f"{known} this pytest-qlearn knows; upgrade pytest-qlearn (nothing was written)"
        )
        self.found = found
        self.known = known


@dataclass(frozen=True)
class Partition:
    """Everything is stored per project and environment (e.g. a CI matrix cell)."""

    project: str
    environment: str


@dataclass(frozen=True)
class AgentState:
    agent: str
    episodes: int = 0
    epsilon: float | None = None
    reward_sum: float = 0.0
    rewards: int = 0
    last_active: float | None = None

    @property
    def mean_reward(self) -> float:
        return self.reward_sum / self.rewards if self.rewards else 0.0


@dataclass(frozen=True)
class SessionRecord:
    """One episode (a pytest session) as stored in ``sessions``."""

    session_id: str
    started_at: float
    duration: float
    tests: int
    failures: int
    seed: int
    epsilon: float
    q_table_size: int
    apfd: float | None
    collection_apfd: float | None
    reward: float
    exit_status: int
    mode: str  # "reorder" or "observe"
    episode: int = 0
    #: A narrowed run (``-k``, ``-m``, node ids, ``--lf``) or one stopped early (``-x``,
    #: ``--maxfail``): learned from, but it does not advance the episode schedule (it is not
    #: counted in :attr:`Snapshot.episodes`). Its ``episode`` number is not unique: the caller
    #: gives it the number the next full session will have too.
    partial: bool = False
    #: Seconds of test time (the summed durations of the tests that passed or failed) until
    #: the first failing test finished, in the run's order (qlearn's order; in observe mode
    #: the order qlearn would have used) and in collection order; None without a failure,
    #: and in sessions stored before schema 9.
    time_to_first_failure: float | None = None
    collection_time_to_first_failure: float | None = None
    #: The first failing test's 1-based position in each of those orders (every test of the
    #: run counted, as in the reports); None as above.
    first_failure_position: int | None = None
    collection_first_failure_position: int | None = None
    #: What narrowed the run (``-k 'EXPR'``, ``-m 'EXPR'``, node ids, ``--deselect``), as
    #: :func:`pytest_qlearn.budget.narrowing_key` spells it; None for a run nothing narrowed,
    #: one narrowed in a way that differs from run to run, and sessions stored before schema 12.
    #: A run narrowed as one of the recent sessions was is a job's normal run: a full episode.
    narrowing: str | None = None


class Observation(NamedTuple):
    """One test's verdict in this run (``P``/``F``/``S``), its duration and the seconds it
    spent in setup + teardown (``fixture``); ``flaky``: it failed, then passed on a rerun."""

    test_id: str
    verdict: str
    duration: float
    fixture: float = 0.0
    flaky: bool = False


class TrajectoryStep(NamedTuple):
    agent: str
    step: int
    test_id: str
    state: str
    action: int
    explored: bool
    reward: float
    next_state: str | None


class QDelta(NamedTuple):
    state: str
    state_text: str
    action: int
    dq: float
    dvisits: int


class PatternDelta(NamedTuple):
    """A learned pattern: for the prioritizer a shared state (how often it was seen and how
    often it failed); for the flaky-hunter a failure signature (how often it was seen
    failing, how often as a confirmed flake, the reruns tried, those that passed, and the
    agent's reward summed over its decisions on it)."""

    agent: str
    pattern: str
    description: str
    occurrences: int
    hits: int
    reruns: int = 0
    rerun_passes: int = 0
    reward_sum: float = 0.0


class PendingSkipDelta(NamedTuple):
    """A change of how many skips of ``test_id``, decided in ``state_key``, wait to be paid
    back by its next run (+1 a skip, −count when paid back); the store adds it up."""

    test_id: str
    state_key: str
    delta: float


def merged_pending_skips(
    deltas: Sequence[PendingSkipDelta],
) -> list[tuple[tuple[str, str], float]]:
    """The deltas summed per (test id, state key), in key order (a statement may change a
    row only once; writers take row locks in one order)."""
    merged: dict[tuple[str, str], float] = {}
    for d in deltas:
        merged[(d.test_id, d.state_key)] = merged.get((d.test_id, d.state_key), 0.0) + d.delta
    return sorted(merged.items())


class RewardEvent(NamedTuple):
    component: str
    value: float | None
    weight: float


@dataclass(frozen=True)
class AgentProgress:
    agent: str
    episodes: int
    epsilon: float
    reward_sum: float
    rewards: int


@dataclass(frozen=True)
class QValueRecord:
    """One stored Q-value as the read API returns it."""

    agent: str
    state: str
    state_text: str
    action: int
    q: float
    visits: int
    updated_at: float
    expires_at: float


@dataclass(frozen=True)
class QTableSummary:
    """Aggregates of one agent's Q-table in one partition (one table, no joins)."""

    agent: str
    entries: int
    states: int
    visits: int
    q_min: float
    q_max: float
    q_mean: float
    last_updated: float


@dataclass(frozen=True)
class TrajectoryRecord:
    """One stored trajectory step, with the session it belongs to."""

    session_id: str
    started_at: float
    agent: str
    step: int
    test_id: str
    state: str
    action: int
    explored: bool
    reward: float
    next_state: str | None


@dataclass(frozen=True)
class EpisodeAgentStats:
    """One agent's trajectory steps in one session, aggregated."""

    session_id: str
    steps: int
    explored: int
    reward_sum: float


#: Orders :meth:`Store.q_values` accepts: Q descending, Q ascending, visits descending, key.
#: ``ORDER BY`` of each order of :meth:`Store.q_values` (the same SQL in every store).
Q_ORDER_SQL = {
    "q": "q DESC, state_hash, action",
    "-q": "q, state_hash, action",
    "visits": "visits DESC, state_hash, action",
    "key": "state_hash, action",
}
Q_ORDERS = tuple(Q_ORDER_SQL)


@dataclass
class CoverageSnapshot:
    """What ``--qlearn-cov`` starts from: every stored per-test map (still encoded: a corrupt
    one is the engine's to handle) and what the newest coverage run recorded."""

    #: test id -> (the map as :meth:`CoverageMap.to_json` wrote it, the episode that traced it)
    maps: dict[str, tuple[str, int]] = field(default_factory=dict)
    #: The git commit of the newest run with coverage, and its files with uncommitted changes.
    last_commit: str | None = None
    last_dirty: tuple[str, ...] = ()
    last_percent: float | None = None
    #: file path -> (its digest when analysed, its statements as line ranges)
    statements: dict[str, tuple[str, str]] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialised for pytest-xdist workers, which must not open the store."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CoverageSnapshot:
        data: dict[str, Any] = json.loads(text)
        return cls(
            maps={t: (str(m), int(e)) for t, (m, e) in data["maps"].items()},
            last_commit=data["last_commit"],
            last_dirty=tuple(data["last_dirty"]),
            last_percent=data["last_percent"],
            statements={p: (str(d), str(r)) for p, (d, r) in data["statements"].items()},
        )


@dataclass
class CoverageWrite:
    """A coverage run's part of the episode write: the maps it traced (test id, map JSON,
    episode), the commit and uncommitted files it ran on, its total line coverage."""

    maps: list[tuple[str, str, int]] = field(default_factory=list)
    commit: str | None = None
    dirty: list[str] = field(default_factory=list)
    percent: float | None = None
    #: (path, digest, statements as line ranges) of the files analysed this run
    statements: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class EpisodeWrite:
    partition: Partition
    session: SessionRecord
    agent_types: list[AgentType]
    observations: list[Observation] = field(default_factory=list)
    q_deltas: dict[str, list[QDelta]] = field(default_factory=dict)
    trajectories: list[TrajectoryStep] = field(default_factory=list)
    rewards: list[RewardEvent] = field(default_factory=list)
    patterns: list[PatternDelta] = field(default_factory=list)
    agents: list[AgentProgress] = field(default_factory=list)
    #: The :attr:`Snapshot.episodes` the run learned from (informational since schema 6; the
    #: history fast path compares ``base_session_count`` when it is given, see
    #: :func:`takes_next_histories`).
    base_episodes: int | None = None
    #: The histories the run computed from its snapshot: when nobody wrote since, the store
    #: takes them as they are instead of re-applying the observations to freshly read rows.
    next_histories: list[TestHistory] = field(default_factory=list)
    #: (path, content digest) of the test files this run collected: the next run tells
    #: changed test files (always run under a time budget) from unchanged ones.
    file_hashes: list[tuple[str, str]] = field(default_factory=list)
    #: The selector's pending skips, added up by the store (a count at 0 or below is deleted).
    pending_skips: list[PendingSkipDelta] = field(default_factory=list)
    #: With ``--qlearn-cov``: the maps traced this run and the run's coverage facts.
    coverage: CoverageWrite | None = None
    #: :attr:`Snapshot.session_count` of the snapshot the run learned from (every session,
    #: partial ones included): how the store tells whether anyone wrote since.
    base_session_count: int | None = None


def takes_next_histories(write: EpisodeWrite, sessions_now: int) -> bool:
    """Whether a store may take ``write.next_histories`` as they are: nobody wrote since the
    run's snapshot. ``sessions_now`` counts every session of the partition (partial ones
    included), this run's already inserted, hence the ``+ 1``.

    Without ``base_session_count`` (spool files from before schema 6, callers that do not fill
    it) ``base_episodes`` is compared instead. That is never wrong, only slower: sessions are
    never deleted and ``base_episodes`` never exceeds the snapshot's session count, so the
    counts can only match when the snapshot held no partial session and nobody wrote since.
    """
    base = write.base_session_count
    if base is None:
        base = write.base_episodes
    return base is not None and sessions_now == base + 1


@dataclass(frozen=True)
class PendingRun:
    """What a run saw, to be learned later against the stored table: the per-test results
    as plain lists (the fields of :class:`pytest_qlearn.session.TestResult`). An offline run
    spools one; a run in progress saves one as its checkpoint."""

    partition: Partition
    session_id: str
    seed: int
    mode: str
    started_at: float
    duration: float
    exit_status: int
    session_failed: bool
    results: list[list[Any]]
    #: ``host:pid`` of a run still in progress that saved its results so far (a checkpoint);
    #: empty for a finished run. A checkpoint is learned only once its owner is gone.
    owner: str = ""


@dataclass(frozen=True)
class CheckpointPush:
    """One push of a run in progress into a shared store: ``run`` carries the run's header
    and only the results recorded since push ``seq - 1`` (pushes count from 1); the owner
    promises a heartbeat every ``beat`` seconds. Stores keep pushes by (session id, seq), so
    a push sent twice is kept once."""

    run: PendingRun
    seq: int
    beat: float


@dataclass
class Snapshot:
    """What a run starts from: everything learned so far in one partition."""

    partition: Partition
    histories: dict[str, TestHistory] = field(default_factory=dict)
    q_entries: dict[str, list[QEntry]] = field(default_factory=dict)
    agent_states: dict[str, AgentState] = field(default_factory=dict)
    recent_sessions: list[SessionRecord] = field(default_factory=list)  # newest first
    #: Stored sessions that advance the episode schedule (partial ones are not counted).
    episodes: int = 0
    file_hashes: dict[str, str] = field(default_factory=dict)  # test file path -> digest
    #: The selector's pending skips: test id -> {state key at the skip: count}.
    pending_skips: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Every stored session, partial ones included (the run hands it back as
    #: :attr:`EpisodeWrite.base_session_count`).
    session_count: int = 0
    #: The flaky-hunter's failure signatures: key -> what is known of it (loaded only when
    #: that agent is asked for).
    signatures: dict[str, SignatureStats] = field(default_factory=dict)
    #: The order-dependence suspects' pattern rows (kind :data:`SUSPECT_AGENT`), always loaded.
    suspects: list[PatternDelta] = field(default_factory=list)

    def to_json(self) -> str:
        """Serialised for pytest-xdist workers, which must not open the store."""
        return json.dumps(
            {
                "partition": asdict(self.partition),
                "histories": [h._asdict() for h in self.histories.values()],
                "q": {
                    agent: [[e.state, e.action, e.q, e.visits] for e in entries]
                    for agent, entries in self.q_entries.items()
                },
                "agents": [asdict(s) for s in self.agent_states.values()],
                "sessions": [asdict(s) for s in self.recent_sessions],
                "episodes": self.episodes,
                "file_hashes": self.file_hashes,
                "pending_skips": self.pending_skips,
                "session_count": self.session_count,
                "signatures": {k: list(v) for k, v in self.signatures.items()},
                "suspects": [list(p) for p in self.suspects],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data: dict[str, Any] = json.loads(text)
        return cls(
            partition=Partition(**data["partition"]),
            histories={h["test_id"]: TestHistory(**h) for h in data["histories"]},
            q_entries={
                agent: [QEntry(s, int(a), float(q), int(n)) for s, a, q, n in rows]
                for agent, rows in data["q"].items()
            },
            agent_states={s["agent"]: AgentState(**s) for s in data["agents"]},
            recent_sessions=[SessionRecord(**s) for s in data["sessions"]],
            episodes=int(data["episodes"]),
            file_hashes=dict(data.get("file_hashes", {})),
            pending_skips={
                test_id: {state: float(count) for state, count in rows.items()}
                for test_id, rows in data.get("pending_skips", {}).items()
            },
            # before schema 6 every session counted as an episode
            session_count=int(data.get("session_count", data["episodes"])),
            signatures={k: SignatureStats(*v) for k, v in data.get("signatures", {}).items()},
            suspects=[PatternDelta(*p) for p in data.get("suspects", [])],
        )


class Store(ABC):
    """Where learning persists. Implementations: SQLite (default) and PostgreSQL."""

    #: The location for people: never contains a password.
    display_url: str
    #: See :data:`KEEP_TRAJECTORY_SESSIONS`.
    keep_trajectory_sessions: int = KEEP_TRAJECTORY_SESSIONS

    @abstractmethod
    def open(self) -> None:
        """Connect and apply pending schema migrations (forward only, idempotent)."""

    @abstractmethod
    def load_snapshot(self, partition: Partition, agents: Sequence[str]) -> Snapshot:
        """Everything learned so far in ``partition`` for these agents."""

    @abstractmethod
    def load_coverage(self, partition: Partition) -> CoverageSnapshot:
        """The stored coverage maps of ``partition`` and its newest coverage run's facts."""

    @abstractmethod
    def write_episode(self, write: EpisodeWrite, ttl_days: float = DEFAULT_TTL_DAYS) -> bool:
        """Apply one episode in one transaction, removing the session's checkpoint (if any)
        in it. Returns False (and changes nothing but the checkpoint's removal) when a session
        with that id is already stored, so replaying a spooled episode is safe."""

    # -- checkpoints of runs in progress (see :mod:`pytest_qlearn.store.checkpoint`) ----------
    #: Whether checkpoints pushed into this store outlive the machine the run is on (a
    #: database server does; a file on the runner's disk gains nothing over the local spool).
    outlives_runner: bool = False

    @abstractmethod
    def push_checkpoint(self, push: CheckpointPush, now: float | None = None) -> None:
        """Add a run's newest results to its checkpoint and renew its heartbeat. Idempotent by
        (session id, seq); a push of a run already stored, or of a checkpoint another run has
        claimed meanwhile, changes nothing."""

    def push_checkpoint_soon(self, push: CheckpointPush) -> concurrent.futures.Future[None]:
        """:meth:`push_checkpoint` without waiting for it where the store can (PostgreSQL: on
        its own loop thread, with a heartbeat every ``push.beat`` seconds until the run's
        episode is written or the store closed); here it is done at once."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self.push_checkpoint(push)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)
        return future

    def give_up(self, reason: str) -> None:
        """Stop waiting for this store for the rest of the run (a push that did not finish in
        time): later calls fail at once. Nothing to do where calls cannot hang (SQLite)."""
        return None

    @abstractmethod
    def beat_checkpoint(self, session_id: str, owner: str, now: float | None = None) -> None:
        """Renew the heartbeat of ``owner``'s checkpoint (nothing if it is not its own)."""

    @abstractmethod
    def claim_checkpoints(
        self, partition: Partition, claimer: str, now: float | None = None
    ) -> list[PendingRun]:
        """Take over every orphaned checkpoint of ``partition`` (see
        :func:`~pytest_qlearn.store.checkpoint.orphaned`), atomically: of concurrent
        claimers one gets each. The claimer becomes its owner (so it is orphaned again if
        the claimer dies before writing it); the runs come back with every pushed result
        (in push order), to be learned and written with :meth:`write_episode`, which
        removes the checkpoint in the same transaction."""

    @abstractmethod
    def cleanup(self, project: str, ttl_days: float, now: float | None = None) -> int:
        """Delete rows of ``project`` unused for ``ttl_days``; returns how many went."""

    @abstractmethod
    def maybe_cleanup(self, project: str, ttl_days: float, now: float | None = None) -> int:
        """:meth:`cleanup`, at most once per :data:`CLEANUP_INTERVAL` per project."""

    @abstractmethod
    def recent_sessions(self, partition: Partition, limit: int = 20) -> list[SessionRecord]:
        """The newest sessions of a partition, newest first."""

    # -- the read-only API (the ``qlearn`` inspector) ------------------------------------------
    @abstractmethod
    def partitions(self, project: str | None = None) -> list[Partition]:
        """Every partition holding sessions, Q-values or agent states (of ``project`` when
        given), sorted."""

    @abstractmethod
    def q_values(
        self, partition: Partition, agent: str, limit: int | None = None, order: str = "q"
    ) -> list[QValueRecord]:
        """An agent's Q-values, ordered by ``order`` (one of :data:`Q_ORDERS`; ties by key),
        at most ``limit`` of them (all when None)."""

    @abstractmethod
    def q_table_summaries(self, partition: Partition) -> dict[str, QTableSummary]:
        """Per agent: Q-table size, distinct states, total visits, Q min/max/mean."""

    @abstractmethod
    def agent_states(self, partition: Partition) -> dict[str, AgentState]:
        """The stored episode counter, ε and reward totals of every agent."""

    @abstractmethod
    def sessions(self, partition: Partition, since: float | None = None) -> list[SessionRecord]:
        """Every session started at or after ``since`` (all when None), oldest first."""

    @abstractmethod
    def rewards(
        self, partition: Partition, since: float | None = None
    ) -> dict[str, list[RewardEvent]]:
        """The ``rewards`` log of the sessions started at or after ``since`` (all when None):
        session id -> its components (with weights), sorted by component."""

    @abstractmethod
    def trajectories(
        self, partition: Partition, agent: str, limit: int | None = None
    ) -> list[TrajectoryRecord]:
        """An agent's trajectory steps, newest session first and by step within a session,
        at most ``limit`` (all when None)."""

    @abstractmethod
    def episode_agent_stats(
        self, partition: Partition, agent: str, since: float | None = None
    ) -> dict[str, EpisodeAgentStats]:
        """Per session started at or after ``since``: the agent's steps, explored steps and
        reward sum (sessions without steps are absent)."""

    @abstractmethod
    def patterns(self, partition: Partition) -> list[PatternDelta]:
        """Every stored pattern with its totals, sorted by agent and pattern."""

    def agent_patterns(self, partition: Partition, agent: str) -> list[PatternDelta]:
        """The stored patterns of one agent (or pattern kind), sorted by pattern."""
        return [p for p in self.patterns(partition) if p.agent == agent]

    def signatures(self, partition: Partition) -> dict[str, SignatureStats]:
        """The flaky-hunter's failure signatures of ``partition`` (its patterns)."""
        return {
            p.pattern: SignatureStats(p.occurrences, p.hits, p.reruns, p.rerun_passes, p.reward_sum)
            for p in self.patterns(partition)
            if p.agent == SIGNATURE_AGENT
        }

    @abstractmethod
    def schema_version(self) -> int:
        """The schema version the store is at."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; safe to call twice."""
