"""The local spool: episodes that could not reach the store wait here as JSON files until a
later run can write them.

A run whose store fails while the run writes saves its :class:`EpisodeWrite` (its deltas
were learned from a real snapshot, so they add up like a concurrent run's). A run whose
store is unreachable from the start had no snapshot to learn from: deltas learned from an
empty table would be wrong once added to the stored values, so it saves its raw results
instead (a :class:`PendingRun`), and the replaying run learns them against the store's
snapshot of that moment, as if the run had reached the store. Both wait in a directory of
their own store (under pytest's cache directory, keyed
by the store's password-free URL, so an episode is only ever replayed into the store it was
meant for). The next run that opens that store replays every spooled episode before it
loads its snapshot. Stores apply an episode at most once (by session id), so a replay that is
interrupted, or a spool file that outlives a successful write, is harmless: it is written
again, found already stored, and removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
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
    TrajectoryStep,
)
from .checkpoint import alive as _alive
from .checkpoint import owner_id

__all__ = ["PendingRun", "Spool", "owner_id"]

FORMAT = 1
RUN_KIND = "run"  # a spool file of raw results (no "kind": an EpisodeWrite)
#: At most this many episodes wait per store; beyond, the oldest are dropped (with a warning).
LIMIT = 100
#: The selector's pending skips were Q rows ``selector:pending:<state key>:<test id>`` before
#: schema version 3; episodes spooled then still carry them so.
_SELECTOR = "selector"
_OLD_PENDING_PREFIX = _SELECTOR + ":pending:"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def episode_to_json(write: EpisodeWrite) -> str:
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
        },
        ensure_ascii=False,
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


def run_to_json(run: PendingRun) -> str:
    return json.dumps({"format": FORMAT, "kind": RUN_KIND, **asdict(run)}, ensure_ascii=False)


def run_from_json(data: dict[str, Any]) -> PendingRun:
    fields = {k: v for k, v in data.items() if k not in ("format", "kind")}
    fields["partition"] = Partition(**fields["partition"])
    return PendingRun(**fields)


def spool_directory(base: Path, store_display_url: str) -> Path:
    """The spool of one store: ``base/<hash of its password-free URL>``."""
    digest = hashlib.sha256(store_display_url.encode("utf-8")).hexdigest()[:16]
    return base / digest


class Spool:
    """Episodes waiting for one store."""

    def __init__(self, directory: Path, limit: int = LIMIT) -> None:
        self.directory = directory
        self.limit = limit

    def pending(self) -> list[Path]:
        """Spooled episodes, oldest first."""
        try:
            files = [p for p in self.directory.iterdir() if p.suffix == ".json"]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def add(self, write: EpisodeWrite, on_warning: Callable[[str], None] | None = None) -> Path:
        """Save one episode (atomically: a crash leaves the old state or the new file, never
        half a file). Raises ``OSError`` when the spool cannot be written."""
        return self._save(write.session.session_id, episode_to_json(write), on_warning)

    def add_run(self, run: PendingRun, on_warning: Callable[[str], None] | None = None) -> Path:
        """Save an offline run's raw results, to be learned when the store is back."""
        return self._save(run.session_id, run_to_json(run), on_warning)

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
        ``*.unreadable`` and skipped."""
        written = 0
        for path in self.pending():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                if data.get("kind") == RUN_KIND:
                    if data.get("format") != FORMAT:
                        raise ValueError(f"unknown spool format {data.get('format')!r}")
                    run = run_from_json(data)
                    if relearn is None or (run.owner and _alive(run.owner)):
                        continue  # nobody to learn it yet, or its run is still going
                    write = relearn(run)
                else:
                    write = _episode_from_data(data)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                aside = path.with_suffix(".unreadable")
                path.replace(aside)
                if on_warning is not None:
                    on_warning(
                        f"cannot read the spooled qlearn run {path} ({exc}); moved it to {aside}"
                    )
                continue
            if store.write_episode(write, ttl_days):
                written += 1
            path.unlink(missing_ok=True)
        return written


def _file_stem(session_id: str) -> str:
    """One file per run: a checkpoint is replaced by the run's final spool entry."""
    return session_id if _SAFE_NAME.fullmatch(session_id) else _digest(session_id)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
