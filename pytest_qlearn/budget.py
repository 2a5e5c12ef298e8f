"""The pytest side of ``--qlearn-budget``: when selection applies, which tests are marked
``qlearn_always``, and handing the deselected tests to pytest. The decisions themselves are
the ``selector`` agent's (:mod:`pytest_qlearn.agents.selector`, no pytest there)."""

from __future__ import annotations

import pytest

from .agents.selector import Budget, Selection
from .changes.digests import changed_files, file_digests, relative_key
from .names import BUDGET_MARKER
from .session import LearningSession

MARKER = BUDGET_MARKER
#: Where a pytest-xdist worker leaves its selection for the controller (``workeroutput``).
WORKEROUTPUT_KEY = "qlearn_selection"


def narrowed_by(config: pytest.Config) -> str | None:
    """What narrows this run so that a budget must not select (``-k``, ``-m``, ``--lf``,
    explicit node ids), or None."""
    if config.getoption("keyword", ""):
        return "-k"
    if config.getoption("markexpr", ""):
        return "-m"
    if config.getoption("lf", False):
        return "--lf"
    if any("::" in str(arg) for arg in config.args):
        return "explicit node ids"
    return None


def apply(
    learning: LearningSession,
    budget: Budget,
    full_run_every: int,
    config: pytest.Config,
    items: list[pytest.Item],
    order: list[str],
    *,
    deselect: bool,
) -> Selection:
    """Select in ranking ``order``; with ``deselect`` (not observe mode) drop the rest from
    ``items`` and report them through ``pytest_deselected``."""
    marked = {item.nodeid for item in items if item.get_closest_marker(MARKER) is not None}
    changed_paths = changed_files(
        file_digests((item.path for item in items), config.rootpath),
        learning.snapshot.file_hashes,
    )
    changed = {
        item.nodeid for item in items if relative_key(item.path, config.rootpath) in changed_paths
    }
    selection = learning.select(
        order, budget, marked=marked, changed=changed, full_run_every=full_run_every
    )
    if deselect:
        running = {choice.test_id for choice in selection.selected}
        dropped = [item for item in items if item.nodeid not in running]
        if dropped:
            items[:] = [item for item in items if item.nodeid in running]
            config.hook.pytest_deselected(items=dropped)
    return selection
