"""One learning episode, end to end, without pytest: rank the tests, take the results, learn,
and produce the one write the store applies.

The pytest plugin drives this class from its hooks; the replay harness and the CLI drive the
very same class, so what they measure is what users run.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import compress, repeat
from operator import and_, attrgetter, eq, getitem, gt, is_, itemgetter, le, not_, truth
from typing import Any, NamedTuple

from . import suspects as sus
from .agents import coverage_tracer as ct
from .agents import flaky_hunter as fh
from .agents import prioritizer as prio
from .agents import selector as sel
from .agents.registry import AgentRegistry, AgentType
from .changes.coverage_map import CoverageMap, CoverageSummary
from .engine import metrics
from .engine.history import FAILED, PASSED, SKIPPED, TestHistory
from .engine.hyperparams import Hyperparameters
from .engine.qlearner import LearnerStats, QLearner, UpdateStep, gc_paused
from .engine.rewards import EpisodeFacts, EpisodeReward, RewardCalculator
from .engine.signatures import SignatureStats
from .engine.state import State
from .names import DEFAULT_ORDER_SCOPE
from .ordering import ScopedGroups, locality_order
from .settings import agent_defaults
from .store.base import (
    AgentProgress,
    EpisodeWrite,
    Observation,
    PatternDelta,
    QDelta,
    RewardEvent,
    SessionRecord,
    Snapshot,
    TrajectoryStep,
)

VERDICTS = (PASSED, FAILED, SKIPPED)
_TEST_ID = itemgetter(0)  # of a Decision, a TestRef, a TestResult
_REF_INDEX = itemgetter(3)
_FIRST, _SECOND, _THIRD = itemgetter(0), itemgetter(1), itemgetter(2)
_KEY = attrgetter("key")  # of a State
_VERDICT, _SECONDS = attrgetter("verdict"), attrgetter("duration")  # of a TestResult
_COLLECTED_AT = attrgetter("collected_at")
# a Decision's fields, by name
_TIER, _PER_TEST, _SHARED, _KNOWN, _CHANGE = (
    attrgetter(name) for name in ("tier", "per_test", "shared", "known", "change")
)
# a Decision's fields, by position
_P_FAIL, _DURATION, _EVIDENCE, _SHUFFLE = (itemgetter(i) for i in (3, 7, 9, 10))
assert prio.TestRef._fields[3] == "index" and prio.Decision._fields[3] == "p_fail"
assert prio.Decision._fields[7:11:2] == ("duration", "evidence") and (
    prio.Decision._fields[10] == "shuffle"
)
#: How many of the first tests of a run the reports explain ("what ran first, and why").
WHY_ROWS = 10


# finish() builds these from all their fields (tuple.__new__): keep it in step
assert len(Observation._fields) == 5 and len(TrajectoryStep._fields) == 8
assert len(QDelta._fields) == 5


def default_registry(
    hyper: Hyperparameters | None = None, *, changes: Mapping[str, float | int] | None = None
) -> AgentRegistry:
    """The built-in agents. ``hyper``: every agent's hyperparameters; without it each agent
    keeps its own defaults, with ``changes`` (field name -> value, the ini values) applied."""

    def resolve(name: str) -> Hyperparameters:
        return hyper if hyper is not None else agent_defaults(name).changed(changes or {})

    registry = AgentRegistry()
    registry.register(prio.agent_type(resolve(prio.NAME)))
    registry.register(sel.agent_type(resolve(sel.NAME)))
    registry.register(ct.agent_type(resolve(ct.NAME)))
    registry.register(fh.agent_type(resolve(fh.NAME)))
    return registry


class TestResult(NamedTuple):
    """One test's folded result. ``position`` is where it ran (0-based, run order),
    ``collected_at`` where it was collected; ``tier``/``explored`` are the prioritizer's
    decision when one was made."""

    test_id: str
    verdict: str
    duration: float
    collected_at: int
    position: int
    tier: int | None = None
    explored: bool = False
    fixture: float = 0.0  # of ``duration``: the seconds spent in setup and teardown


TestResult.__test__ = False  # type: ignore[attr-defined]  # not a test class for pytest
assert len(TestResult._fields) == 8  # LearningSession._finish unpacks all of them


class RerunRecord(NamedTuple):
    """A test that failed at least one attempt in a run with reruns (``--qlearn-reruns``, or
    pytest-rerunfailures observed): its attempts (``F``/``P``, the first a failure), the
    signature of its first failure, the flaky-hunter's decision when it made one, the seconds
    its reruns took, and what the decision's state was built from."""

    test_id: str
    attempts: str
    signature: str  # key ("" when the failure had no exception to sign)
    signature_text: str
    kind: str
    rerun_seconds: float
    share: float
    moved: bool
    #: [state key, readable state, action, explored, reused] of the flaky-hunter's decision;
    #: empty when pytest-rerunfailures decided (observed: learned as its number of reruns).
    decision: tuple[str, str, int, bool, bool] | tuple[()] = ()
    #: Tests that ran just before it (for an order-dependence suspect), oldest first.
    ran_before: tuple[str, ...] = ()

    @property
    def reruns(self) -> int:
        return len(self.attempts) - 1

    @property
    def flaky(self) -> bool:
        """It failed, then passed on a rerun."""
        return len(self.attempts) > 1 and self.attempts.endswith("P")

    @property
    def order_suspect(self) -> bool:
        """Failed after being moved by the reordering, passed when rerun alone."""
        return self.flaky and self.moved


class Risk(NamedTuple):
    """A test's learned failure probability, with the Q-row of its per-test state (one
    value per tier, and that state's visits) and its bucketed features, as of after this run."""

    test_id: str
    p_fail: float
    runs: int
    failures: int
    q_values: tuple[float, ...] = ()
    visits: int = 0
    features: str = ""


