"""The pytest side of ``--qlearn-cov``: decide per test whether to trace it, trace it, and
bring its map to the process that learns.

Three ways to get per-test coverage, decided once per session:

* ``trace`` — qlearn's own tracer (:mod:`pytest_qlearn.changes.line_tracer`), started only around
  the tests the coverage-tracer agent picked; the others run at full speed;
* ``pytest-cov`` — pytest-cov is measuring with ``--cov-context=test``: qlearn starts no
  second tracer and reads pytest-cov's per-test contexts at the end (every test is traced);
* ``off`` — pytest-cov without per-test contexts, or a debugger tracing the process: qlearn
  steps aside and says so in the header.

Under pytest-xdist the workers decide (identically, from the same snapshot and seed) and
trace; each traced test's lines travel to the controller on its teardown report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .agents import coverage_tracer as ct
from .agents import selector as sel
from .changes.coverage import ChangeFacts, detect
from .changes.coverage_map import (
    CorruptMapError,
    CoverageMap,
    CoverageSummary,
    compress_lines,
    coverage_percent,
    expand_lines,
    union_lines,
    unique_line_counts,
)
from .changes.digests import file_digests, relative_key
from .changes.line_tracer import LineTracer, other_tracer, statements
from .engine.state import State
from .session import LearningSession
from .store.base import CoverageSnapshot, CoverageWrite

T = TypeVar("T")
PLUGIN_NAME = "qlearn-coverage"
#: The attribute of a teardown report that carries a test's decision (and a batch of lines).
REPORT_ATTR = "qlearn_cov"
#: Where a pytest-xdist worker leaves lines no report carried (``workeroutput``).
WORKEROUTPUT_KEY = "qlearn_cov_lines"
#: Traced tests whose lines are read from coverage.py at once (each read costs ≈ 10 ms).
READ_BATCH = 400
#: What a debugger's presence is told by (pytest's own options).
_DEBUG_OPTIONS = ("usepdb", "trace")


def coverage_mode(config: pytest.Config) -> tuple[str, str]:
    """(mode, why) — see the module docstring."""
    cov_plugin = config.pluginmanager.get_plugin("_cov")
    if cov_plugin is not None and getattr(cov_plugin, "cov_controller", None) is not None:
        if getattr(config.option, "cov_context", None) == "test":
            return "pytest-cov", "using pytest-cov's per-test contexts"
        return "off", (
            "pytest-cov is measuring without per-test contexts; add --cov-context=test to "
            "share them with qlearn"
        )
    for option in _DEBUG_OPTIONS:
        if config.getoption(option, False):
            return "off", f"--{option.removeprefix('use')} debugs this run; qlearn does not trace"
    tracer = other_tracer()
    if tracer is not None:
        return "off", f"{tracer} (a debugger?); qlearn does not trace"
    return "trace", "per-test tracing with coverage.py"


class CoverageRun:
    """``--qlearn-cov`` for one session (registered as a plugin while the session runs)."""

    def __init__(
        self,
        config: pytest.Config,
        stored: CoverageSnapshot,
        file_hashes: dict[str, str],
        *,
        learns: bool,
    ) -> None:
        self.config = config
        self.root = config.rootpath
        self.mode, self.why = coverage_mode(config)
        self.learns = learns  # the controller (or a run without xdist)
        self.stored = stored
        self.file_hashes = file_hashes
        self.maps: dict[str, CoverageMap] = {}
        self.unreadable: set[str] = set()
        for test_id, (data, episode) in stored.maps.items():
            try:
                self.maps[test_id] = CoverageMap.from_json(test_id, data, episode)
            except CorruptMapError:
                self.unreadable.add(test_id)
        self.tracer = LineTracer(self.root) if self.mode == "trace" else None
        self.facts = ChangeFacts()
        #: Maps carried across this run's change (re-numbered, new digests): see _detect().
        self.carried: dict[str, CoverageMap] = {}
        self.decisions: dict[str, ct.TraceDecision] = {}
        self.new_lines: dict[str, dict[str, str]] = {}  # test id -> path -> line ranges
        self.ran: set[str] = set()
        self.messages: list[str] = []
        self.current: dict[str, CoverageMap] = {}  # after learn(): every map of this run
        self._last_of_run = False
        self._detected = False  # a pytest-xdist controller collects nothing: see learn()
        self._covering: dict[str, str] | None = None
        if self.unreadable:
            self.messages.append(
                f"{len(self.unreadable)} stored coverage map(s) were unreadable; those tests "
                "are traced again"
            )

    # -- deciding -------------------------------------------------------------------------
    def prepare(self, learning: LearningSession, items: list[pytest.Item]) -> None:
        """Before ranking: which files changed, which tests cover them, which to trace.
        Whatever fails here turns coverage off for the run, with one warning."""
        try:
            self._prepare(learning, items)
        except Exception as exc:
            self.decisions = {}
            learning.covering_changed = {}
            learning.unique_lines = {}
            self._disable(exc)

    def _prepare(self, learning: LearningSession, items: list[pytest.Item]) -> None:
        self._detect()
        learning.covering_changed = dict(self.covering_changed())
        collected = [self.maps[i.nodeid] for i in items if i.nodeid in self.maps]
        learning.unique_lines = {
            test_id: sel.UNIQUE if count > 0 else sel.NOT_UNIQUE
            for test_id, count in unique_line_counts(collected).items()
        }
        if self.mode != "trace":
            return
        test_files = {item.nodeid: relative_key(item.path, self.root) for item in items}
        maps = self.reusable()
        stale = self.facts.stale(maps)
        # a test whose own file changed since its trace is traced again, whatever it covers
        own_changed = {t for t, path in test_files.items() if path in stale.get(t, ())}
        self.decisions = learning.decide_traces(
            list(test_files),
            maps,
            stale,
            own_changed=own_changed,
            unreadable=self.unreadable,
            carried=self.carried.keys(),
        )

    def _detect(self) -> None:
        self.facts = detect(
            self.root,
            self.maps,
            self.file_hashes,
            self.stored.last_commit,
            self.stored.last_dirty,
        )
        # a test that executed none of a changed file's changed lines keeps its map, moved
        # by the lines inserted and removed above (changes.line_shift)
        self.carried = self.facts.carry(self.maps)
        self._covering = None
        self._detected = True

    def covering_changed(self) -> dict[str, str]:
        """The facts' :meth:`~ChangeFacts.covering_changed` of the stored maps (asked by the
        ranking, the report and the summary line: computed once)."""
        if self._covering is None:
            self._covering = self.facts.covering_changed(self.maps)
        return self._covering

    def reusable(self) -> dict[str, CoverageMap]:
        """Every readable stored map, the carried ones as carried."""
        if not self.carried:
            return self.maps
        return {**self.maps, **self.carried}

    # -- tracing (wherever tests run) ------------------------------------------------------
    # The tracer runs only inside a test's setup, call and teardown, not around the whole
    # runtest protocol: the reporting hooks (pytest's and every plugin's, ours too) run
    # untraced between the phases and are in no map.
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._traced(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        return (yield from self._traced(item))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        self._last_of_run = nextitem is None
        return (yield from self._traced(item))

    def _traced(self, item: pytest.Item) -> Generator[None, object, object]:
        """One phase of a test, traced when the coverage-tracer chose to trace it."""
        decision = self.decisions.get(item.nodeid)
        if self.tracer is not None and decision is not None and decision.trace:
            self._guarded(self.tracer.start, item.nodeid)
        try:
            return (yield)
        finally:
            if self.tracer is not None and self.tracer.tracing == item.nodeid:
                self._guarded(self.tracer.stop)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        if call.when != "teardown":
            return rep
        decision = self.decisions.get(item.nodeid)
        if decision is None:
            return rep
        state = decision.state
        info: list[Any] = [
            decision.trace,
            decision.reason,
            None if state is None else state.key,
            "" if state is None else state.readable,
            decision.explored,
            {},
        ]
        tracer = self.tracer
        # lines travel in batches: reading them costs the same for one test or fifty
        if tracer is not None and (
            len(tracer.pending) >= READ_BATCH or (self._last_of_run and tracer.pending)
        ):
            info[5] = self._guarded(lambda: _compressed(tracer.take())) or {}
        setattr(rep, REPORT_ATTR, info)
        return rep

    def _guarded(self, action: Callable[..., T], *args: Any) -> T | None:
        """Run a tracer step; if coverage.py fails, stop tracing for the rest of the run
        with one warning (the safety contract: qlearn never breaks a test run)."""
        try:
            return action(*args)
        except Exception as exc:
            self._disable(exc)
            return None

    def _disable(self, exc: Exception) -> None:
        tracer, self.tracer = self.tracer, None
        if tracer is not None:
            with contextlib.suppress(Exception):
                tracer.close()
        self.mode = "off"
        self.why = f"coverage failed ({type(exc).__name__}: {exc}); it is off for this run"
        self.messages.append(self.why)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """A pytest-xdist worker hands over lines no report carried (an interrupted run)."""
        workeroutput = getattr(session.config, "workeroutput", None)
        tracer = self.tracer
        if workeroutput is not None and tracer is not None and tracer.pending:
            lines = self._guarded(lambda: _compressed(tracer.take()))
            if lines:
                workeroutput[WORKEROUTPUT_KEY] = lines

    # -- collecting (the learning process) -------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.learns or report.when != "teardown":
            return
        self.ran.add(report.nodeid)
        info = getattr(report, REPORT_ATTR, None)
        if info is None:
            return
        trace, reason, key, text, explored, lines = info
        if report.nodeid not in self.decisions:  # decided on a pytest-xdist worker
            state = None if key is None else State(key, text)
            self.decisions[report.nodeid] = ct.TraceDecision(
                report.nodeid, bool(trace), str(reason), state, bool(explored)
            )
        self.new_lines.update(lines)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.new_lines.update(getattr(node, "workeroutput", {}).get(WORKEROUTPUT_KEY, {}))

    def close(self) -> None:
        if self.tracer is not None:
            self.tracer.close()

    # -- learning (the learning process, at the end) ---------------------------------------
    def learn(self, learning: LearningSession) -> tuple[CoverageWrite | None, float | None]:
        """Teach the coverage-tracer, and build the maps and facts the store keeps; returns
        them with this run's total line coverage (None when nothing is known). If that fails,
        nothing of coverage is kept this run, with one warning."""
        try:
            return self._learn(learning)
        except Exception as exc:
            learning.trace_outcome = None
            self.current = {}
            self._disable(exc)
            return None, None

    def _learn(self, learning: LearningSession) -> tuple[CoverageWrite, float | None]:
        if not self._detected:  # the workers decided; the controller needs the facts too
            self._detect()
        if self.mode == "pytest-cov":
            self.new_lines = self._pytest_cov_lines()
        elif (tracer := self.tracer) is not None and tracer.pending:  # a run stopped by -x
            self.new_lines.update(self._guarded(lambda: _compressed(tracer.take())) or {})
        new_maps = self._new_maps(learning.episode)
        reusable = self.reusable()
        if self.decisions:
            learning.learn_traces(self.decisions, reusable, new_maps)
        current = {t: m for t, m in reusable.items() if t in self.ran}
        current.update(new_maps)
        self.current = current
        percent, analysed = self._percent(current)
        # carried maps are kept too, run or not: the next run compares with their digests
        written = {t: m for t, m in self.carried.items() if t not in new_maps}
        written.update(new_maps)
        write = CoverageWrite(
            maps=[(t, m.to_json(), m.traced_episode) for t, m in sorted(written.items())],
            commit=self.facts.commit,
            dirty=sorted(self.facts.dirty),
            percent=percent,
            statements=analysed,
        )
        return write, percent

    def _percent(
        self, current: dict[str, CoverageMap]
    ) -> tuple[float | None, list[tuple[str, str, str]]]:
        """This run's line coverage, and the statement sets newly analysed for the store
        (a file is analysed again only when its digest moved)."""
        if not current:
            return None, []
        digests = dict(self.file_hashes_now())
        known: dict[str, set[int]] = {}
        for path, (digest, ranges) in self.stored.statements.items():
            if digests.get(path) == digest:
                with contextlib.suppress(ValueError):
                    known[path] = expand_lines(ranges)
        fresh = statements(self.root, [p for p in digests if p not in known])
        known.update(fresh)
        analysed = [(p, digests[p], compress_lines(lines)) for p, lines in sorted(fresh.items())]
        return coverage_percent(union_lines(current.values()), known), analysed

    def file_hashes_now(self) -> list[tuple[str, str]]:
        """The digests every file the current maps cover has *now* (a reused map keeps the
        digests of its trace), for the next run's "changed since the last episode"."""
        digests: dict[str, str] = {}
        for cmap in self.current.values():
            digests.update(cmap.digests)
        for path, digest in self.facts.digests.items():
            if path in digests and digest is not None:
                digests[path] = digest
        return sorted(digests.items())

    def _new_maps(self, episode: int) -> dict[str, CoverageMap]:
        paths = {path for lines in self.new_lines.values() for path in lines}
        known = {p: d for p, d in self.facts.digests.items() if d is not None and p in paths}
        missing = paths - set(known)
        known.update(file_digests((self.root / p for p in missing), self.root))
        maps = {}
        for test_id, lines in self.new_lines.items():
            kept = {p: r for p, r in lines.items() if p in known}
            maps[test_id] = CoverageMap(test_id, kept, {p: known[p] for p in kept}, episode)
        return maps

    def _pytest_cov_lines(self) -> dict[str, dict[str, str]]:
        """Per test, the lines pytest-cov recorded in its contexts (``nodeid|run`` etc.)."""
        cov_plugin = self.config.pluginmanager.get_plugin("_cov")
        cov = getattr(getattr(cov_plugin, "cov_controller", None), "cov", None)
        if cov is None:
            return {}
        data = cov.get_data()
        per_test: dict[str, dict[str, set[int]]] = {}
        for path in data.measured_files():
            relative = relative_key(Path(path), self.root)
            if relative.startswith("/"):  # outside the project
                continue
            for line, contexts in data.contexts_by_lineno(path).items():
                for context in contexts:
                    test_id = context.rsplit("|", 1)[0]
                    if test_id in self.ran:
                        per_test.setdefault(test_id, {}).setdefault(relative, set()).add(line)
        return {
            test_id: {path: compress_lines(lines) for path, lines in files.items()}
            for test_id, files in per_test.items()
        }

    # -- reporting --------------------------------------------------------------------------
    def header(self) -> str:
        if self.mode == "off":
            return f"qlearn: coverage features are off: {self.why}"
        return f"qlearn: coverage: {self.why}"

    def report(self, percent: float | None, previous: float | None) -> CoverageSummary:
        """The coverage section of the reports (after :meth:`learn`)."""
        current = self.current
        reusable = self.reusable()
        unique = sorted(
            ((t, n) for t, n in unique_line_counts(current.values()).items() if n > 0),
            key=lambda item: (-item[1], item[0]),
        )
        source = self.facts.source + (f": {self.facts.note}" if self.facts.note else "")
        return CoverageSummary(
            mode=self.mode,
            why=self.why,
            tests=len(self.ran),
            traced=len(self.new_lines),
            new_information=sum(
                1
                for t, lines in self.new_lines.items()
                if (old := reusable.get(t)) is None or old.lines != lines
            ),
            percent=percent,
            previous_percent=previous,
            change_source=source,
            changed_files=tuple(sorted(self.facts.changed)),
            covering_changed=len(self.covering_changed()),
            unique_lines=tuple(unique[:5]),
            carried=sum(1 for t in self.carried if t not in self.new_lines),
        )

    def traced_ids(self) -> frozenset[str]:
        """The tests this plugin's own tracer ran under coverage this run (none when
        pytest-cov traces: then every run is traced alike). Their measured seconds include
        the tracer's cost, so they are not the test's own."""
        if self.mode != "trace":
            return frozenset()
        return frozenset(t for t, d in self.decisions.items() if d.trace)

    def summary(self, percent: float | None) -> str:
        traced = sum(1 for d in self.decisions.values() if d.trace)
        parts = [f"coverage: {traced} of {len(self.ran)} tests traced"]
        if self.mode == "pytest-cov":
            parts = [f"coverage: read {len(self.new_lines)} tests' maps from pytest-cov"]
        elif self.mode == "off":
            parts = ["coverage: off"]
        if percent is not None:
            parts.append(f"{percent:.1f}% of the covered files' lines")
        source = self.facts.source
        if self.facts.note:
            source += f": {self.facts.note}"
        parts.append(f"{len(self.facts.changed)} covered file(s) changed ({source})")
        if self.facts.changed:
            covering = len(self.covering_changed())
            parts.append(f"{covering} test(s) cover them")
        if self.carried:
            parts.append(f"{len(self.carried)} map(s) carried across the change")
        return "; ".join(parts)


def _compressed(lines: Mapping[str, Mapping[str, list[int]]]) -> dict[str, dict[str, str]]:
    """Test id → file → executed lines, as compact ranges (what reports carry)."""
    return {
        test_id: {path: compress_lines(executed) for path, executed in files.items()}
        for test_id, files in lines.items()
    }
