"""The live plugin object of an enabled run: :class:`QLearnPlugin` translates pytest's hooks
into the engine's episode (rank at collection, fold each test's reports, learn and report at
the session end) and hands the keeping of the episode to :class:`~.keeping.EpisodeKeeper`.

Imported only when qlearn is enabled: :mod:`pytest_qlearn.plugin`, the entry point, stays
light for every pytest run that has the plugin installed but off. Under pytest-xdist only the
controller opens the store: it hands the snapshot and the seed to the workers, which compute
the identical order, and it learns from the reports the workers send back.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import budget as qbudget
from . import junit
from . import reruns as qreruns
from .agents import coverage_tracer as ct
from .agents import flaky_hunter as fh
from .agents import prioritizer as prio
from .agents import selector as sel
from .agents.registry import AgentRegistry
from .changes import awareness as change_awareness
from .changes.digests import file_digests, relative_key
from .engine.history import FAILED, PASSED, SKIPPED
from .engine.qlearner import freeze_run, unfreeze_run
from .engine.rewards import RewardCalculator
from .keeping import EpisodeKeeper, StrictStoreError
from .ordering import ScopedGroups
from .plugin import frozen_key, plugin_key
from .reports import ReportContext, build_document, write_reports
from .reports import terminal as report
from .reports.text import coverage_facts
from .session import EpisodeSummary, LearningSession, Ranking, TestResult, default_registry
from .settings import Settings
from .store import Snapshot
from .store.base import CoverageSnapshot, Partition
from .store.url import POSTGRES_SCHEME

if TYPE_CHECKING:
    from . import coverage_plugin as qcov

PLUGIN_NAME = "qlearn-plugin"
WORKER_PLUGIN_NAME = "qlearn-worker-decisions"
WORKERINPUT_KEY = "qlearn"
_FAILED_SESSION = (
    pytest.ExitCode.INTERRUPTED,
    pytest.ExitCode.INTERNAL_ERROR,
    pytest.ExitCode.USAGE_ERROR,
)


class _WorkerDecisions:
    """On a pytest-xdist worker only: attach each test's decision to its reports, so the
    controller learns what the worker decided. (A separate plugin object, so runs without
    xdist do not pay for a hook wrapper around every report.)"""

    def __init__(self, plugin: QLearnPlugin) -> None:
        self.plugin = plugin

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        # the first report carries the reason too, for the controller's "why"
        info = self.plugin.decision_info(item.nodeid, explain=call.when == "setup")
        if info is not None:
            rep.qlearn = info  # type: ignore[attr-defined]
        return rep


@dataclass(slots=True)  # one per test: no per-instance __dict__
class _Fold:
    """setup + call + teardown of one test, folded into one record."""

    index: int
    position: int
    tier: int | None
    explored: bool
    verdict: str | None = None
    duration: float = 0.0
    fixture: float = 0.0  # setup + teardown: what ``auto`` scope weighs against a split
    why: str | None = None  # on a pytest-xdist controller: the worker's reason, in words


# What pytest's cache provider writes into a cache directory it creates, so that neither git
# nor backup tools pick it up.
_CACHE_SUPPORT = {
    ".gitignore": "# Created by pytest-qlearn automatically.\n*\n",
    "CACHEDIR.TAG": "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by pytest-qlearn.\n"
    "# For information about cache directory tags, see:\n"
    "#\thttps://bford.info/cachedir/spec.html\n",
    "README.md": "# pytest cache directory #\n\nThis directory holds pytest-qlearn's store "
    "(`d/qlearn/`) while pytest's cache provider is off (`-p no:cacheprovider`).\n"
    "**Do not** commit this to version control.\n",
}


def default_store_path(config: pytest.Config) -> Path:
    """The default SQLite store: in pytest's cache directory, so `pytest --cache-clear` and a
    CI cache of `.pytest_cache` cover it. With the cache provider off (`-p no:cacheprovider`)
    the same place, ``<rootdir>/.pytest_cache/d/qlearn/``, marked as pytest marks it."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("qlearn")) / "qlearn.db"
    cache_dir = config.rootpath / ".pytest_cache"
    try:
        cache_dir.mkdir(exist_ok=True)
        for name, text in _CACHE_SUPPORT.items():
            if not (cache_dir / name).exists():
                (cache_dir / name).write_text(text, encoding="utf-8")
    except OSError:  # read-only checkout: the store reports it when it tries to open
        pass
    return cache_dir / "d" / "qlearn" / "qlearn.db"


