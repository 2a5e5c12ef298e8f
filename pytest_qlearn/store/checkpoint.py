"""Checkpoints of runs in progress, kept in a store that outlives the runner (PostgreSQL).

A CI runner's disk goes with the runner, so the local checkpoint (a spool file) cannot save
what a killed job learned when the store is a shared database. A long run therefore also
*pushes* its results so far into the store, in the background (:class:`CheckpointPusher`):

- **Cadence.** A push is due at the end of a test once ``qlearn_checkpoint_seconds`` have
  passed since the previous one (or since the run started) *and* at least
  ``qlearn_update_frequency`` results are new since then; each push carries only those new
  results, numbered by a sequence, so the store keeps each push once.
- **Liveness.** The owner (``host:pid``) renews a heartbeat with every push and, from the
  store's own thread, every ``beat`` seconds in between (a single test may run for an hour).
- **Orphans** (:func:`orphaned`): a checkpoint whose owner is on this host and no longer
  running, or whose heartbeat is older than :data:`STALE_BEATS` beats (at least
  :data:`MIN_STALE_SECONDS`). A later run of the same project and environment claims it
  (atomically: of concurrent claimers one gets it, and becomes its owner), learns it as an
  interrupted episode and writes it; the episode write removes the checkpoint in the same
  transaction, and is idempotent by session id, so a checkpoint is learned once whatever
  happens (the run's local checkpoint replayed too, two claimers racing, a retried run).
- **Failures** never reach a test: a push that fails stops the pushing for the rest of the
  run; the local checkpoint and the spool still hold everything.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any, Protocol

from .base import CheckpointPush, Partition, PendingRun, Store

FORMAT = 1
#: A checkpoint whose heartbeat is this many beats old is orphaned...
STALE_BEATS = 5
#: ... and never sooner than this (a database hiccup must not make a live run look dead).
MIN_STALE_SECONDS = 600.0


def owner_id() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def on_this_host(owner: str) -> bool:
    host, _, pid_text = owner.rpartition(":")
    return host == socket.gethostname() and pid_text.isdigit()


def alive(owner: str) -> bool:
    """Whether the process ``owner`` names may still be running. One on another host (a
    restored CI cache) or with this very pid (reused by a later process) is not."""
    if not on_this_host(owner):
        return False
    pid = int(owner.rpartition(":")[2])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, owned by someone else
        return True
    return True


def stale_after(beat: float) -> float:
    return max(STALE_BEATS * beat, MIN_STALE_SECONDS)


def orphaned(owner: str, heartbeat: float, beat: float, now: float) -> bool:
    """Whether a checkpoint's run is over: its process gone (on this host), or silent for
    longer than :func:`stale_after` its beat (anywhere)."""
    if on_this_host(owner) and not alive(owner):
        return True
    return now - heartbeat > stale_after(beat)


def header_json(run: PendingRun) -> str:
    """A run's header (everything but the results), as the store keeps it. ASCII JSON: a NUL
    or a lone surrogate in a test id travels as a ``\\u`` escape, which every store takes."""
    data = asdict(replace(run, results=[]))
    del data["results"]
    return json.dumps({"format": FORMAT, **data})


def results_json(run: PendingRun) -> str:
    """The results of a push, as ASCII JSON (see :func:`header_json`)."""
    return json.dumps(run.results)


def claimed_run(header: str, chunks: list[str], claimer: str) -> PendingRun:
    """The run a claimed checkpoint holds: its header with every push's results, in push
    order (a test that appears twice keeps its later result)."""
    data: dict[str, Any] = json.loads(header)
    if data.pop("format", None) != FORMAT:
        raise ValueError("unknown checkpoint format")
    data["partition"] = Partition(**data["partition"])
    results: list[list[Any]] = []
    for chunk in chunks:
        results.extend(json.loads(chunk))
    data["results"] = results
    data["owner"] = claimer
    return PendingRun(**data)


class PushJournal(Protocol):
    """Where a run notes what it pushed (the local spool): if another run recovers the
    checkpoint while this run's complete record waits in the spool, the spool can tell which
    results the store learned from the checkpoint, and learn the rest."""

    def note_push(
        self, session_id: str, seq: int, duration: float, test_ids: Sequence[str]
    ) -> None: ...


class CheckpointPusher:
    """Pushes a run's new results into its store now and then, without waiting for it.

    ``due`` is asked at the end of every test with how many tests have ended so far;
    ``push`` hands the store the results of the tests that ended since the last push, and
    notes them in the ``journal`` (see :class:`PushJournal`).
    """

    def __init__(
        self, store: Store, interval: float, min_new: int, journal: PushJournal | None = None
    ) -> None:
        self.store = store
        self.journal = journal
        self.interval = interval
        self.min_new = max(1, min_new)
        self.seq = 0
        self.pushed = 0  # tests ended (in the caller's count) up to the last push
        self.next_at = time.monotonic() + interval
        self.pending: concurrent.futures.Future[None] | None = None
        #: Why pushing stopped (the first failure), or None.
        self.failure: BaseException | None = None

    def due(self, ended: int) -> bool:
        return (
            self.failure is None
            and ended - self.pushed >= self.min_new
            and time.monotonic() >= self.next_at
        )

    def push(self, run: PendingRun, ended: int) -> None:
        """Push ``run`` (its results: those of tests ``pushed..ended``). A push still under
        way is never queued behind: this turn is skipped (its results go with the next)."""
        self.next_at = time.monotonic() + self.interval
        if not self._settle(block=False):
            return
        self.seq += 1
        self.pushed = ended
        if self.journal is not None:  # noted before it is sent: it may land, or not
            ids = [str(result[0]) for result in run.results]
            self.journal.note_push(run.session_id, self.seq, run.duration, ids)
        self.pending = self.store.push_checkpoint_soon(CheckpointPush(run, self.seq, self.interval))

    def _settle(self, *, block: bool, timeout: float | None = None) -> bool:
        """Whether no push is under way (after waiting up to ``timeout`` if ``block``);
        records the failure of the one that ended."""
        pending = self.pending
        if pending is None:
            return self.failure is None
        if not block and not pending.done():
            return False
        try:
            pending.result(timeout)
        except concurrent.futures.TimeoutError:
            return False
        except Exception as exc:
            self.failure = exc
        self.pending = None
        return self.failure is None

    def finish(self, timeout: float) -> BaseException | None:
        """Wait for a push under way; returns why pushing failed, if it did. A push still
        under way after ``timeout`` makes the store give up for the rest of the run: the final
        write then fails at once (and is spooled) instead of waiting a timeout of its own."""
        self._settle(block=True, timeout=timeout)
        if self.pending is not None:
            self.failure = self.failure or TimeoutError(
                f"a checkpoint push to the qlearn store did not finish within {timeout:g} s"
            )
            self.store.give_up(f"a checkpoint push did not finish within {timeout:g} s")
        self.pending = None
        return self.failure
