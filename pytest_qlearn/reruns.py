"""Reruns on pytest's side: the protocol behind ``--qlearn-reruns``, and the observer of
pytest-rerunfailures.

With ``--qlearn-reruns N`` a failed test (setup or call) is run again as often as the
``flaky-hunter`` agent decides (0…N), the way pytest-rerunfailures does it: every attempt but
the last is reported with the outcome ``rerun`` (shown ``R``/``RERUN``, counted as "rerun" in
the summary line, never as a failure), and the last attempt's reports are the test's result —
passed (then it is *flaky*) or failed. A real failure is never hidden: a test that fails
every rerun stays failed with every attempt's report logged. Teardown errors, xfail/xpass,
``--pdb``, ``-x``/``--maxfail`` and ``KeyboardInterrupt`` keep pytest's semantics (no rerun;
an earlier attempt's ``rerun`` report does not count towards ``--maxfail``).

When pytest-rerunfailures (``--reruns``, or a ``flaky`` marker) reruns a test, qlearn does not
rerun it too: it observes every attempt, so a test that failed and then passed is learned as a
flip with its failure signature, never as a pass.

Under pytest-xdist the protocol runs on the worker that ran the test, deciding from the
learned values the controller shipped with the snapshot; the decision, the signature and the
attempt number ride on the reports, and the controller learns from them. This module is the
plugin object :class:`QLearnPlugin` registers when reruns may happen.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from .engine.signatures import OTHER, signature
from .session import RerunRecord

if TYPE_CHECKING:
    from .lifecycle import QLearnPlugin

PLUGIN_NAME = "qlearn-reruns"
#: How many tests that ran before a failure are kept (for an order-dependence suspect).
RAN_BEFORE = 3


def observed_plugins(config: pytest.Config) -> bool:
    """Whether a rerun plugin of its own (pytest-rerunfailures, flaky) is installed."""
    return config.pluginmanager.hasplugin("rerunfailures") or config.pluginmanager.hasplugin(
        "flaky"
    )


def wanted(config: pytest.Config, reruns: int) -> bool:
    """Whether this run needs the rerun plugin: qlearn reruns, or reruns to observe."""
    return reruns > 0 or observed_plugins(config)


def nothing_reruns(config: pytest.Config, items: list[pytest.Item]) -> bool:
    """Whether no rerun plugin can rerun any of ``items``: only pytest-rerunfailures is
    installed (not flaky), no ``--reruns``, ``--force-reruns`` or ``reruns`` ini value asks
    for reruns, and no collected node carries a ``flaky`` marker (what
    pytest-rerunfailures' ``get_reruns_count`` reads). Conservative: True only when sure."""
    if config.pluginmanager.hasplugin("flaky"):
        return False
    if config.getoption("force_reruns", None) or config.getoption("reruns", None):
        return False
    try:
        if config.getini("reruns"):
            return False
    except ValueError:  # no such ini key: pytest-rerunfailures is not installed
        pass
    seen: set[int] = set()
    for item in items:
        node: Any = item
        while node is not None and id(node) not in seen:
            seen.add(id(node))
            if any(mark.name == "flaky" for mark in node.own_markers):
                return False
            node = node.parent
    return True


def failure_info(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> list[str]:
    """[signature key, signature text, kind] of a failure."""
    typename = excinfo.typename
    try:
        message = str(excinfo.value)
    except Exception:  # a broken __str__ must not break the run
        message = ""
    location = ""
    try:
        entry = excinfo.traceback[-1]
        path = entry.path
        try:
            where = str(path.relative_to(item.config.rootpath))  # type: ignore[union-attr]
        except (ValueError, AttributeError):
            where = getattr(path, "name", str(path))
        location = f"{where}::{entry.name}"
    except Exception:
        location = item.nodeid.split("::", 1)[0]
    sig = signature(typename, message, location)
    return [sig.key, sig.text, sig.kind]


@dataclass
class _Tracked:
    """The attempts of one test seen so far (controller)."""

    verdicts: dict[int, str] = field(default_factory=dict)
    marked: set[int] = field(default_factory=set)  # attempts reported as ``rerun``
    failure: list[str] | None = None
    decision: list[Any] | None = None
    seconds: float = 0.0
    moved: bool = False
    before: tuple[str, ...] = ()


class RerunPlugin:
    """Reruns failed tests as the flaky-hunter decides, or observes pytest-rerunfailures."""

    def __init__(self, plugin: QLearnPlugin, limit: int) -> None:
        self.plugin = plugin
        self.config = plugin.config
        self.limit = limit
        self.runner = self.config.pluginmanager.get_plugin("runner")
        self.recent: deque[str] = deque(maxlen=RAN_BEFORE)
        self.tracked: dict[str, _Tracked] = {}
        self.done: list[RerunRecord] = []
        self._neighbours: tuple[dict[str, str], dict[str, str]] | None = None

    # -- where it ran -----------------------------------------------------------------------
    def moved(self, nodeid: str) -> bool:
        """The reordering put another test right before it than collection order had."""
        plugin = self.plugin
        if plugin.mode != "reorder" or not plugin.positions or not plugin.indexes:
            return False
        if self._neighbours is None:
            by_index = {i: t for t, i in plugin.indexes.items()}
            by_position = {p: t for t, p in plugin.positions.items()}
            self._neighbours = (
                {t: by_index.get(i - 1, "") for t, i in plugin.indexes.items()},
                {t: by_position.get(p - 1, "") for t, p in plugin.positions.items()},
            )
        collected, ran = self._neighbours
        return collected.get(nodeid, "") != ran.get(nodeid, "")

    # -- after collection: drop the observer when nothing can rerun ------------------------
    @pytest.hookimpl(trylast=True)  # after other plugins have marked the items
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Without ``--qlearn-reruns`` this plugin only observes pytest-rerunfailures; when no
        collected test can be rerun by it (no ``--reruns``/``--force-reruns``, no ``reruns``
        ini value, no ``flaky`` marker) it unregisters, so its hook wrapper around every
        report costs nothing. Not on a pytest-xdist controller (it collects nothing but
        observes the workers' reports)."""
        if self.limit > 0 or not session.items or not nothing_reruns(self.config, session.items):
            return
        if self.config.pluginmanager.get_plugin("dsession") is not None:
            return
        if self.config.pluginmanager.is_registered(self):
            self.config.pluginmanager.unregister(self)

    # -- every process: sign failures -------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        rep = yield
        if rep.failed and call.excinfo is not None:
            rep.qlearn_failure = failure_info(item, call.excinfo)  # type: ignore[attr-defined]
            rep.qlearn_moved = self.moved(item.nodeid)  # type: ignore[attr-defined]
            rep.qlearn_before = list(self.recent)  # type: ignore[attr-defined]
        if rep.when == "teardown" and (not self.recent or self.recent[-1] != item.nodeid):
            self.recent.append(item.nodeid)
        return rep

    # -- the protocol (where the test runs) -------------------------------------------------
    def _observing(self, item: pytest.Item) -> bool:
        """pytest-rerunfailures or flaky reruns this test: leave it to them."""
        if not observed_plugins(self.config):
            return False
        if item.get_closest_marker("flaky") is not None:
            return True
        return bool(self.config.getoption("reruns", None))

    def _may_rerun(self, item: pytest.Item, report: pytest.TestReport) -> bool:
        return (
            report.when in ("setup", "call")
            and not hasattr(report, "wasxfail")
            and item.get_closest_marker("xfail") is None
            and not self.config.getoption("usepdb", False)
            and not item.session.shouldstop
            and not item.session.shouldfail
        )

    def _decide(self, item: pytest.Item, report: pytest.TestReport) -> list[Any]:
        """[state key, readable state, reruns, explored, reused]."""
        learning = self.plugin.learning
        if learning is None:  # nothing to decide from: no rerun
            return ["", "", 0, False, False]
        key, _text, kind = getattr(report, "qlearn_failure", None) or ["", "", OTHER]
        decision = learning.decide_reruns(
            item.nodeid, kind, key, self.moved(item.nodeid), self.limit
        )
        return [
            decision.state.key,
            decision.state.readable,
            decision.reruns,
            decision.explored,
            decision.reused,
        ]

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Any:
        if self.limit <= 0 or self.runner is None or self._observing(item):
            return None
        ihook = item.ihook
        decision: list[Any] | None = None
        attempt = 0
        while True:
            ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
            reports = self.runner.runtestprotocol(item, nextitem=nextitem, log=False)
            failed = next((r for r in reports if r.failed and r.when != "teardown"), None)
            again = False
            if failed is not None and self._may_rerun(item, failed):
                if decision is None:
                    decision = self._decide(item, failed)
                again = attempt < int(decision[2])
            for report in reports:
                report.rerun = attempt  # as pytest-rerunfailures numbers attempts
                if decision is not None:
                    report.qlearn_rerun = decision
                if again and report.failed:
                    report.outcome = "rerun"
                ihook.pytest_runtest_logreport(report=report)
            ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
            if not again:
                return True
            _reset_for_rerun(item)
            attempt += 1

    @pytest.hookimpl(trylast=True)
    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        if str(report.outcome) == "rerun":
            return "rerun", "R", ("RERUN", {"yellow": True})
        return None

    # -- the controller: collect the attempts ------------------------------------------------
    @pytest.hookimpl(tryfirst=True)  # before junitxml writes the final report's properties
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.plugin.is_worker:
            return
        nodeid = report.nodeid
        tracked = self.tracked.get(nodeid)
        outcome = str(report.outcome)
        if tracked is None:
            decided = getattr(report, "qlearn_rerun", None)
            if outcome != "rerun" and not (decided and report.failed):
                return
            tracked = self.tracked[nodeid] = _Tracked()
        attempt = int(getattr(report, "rerun", 0) or 0)
        if attempt > 0:
            tracked.seconds += report.duration
        if tracked.decision is None:
            tracked.decision = getattr(report, "qlearn_rerun", None)
        if outcome == "rerun":
            tracked.marked.add(attempt)
        if outcome == "rerun" or report.failed:
            tracked.verdicts[attempt] = "F"
            if tracked.failure is None:
                tracked.failure = getattr(report, "qlearn_failure", None)
                tracked.moved = bool(getattr(report, "qlearn_moved", False))
                tracked.before = tuple(getattr(report, "qlearn_before", ()) or ())
        elif report.when == "call" and attempt not in tracked.verdicts:
            tracked.verdicts[attempt] = "P" if report.passed else "S"
        elif report.when == "setup" and report.skipped:
            tracked.verdicts.setdefault(attempt, "S")
        if report.when != "teardown" or attempt in tracked.marked:
            return
        record = self._record(nodeid, tracked)
        del self.tracked[nodeid]
        if not record.attempts.startswith("F"):
            return
        self.done.append(record)
        report.user_properties = [
            *report.user_properties,
            ("qlearn_reruns", record.reruns),
            ("qlearn_flaky", "true" if record.flaky else "false"),
            *([("qlearn_signature", record.signature_text)] if record.signature_text else []),
        ]

    def _record(self, nodeid: str, tracked: _Tracked) -> RerunRecord:
        attempts = "".join(tracked.verdicts[a] for a in sorted(tracked.verdicts))
        key, text, kind = tracked.failure or ["", "", OTHER]
        decision: tuple[str, str, int, bool, bool] | tuple[()] = ()
        learning = self.plugin.learning
        share = 0.0 if learning is None else learning.rerun_share(nodeid)
        # "failed only after being moved": moved, and it never failed in its earlier runs
        # (or only as an order-dependence suspect already: its failures were those)
        history = None if learning is None else learning.snapshot.histories.get(nodeid)
        moved = tracked.moved and history is not None and history.runs > 0
        moved = moved and history is not None and history.failures == 0
        if tracked.moved and learning is not None and nodeid in learning.suspects:
            moved = True
        if tracked.decision and tracked.decision[0]:
            k, t, action, explored, reused = tracked.decision
            decision = (str(k), str(t), int(action), bool(explored), bool(reused))
        return RerunRecord(
            nodeid,
            attempts,
            str(key),
            str(text),
            str(kind),
            tracked.seconds,
            share,
            moved,
            decision,
            tracked.before,
        )

    def records(self) -> list[RerunRecord]:
        return list(self.done)

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        if self.plugin.is_worker or config.get_verbosity() < -1 or not self.done:
            return
        for line in summary_lines(self.done, verbose=config.get_verbosity() > 0):
            terminalreporter.write_line(line)


def summary_lines(records: list[RerunRecord], verbose: bool = False) -> list[str]:
    """What the reruns did, for the terminal: one line, and one per flaky or order-dependent
    test."""
    flaky = [r for r in records if r.flaky]
    failed = [r for r in records if not r.flaky]
    seconds = sum(r.rerun_seconds for r in records)
    reruns = sum(r.reruns for r in records)
    parts = [f"{len(flaky)} flaky (failed, then passed on a rerun)"]
    if failed:
        parts.append(f"{len(failed)} failed every attempt")
    parts.append(f"{reruns} rerun(s) took {seconds:.2f}s")
    lines = ["qlearn: reruns: " + ", ".join(parts)]
    for record in flaky:
        if record.order_suspect:
            before = ", ".join(record.ran_before) or "nothing"
            lines.append(
                f"qlearn: order-dependent? {record.test_id} failed after being moved "
                f"(ran after {before}) and passed when rerun alone; from the next run it "
                "runs before the tests collected after it"
            )
        elif verbose or len(flaky) <= 5:
            lines.append(
                f"qlearn: flaky {record.test_id}: passed on rerun {record.reruns}"
                + (f" ({record.signature_text})" if record.signature_text else "")
            )
    return lines


def _reset_for_rerun(item: pytest.Item) -> None:
    """What pytest-rerunfailures resets before a rerun: cached errors of failed fixtures, the
    item's leftover setup state, and its test class instance (pytest has no public API for
    these; each step is skipped where the attribute is missing)."""
    info = getattr(item, "_fixtureinfo", None)
    defs_by_name = getattr(info, "name2fixturedefs", None)
    if isinstance(defs_by_name, dict):
        for defs in defs_by_name.values():
            for fixture_def in defs:
                cached = getattr(fixture_def, "cached_result", None)
                if cached is not None and len(cached) > 2 and cached[2] is not None:
                    fixture_def.cached_result = None
                    finalizers = getattr(fixture_def, "_finalizers", None)
                    if isinstance(finalizers, list):
                        finalizers.clear()
    stack = getattr(getattr(item.session, "_setupstate", None), "stack", None)
    if isinstance(stack, dict) and item in stack:
        del stack[item]
    if getattr(item, "_instance", None) is not None:
        try:
            del item._instance  # type: ignore[attr-defined]
            item._obj = None  # type: ignore[attr-defined]
        except AttributeError:
            pass
