"""Keeping an episode: everything between a run's learning and durable storage, without
pytest — opening the store, replaying the spool, claiming interrupted runs, checkpoints
(local and pushed), the final write, and what to do when any of it fails.

The safety contract lives here: no store fault reaches a test (every exception is turned
into a warning and a status), and nothing learned is lost (what the store does not take is
spooled locally and written by the next run that reaches it). The plugin's hooks call the
few methods of :class:`EpisodeKeeper` and report its :attr:`~EpisodeKeeper.status` and
:attr:`~EpisodeKeeper.messages`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .session import LearningSession, TestResult
from .settings import Settings
from .store import SchemaTooNewError, Snapshot, Store, StoreError, open_store
from .store.base import CoverageSnapshot, EpisodeWrite, Partition, PendingRun
from .store.checkpoint import CheckpointPusher, owner_id
from .store.spool import Spool, spool_directory
from .store.url import StoreUrl, redact

#: pytest's exit status of an interrupted run: what a checkpoint is learned as, if the run
#: never gets to say otherwise.
INTERRUPTED = 2

#: Builds the learning session of a snapshot: ``(snapshot, seed, session_id)``.
SessionFactory = Callable[[Snapshot, int, "str | None"], LearningSession]


class StrictStoreError(Exception):
    """``--qlearn-strict``: the store could not be opened, and the run must not go on."""


class EpisodeKeeper:
    """The store side of one pytest session (on the controller; workers never open it)."""

    def __init__(
        self,
        settings: Settings,
        default_path: Path,
        make_session: SessionFactory,
        agents: Sequence[str],
    ) -> None:
        self.settings = settings
        #: The embedded SQLite file when no URL is given; its folder also holds the spool.
        self.default_path = default_path
        self.make_session = make_session
        self.agents = list(agents)
        self.store: Store | None = None
        self.display = ""
        self.status = "not opened"
        self.messages: list[str] = []
        self.spool: Spool | None = None  # where learning waits when the store is unreachable
        #: pushes the results so far into a store that outlives the runner (PostgreSQL)
        self.pusher: CheckpointPusher | None = None
        self.replayed = 0  # spooled earlier runs written at start
        self.recovered = 0  # interrupted runs claimed from the store and learned
        self.strict_error: str | None = None
        self.started_at = time.time()
        self._started = time.perf_counter()
        interval = settings.checkpoint_seconds
        self._next_checkpoint = time.monotonic() + interval if interval > 0 else math.inf
        self._checkpointed = False

    # -- start ---------------------------------------------------------------------------
    def open(self) -> tuple[Snapshot, CoverageSnapshot | None] | None:
        """Open the store, write what waited (the spool, orphaned checkpoints) and load the
        snapshot (and the coverage maps under ``--qlearn-cov``). None when the store cannot
        be used: the run then goes on offline (see :attr:`can_spool`)."""
        url = self.settings.store_url
        try:
            if url is None:
                url = StoreUrl("sqlite", str(self.default_path), "")
                self.display = f"sqlite:///{url.path}"
            else:
                self.display = url.display
            self.spool = Spool(spool_directory(self.default_path.parent / "spool", self.display))
            self.store = open_store(url, on_warning=self.warn)
            self.store.open()
            # earlier runs' learning that could not reach the store goes in first
            self.replayed = self.spool.replay(
                self.store, self.settings.ttl_days, self.warn, relearn=self.relearn
            )
            partition = self.partition
            # interrupted runs whose checkpoints only the store kept (their runner is gone)
            for run in self.store.claim_checkpoints(partition, owner_id()):
                if self.store.write_episode(self.relearn(run), self.settings.ttl_days):
                    self.recovered += 1
            snapshot = self.store.load_snapshot(partition, self.agents)
            stored = self.store.load_coverage(partition) if self.settings.coverage else None
        # Exception, not only StoreError/OSError: whatever goes wrong in the store (a driver
        # error, a bug of ours) must not break the user's test run (safety contract)
        except Exception as exc:
            if self.store is not None:
                self.store.close()
                self.store = None
            self.failed(exc, "open")
            if isinstance(exc, SchemaTooNewError):
                self.spool = None  # a newer plugin's store: nothing of ours may go into it
            return None
        self.status = f"loaded {len(snapshot.histories)} test histories"
        if self.store.outlives_runner and self.settings.checkpoint_seconds > 0:
            self.pusher = CheckpointPusher(
                self.store,
                self.settings.checkpoint_seconds,
                self.settings.hyper.update_frequency,
                journal=self.spool,  # the spool notes what was pushed (see Spool.replay)
            )
        return snapshot, stored

    @property
    def partition(self) -> Partition:
        return Partition(self.settings.project, self.settings.environment)

    @property
    def can_spool(self) -> bool:
        """Whether an offline run's results can wait locally for a later run."""
        return self.spool is not None

    def relearn(self, run: PendingRun) -> EpisodeWrite:
        """Learn an offline run's results against the store as it is now, as if that run
        had reached it (its episode number and deltas then fit the stored table)."""
        assert self.store is not None
        snapshot = self.store.load_snapshot(run.partition, self.agents)
        learning = self.make_session(snapshot, run.seed, run.session_id)
        learning.mode = run.mode
        write, _ = learning.finish(
            [TestResult(*result) for result in run.results],
            started_at=run.started_at,
            duration=run.duration,
            exit_status=run.exit_status,
            session_failed=run.session_failed,
            riskiest=0,
        )
        return write

    # -- during the run ------------------------------------------------------------------
    def checkpoint_due(self) -> bool:
        return time.monotonic() >= self._next_checkpoint

    def checkpoint(self, learning: LearningSession, results: list[TestResult]) -> None:
        """Save the results so far to the spool, as an interrupted run's: if this process is
        killed (a CI timeout, an OOM kill), the next run learns them instead of losing them.
        A run that finishes replaces or removes the file."""
        self._next_checkpoint = time.monotonic() + self.settings.checkpoint_seconds
        if self.spool is None or not results:
            return
        run = self.pending_run(learning, results, INTERRUPTED, True, owner_id())
        try:
            self.spool.add_run(run, on_warning=self.warn)
            self._checkpointed = True
        except OSError as exc:
            self._next_checkpoint = math.inf
            self.warn(f"cannot save a checkpoint of this run to {self.spool.directory}: {exc}")

    def push_due(self, ended: int) -> bool:
        """Whether the results of the ``ended`` tests so far should go to the store now."""
        return self.pusher is not None and self.pusher.due(ended)

    @property
    def pushed(self) -> int:
        """How many ended tests the pushes so far carried."""
        return 0 if self.pusher is None else self.pusher.pushed

    def push(self, learning: LearningSession, fresh: list[TestResult], ended: int) -> None:
        """Hand the store the results of the tests that ended since the last push; it
        writes them in the background (see :mod:`pytest_qlearn.store.checkpoint`)."""
        assert self.pusher is not None
        run = self.pending_run(learning, fresh, INTERRUPTED, True, owner_id())
        self.pusher.push(run, ended)

    def pending_run(
        self,
        learning: LearningSession,
        results: list[TestResult],
        exit_status: int,
        session_failed: bool,
        owner: str = "",
    ) -> PendingRun:
        """This run's raw results, to be learned by a later run that reaches the store."""
        return PendingRun(
            partition=learning.snapshot.partition,
            session_id=learning.session_id,
            seed=learning.seed,
            mode=learning.mode,
            started_at=self.started_at,
            duration=self.elapsed(),
            exit_status=exit_status,
            session_failed=session_failed,
            results=[list(result) for result in results],
            owner=owner,
        )

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    # -- end -----------------------------------------------------------------------------
    def save(
        self,
        write: EpisodeWrite,
        offline_run: Callable[[], PendingRun],
    ) -> None:
        """Write the run's episode, or keep it for later: learned (``write``) when the store
        answers and fails now, raw (``offline_run()``) when the store was never reached."""
        push_failure = None
        if self.pusher is not None:  # a push under way finishes first
            # bounded by the store's command timeout (PostgreSQL: 60 s unless configured)
            timeout = float(getattr(self.store, "command_timeout", 30.0)) + 5.0
            push_failure = self.pusher.finish(timeout)
            self.pusher = None
        if self.store is None:  # offline from the start: the results wait in the spool
            spooled = self._spool(offline_run())
            if spooled is not None:
                self.status = f"unavailable, spooled to {spooled}"
            return
        written = False
        try:
            self.store.write_episode(write, self.settings.ttl_days)
            written = True
            if push_failure is not None:  # the one warning: the final write had none
                self.warn(
                    f"{redact(str(push_failure)) or type(push_failure).__name__}; this "
                    "run's checkpoints stayed local from then on (its learning was saved)"
                )
            if self._checkpointed and self.spool is not None:
                self.spool.remove(write.session.session_id)  # the episode is safe now
            self.status = f"saved to {self.display}"
            if self.replayed:
                self.status += f" with {self.replayed} spooled earlier run(s)"
            if self.recovered:
                self.status += f" with {self.recovered} interrupted run(s) recovered from the store"
            removed = self.store.maybe_cleanup(self.settings.project, self.settings.ttl_days)
            if removed:
                self.status += f" (expired {removed} rows unused for "
                self.status += f"{self.settings.ttl_days:g} days)"
        except Exception as exc:  # a failed cleanup after the write spools nothing
            if written:
                self.failed(exc, "clean up")
            else:
                self.failed(exc, "write", self._spool(write))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- faults --------------------------------------------------------------------------
    def warn(self, message: str) -> None:
        self.messages.append(redact(message))

    def _spool(self, entry: EpisodeWrite | PendingRun) -> Path | None:
        """Keep what the store did not take (a learned write, or an offline run's raw
        results); None (and a warning) if that fails too."""
        if self.spool is None:
            return None
        try:
            if isinstance(entry, PendingRun):
                return self.spool.add_run(entry, on_warning=self.warn)
            return self.spool.add(entry, on_warning=self.warn)
        except OSError as exc:
            self.warn(f"cannot spool this run's learning to {self.spool.directory}: {exc}")
            return None

    def failed(self, exc: BaseException, during: str, spooled: Path | None = None) -> None:
        """Turn a store fault into one warning and a status (and, with ``--qlearn-strict``,
        a failed run: :class:`StrictStoreError` at start, :attr:`strict_error` later)."""
        text = redact(str(exc))
        if not isinstance(exc, (StoreError, OSError)):  # not a store fault we foresaw: say what
            text = f"internal error in the qlearn store ({type(exc).__name__}: {text})"
        if isinstance(exc, SchemaTooNewError):
            self.status = "refused: schema newer than this pytest-qlearn"
        elif during != "clean up":
            self.status = f"unavailable ({during})"
        offline = not (
            isinstance(exc, SchemaTooNewError) or self.spool is None or self.settings.strict
        )
        if during == "open" and not offline:
            message = f"{text}; running the tests in collection order, nothing will be learned"
        elif during == "open":
            message = (
                f"{text}; running the tests in collection order; this run's learning is "
                "spooled locally and saved by the next run that reaches the store"
            )
        elif spooled is not None:
            self.status = f"unavailable ({during}), spooled to {spooled}"
            message = (
                f"{text}; this run's learning is spooled to {spooled} and saved by the next "
                "run that reaches the store"
            )
        elif during == "clean up":
            message = f"{text}; this run's learning was saved, expired rows were not removed"
        else:
            message = f"{text}; this run's learning could not be saved"
        if self.settings.strict:
            self.strict_error = message
            if during == "open":
                raise StrictStoreError(message)
        self.warn(message)