@dataclass
class EpisodeSummary:
    """What the run did and learned, for the terminal report and report files."""

    session: SessionRecord
    reward: EpisodeReward
    stats: LearnerStats
    run_ttff: float | None
    collection_ttff: float | None
    riskiest: list[Risk] = field(default_factory=list)
    failures_first: list[str] = field(default_factory=list)
    #: Every test's folded result (collection and run positions, tier, verdict).
    results: list[TestResult] = field(default_factory=list)
    #: The episodes stored before this one, newest first (the snapshot's recent sessions).
    recent_sessions: list[SessionRecord] = field(default_factory=list)
    #: What the time budget did (``--qlearn-budget``), None when no budget was applied.
    budget: sel.BudgetSummary | None = None
    #: What ``--qlearn-cov`` did, None when it was not asked for.
    coverage: CoverageSummary | None = None
    #: The tests that were rerun (or observed rerun), with what the flaky-hunter learned.
    reruns: list[RerunRecord] = field(default_factory=list)
    #: The flaky-hunter's reward of each rerun decision, by test id.
    rerun_rewards: dict[str, float] = field(default_factory=dict)
    #: Why the first tests of the run order, and every failed one, ran where they did.
    why: dict[str, str] = field(default_factory=dict)
    #: The order-dependence suspects this run kept in place or flagged, by test id.
    suspects: list[sus.Note] = field(default_factory=list)


@dataclass
class Ranking:
    order: list[prio.TestRef]
    decisions: dict[str, prio.Decision]


