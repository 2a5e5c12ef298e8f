"""The pytest side of ``--qlearn-budget``: when selection applies, which tests are marked
``qlearn_always``, and handing the deselected tests to pytest. The decisions themselves are
the ``selector`` agent's (:mod:`pytest_qlearn.agents.selector`, no pytest there)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence

import pytest

from .agents.selector import Budget, Selection
from .changes.digests import changed_files, file_digests, relative_key
from .names import BUDGET_MARKER
from .session import LearningSession

#: Where a pytest-xdist worker leaves its selection for the controller (``workeroutput``).
WORKEROUTPUT_KEY = "qlearn_selection"


def narrowed_by(config: pytest.Config) -> str | None:
    """What narrows this run so that a budget must not select (``-k``, ``-m``, ``--lf``,
    explicit node ids), or None. A ``-m`` of the ini file's ``addopts`` is the project's
    normal run, not a narrowing: the budget applies to what it leaves."""
    if config.getoption("keyword", ""):
        return "-k"
    if config.getoption("markexpr", "") and project_markexpr(config) is None:
        return "-m"
    if config.getoption("lf", False):
        return "--lf"
    if any("::" in str(arg) for arg in config.args):
        return "explicit node ids"
    return None


def narrowing_key(config: pytest.Config, deselected: int) -> str | None:
    """How the command line (and ``PYTEST_ADDOPTS``) narrowed this run, spelled the same way
    every time it is given the same way: ``-k 'EXPR'``, ``-m 'EXPR'``, the explicit node ids,
    the ``--deselect`` prefixes. None when nothing narrowed it, and when what narrowed it
    selects differently from run to run (``--lf``, ``--sw``, or ``deselected`` tests with no
    such option: another plugin chose them) — such a run is never a job's normal run."""
    if config.getoption("lf", False) or config.getoption("stepwise", False):
        return None
    parts = []
    keyword = config.getoption("keyword", "")
    if keyword:
        parts.append(f"-k {shlex.quote(keyword)}")
    markexpr = config.getoption("markexpr", "") if project_markexpr(config) is None else ""
    if markexpr:
        parts.append(f"-m {shlex.quote(markexpr)}")
    parts.extend(sorted(str(arg) for arg in config.args if "::" in str(arg)))
    ini = set(project_deselect_prefixes(config))
    given = sorted(set(config.getoption("deselect", None) or ()) - ini)
    parts.extend(f"--deselect {shlex.quote(str(prefix))}" for prefix in given)
    if not parts or (deselected and not (keyword or markexpr or given)):
        return None
    return " ".join(parts)


def project_markexpr(config: pytest.Config) -> str | None:
    """The ``-m`` expression in effect when it comes from the ini file's ``addopts`` (the
    command line and ``PYTEST_ADDOPTS`` gave none), else None."""
    expr = config.getoption("markexpr", "")
    if not expr:
        return None
    given = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    if _markexpr_in(given) is not None:
        return None
    return expr if _markexpr_in(config.getini("addopts")) == expr else None


def _option_values(args: Iterable[object], option: str) -> list[str]:
    """The values an argument list gives ``option``, in order: ``OPT VALUE`` and
    ``--long=VALUE``; for a short option also ``-oVALUE`` and ``-o=VALUE``."""
    found = []
    tokens = [str(arg) for arg in args]
    for i, token in enumerate(tokens):
        if token == option and i + 1 < len(tokens):
            found.append(tokens[i + 1])
        elif token.startswith(option + "="):
            found.append(token[len(option) + 1 :])
        elif len(option) == 2 and len(token) > 2 and token.startswith(option):
            found.append(token[2:])
    return found


def _markexpr_in(args: Iterable[object]) -> str | None:
    """The last ``-m EXPR`` / ``-mEXPR`` of an argument list (pytest keeps the last one)."""
    values = _option_values(args, "-m")
    return values[-1] if values else None


def project_deselect_prefixes(config: pytest.Config) -> tuple[str, ...]:
    """The ``--deselect`` node id prefixes of the ini file's ``addopts``: the tests the
    project's normal run leaves out (pytest deselects every test whose node id starts with
    one), so leaving them out narrows nothing."""
    return tuple(_option_values(config.getini("addopts"), "--deselect"))


def deselected_by_project(items: Sequence[pytest.Item], expr: str) -> list[pytest.Item]:
    """Of ``items`` pytest deselected, those the project's own ``-m`` expression leaves out
    (a normal run, not a narrowed one). Uses pytest's own matcher; on a pytest whose
    internals differ, none (the run then counts as narrowed, as before)."""
    try:
        from _pytest.mark import MarkMatcher
        from _pytest.mark.expression import Expression

        compiled = Expression.compile(expr)
        return [
            item
            for item in items
            if not compiled.evaluate(MarkMatcher.from_markers(item.iter_markers()))
        ]
    except Exception:  # private API: fall back to counting the run as narrowed
        return []


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
    marked = {item.nodeid for item in items if item.get_closest_marker(BUDGET_MARKER) is not None}
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