class QLearnPlugin:
    """One pytest session's lifecycle: each hook translates what pytest reports into the
    learning session's terms. Keeping the episode (store, spool, checkpoints, recovery) is
    the :class:`~pytest_qlearn.keeping.EpisodeKeeper`'s job; workers never open the store."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.is_worker = hasattr(config, "workerinput")
        self.mode = "observe" if settings.observe else "reorder"
        self.keeper = EpisodeKeeper(
            settings, default_store_path(config), self._learning_session, self._agents()
        )
        self.learning: LearningSession | None = None
        self.ranking: Ranking | None = None
        self.positions: dict[str, int] = {}
        self.indexes: dict[str, int] = {}
        self.folds: dict[str, _Fold] = {}
        self.summary: EpisodeSummary | None = None
        self.partial: str | None = None  # why this run is a partial episode, if it is
        #: the command-line narrowing of this run when earlier runs narrowed the same way (a
        #: job's normal run, so a full episode)
        self.recurring_narrowing: str | None = None
        self.started = time.perf_counter()
        self.first_failure_after: float | None = None
        self._ended: list[str] = []  # tests whose teardown was reported, in that order
        self._snapshot_dir: Path | None = None
        #: ``--qlearn-cov`` for this session, once the store's maps are loaded.
        self.coverage: qcov.CoverageRun | None = None
        self.coverage_line = ""
        #: Tests deselected before ranking (-k, -m, --deselect, --sw, other plugins).
        self.deselected_before = 0
        self._ranked = False
        #: This run's change awareness (static analysis of what changed since last episode).
        self.awareness: change_awareness.ChangeAwareness | None = None
        #: Why a --qlearn-budget selects nothing this run (-k, -m, --lf, node ids), or None.
        self.budget_off = qbudget.narrowed_by(config) if settings.budget is not None else None
        #: Reruns (``--qlearn-reruns``) or the observer of pytest-rerunfailures, when wanted.
        self.reruns: qreruns.RerunPlugin | None = None
        #: Whether this run froze the garbage collector's view (see :meth:`_freeze`).
        self._frozen = False
        #: The store being opened in the background (see :meth:`_open_in_background`):
        #: the thread and the box its outcome lands in.
        self._opening: tuple[threading.Thread, list[Any]] | None = None
        self._registry_built: AgentRegistry | None = None

    # -- start and stop ------------------------------------------------------------------
    def start(self) -> None:
        if self.is_worker:
            self._start_worker()
        else:
            self._start_controller()
        if qreruns.wanted(self.config, self.settings.reruns):
            self.reruns = qreruns.RerunPlugin(self, self.settings.reruns)
            self.config.pluginmanager.register(self.reruns, qreruns.PLUGIN_NAME)
        if self.learning is not None and self._opening is None:
            self._freeze()

    def _freeze(self) -> None:
        """Move what exists now — above all the loaded snapshot and Q-tables, tens of
        thousands of long-lived objects — out of the cyclic garbage collector's reach for the
        run (:func:`gc.freeze`): otherwise every full collection the tests' allocations
        trigger walks them all again. Only when the collector is on and nobody froze anything
        yet (the process's owner may use freezing for its own ends); undone at the session's
        end (:meth:`_unfreeze`). Freezing never frees or keeps anything: objects are still
        freed by reference counting; only cycles among them wait for the unfreeze."""
        if freeze_run():
            self._frozen = True

    def _unfreeze(self) -> None:
        """Undo :meth:`_freeze`: after pytest's final garbage collections when the
        cleanup of :func:`~pytest_qlearn.plugin.pytest_cmdline_main` is there to do it
        (the objects frozen are the ones alive at configuration time — pytest's, the
        plugins', the conftests' — never a test's), at once otherwise."""
        if self._frozen:
            self._frozen = False
            deferred = self.config.stash.get(frozen_key, None)
            if deferred is not None:
                deferred.append(True)
            else:
                unfreeze_run()

    def _start_worker(self) -> None:
        workerinput: dict[str, Any] = getattr(self.config, "workerinput", {})
        data = workerinput.get(WORKERINPUT_KEY)
        if not data:
            return  # the controller has no snapshot (store unavailable): collection order
        self.mode = data.get("mode", self.mode)  # "observe" when the controller is offline
        snapshot = Snapshot.from_json(Path(data["snapshot"]).read_text(encoding="utf-8"))
        self.learning = self._learning_session(snapshot, int(data["seed"]), data["session_id"])
        if data.get("coverage"):
            stored = CoverageSnapshot.from_json(Path(data["coverage"]).read_text(encoding="utf-8"))
            self._start_coverage(stored, snapshot.file_hashes)

    def _start_controller(self) -> None:
        for message in self.settings.warnings:
            self.keeper.warn(message)
        if self._opens_in_background():
            self._open_in_background()
            return
        try:
            opened = self.keeper.open()
        except StrictStoreError as exc:
            raise pytest.UsageError(f"pytest-qlearn (--qlearn-strict): {exc}") from None
        self._opened(opened)

    def _opened(
        self,
        opened: tuple[Snapshot, CoverageSnapshot | None] | None,
        registry: AgentRegistry | None = None,
    ) -> None:
        """Start learning from what :meth:`EpisodeKeeper.open` returned (None: offline)."""
        if opened is None:
            if self.keeper.can_spool:
                self._start_offline(registry)
            return
        snapshot, stored = opened
        self.learning = self._learning_session(snapshot, self._seed(snapshot), None, registry)
        if stored is not None:
            self._start_coverage(stored, snapshot.file_hashes)

    def _opens_in_background(self) -> bool:
        """Whether the store is opened and its snapshot loaded in a thread while pytest
        collects: for PostgreSQL, whose connection, migration check and reads are mostly
        waiting on the network. Not with ``--qlearn-strict`` (a store that cannot be opened
        must stop the run before it starts) nor ``--qlearn-cov`` (the coverage maps are
        needed while collecting); never for SQLite (its reads are CPU work the thread would
        only take from collection)."""
        url = self.settings.store_url
        return (
            url is not None
            and url.scheme == POSTGRES_SCHEME
            and not self.settings.strict
            and not self.settings.coverage
        )

    def _open_in_background(self) -> None:
        """Start :meth:`EpisodeKeeper.open` in a thread; :meth:`_await_open` takes its
        outcome wherever the learning state is first needed. The agents' registry is built
        here, on the main thread (its hook is pytest's): the thread only talks to the store,
        and an earlier run it must learn again (spooled, or an orphaned checkpoint) is
        learned with that registry. A fault is turned into the same warning and offline run
        as in the foreground (:meth:`EpisodeKeeper.open` catches it)."""
        registry = self._registry()

        def make_session(snapshot: Snapshot, seed: int, session_id: str | None) -> LearningSession:
            return self._learning_session(snapshot, seed, session_id, registry)

        self.keeper.make_session = make_session
        self._registry_built = registry
        box: list[Any] = []

        def work() -> None:
            try:
                box.append(self.keeper.open())
            except BaseException as exc:  # reported by _await_open
                box.append(exc)

        thread = threading.Thread(target=work, name="pytest-qlearn-open", daemon=True)
        self._opening = (thread, box)
        # frozen now, before the thread loads anything: the snapshot is ready only after
        # collection, and freezing then would take the collected tests' objects out of the
        # collector's reach for the run too (a test may rely on collecting one of them)
        self._freeze()
        thread.start()

    def _await_open(self) -> None:
        """Wait for the store opened in the background, then start learning as
        :meth:`_start_controller` does in the foreground. A no-op otherwise."""
        opening = self._opening
        if opening is None:
            return
        thread, box = opening
        thread.join()  # (interrupted, it is waited for again by close())
        self._opening = None
        self.keeper.make_session = self._learning_session
        outcome = box[0] if box else RuntimeError("the store's opening thread ended early")
        if isinstance(outcome, BaseException):  # not an Exception: keeper.open let it through
            keeper = self.keeper
            if keeper.store is not None:
                keeper.store.close()
                keeper.store = None
            keeper.failed(outcome, "open")
            outcome = None
        registry, self._registry_built = self._registry_built, None
        self._opened(outcome, registry)

    def _agents(self) -> list[str]:
        """The agents whose Q-tables a run loads."""
        return [
            prio.NAME,
            sel.NAME,
            *([ct.NAME] if self.settings.coverage else []),
            *([fh.NAME] if qreruns.wanted(self.config, self.settings.reruns) else []),
        ]

    def _start_coverage(self, stored: CoverageSnapshot, file_hashes: dict[str, str]) -> None:
        from . import coverage_plugin as qcov  # coverage.py loads only under --qlearn-cov

        assert self.learning is not None
        self.coverage = qcov.CoverageRun(
            self.config, stored, dict(file_hashes), learns=not self.is_worker
        )
        self.learning.previous_coverage_percent = stored.last_percent
        self.config.pluginmanager.register(self.coverage, qcov.PLUGIN_NAME)

    def _start_offline(self, registry: AgentRegistry | None = None) -> None:
        """The store cannot be reached: keep collection order (observe mode) and rank from an
        empty snapshot for this run's report; the raw results are spooled, and the next run
        that reaches the store learns them against its table (see
        :meth:`~pytest_qlearn.keeping.EpisodeKeeper.relearn`)."""
        self.mode = "observe"
        snapshot = Snapshot(Partition(self.settings.project, self.settings.environment))
        seed = self.settings.seed
        if seed is None:  # also for "last": no earlier run is readable now
            seed = random.SystemRandom().randrange(2**32)
        self.learning = self._learning_session(snapshot, seed, None, registry)

    def _seed(self, snapshot: Snapshot) -> int:
        if self.settings.seed is not None:
            return self.settings.seed
        if self.settings.seed_last:
            if snapshot.recent_sessions:
                return snapshot.recent_sessions[0].seed
            self.keeper.warn("--qlearn-seed last: no earlier run is stored, using a fresh seed")
        return random.SystemRandom().randrange(2**32)

    def _learning_session(
        self,
        snapshot: Snapshot,
        seed: int,
        session_id: str | None,
        registry: AgentRegistry | None = None,
    ) -> LearningSession:
        if registry is None:
            registry = self._registry()
        return LearningSession(
            snapshot,
            seed=seed,
            rewards=RewardCalculator(self.settings.reward_weights),
            registry=registry,
            mode=self.mode,
            session_id=session_id,
        )

    def _registry(self) -> AgentRegistry:
        registry = default_registry(changes=self.settings.hyper_changes)
        for name, hyper in self.settings.agent_hyper.items():
            if name in registry:
                registry.with_hyper(name, hyper)
        self.config.hook.pytest_qlearn_register_agents.call_historic(kwargs={"registry": registry})
        unknown = sorted(set(self.settings.agent_hyper) - {t.name for t in registry.types()})
        if unknown:
            raise pytest.UsageError(
                f"pytest-qlearn: qlearn_agent_hyperparameters names unknown agents {unknown}; "
                f"known agents: {', '.join(t.name for t in registry.types())}"
            )
        return registry

    def close(self) -> None:
        self._await_open()  # the thread must be done with the store before it is closed
        self._unfreeze()
        # the per-test records go with the session, not with the plugin object
        self.folds, self.positions, self.indexes, self._ended = {}, {}, {}, []
        self.learning = self.ranking = None
        if self.coverage is not None:
            self.coverage.close()
        self.keeper.close()
        if self._snapshot_dir is not None:
            shutil.rmtree(self._snapshot_dir, ignore_errors=True)
            self._snapshot_dir = None

    # -- pytest-xdist ------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """Controller: hand each worker the snapshot file and the seed (workers must never
        open the store, and must all compute the same order)."""
        self._await_open()
        if self.learning is None:
            return
        if self._snapshot_dir is None:
            self._snapshot_dir = Path(tempfile.mkdtemp(prefix="qlearn-"))
            (self._snapshot_dir / "snapshot.json").write_text(
                self.learning.snapshot_json(), encoding="utf-8"
            )
            if self.coverage is not None:
                (self._snapshot_dir / "coverage.json").write_text(
                    self.coverage.stored.to_json(), encoding="utf-8"
                )
        node.workerinput[WORKERINPUT_KEY] = {
            "snapshot": str(self._snapshot_dir / "snapshot.json"),
            "coverage": "" if self.coverage is None else str(self._snapshot_dir / "coverage.json"),
            "seed": self.learning.seed,
            "session_id": self.learning.session_id,
            "mode": self.mode,
        }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Controller: take the budget's selection from the worker that reports it."""
        data = getattr(node, "workeroutput", {}).get(qbudget.WORKEROUTPUT_KEY)
        if data and self.learning is not None and self.learning.selection is None:
            self.learning.selection = sel.Selection.from_json(data)

    # -- reporting at start ----------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if self.is_worker:
            return []
        self._await_open()  # the header says what was loaded (not shown with -q)
        budget, off = self.settings.budget, self.budget_off
        if off is not None:
            off += " narrows the run"
        elif self.learning is None:
            off = "nothing learned to select with"
        observe = self.mode == "observe"
        notes = (
            []
            if budget is None
            else [
                report.budget_header(
                    budget.text, off, observe, qbudget.project_markexpr(self.config)
                )
            ]
        )
        if self.coverage is not None:
            notes.append(self.coverage.header())
        elif self.settings.coverage:
            notes.append("qlearn: coverage features are off: the store could not be read")
        keeper = self.keeper
        if self.learning is None or keeper.store is None:
            return [f"qlearn: store {keeper.display} {keeper.status}; collection order", *notes]
        return [
            report.header_line(
                prio.NAME, self.learning.seed, self.learning.epsilon, keeper.display, self.mode
            ),
            *notes,
        ]

    # -- ordering (called by the module-level hooks above) -----------------------------------
    def deselected(self, items: list[pytest.Item]) -> None:
        if not self._ranked:  # -k, -m, --deselect, --sw or another plugin narrowed the run
            project = qbudget.project_markexpr(self.config)
            if project:  # the ini file's -m: the project's normal run, not a narrowed one
                normal = {id(item) for item in qbudget.deselected_by_project(items, project)}
                items = [item for item in items if id(item) not in normal]
            prefixes = qbudget.project_deselect_prefixes(self.config)
            if prefixes:  # the ini file's --deselect: the same
                items = [item for item in items if not item.nodeid.startswith(prefixes)]
            self.deselected_before += len(items)

    def rank_items(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        self._ranked = True
        self._await_open()
        if self.learning is None or not items:
            return
        self.awareness = self._change_awareness(config, items)
        impacts = self.awareness.impacts
        if self.coverage is not None:
            self.coverage.prepare(self.learning, items)
            impacts = change_awareness.refine_with_coverage(
                impacts, self.learning.covering_changed.keys()
            )
        self.learning.impacts = impacts
        self.learning.proximity = self.awareness.proximity
        self.learning.change_reasons = self.awareness.reasons
        self.learning.reverted = self.awareness.reverted
        # each node id is split once: the refs and the fixture-scope scan share the groups
        refs = [
            prio.TestRef(item.nodeid, *_groups(item), index) for index, item in enumerate(items)
        ]
        ranking = self.learning.rank(
            refs, self.settings.order_scope, _duration_floor(config), _scoped_groups(items, refs)
        )
        self.ranking = ranking
        self.indexes = {ref.test_id: ref.index for ref in refs}
        if self.mode == "reorder":
            original = list(items)
            items[:] = [original[ref.index] for ref in ranking.order]
        else:
            self.positions = {ref.test_id: pos for pos, ref in enumerate(ranking.order)}
        if self.settings.budget is not None and self.budget_off is None:
            selection = qbudget.apply(
                self.learning,
                self.settings.budget,
                self.settings.full_run_every,
                config,
                items,
                [ref.test_id for ref in ranking.order],
                deselect=self.mode == "reorder",
            )
            workeroutput = getattr(config, "workeroutput", None)
            if workeroutput is not None:  # tell the controller (every worker selects the same)
                workeroutput[qbudget.WORKEROUTPUT_KEY] = selection.to_json()
        config.hook.pytest_qlearn_ranking(
            config=config,
            order=[ref.test_id for ref in ranking.order],
            decisions=ranking.decisions,
        )

    def _change_awareness(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> change_awareness.ChangeAwareness:
        """Which of ``items`` reach code changed since the last episode (on by default)."""
        test_ids = [item.nodeid for item in items]
        return self._analyse_changes(config, _test_files(items, config.rootpath), test_ids)

    def _controller_awareness(
        self, config: pytest.Config, results: Sequence[TestResult]
    ) -> change_awareness.ChangeAwareness:
        """On a pytest-xdist controller, which collects nothing: the workers' change analysis
        again (the same checkout, stored digests and cache), for the summary's change line."""
        test_ids = [r.test_id for r in results]
        return self._analyse_changes(config, {t.split("::", 1)[0] for t in test_ids}, test_ids)

    def _analyse_changes(
        self, config: pytest.Config, test_files: set[str], test_ids: list[str]
    ) -> change_awareness.ChangeAwareness:
        assert self.learning is not None
        histories = self.learning.snapshot.histories

        def last_passed() -> dict[str, int | tuple[int, ...]]:
            """The known failures among ``test_ids`` -> the episodes of their last passing
            streak, newest first."""
            found: dict[str, int | tuple[int, ...]] = {}
            for test_id in test_ids:
                history = histories.get(test_id)
                streak = () if history is None else history.passing_streak()
                if streak:
                    found[test_id] = streak
            return found

        return change_awareness.analyse(
            config.rootpath,
            test_files,
            test_ids,
            self.learning.snapshot.file_hashes,
            # pytest-xdist workers read the cache too (the previous versions' definitions and
            # episodes); only the controller writes it, after the workers are done
            default_store_path(config).parent / "impact.json",
            last_passed,
        )

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._await_open()
        if self.mode == "reorder":
            # the order actually used, after --ff, pytest-order & co. had their say
            self.positions = {item.nodeid: pos for pos, item in enumerate(session.items)}
        if self.ranking is not None and junit.wanted(session.config):
            junit.add_properties(session.items, self.ranking.decisions, self.indexes)

    def decision_info(self, nodeid: str, explain: bool = False) -> list[Any] | None:
        """[collection index, run position, tier, explored] of a test this run ranked; with
        ``explain``, also why it runs where it does (the report's "why", in words)."""
        ranking = self.ranking
        if ranking is None:
            return None
        decision = ranking.decisions.get(nodeid)
        info: list[Any] = [
            self.indexes.get(nodeid, -1),
            self.positions.get(nodeid, -1),
            None if decision is None else decision.tier,
            False if decision is None else decision.explored,
        ]
        if explain and self.learning is not None:
            info.append(self.learning.reason(nodeid))
        return info

    # -- results -----------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # pytest-rerunfailures reports earlier attempts as "rerun"; the last attempt decides.
        # Runs for every report: each attribute is read once (``failed``/``skipped`` are
        # properties over ``outcome``).
        outcome: str = report.outcome  # pytest-rerunfailures adds "rerun"
        if self._opening is not None:  # a run that never ranked (no collection hook)
            self._await_open()
        if self.is_worker or self.learning is None or outcome == "rerun":
            return
        nodeid = report.nodeid
        fold = self.folds.get(nodeid)
        if fold is None:
            fold = self._first_fold(report)
            self.folds[nodeid] = fold
        when = report.when
        duration = report.duration
        fold.duration += duration
        if when != "call":
            fold.fixture += duration
        if outcome == "failed":
            fold.verdict = FAILED
            if self.first_failure_after is None:
                self.first_failure_after = time.perf_counter() - self.started
        elif outcome == "skipped":
            if fold.verdict is None and when in ("setup", "call"):
                fold.verdict = SKIPPED
        elif when == "call" and fold.verdict is None:
            fold.verdict = PASSED
        if when != "teardown":
            return
        keeper = self.keeper
        if keeper.checkpoint_due():
            keeper.checkpoint(self.learning, self._results())
        if keeper.pusher is not None:
            self._ended.append(nodeid)
            if keeper.push_due(len(self._ended)):
                fresh = self._results(self._ended[keeper.pushed :])
                keeper.push(self.learning, fresh, len(self._ended))

    def _first_fold(self, report: pytest.TestReport) -> _Fold:
        """The record of a test's first report: its decision from this run's ranking, or
        (on a pytest-xdist controller, which ranks nothing) the one riding on the report."""
        arrival = len(self.folds)
        ranking = self.ranking
        if ranking is not None:
            nodeid = report.nodeid
            decision = ranking.decisions.get(nodeid)
            index = self.indexes.get(nodeid, -1)
            position = self.positions.get(nodeid, -1)
            return _Fold(
                index=index if index >= 0 else arrival,
                position=position if position >= 0 else arrival,
                tier=None if decision is None else decision.tier,
                explored=False if decision is None else bool(decision.explored),
            )
        info = getattr(report, "qlearn", None) or [-1, -1, None, False]
        return _Fold(
            index=info[0] if info[0] >= 0 else arrival,
            position=info[1] if info[1] >= 0 else arrival,
            tier=info[2],
            explored=bool(info[3]),
            why=info[4] if len(info) > 4 else None,
        )

    def _results(self, test_ids: Iterable[str] | None = None) -> list[TestResult]:
        """The folded results of ``test_ids`` (all tests when None) that have a verdict."""
        folds = self.folds
        return [
            TestResult(
                test_id,
                fold.verdict,
                fold.duration,
                fold.index,
                fold.position,
                fold.tier,
                fold.explored,
                fold.fixture,
            )
            for test_id in (folds if test_ids is None else test_ids)
            if (fold := folds[test_id]).verdict is not None
        ]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._await_open()
        if self.is_worker or self.learning is None:
            return
        results = self._results()
        keeper = self.keeper
        if not results:
            keeper.status = "nothing ran, nothing learned"
            return
        coverage_write, percent = None, None
        if self.coverage is not None:
            coverage_write, percent = self.coverage.learn(self.learning)
            for message in self.coverage.messages:
                keeper.warn(message)
        narrowing = qbudget.narrowing_key(session.config, self.deselected_before)
        partial = self._partial(session, narrowing)
        learning = self.learning
        if self.ranking is None:  # a pytest-xdist controller: the workers ranked and said why
            learning.worker_reasons = {t: f.why for t, f in self.folds.items() if f.why}
            if self.awareness is None:  # what they found changed, for the summary's line
                self.awareness = self._controller_awareness(session.config, results)
        write, summary = learning.finish(
            results,
            started_at=keeper.started_at,
            duration=keeper.elapsed(),
            exit_status=int(exitstatus),
            session_failed=exitstatus in _FAILED_SESSION,
            riskiest=5 if self._detailed_report(session.config) else 0,
            coverage_percent=percent,
            partial=partial is not None,
            narrowing=narrowing,
            untimed=frozenset() if self.coverage is None else self.coverage.traced_ids(),
            reruns=() if self.reruns is None else self.reruns.records(),
        )
        self.summary = summary
        self.partial = partial
        # what the test files and the code they import look like now, so the next run can
        # tell what changed
        root = session.config.rootpath
        test_files = {r.test_id.split("::", 1)[0] for r in results}
        awareness = self.awareness
        if awareness is None or awareness.index is None:  # an xdist controller collects nothing
            awareness = change_awareness.analyse(
                root, test_files, (), {}, default_store_path(session.config).parent / "impact.json"
            )
        # the analysis hashed the test files already; only what it could not read is hashed
        hashes = file_digests({root / path for path in test_files - awareness.digests.keys()}, root)
        hashes.update(awareness.digests)
        awareness.save(self.learning.episode)
        if self.coverage is not None:
            hashes.update(self.coverage.file_hashes_now())  # and the code the tests cover
            write.coverage = coverage_write
            self.coverage_line = self.coverage.summary(percent)
            summary.coverage = self.coverage.report(
                percent, self.learning.previous_coverage_percent
            )
        write.file_hashes = sorted(hashes.items())
        failed = exitstatus in _FAILED_SESSION
        keeper.save(write, lambda: keeper.pending_run(learning, results, int(exitstatus), failed))
        # the run's learning is done: let its tables go before pytest's final gc.collect()
        self.learning = None
        self.ranking = None
        self.folds.clear()
        self._unfreeze()
        if self.settings.report_paths or self.settings.step_summary is not None:
            context = ReportContext(
                self.settings.project,
                self.settings.environment,
                keeper.display,
                keeper.status,
                warnings=tuple(keeper.messages),
            )
            write_reports(
                build_document(summary, context),
                self.settings.report_paths,
                self.settings.step_summary,
                keeper.warn,
            )
        if keeper.strict_error is not None:
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def _partial(self, session: pytest.Session, narrowing: str | None) -> str | None:
        """Why this run is a partial episode (it learns, but does not advance ε or the
        episode number), or None for a full one.

        A run narrowed on the command line exactly as one of the recent runs was is a CI
        job's normal run (``pytest -m "not slow"`` in every pipeline), not an exception: a
        full episode. Otherwise such a job would never advance the schedule: ε would never
        decay and nothing could compare one episode's code with the next."""
        stopped = bool(session.shouldfail or session.shouldstop)
        narrowed = qbudget.narrowed_by(session.config)
        if narrowed is not None:
            reason = f"{narrowed} narrowed the run"
        elif self.deselected_before:
            reason = f"{self.deselected_before} test(s) were deselected"
        elif stopped:
            return "stopped early by -x, --maxfail or a plugin"
        else:
            return None
        assert self.learning is not None
        if (
            not stopped
            and narrowing is not None
            and any(s.narrowing == narrowing for s in self.learning.snapshot.recent_sessions)
        ):
            self.recurring_narrowing = narrowing
            return None
        return reason

    def _detailed_report(self, config: pytest.Config) -> bool:
        return bool(
            self.settings.report_terminal
            or self.settings.report_paths
            or self.settings.step_summary is not None
        )

    def pytest_terminal_summary(
        self, terminalreporter: Any, exitstatus: int, config: pytest.Config
    ) -> None:
        if self.is_worker:
            return
        self._await_open()
        for message in self.keeper.messages:
            terminalreporter.write_line(f"qlearn: warning: {message}", yellow=True)
        summary = self.summary
        if summary is None:
            return
        verbosity = config.get_verbosity()
        notes = []
        change_line = "" if self.awareness is None else self.awareness.summary()
        if change_line:
            notes.append(f"qlearn: {change_line}")
        if self.partial is not None:
            notes.append(
                f"qlearn: partial run ({self.partial}): learned from the tests that ran; "
                "the episode count and ε stay"
            )
        elif self.recurring_narrowing is not None:
            notes.append(
                f"qlearn: narrowed as in earlier runs ({self.recurring_narrowing}): "
                "this job's normal run, a full episode"
            )
        if verbosity < 0 and self.settings.budget is not None and self.budget_off is not None:
            # -q hides the header, which says so: a budget asked for and not applied
            notes.append(
                report.budget_header(
                    self.settings.budget.text, f"{self.budget_off} narrows the run"
                )
            )
        # The detailed report only when asked for (--qlearn-report, with or without a file);
        # like pytest's own summary, the short account in every mode but -qq, last.
        if self.settings.report_terminal or self.settings.report_paths:
            terminalreporter.write_sep("-", "qlearn report")
            for line in report.detail_lines(summary, self.keeper.status):
                terminalreporter.write_line(line)
            for line in report.budget_lines(summary.budget):
                terminalreporter.write_line(line)
            if summary.coverage is not None:
                for label, value in coverage_facts(summary.coverage.as_dict()):
                    terminalreporter.write_line(f"coverage, {label}: {value}")
            if self.first_failure_after is not None:
                terminalreporter.write_line(
                    f"first failure reported after {self.first_failure_after:.2f}s of wall time"
                )
        if verbosity < -1:
            return
        for line in notes:
            terminalreporter.write_line(line)
        terminalreporter.write_line(report.summary_line(summary, self.keeper.status))
        if summary.budget is not None:
            terminalreporter.write_line(report.budget_line(summary.budget))
        if self.coverage_line:
            terminalreporter.write_line(f"qlearn: {self.coverage_line}")


def _test_files(items: Iterable[pytest.Item], root: Path) -> set[str]:
    """The store keys of the files ``items`` live in: each distinct path is made relative
    once (a module's tests share one path; ``relative_key`` per test cost ~10 µs each)."""
    return {relative_key(path, root) for path in {item.path for item in items}}


def _groups(item: pytest.Item) -> tuple[str, str | None]:
    """The module and class a test belongs to, for fixture locality, read off the node id
    (``path::Class::test[params]``; parameters may contain anything, so they are cut off
    first). Cheaper than walking each item's parents."""
    head = item.nodeid.partition("[")[0]
    module, _, rest = head.partition("::")
    return module, head[: head.rindex("::")] if "::" in rest else None


def _scoped_groups(items: list[pytest.Item], refs: list[prio.TestRef]) -> ScopedGroups:
    """The modules and classes whose tests use a module- or class-scoped fixture (what a
    split would set up again). An item whose fixtures cannot be read counts as using both.
    ``refs[i]`` is ``items[i]``'s reference (its groups, read off the node id once)."""
    modules: set[str] = set()
    classes: set[str] = set()
    for item, ref in zip(items, refs, strict=True):
        module, cls = ref.module, ref.cls
        info = getattr(item, "_fixtureinfo", None)  # pytest's FuncFixtureInfo (no public API)
        defs_by_name = getattr(info, "name2fixturedefs", None)
        if not isinstance(defs_by_name, dict):
            modules.add(module)
            if cls is not None:
                classes.add(cls)
            continue
        for defs in defs_by_name.values():
            scope = str(getattr(defs[-1], "scope", "function")) if defs else "function"
            if scope == "module" or (scope == "class" and cls is None):
                modules.add(module)
            elif scope == "class" and cls is not None:
                classes.add(cls)
    return ScopedGroups(frozenset(modules), frozenset(classes))


def _duration_floor(config: pytest.Config) -> float:
    """Durations under this count as equal when ranking: while pytest-randomly shuffles,
    its shuffle of the fast tests is what the user asked for among equals."""
    shuffles = config.pluginmanager.hasplugin("randomly") and config.getoption(
        "randomly_reorganize", default=False
    )
    return prio.SHUFFLED_DURATION_FLOOR if shuffles else prio.DURATION_FLOOR


def configure(config: pytest.Config, settings: Settings) -> None:
    """Register the live plugin of an enabled run and load what the store learned."""
    plugin = QLearnPlugin(config, settings)
    config.stash[plugin_key] = plugin
    config.pluginmanager.register(plugin, PLUGIN_NAME)
    if plugin.is_worker:
        config.pluginmanager.register(_WorkerDecisions(plugin), WORKER_PLUGIN_NAME)
    plugin.start()


def unconfigure(config: pytest.Config) -> None:
    """Close the store and unregister everything :func:`configure` and the run registered."""
    plugin = config.stash.get(plugin_key, None)
    if plugin is None:
        return
    plugin.close()
    config.pluginmanager.unregister(plugin, PLUGIN_NAME)
    for name in (WORKER_PLUGIN_NAME, qreruns.PLUGIN_NAME):
        other = config.pluginmanager.get_plugin(name)
        if other is not None:
            config.pluginmanager.unregister(other, name)
    if plugin.coverage is not None and config.pluginmanager.is_registered(plugin.coverage):
        config.pluginmanager.unregister(plugin.coverage)
    del config.stash[plugin_key]