class LearningSession:
    """Everything one episode needs: the snapshot it starts from, the seeded RNG, the agents."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        seed: int,
        hyper: Hyperparameters | None = None,
        rewards: RewardCalculator | None = None,
        registry: AgentRegistry | None = None,
        mode: str = "reorder",
        session_id: str | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.seed = seed
        self.mode = mode
        self.session_id = session_id or uuid.uuid4().hex
        self.rewards = rewards or RewardCalculator()
        self.registry = registry or default_registry(hyper)
        agent_type, self.learner = self._learner(prio.NAME, prio.agent_type, hyper, seed)
        # the other agents draw from their own RNGs: the order stays the same with or without
        selector_type, self.selector_learner = self._learner(
            sel.NAME, sel.agent_type, hyper, f"{seed}:{sel.NAME}"
        )
        self.selector = sel.Selector(
            self.selector_learner, self.rewards, selector_type, snapshot.pending_skips
        )
        #: The budget's selection, when one was made (or handed over by a pytest-xdist worker).
        self.selection: sel.Selection | None = None
        tracer_type, self.tracer_learner = self._learner(
            ct.NAME, ct.agent_type, hyper, f"{seed}:{ct.NAME}"
        )
        #: The coverage-tracer agent (``--qlearn-cov``), and what its traces taught it.
        self.tracer = ct.CoverageTracer(self.tracer_learner, self.rewards, tracer_type)
        hunter_type, self.hunter_learner = self._learner(
            fh.NAME, fh.agent_type, hyper, f"{seed}:{fh.NAME}"
        )
        #: The flaky-hunter agent (``--qlearn-reruns``, or observing pytest-rerunfailures).
        self.hunter = fh.FlakyHunter(self.hunter_learner, self.rewards, hunter_type)
        self._expected_seconds: float | None = None
        self.trace_outcome: ct.TraceOutcome | None = None
        #: Tests whose covered code changed since the last coverage episode (``--qlearn-cov``):
        #: a budget always runs them.
        self.covering_changed: Mapping[str, str] = {}  # test id -> share of its code changed
        #: Tests the static change analysis ties to code changed since the last episode:
        #: test id -> prioritizer.DIRECT or prioritizer.IMPORTS (change awareness, default on).
        self.impacts: Mapping[str, int] = {}
        #: test id -> how close to the change inside its evidence class (smaller first)
        self.proximity: Mapping[str, int] = {}
        #: test id -> the static analysis's finding in words, for the report's "why"
        self.change_reasons: Mapping[str, str] = {}
        #: On a pytest-xdist controller, which decides nothing: test id -> the reason the
        #: worker that ranked it gave (the report's "why")
        self.worker_reasons: Mapping[str, str] = {}
        #: Known failures whose code is again what it was when they last passed (a revert).
        self.reverted: Collection[str] = frozenset()
        #: Whether each test covers lines no other test covers (the selector's ``unique``).
        self.unique_lines: Mapping[str, str] = {}
        #: The previous coverage run's total line coverage, for the coverage-gain reward.
        self.previous_coverage_percent: float | None = None
        self.tracer_readable: dict[str, str] = {}
        # the learners now hold the Q-tables; do not keep a second copy alive
        snapshot.q_entries = {}
        self.epsilon = self.learner.epsilon
        self.prioritizer = prio.Prioritizer(self.learner, self.rewards, agent_type)
        self.episode = snapshot.episodes + 1
        self._decisions: dict[str, prio.Decision] = {}
        #: The stored order-dependence suspects; the active ones keep their place.
        self.suspects = sus.suspects(snapshot.suspects)
        self.kept = {t: s for t, s in self.suspects.items() if s.active}

    def _learner(
        self,
        name: str,
        default_type: Callable[[Hyperparameters | None], AgentType],
        hyper: Hyperparameters | None,
        seed: int | str,
    ) -> tuple[AgentType, QLearner]:
        """An agent's type (from the registry, else its default) and its learner, loaded
        with the snapshot's Q-table and episode count for it."""
        agent_type = self.registry.get(name) if name in self.registry else default_type(hyper)
        state = self.snapshot.agent_states.get(name)
        learner = QLearner(
            name,
            agent_type.n_actions,
            agent_type.hyper,
            random.Random(seed),
            episodes=state.episodes if state else 0,
        )
        learner.load(self.snapshot.q_entries.get(name, ()))
        return agent_type, learner

    def snapshot_json(self) -> str:
        """The snapshot this episode started from, for pytest-xdist workers (call it before
        learning: it takes the Q-table from the learner)."""
        # every field of the snapshot (the file digests too: the workers' change analysis
        # compares with them), the Q-tables back from the learners
        full = replace(
            self.snapshot,
            q_entries={
                prio.NAME: self.learner.entries(),
                sel.NAME: self.selector_learner.entries(),
                ct.NAME: self.tracer_learner.entries(),
                fh.NAME: self.hunter_learner.entries(),
            },
        )
        return full.to_json()

    @property
    def agent_types(self) -> list[AgentType]:
        return self.registry.types()

    # -- ranking ---------------------------------------------------------------------------
    def rank(
        self,
        refs: Sequence[prio.TestRef],
        scope: str = DEFAULT_ORDER_SCOPE,
        duration_floor: float = prio.DURATION_FLOOR,
        scoped: ScopedGroups | None = None,
    ) -> Ranking:
        """The run order of ``refs``: one decision per test, then the tests sorted by it
        within ``scope``'s fixture-locality groups. ``duration_floor``: durations under it
        count as equal (:func:`prioritizer.order_key`); ``scoped``: the groups with fixtures
        of their scope (``auto``). Among tests whose keys tie, greedy
        decisions keep their collection order and exploratory ones take a random place."""
        with gc_paused():
            return self._rank(refs, scope, duration_floor, scoped)

    def _rank(
        self,
        refs: Sequence[prio.TestRef],
        scope: str,
        duration_floor: float,
        scoped: ScopedGroups | None,
    ) -> Ranking:
        decided = self.prioritizer.decide(
            self.snapshot.histories,
            list(map(_TEST_ID, refs)),
            self.covering_changed,
            self.impacts,
            self.reverted,
        )
        decisions = dict(zip(map(_TEST_ID, decided), decided, strict=True))
        self._decisions = decisions
        if not self.kept:
            # every test's key as one small int of the same order (issue 16: building and
            # comparing a 7-field tuple per test was a third of ranking)
            keys = self._order_ranks(refs, decisions, duration_floor)
            order = locality_order(refs, keys, scope, self.snapshot.histories, scoped)
            return Ranking(order, decisions)
        spread = float(len(refs))

        resolution, log2, floor = prio.P_RESOLUTION, math.log2, math.floor
        # Inside an evidence class, facts before estimates: with --qlearn-cov a test whose
        # map runs the changed lines first, then the static analysis's nearest tests.
        covering = self.covering_changed
        near = self.proximity.get
        maybe_fixed = prio.FAILED_LAST_CHANGED

        def key(ref: prio.TestRef) -> tuple[float, ...]:
            test_id = ref.test_id
            decision = decisions[test_id]
            place = ref.index if decision.shuffle < 0 else decision.shuffle * spread
            # prio.order_key(decision, duration_floor), inline: it runs for every test
            duration = decision.duration
            evidence = decision.evidence
            if evidence == maybe_fixed:
                # known failures whose code changed: the nearer the change, the likelier it
                # is their fix, so the farthest first (prio.order_key)
                runs_change, proximity = test_id in covering, -near(test_id, 0)
            else:
                runs_change, proximity = test_id not in covering, near(test_id, 0)
            return (
                evidence,
                runs_change,
                proximity,
                -int(decision.p_fail / resolution + 0.5),
                floor(log2(duration_floor if duration_floor > duration else duration)),
                place,
                ref.index,
            )

        # order-dependence suspects run before the tests collected after them (suspects.py:
        # it lowers a suspect's tuple key, so this rare case keeps the tuples)
        histories = self.snapshot.histories

        def failed_last(test_id: str) -> bool:
            history = histories.get(test_id)
            return (
                history is not None
                and history.verdicts.rstrip(SKIPPED)[-1:] == FAILED
                and decisions[test_id].evidence != prio.REVERTED
            )

        order_key = sus.guarded(refs, key, self.kept, failed_last)
        order = locality_order(refs, order_key, scope, self.snapshot.histories, scoped)
        return Ranking(order, decisions)

    def _order_ranks(
        self,
        refs: Sequence[prio.TestRef],
        decisions: Mapping[str, prio.Decision],
        duration_floor: float,
    ) -> list[int]:
        """Per ref, its rank among ``refs`` by the key ``_rank`` builds when suspects are kept
        (evidence, runs_change, proximity, estimate, duration class, place, index): equal
        ranks for equal keys, a smaller rank for a smaller key. Built column by column in C
        and sorted in stable passes from the last field to the first (a pass is skipped where
        a field is the same for every test), which orders exactly as the tuples do."""
        n = len(refs)
        if n == 0:
            return []
        found = list(map(decisions.__getitem__, map(_TEST_ID, refs)))
        indexes = list(map(_REF_INDEX, refs))
        evidences = list(map(_EVIDENCE, found))
        estimates = list(map(_P_FAIL, found))
        resolution = prio.P_RESOLUTION
        rounded = {p: -int(p / resolution + 0.5) for p in set(estimates)}
        # floor(log2(duration_floor if duration_floor > duration else duration)): max(d, f)
        # is f exactly when f > d
        durations = list(
            map(
                math.floor,
                map(math.log2, map(max, map(_DURATION, found), repeat(duration_floor))),
            )
        )
        shuffles = list(map(_SHUFFLE, found))
        if max(shuffles) < 0:  # no exploratory place: every place is the collection index
            places = indexes
        else:
            spread = float(n)
            # index if shuffle < 0 else shuffle * spread: the explored ones (a minority) set
            places = indexes.copy()
            for i in compress(range(n), map(le, repeat(0.0), shuffles)):
                places[i] = shuffles[i] * spread
        covering, proximity = self.covering_changed, self.proximity
        if covering or proximity or prio.FAILED_LAST_CHANGED in evidences:
            near = proximity.get
            maybe_fixed = prio.FAILED_LAST_CHANGED
            runs_change: list[bool] = []
            nearness: list[int] = []
            for ref, evidence in zip(refs, evidences, strict=True):
                test_id = ref.test_id
                if evidence == maybe_fixed:
                    runs_change.append(test_id in covering)
                    nearness.append(-near(test_id, 0))
                else:
                    runs_change.append(test_id not in covering)
                    nearness.append(near(test_id, 0))
        else:
            runs_change, nearness = [True], [0]  # the same for every test
        columns: list[list[Any]] = [
            evidences,
            runs_change,
            nearness,
            list(map(rounded.__getitem__, estimates)),
            durations,
            places,
            indexes,
        ]
        perm = list(range(n))
        sorted_by: list[Any] | None = None
        for column in reversed(columns):
            # a second stable pass by the column just sorted by changes nothing (``places``
            # is ``indexes`` when no test explored)
            if column is not sorted_by and column.count(column[0]) != len(column):
                perm.sort(key=column.__getitem__)
                sorted_by = column
        ranks = [0] * n
        if len(set(indexes)) == n:  # distinct indexes: no two keys are equal
            for rank, i in enumerate(perm):
                ranks[i] = rank
            return ranks
        full = [column if len(column) == n else column * n for column in columns]
        previous: tuple[Any, ...] | None = None
        rank = -1
        for position, i in enumerate(perm):
            key = tuple(column[i] for column in full)
            if key != previous:
                rank, previous = position, key
            ranks[i] = rank
        return ranks

    def select(
        self,
        order: Sequence[str],
        budget: sel.Budget,
        *,
        marked: Collection[str] = (),
        changed: Collection[str] = (),
        full_run_every: int = 0,
    ) -> sel.Selection:
        """The tests that fit ``budget``, walking ``order`` (the ranking); every
        ``full_run_every``-th episode (0: never) runs everything."""
        full_run = full_run_every > 0 and self.episode % full_run_every == 0
        self.selection = self.selector.select(
            order,
            self.snapshot.histories,
            budget,
            marked=marked,
            changed=changed,
            covering_changed=self.covering_changed,
            unique=self.unique_lines,
            full_run=full_run,
        )
        return self.selection

    def decide_traces(
        self,
        test_ids: Collection[str],
        maps: dict[str, CoverageMap],
        stale: dict[str, set[str]],
        *,
        own_changed: Collection[str] = (),
        unreadable: Collection[str] = (),
        carried: Collection[str] = (),
    ) -> dict[str, ct.TraceDecision]:
        """The coverage-tracer's decision for every test (``--qlearn-cov``)."""
        return self.tracer.decide(
            test_ids,
            maps,
            stale,
            own_changed=own_changed,
            unreadable=unreadable,
            carried=carried,
            episode=self.episode,
        )

    def learn_traces(
        self,
        decisions: dict[str, ct.TraceDecision],
        old_maps: dict[str, CoverageMap],
        new_maps: dict[str, CoverageMap],
    ) -> ct.TraceOutcome:
        """Teach the coverage-tracer what this run's traces found (before :meth:`finish`)."""
        for decision in decisions.values():
            state = decision.state
            if state is not None and not self.tracer_learner.knows(state.key):
                self.tracer_readable[state.key] = state.readable
        self.trace_outcome = self.tracer.learn(decisions, old_maps, new_maps)
        return self.trace_outcome

    # -- reruns (the flaky-hunter) -----------------------------------------------------------
    def rerun_share(self, test_id: str) -> float:
        """A test's expected seconds as a share of what a false red costs: rerunning the
        session (all known tests' mean seconds) plus a person's look at the red build
        (``flaky_hunter.ATTENTION_SECONDS``); 0 when unknown."""
        histories = self.snapshot.histories
        if self._expected_seconds is None:
            self._expected_seconds = sum(h.duration_mean for h in histories.values() if h.runs)
        history = histories.get(test_id)
        if history is None or not history.runs:
            return 0.0
        return history.duration_mean / (self._expected_seconds + fh.ATTENTION_SECONDS)

    def rerun_failure(self, test_id: str, kind: str, signature: str, moved: bool) -> fh.Failure:
        known = self.snapshot.signatures.get(signature, SignatureStats()) if signature else None
        return fh.Failure(
            test_id, kind, signature, known or SignatureStats(), moved, self.rerun_share(test_id)
        )

    def decide_reruns(
        self, test_id: str, kind: str, signature: str, moved: bool, limit: int
    ) -> fh.RerunDecision:
        """How many times to rerun a test that just failed (at most ``limit``)."""
        history = self.snapshot.histories.get(test_id) or TestHistory(test_id)
        return self.hunter.decide(
            history, self.rerun_failure(test_id, kind, signature, moved), limit
        )

    def _learn_reruns(
        self, records: Sequence[RerunRecord], first_step: int, duration: float
    ) -> tuple[list[TrajectoryStep], list[PatternDelta], dict[str, str], dict[str, float]]:
        """Teach the flaky-hunter what each rerun (or observed rerun) did."""
        steps: list[TrajectoryStep] = []
        patterns: list[PatternDelta] = []
        readable: dict[str, str] = {}
        rewards: dict[str, float] = {}
        histories = self.snapshot.histories
        for offset, record in enumerate(sorted(records, key=lambda r: r.test_id)):
            if record.decision:
                key, text, action, explored, _reused = record.decision
            else:  # observed: pytest-rerunfailures chose its number of reruns
                history = histories.get(record.test_id) or TestHistory(record.test_id)
                failure = self.rerun_failure(
                    record.test_id, record.kind, record.signature, record.moved
                )
                state = self.hunter.state(history, failure)
                key, text = state.key, state.readable
                action, explored = min(record.reruns, fh.MAX_RERUNS), False
            if not self.hunter_learner.knows(key):
                readable[key] = text
            reward = self.hunter.learn(key, action, record.attempts, record.share)
            rewards[record.test_id] = reward
            step = first_step + offset
            steps.append(
                TrajectoryStep(fh.NAME, step, record.test_id, key, action, explored, reward, None)
            )
            if record.signature:
                patterns.append(
                    PatternDelta(
                        fh.NAME,
                        record.signature,
                        record.signature_text,
                        1,
                        int(record.flaky),
                        record.reruns,
                        int(record.flaky),
                        reward,
                    )
                )
        return steps, patterns, readable, rewards

    # -- learning --------------------------------------------------------------------------
    def finish(
        self,
        results: Sequence[TestResult],
        *,
        started_at: float,
        duration: float,
        exit_status: int,
        session_failed: bool = False,
        riskiest: int = 5,
        coverage_percent: float | None = None,
        partial: bool = False,
        narrowing: str | None = None,
        untimed: Collection[str] = (),
        reruns: Sequence[RerunRecord] = (),
    ) -> tuple[EpisodeWrite, EpisodeSummary]:
        """Learn from the results and build the store write and the report summary.

        A ``partial`` episode (a narrowed run, or one stopped early) learns from every test
        that ran but does not advance any agent's episode count, so ε does not decay.
        ``narrowing``: how the command line narrowed the run (stored with the session).
        ``untimed``: tests whose measured seconds are not their own (traced by
        ``--qlearn-cov``): a test with a measured history keeps its duration estimates
        (run time, setup and teardown) instead of learning the traced ones.

        ``riskiest`` is how many of the riskiest tests the summary lists; 0 skips estimating
        every test again when no detailed report will show them. ``coverage_percent``: this
        run's total line coverage (``--qlearn-cov``), compared with the previous episode's.
        ``reruns``: the tests rerun this run; the flaky-hunter learns from them, and a test
        that failed and then passed on a rerun is learned as a flip, never as a plain pass.
        """
        with gc_paused():
            return self._finish(
                results,
                started_at=started_at,
                duration=duration,
                exit_status=exit_status,
                session_failed=session_failed,
                riskiest=riskiest,
                coverage_percent=coverage_percent,
                partial=partial,
                narrowing=narrowing,
                untimed=untimed,
                reruns=reruns,
            )

    def _finish(
        self,
        results: Sequence[TestResult],
        *,
        started_at: float,
        duration: float,
        exit_status: int,
        session_failed: bool,
        riskiest: int,
        coverage_percent: float | None,
        partial: bool,
        narrowing: str | None,
        untimed: Collection[str],
        reruns: Sequence[RerunRecord],
    ) -> tuple[EpisodeWrite, EpisodeSummary]:
        histories = self.snapshot.histories
        flaky_ids = {r.test_id for r in reruns if r.flaky}
        by_id = dict(zip(map(_TEST_ID, results), results, strict=True))  # the last of an id
        for test_id in untimed:  # traced: learn the estimates, not the tracer's seconds
            result, history = by_id.get(test_id), histories.get(test_id)
            if result is not None and history is not None and history.runs:
                by_id[test_id] = result._replace(
                    duration=history.expected_duration, fixture=history.fixture_mean
                )
        ordered_ids = sorted(by_id)  # deterministic update order
        trajectories: list[TrajectoryStep] = []
        pattern_seen: Counter[str] = Counter()
        pattern_hits: Counter[str] = Counter()
        readable: dict[str, str] = {}
        observations: list[Observation] = []
        exploited = exploited_paid = 0
        # test id -> (history after this run, its next per-test and shared states)
        next_states: dict[str, tuple[TestHistory, State, State]] = {}
        next_histories: list[TestHistory] = []
        shared_states: dict[str, State] = {}
        # the Bellman updates, applied after the loop (nothing in it reads the Q-values,
        # except rebuilding a decision, which applies them first): the per-test rows as
        # columns (each test's rows are its own: their order against the shared rows does
        # not matter), the shared and change rows as steps, in this order
        updates: list[UpdateStep] = []
        test_states: list[str] = []
        test_rewards: list[list[float]] = []
        test_next: list[str] = []
        test_tiers: list[int] = []
        # the shared rows' updates (state, rewards, next state) when learned by columns
        shared_columns: tuple[list[str], list[list[float]], list[str]] = ([], [], [])
        decisions = self._decisions
        prioritizer, learner = self.prioritizer, self.learner
        failed_rewards, passed_rewards, shared_alpha = prioritizer.learning_terms()
        next_states_of = prioritizer.next_states
        shared_memo: dict[tuple[object, ...], State] = {}
        known_states = learner.q_rows
        episode = self.episode
        # the per-test named tuples from all their fields, without a call of their __new__
        new_tuple = tuple.__new__
        # each shared state's key once per test that learned from it (counted after the loop)
        shared_keys: list[str] = []
        # the common case over whole columns (issue 16); the loop below covers the rest
        # (reruns, change states, decisions rebuilt for pytest-xdist), test by test
        by_columns = not flaky_ids and self._learn_columns(
            by_id,
            ordered_ids,
            observations,
            next_histories,
            next_states,
            shared_states,
            readable,
            (test_states, test_rewards, test_next, test_tiers),
            shared_columns,
            trajectories,
            shared_keys,
            pattern_hits,
            shared_memo,
        )
        if by_columns:
            exploited, exploited_paid = by_columns
        for step, test_id in enumerate(() if by_columns else ordered_ids):
            # all of a result's fields at once (one unpack, not an attribute call each)
            # (``seconds``: ``duration`` is the session's, used after the loop)
            _, verdict, seconds, _, _, tier, explored, fixture = by_id[test_id]
            if verdict not in VERDICTS:
                raise ValueError(f"unknown verdict {verdict!r} for {test_id!r}")
            flaky = verdict == PASSED and test_id in flaky_ids
            observations.append(new_tuple(Observation, (test_id, verdict, seconds, fixture, flaky)))
            history = histories.get(test_id) or TestHistory(test_id)
            nxt = history.record(verdict, seconds, episode, fixture, flaky)
            next_histories.append(nxt)
            decision = decisions.get(test_id)
            if decision is None and tier is not None:
                # decided on a pytest-xdist worker: count it so the report's share is true
                learner.count_decision(explored)
            if verdict == SKIPPED or tier is None:
                continue
            if decision is None or decision.tier != tier:
                # an xdist controller did not rank: rebuild the worker's decision (from the
                # Q-values as learned so far)
                learner.update_all_rows(test_states, test_rewards, test_next, test_tiers)
                learner.update_all_many(updates)
                for pending in (updates, test_states, test_rewards, test_next, test_tiers):
                    pending.clear()
                p, known, per_test, shared = prioritizer.failure_probability(history)
                decision = prio.Decision(test_id, tier, explored, p, per_test, shared, known)
            per_test, shared, known = decision.per_test, decision.shared, decision.known
            next_per_test, next_shared = next_states_of(nxt, per_test, shared_memo)
            next_states[test_id] = (nxt, next_per_test, next_shared)
            # the store keeps a state's text from when the state first appeared, so only
            # states new to the Q-table need theirs built (a state the updates below add
            # is in ``readable`` already: it was new when its test came)
            if per_test.key not in known_states and per_test.key not in readable:
                readable[per_test.key] = per_test.readable
            shared_key = shared.key
            if shared_key not in shared_states:
                # a shared state's first test decides (rows are never removed: a state
                # known then is known at every later test)
                shared_states[shared_key] = shared
                if shared_key not in known_states and shared_key not in readable:
                    readable[shared_key] = shared.readable
            change = decision.change
            if change is not None and change.key not in known_states and change.key not in readable:
                readable[change.key] = change.readable
            # prioritizer.learn_later(decision, verdict, next states, ...), by columns
            rewards = failed_rewards if verdict == FAILED else passed_rewards
            test_states.append(per_test.key)
            test_rewards.append(rewards)
            test_next.append(next_per_test.key)
            test_tiers.append(decision.tier)
            updates.append((shared_key, rewards, next_shared.key, None, shared_alpha))
            if change is not None:
                updates.append((change.key, rewards, next_shared.key, None, None))
            step_reward = rewards[decision.tier]
            trajectories.append(
                new_tuple(
                    TrajectoryStep,
                    (
                        prio.NAME,
                        step,
                        test_id,
                        per_test.key,
                        tier,
                        explored,
                        step_reward,
                        next_per_test.key,
                    ),
                )
            )
            shared_keys.append(shared_key)
            if verdict == FAILED:
                pattern_hits[shared_key] += 1
            if known and not explored:
                exploited += 1
                exploited_paid += step_reward > 0
        learner.update_all_rows(test_states, test_rewards, test_next, test_tiers)
        learner.update_all_many(updates)
        # the shared rows' updates of the tests learned by columns (in test order, after
        # the per-test rows' as in the loop: neither reads the other's rows)
        learner.update_all_rows(*shared_columns, None, shared_alpha)
        del updates, test_states, test_rewards, test_next, test_tiers, shared_columns
        pattern_seen.update(shared_keys)  # counted in C
        del shared_keys
        self.learner.end_episode(partial=partial)
        stats = self.learner.statistics()
        selection = self.selection
        selector_learning: sel.SelectorLearning | None = None
        if selection is not None or self.selector.pending:
            after = {h.test_id: h for h in next_histories}
            selector_learning = self.selector.learn(
                selection,
                histories,
                {r.test_id: (r.verdict, r.duration, after[r.test_id]) for r in results},
                deselect=self.mode != "observe",
            )
            if selection is not None:
                self.selector_learner.end_episode(partial=partial)
            trajectories.extend(selector_learning.trajectories)
        rerun_patterns: list[PatternDelta] = []
        rerun_rewards: dict[str, float] = {}
        rerun_seconds = rerun_saved = None
        hunter_readable: dict[str, str] = {}
        if reruns:
            steps, rerun_patterns, hunter_readable, rerun_rewards = self._learn_reruns(
                reruns, len(trajectories), duration
            )
            trajectories.extend(steps)
            for record in reruns:
                if record.decision and record.decision[4] and not record.decision[3]:
                    exploited += 1  # a decision that reused a known signature's learned value
                    exploited_paid += rerun_rewards.get(record.test_id, 0.0) > 0
            rerun_seconds = sum(r.rerun_seconds for r in reruns)
            # a confirmed flake kept the build from a false red: that saves rerunning it
            rerun_saved = duration if any(r.flaky for r in reruns) else 0.0
        suspect_patterns: list[PatternDelta] = []
        suspect_notes: list[sus.Note] = []
        if self.kept or reruns:
            suspect_patterns, suspect_notes = self._learn_suspects(results, reruns, flaky_ids)

        ran = list(compress(results, map((PASSED, FAILED).__contains__, map(_VERDICT, results))))
        run_order = sorted(ran, key=attrgetter("position"))  # C key functions, no lambda
        collection_order = sorted(ran, key=attrgetter("collected_at"))

        def flags(rs: list[TestResult]) -> list[bool]:
            return list(map(eq, map(_VERDICT, rs), repeat(FAILED)))

        def times(rs: list[TestResult]) -> list[float]:
            return list(map(_SECONDS, rs))

        run_flags, collection_flags = flags(run_order), flags(collection_order)
        failures = run_flags.count(True)
        apfd = metrics.apfd(run_flags)
        collection_apfd = metrics.apfd(collection_flags)
        run_ttff = metrics.time_to_first_failure(run_flags, times(run_order))
        collection_ttff = metrics.time_to_first_failure(collection_flags, times(collection_order))
        # 1-based, every test of the run counted (as the reports and the terminal line say)
        failed_results = [r for r in ran if r.verdict == FAILED]
        first_position = min((r.position + 1 for r in failed_results), default=None)
        collection_first_position = min((r.collected_at + 1 for r in failed_results), default=None)
        if collection_first_position is not None and collection_ttff is not None:
            # collection order's time needs every test before that failure to have run: a
            # run stopped early (-x) or a budget left some out, whose seconds are unknown
            before = collection_first_position - 1
            if sum(map(before.__gt__, map(_COLLECTED_AT, results))) < before:
                collection_ttff = None
        budget_seconds = budget_used = None
        if selection is not None and not selection.full_run:
            picked = {c.test_id for c in selection.selected}
            budget_seconds = selection.budget_seconds
            budget_used = sum(r.duration for r in ran if r.test_id in picked)
        reward = self.rewards.episode(
            EpisodeFacts(
                tests=len(ran),
                failures=failures,
                apfd=apfd,
                duration=sum(times(ran)),
                time_to_first_failure=run_ttff,
                previous_durations=tuple(s.duration for s in self.snapshot.recent_sessions),
                exploited=exploited,
                exploited_paid_off=exploited_paid,
                session_failed=session_failed,
                budget_seconds=budget_seconds,
                budget_used=budget_used,
                coverage_percent=coverage_percent,
                previous_coverage_percent=self.previous_coverage_percent,
                rerun_seconds=rerun_seconds,
                rerun_saved=rerun_saved,
            )
        )
        session = SessionRecord(
            session_id=self.session_id,
            started_at=started_at,
            duration=duration,
            tests=len(results),
            failures=failures,
            seed=self.seed,
            epsilon=self.epsilon,
            q_table_size=stats.q_table_size,
            apfd=apfd,
            collection_apfd=collection_apfd,
            reward=reward.total,
            exit_status=exit_status,
            mode=self.mode,
            episode=self.episode,
            partial=partial,
            time_to_first_failure=run_ttff,
            collection_time_to_first_failure=collection_ttff,
            first_failure_position=first_position,
            collection_first_failure_position=collection_first_position,
            narrowing=narrowing,
        )
        advance = 0 if partial else 1  # episodes each agent's count moves on
        # in (state, action) order, the order the store writes them in
        deltas: list[QDelta] = self.learner.take_delta_rows(readable, QDelta)
        write = EpisodeWrite(
            partition=self.snapshot.partition,
            session=session,
            agent_types=self.agent_types,
            observations=observations,
            base_episodes=self.snapshot.episodes,
            base_session_count=self.snapshot.session_count,
            next_histories=next_histories,
            q_deltas={prio.NAME: deltas},
            trajectories=trajectories,
            rewards=[
                RewardEvent(name, value, reward.weights[name])
                for name, value in reward.components.items()
            ]
            + [RewardEvent("total", reward.total, 1.0)],
            patterns=[
                PatternDelta(prio.NAME, key, shared_states[key].readable, seen, pattern_hits[key])
                for key, seen in sorted(pattern_seen.items())
            ]
            + rerun_patterns
            + suspect_patterns,
            agents=[AgentProgress(prio.NAME, advance, self.learner.epsilon, stats.mean_reward, 1)],
        )
        if selector_learning is not None:
            write.q_deltas[sel.NAME] = [
                QDelta(state, selector_learning.readable.get(state, ""), action, dq, int(dn))
                for (state, action), (dq, dn) in self.selector_learner.take_deltas().items()
            ]
            write.pending_skips = selector_learning.pending
        if self.trace_outcome is not None:
            self.tracer_learner.end_episode(partial=partial)
            write.q_deltas[ct.NAME] = [
                QDelta(state, self.tracer_readable.get(state, ""), action, dq, int(dn))
                for (state, action), (dq, dn) in self.tracer_learner.take_deltas().items()
            ]
            tracer_stats = self.tracer_learner.statistics()
            write.agents.append(
                AgentProgress(
                    ct.NAME, advance, self.tracer_learner.epsilon, tracer_stats.mean_reward, 1
                )
            )
        if reruns:
            self.hunter_learner.end_episode(partial=partial)
            write.q_deltas[fh.NAME] = [
                QDelta(state, hunter_readable.get(state, ""), action, dq, int(dn))
                for (state, action), (dq, dn) in self.hunter_learner.take_deltas().items()
            ]
            hunter_stats = self.hunter_learner.statistics()
            write.agents.append(
                AgentProgress(
                    fh.NAME, advance, self.hunter_learner.epsilon, hunter_stats.mean_reward, 1
                )
            )
        if selection is not None:
            selector_stats = self.selector_learner.statistics()
            write.agents.append(
                AgentProgress(
                    sel.NAME, advance, self.selector_learner.epsilon, selector_stats.mean_reward, 1
                )
            )
        summary = EpisodeSummary(
            session=session,
            reward=reward,
            stats=stats,
            run_ttff=run_ttff,
            collection_ttff=collection_ttff,
            riskiest=self._riskiest(next_states, riskiest) if riskiest > 0 else [],
            failures_first=[r.test_id for r in run_order if r.verdict == FAILED][:5],
            results=list(results),
            recent_sessions=list(self.snapshot.recent_sessions),
            budget=None
            if selection is None
            else sel.summarise(
                selection,
                {r.test_id: (r.verdict, r.duration) for r in results},
                self.mode,
                duration,
            ),
            reruns=sorted(reruns, key=lambda r: r.test_id),
            rerun_rewards=rerun_rewards,
            why=self._why(run_order),
            suspects=suspect_notes,
        )
        for note in suspect_notes:
            if note.kept:
                summary.why[note.after.test_id] = sus.reason(self.kept[note.after.test_id])
        return write, summary

    def _learn_columns(
        self,
        by_id: Mapping[str, TestResult],
        ordered_ids: Sequence[str],
        observations: list[Observation],
        next_histories: list[TestHistory],
        next_states: dict[str, tuple[TestHistory, State, State]],
        shared_states: dict[str, State],
        readable: dict[str, str],
        test_columns: tuple[list[str], list[list[float]], list[str], list[int]],
        shared_columns: tuple[list[str], list[list[float]], list[str]],
        trajectories: list[TrajectoryStep],
        shared_keys: list[str],
        pattern_hits: Counter[str],
        shared_memo: dict[tuple[object, ...], State],
    ) -> tuple[int, int] | None:
        """:meth:`_finish`'s loop over whole columns, filling the same containers with the
        same values in the same order (the shared rows' update steps as ``shared_columns``,
        for ``QLearner.update_all_rows``); (exploited, exploited and paid off), or None
        (nothing filled) when a case only the loop covers is there: an unknown verdict, a
        test decided elsewhere (pytest-xdist) or with another tier than its decision's, a
        change state. The caller leaves out flaky reruns."""
        if not ordered_ids:
            return None
        rows = list(map(by_id.__getitem__, ordered_ids))
        ids, verdicts, seconds, _, _, tiers, explored, fixtures = map(list, zip(*rows, strict=True))
        del rows
        if not set(verdicts) <= set(VERDICTS):
            return None
        everything = range(len(ids))
        decisions = list(map(self._decisions.get, ids))
        # the tests learned from: a verdict, and a tier
        if SKIPPED in verdicts or None in tiers:
            learned = [
                i
                for i, verdict, tier in zip(everything, verdicts, tiers, strict=True)
                if verdict != SKIPPED and tier is not None
            ]
        else:
            learned = list(everything)
        l_tiers = tiers if len(learned) == len(ids) else [tiers[i] for i in learned]
        picked = decisions if len(learned) == len(ids) else [decisions[i] for i in learned]
        if None in picked:
            return None  # decided elsewhere (pytest-xdist): rebuilt in the loop
        l_decisions: list[prio.Decision] = picked  # type: ignore[assignment]  # no None
        d_tiers = list(map(_TIER, l_decisions))
        if d_tiers != l_tiers or list(map(_CHANGE, l_decisions)).count(None) != len(d_tiers):
            return None  # decided with another tier, or with a change state
        learner, prioritizer = self.learner, self.prioritizer
        if None in decisions:
            for i in everything:
                if decisions[i] is None and tiers[i] is not None:
                    # decided on a pytest-xdist worker (skipped here): counted, as in the loop
                    learner.count_decision(explored[i])
        new_tuple = tuple.__new__
        observations += map(
            partial(new_tuple, Observation), zip(ids, verdicts, seconds, fixtures, repeat(False))
        )
        histories = self.snapshot.histories
        found: list[TestHistory] = list(map(histories.get, ids))  # type: ignore[arg-type]
        for i in compress(everything, map(is_, found, repeat(None))):
            found[i] = TestHistory(ids[i])  # not stored yet: a new test
        record = TestHistory.record
        after = list(map(record, found, verdicts, seconds, repeat(self.episode), fixtures))
        next_histories += after
        del found
        if not learned:
            return 0, 0
        l_ids, l_verdicts, l_explored, l_after = ids, verdicts, explored, after
        if len(learned) != len(ids):
            l_ids = [ids[i] for i in learned]
            l_verdicts = [verdicts[i] for i in learned]
            l_explored = [explored[i] for i in learned]
            l_after = [after[i] for i in learned]
        per_tests = list(map(_PER_TEST, l_decisions))
        shareds = list(map(_SHARED, l_decisions))
        next_per_tests, next_shareds = prioritizer.next_state_columns(
            l_after, per_tests, shared_memo
        )
        next_states.update(
            zip(l_ids, zip(l_after, next_per_tests, next_shareds, strict=True), strict=True)
        )
        per_test_keys = list(map(_KEY, per_tests))
        shared_key_column = list(map(_KEY, shareds))
        # states new to the Q-table need their text (the first test's, as in the loop)
        known_states = learner.q_rows
        new_states = map(not_, map(known_states.__contains__, per_test_keys))
        for i in compress(range(len(l_ids)), new_states):
            if per_test_keys[i] not in readable:
                readable[per_test_keys[i]] = per_tests[i].readable
        # a shared state's first test decides (as in the loop): the first of each key
        first_shared = dict(zip(reversed(shared_key_column), reversed(shareds), strict=True))
        for key, shared in first_shared.items():
            if key not in shared_states:
                shared_states[key] = shared
                if key not in known_states and key not in readable:
                    readable[key] = shared.readable
        failed_rewards, passed_rewards, _ = prioritizer.learning_terms()
        failed = list(map(eq, l_verdicts, repeat(FAILED)))
        rewards = [failed_rewards if f else passed_rewards for f in failed]
        next_shared_keys = list(map(_KEY, next_shareds))
        next_per_test_keys = list(map(_KEY, next_per_tests))
        test_states, test_rewards, test_next, test_tiers = test_columns
        test_states += per_test_keys
        test_rewards += rewards
        test_next += next_per_test_keys
        test_tiers += d_tiers
        # the loop's steps (shared key, rewards, next shared key, None, shared α), as columns
        shared_states_c, shared_rewards_c, shared_next_c = shared_columns
        shared_states_c += shared_key_column
        shared_rewards_c += rewards
        shared_next_c += next_shared_keys
        step_rewards: list[float] = list(map(getitem, rewards, d_tiers))
        trajectories += map(
            partial(new_tuple, TrajectoryStep),
            zip(
                repeat(prio.NAME),
                learned,  # the step: the test's place among all of them
                l_ids,
                per_test_keys,
                l_tiers,  # the result's tier: its decision's (checked above)
                l_explored,
                step_rewards,
                next_per_test_keys,
            ),
        )
        shared_keys += shared_key_column
        pattern_hits.update(compress(shared_key_column, failed))
        # known and not explored: an exploited decision; paid off when its reward is > 0
        exploited_rewards = list(
            compress(
                step_rewards, map(and_, map(truth, map(_KNOWN, l_decisions)), map(not_, l_explored))
            )
        )
        exploited = len(exploited_rewards)
        exploited_paid = sum(map(gt, exploited_rewards, repeat(0)))
        return exploited, exploited_paid

    def _learn_suspects(
        self,
        results: Sequence[TestResult],
        reruns: Sequence[RerunRecord],
        flaky_ids: Collection[str],
    ) -> tuple[list[PatternDelta], list[sus.Note]]:
        """What this run teaches about order dependence (see :mod:`pytest_qlearn.suspects`):
        a flag for each test that failed after being moved and passed on its rerun; an
        exposed clean run for each suspect that passed on its first attempt after a test
        collected after it (only where the order was used: not in observe mode)."""
        held, kept = self.suspects, self.kept
        deltas: dict[str, PatternDelta] = {}
        for record in reruns:
            if record.order_suspect:
                deltas[record.test_id] = sus.flagged(
                    record.test_id, self.episode, held.get(record.test_id)
                )
        verdicts = {r.test_id: r.verdict for r in results if r.test_id in kept}
        if kept and self.mode == "reorder":
            waiting = {t: s for t, s in kept.items() if t not in deltas and t not in flaky_ids}
            for test_id in sus.exposed(results, waiting):
                if verdicts.get(test_id) == PASSED:
                    deltas[test_id] = sus.passed_exposed(test_id)
        ran = {t for t, verdict in verdicts.items() if verdict != SKIPPED}
        notes = [
            sus.Note(test_id in ran, sus.after(held.get(test_id), deltas[test_id]))
            if test_id in deltas
            else sus.Note(True, held[test_id])
            for test_id in sorted(ran | deltas.keys())
        ]
        return [deltas[t] for t in sorted(deltas)], notes

    def _why(self, run_order: Sequence[TestResult]) -> dict[str, str]:
        """The reasons of the first :data:`WHY_ROWS` tests that ran and of every failure
        (on a pytest-xdist controller, the reasons the workers gave)."""
        shown = [*run_order[:WHY_ROWS], *(r for r in run_order[WHY_ROWS:] if r.verdict == FAILED)]
        why = {}
        for result in shown:
            reason = self.reason(result.test_id) or self.worker_reasons.get(result.test_id)
            if reason is not None:
                why[result.test_id] = reason
        return why

    def reason(self, test_id: str) -> str | None:
        """Why this run put ``test_id`` where it did, in words; None when it decided nothing
        for it."""
        decision = self._decisions.get(test_id)
        if decision is None:
            return None
        history = self.snapshot.histories.get(test_id)
        return prio.reason(decision, history, self.change_reasons.get(test_id))

    def _riskiest(
        self, after: dict[str, tuple[TestHistory, State, State]], top: int = 5
    ) -> list[Risk]:
        """The tests most likely to fail next run, by what was just learned."""
        found = list(after.values())
        p_fail = self.prioritizer.failure_probability_columns(
            list(map(_FIRST, found)),
            list(map(_KEY, map(_SECOND, found))),
            list(map(_KEY, map(_THIRD, found))),
        )
        del found
        # the ``top`` smallest (-p, test id): as sorting all of them and taking the first
        riskiest = heapq.nsmallest(top, zip([-p for p in p_fail], after, strict=True))
        risks = [
            Risk(test_id, -minus_p, after[test_id][0].runs, after[test_id][0].failures)
            for minus_p, test_id in riskiest
        ]
        top_risks = []
        for risk in risks[:top]:
            _, per_test, shared = after[risk.test_id]
            top_risks.append(
                risk._replace(
                    q_values=tuple(self.learner.values(per_test.key)),
                    visits=self.learner.visits(per_test.key)[0],
                    features=shared.readable,
                )
            )
        return top_risks
