"""The local spool: episodes that could not reach the store wait here as JSON files until a
later run can write them.

A run whose store fails while the run writes saves its :class:`EpisodeWrite` (its deltas
were learned from a real snapshot, so they add up like a concurrent run's). A run whose
store is unreachable from the start had no snapshot to learn from: deltas learned from an
empty table would be wrong once added to the stored values, so it saves its raw results
instead (a :class:`PendingRun`), and the replaying run learns them against the store's
snapshot of that moment, as if the run had reached the store. Both wait in a directory of
their own store (under pytest's cache directory, keyed by the store's identity — user, host,
port, database, ``search_path`` — not by options such as timeouts, so an episode is only ever
replayed into the store it was meant for). The next run that opens that store replays every
spooled episode before it
loads its snapshot. Stores apply an episode at most once (by session id), so a replay that is
interrupted, or a spool file that outlives a successful write, is harmless: it is written
again, found already stored, and removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..engine.agent_type import AgentType
from ..engine.history import TestHistory
from ..engine.hyperparams import Hyperparameters
from .base import (
    DEFAULT_TTL_DAYS,
    AgentProgress,
    EpisodeWrite,
    Observation,
    Partition,
    PatternDelta,
    PendingRun,
    PendingSkipDelta,
    QDelta,
    RewardEvent,
    SessionRecord,
    Store,
    StoreDataError,
    TrajectoryStep,
)
from .checkpoint import alive as _alive
from .checkpoint import owner_id
from .url import store_identity

__all__ = ["PendingRun", "Spool", "owner_id"]

FORMAT = 1
RUN_KIND = "run"  # a spool file of raw results (no "kind": an EpisodeWrite)
#: At most this many episodes wait per store; beyond, the oldest are dropped (with a warning).
LIMIT = 100
#: The selector's pending skips were Q rows ``selector:pending:<state key>:<test id>`` before
#: schema version 3; episodes spooled then still carry them so.
_SELECTOR = "selector"
_PRIORITIZER = "prioritizer"
_OLD_PENDING_PREFIX = _SELECTOR + ":pending:"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


#: A push a run noted (see :class:`~pytest_qlearn.store.checkpoint.PushJournal`): its
#: sequence number, the run's duration at the push (the header a recovered checkpoint keeps),
#: and the ids of the results it carried.
Pushed = tuple[int, float, list[str]]
#: The exit status of an interrupted run: what a recovered checkpoint is stored with.
INTERRUPTED = 2
#: The session id of the rest of a run whose checkpoint another run recovered (see
#: :meth:`Spool.replay`).
REST_SUFFIX = "+rest"


def episode_to_json(write: EpisodeWrite, pushed: Sequence[Pushed] = ()) -> str:
    extra: dict[str, Any] = {"pushed": [list(p) for p in pushed]} if pushed else {}
    return json.dumps(
        {
            "format": FORMAT,
            "partition": asdict(write.partition),
            "session": asdict(write.session),
            "agent_types": [
                {
                    "name": t.name,
                    "description": t.description,
                    "actions": list(t.actions),
                    "features": list(t.features),
                    "version": t.version,
                    "hyper": asdict(t.hyper),
                }
                for t in write.agent_types
            ],
            "observations": [list(o) for o in write.observations],
            "q_deltas": {agent: [list(d) for d in ds] for agent, ds in write.q_deltas.items()},
            "trajectories": [list(t) for t in write.trajectories],
            "rewards": [list(r) for r in write.rewards],
            "patterns": [list(p) for p in write.patterns],
            "agents": [asdict(a) for a in write.agents],
            "base_episodes": write.base_episodes,
            "next_histories": [h._asdict() for h in write.next_histories],
            "file_hashes": [list(pair) for pair in write.file_hashes],
            "pending_skips": [list(p) for p in write.pending_skips],
            "base_session_count": write.base_session_count,
            **extra,
        },
        # ASCII: a lone surrogate in a test id travels as a \u escape (UTF-8 cannot hold it)
    )


def episode_from_json(text: str) -> EpisodeWrite:
    return _episode_from_data(json.loads(text))


def _episode_from_data(data: dict[str, Any]) -> EpisodeWrite:
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown spool format {data.get('format')!r}")
    q_deltas = {agent: [QDelta(*d) for d in ds] for agent, ds in data["q_deltas"].items()}
    pending_skips = [
        PendingSkipDelta(str(test_id), str(state_key), float(delta))
        for test_id, state_key, delta in data.get("pending_skips", [])
    ]
    # Files spooled before schema version 3 kept the selector's pending skips as Q rows.
    if _SELECTOR in q_deltas:
        kept: list[QDelta] = []
        for d in q_deltas[_SELECTOR]:
            if not d.state.startswith(_OLD_PENDING_PREFIX):
                kept.append(d)
            elif d.action == 1:  # the skip action
                state_key, _, test_id = d.state[len(_OLD_PENDING_PREFIX) :].partition(":")
                pending_skips.append(PendingSkipDelta(test_id, state_key, float(d.dq)))
        q_deltas[_SELECTOR] = kept
    return EpisodeWrite(
        partition=Partition(**data["partition"]),
        session=SessionRecord(**data["session"]),
        agent_types=[
            AgentType(
                name=t["name"],
                description=t["description"],
                actions=tuple(t["actions"]),
                features=tuple(t["features"]),
                version=int(t["version"]),
                hyper=Hyperparameters(**t["hyper"]),
            )
            for t in data["agent_types"]
        ],
        observations=[Observation(*o) for o in data["observations"]],
        q_deltas=q_deltas,
        trajectories=[TrajectoryStep(*t) for t in data["trajectories"]],
        rewards=[RewardEvent(*r) for r in data["rewards"]],
        patterns=[PatternDelta(*p) for p in data["patterns"]],
        agents=[AgentProgress(**a) for a in data["agents"]],
        base_episodes=data["base_episodes"],
        next_histories=[TestHistory(**h) for h in data["next_histories"]],
        file_hashes=[(str(path), str(digest)) for path, digest in data.get("file_hashes", [])],
        pending_skips=pending_skips,
        # absent from files spooled before schema 6 (base_episodes is compared then)
        base_session_count=data.get("base_session_count"),
    )


def run_to_json(run: PendingRun, pushed: Sequence[Pushed] = ()) -> str:
    extra: dict[str, Any] = {"pushed": [list(p) for p in pushed]} if pushed else {}
    # the fields as they are: asdict() would deep-copy every result's list first (a
    # checkpoint of a 100,000-test run: a million deepcopy calls, every minute of the run)
    header = {field.name: getattr(run, field.name) for field in dataclasses.fields(run)}
    header["partition"] = asdict(run.partition)
    return json.dumps({"format": FORMAT, "kind": RUN_KIND, **header, **extra})  # ASCII


def run_from_json(data: dict[str, Any]) -> PendingRun:
    fields = {k: v for k, v in data.items() if k not in ("format", "kind", "pushed")}
    fields["partition"] = Partition(**fields["partition"])
    return PendingRun(**fields)


def spool_directory(base: Path, store_display_url: str) -> Path:
    """The spool of one store: ``base/<hash of the store's identity>`` (see
    :func:`~pytest_qlearn.store.url.store_identity`: the same database reached with another
    timeout or TLS option is the same store). Episodes spooled under the directory of the
    full URL, as before, are moved into it."""
    directory = base / _digest16(store_identity(store_display_url))
    legacy = base / _digest16(store_display_url)
    if legacy != directory and legacy.is_dir():
        _adopt(legacy, directory)
    return directory


def _digest16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _adopt(legacy: Path, directory: Path) -> None:
    """Move the files of an older spool directory of the same store into its directory (a
    file of the same name already there is the same run's newer entry: it is kept)."""
    with contextlib.suppress(OSError):
        directory.mkdir(parents=True, exist_ok=True)
        for path in legacy.iterdir():
            target = directory / path.name
            if target.exists():
                continue
            with contextlib.suppress(OSError):
                os.replace(path, target)
        legacy.rmdir()  # fails (and is left) while anything is still in it


class Spool:
    """Episodes waiting for one store."""

    def __init__(self, directory: Path, limit: int = LIMIT) -> None:
        self.directory = directory
        self.limit = limit
        #: What runs of this process pushed into the store, by session id (kept in their
        #: spool files, see :meth:`note_push`).
        self.pushed: dict[str, list[Pushed]] = {}

    def note_push(
        self, session_id: str, seq: int, duration: float, test_ids: Sequence[str]
    ) -> None:
        """Remember a checkpoint push of a run (the :class:`PushJournal` of its pusher): the
        run's spool files carry the list, so that a replay can tell which of its results a
        checkpoint recovered by another run held."""
        self.pushed.setdefault(session_id, []).append((seq, duration, list(test_ids)))

    def pending(self) -> list[Path]:
        """Spooled episodes, oldest first."""
        try:
            files = [p for p in self.directory.iterdir() if p.suffix == ".json"]
        except (FileNotFoundError, NotADirectoryError):
            return []
        stamped = []
        for path in files:
            try:
                stamped.append((path.stat().st_mtime_ns, path.name, path))
            except FileNotFoundError:  # replayed by a run sharing this spool, just now
                continue
        return [path for _, _, path in sorted(stamped)]

    def add(self, write: EpisodeWrite, on_warning: Callable[[str], None] | None = None) -> Path:
        """Save one episode (atomically: a crash leaves the old state or the new file, never
        half a file). Raises ``OSError`` when the spool cannot be written."""
        session_id = write.session.session_id
        text = episode_to_json(write, self.pushed.get(session_id, ()))
        return self._save(session_id, text, on_warning)

    def add_run(self, run: PendingRun, on_warning: Callable[[str], None] | None = None) -> Path:
        """Save an offline run's raw results, to be learned when the store is back."""
        text = run_to_json(run, self.pushed.get(run.session_id, ()))
        return self._save(run.session_id, text, on_warning)

    def remove(self, session_id: str) -> None:
        """Drop a run's file (its checkpoint, once the run's episode is safely written). A
        file that cannot be removed is harmless: replaying it finds the run already stored."""
        with contextlib.suppress(OSError):
            (self.directory / f"{_file_stem(session_id)}.json").unlink(missing_ok=True)

    def _save(self, session_id: str, text: str, on_warning: Callable[[str], None] | None) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{_file_stem(session_id)}.json"
        fd, tmp = tempfile.mkstemp(prefix=".spool-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        waiting = self.pending()
        for old in waiting[: max(0, len(waiting) - self.limit)]:
            if old != target:
                old.unlink(missing_ok=True)
                if on_warning is not None:
                    on_warning(
                        f"the qlearn spool {self.directory} holds more than "
                        f"{self.limit} runs; dropped the oldest, {old.name}"
                    )
        return target

    def replay(
        self,
        store: Store,
        ttl_days: float = DEFAULT_TTL_DAYS,
        on_warning: Callable[[str], None] | None = None,
        relearn: Callable[[PendingRun], EpisodeWrite] | None = None,
    ) -> int:
        """Write every spooled episode into ``store``, oldest first, removing each once the
        store holds it. Returns how many were newly written. An offline run's raw results
        become an episode through ``relearn`` (which learns them against the store as it is
        now); without it they keep waiting. A store error stops the replay (the remaining
        files wait for the next run) and propagates; an unreadable file is renamed
        ``*.unreadable``, and one the store refuses for its data (:class:`StoreDataError`,
        which no retry can change) ``*.unwritable``: each with one warning, and the replay
        goes on with the next file."""
        written = 0
        for path in self.pending():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:  # a run sharing this spool replayed it meanwhile
                continue
            except (OSError, ValueError) as exc:
                self._set_aside(path, ".unreadable", f"unreadable: {exc}", on_warning)
                continue
            try:
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                pushed = [
                    (int(q), float(d), [str(i) for i in ids])
                    for q, d, ids in data.get("pushed", [])
                ]
                if data.get("kind") == RUN_KIND:
                    if data.get("format") != FORMAT:
                        raise ValueError(f"unknown spool format {data.get('format')!r}")
                    run = run_from_json(data)
                    if relearn is None or (run.owner and _alive(run.owner)):
                        continue  # nobody to learn it yet, or its run is still going
                    write = relearn(run)
                    results = run.results
                else:
                    write = _episode_from_data(data)
                    results = _results_of(write)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._set_aside(path, ".unreadable", f"unreadable: {exc}", on_warning)
                continue
            try:
                if store.write_episode(write, ttl_days):
                    written += 1
                elif pushed and relearn is not None:
                    written += _write_the_rest(store, write, results, pushed, relearn, ttl_days)
            except StoreDataError as exc:
                # it would fail the same way every time, holding up every run spooled after it
                self._set_aside(path, ".unwritable", f"the store refused it: {exc}", on_warning)
                continue
            except (ValueError, KeyError, TypeError) as exc:  # its results cannot be learned
                self._set_aside(path, ".unreadable", f"unreadable: {exc}", on_warning)
                continue
            path.unlink(missing_ok=True)  # only now is everything it holds in the store
        return written

    @staticmethod
    def _set_aside(
        path: Path, suffix: str, why: str, on_warning: Callable[[str], None] | None
    ) -> None:
        """Rename a spool file that can never be replayed (kept, never deleted: it may be
        the only record of its run), with one warning; the next file is replayed."""
        aside = path.with_suffix(suffix)
        with contextlib.suppress(OSError):
            path.replace(aside)
        if on_warning is not None:
            on_warning(f"cannot replay the spooled qlearn run {path} ({why}); moved it to {aside}")


def _write_the_rest(
    store: Store,
    write: EpisodeWrite,
    results: list[list[Any]],
    pushed: Sequence[Pushed],
    relearn: Callable[[PendingRun], EpisodeWrite],
    ttl_days: float,
) -> int:
    """A spooled run whose session the store holds already: if what it holds is a checkpoint
    of the run that another run recovered (an interrupted episode with the results of the
    run's first pushes only), learn the results the checkpoint lacked, as a partial episode
    of their own (the recovered one counted as the run's episode already), so the complete
    record wins and nothing is learned twice. Returns 1 if that wrote an episode, else 0.

    Which pushes the recovered checkpoint held is told by its duration: a checkpoint keeps
    the header of its newest push, and the session recovered from it is stored with that
    header's duration. A stored session with any other duration is the run's own record
    (written after all, e.g. a write whose answer was lost): nothing is missing then."""
    session = write.session
    stored = next(
        (
            s
            for s in store.sessions(write.partition, since=session.started_at)
            if s.session_id == session.session_id
        ),
        None,
    )
    if stored is None or stored.exit_status != INTERRUPTED:
        return 0
    learned: set[str] = set()
    for _, duration, ids in sorted(pushed):
        learned.update(ids)
        if duration == stored.duration:
            break
    else:
        return 0  # not one of this run's checkpoints: the store holds the run's own record
    rest = [r for r in results if str(r[0]) not in learned]
    if not rest:
        return 0
    run = PendingRun(
        partition=write.partition,
        session_id=session.session_id + REST_SUFFIX,
        seed=session.seed,
        mode=session.mode,
        started_at=session.started_at,
        duration=session.duration,
        exit_status=session.exit_status,
        session_failed=session.exit_status in (INTERRUPTED, 3, 4),
        results=rest,
    )
    return int(store.write_episode(_as_partial(relearn(run), store), ttl_days))


def _as_partial(write: EpisodeWrite, store: Store) -> EpisodeWrite:
    """``write`` as a partial episode: its session does not advance the episode schedule
    and the agents' episode counts and ε stay as stored (the run's episode is counted by the
    recovered checkpoint's)."""
    stored = store.agent_states(write.partition)
    agents = []
    for a in write.agents:
        held = stored.get(a.agent)
        epsilon = a.epsilon if held is None or held.epsilon is None else held.epsilon
        agents.append(dataclasses.replace(a, episodes=0, epsilon=epsilon))
    return dataclasses.replace(
        write, session=dataclasses.replace(write.session, partial=True), agents=agents
    )


def _results_of(write: EpisodeWrite) -> list[list[Any]]:
    """A learned episode's results as raw results (the fields of ``TestResult``), rebuilt
    from its observations and the prioritizer's steps: verdict, durations, and the tier and
    exploration of each decision; the run's positions are not kept in an episode, so the
    results come in id order."""
    steps = {t.test_id: t for t in write.trajectories if t.agent == _PRIORITIZER}
    results: list[list[Any]] = []
    for i, o in enumerate(write.observations):
        step = steps.get(o.test_id)
        tier = None if step is None else step.action
        explored = False if step is None else step.explored
        results.append([o.test_id, o.verdict, o.duration, i, i, tier, explored, o.fixture])
    return results


def _file_stem(session_id: str) -> str:
    """One file per run: a checkpoint is replaced by the run's final spool entry."""
    return session_id if _SAFE_NAME.fullmatch(session_id) else _digest(session_id)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
