"""change_awareness: the glue between the static analysis and the prioritizer's classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.changes import awareness as ca
from pytest_qlearn.changes.impact import DependencyIndex


def _project(root: Path) -> None:
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "core.py").write_text(
        "def inner():\n    return 1\n\ndef mid():\n    return inner()\n\n"
        "def outer():\n    return mid()\n"
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_core.py").write_text(
        "from pkg.core import inner, mid, outer\nimport pkg.core\n\n"
        "def test_inner():\n    assert inner()\n\n"
        "def test_outer():\n    assert outer()\n\n"
        "def test_module():\n    assert pkg.core\n"
    )


IDS = [f"tests/test_core.py::test_{name}" for name in ("inner", "outer", "module")]


def test_findings_become_evidence_classes_and_digests_to_store(tmp_path: Path) -> None:
    _project(tmp_path)
    cache = tmp_path / "impact.json"
    first = ca.analyse(tmp_path, {"tests/test_core.py"}, IDS, {}, cache)
    assert first.impacts == {}  # nothing stored yet: no change is known
    assert first.summary() == ""
    assert {"tests/test_core.py", "pkg/core.py"} <= first.digests.keys()
    first.save()
    core = tmp_path / "pkg" / "core.py"
    core.write_text(core.read_text().replace("return 1", "return 2"))
    second = ca.analyse(tmp_path, {"tests/test_core.py"}, IDS, first.digests, cache)
    assert second.changed_files == {"pkg/core.py"}
    assert second.impacts == {
        "tests/test_core.py::test_inner": prio.DIRECT,
        "tests/test_core.py::test_outer": prio.CALLS_FURTHER,  # outer -> mid -> inner
        "tests/test_core.py::test_module": prio.IMPORTS,
    }
    assert second.summary().startswith("1 changed file(s) since the last run reach 3 test(s)")


def test_coverage_adds_the_tests_that_run_the_change_without_naming_it() -> None:
    impacts = {"a": prio.DIRECT, "b": prio.CALLS_FURTHER, "c": prio.IMPORTS}
    refined = ca.refine_with_coverage(impacts, covering_changed={"a", "c", "e"})
    assert refined == {
        "a": prio.DIRECT,  # runs it and names it
        "b": prio.CALLS_FURTHER,  # its map does not show the change: its names still stand
        "c": prio.CALLS_FURTHER,  # imports the module, and its map runs the change
        "e": prio.CALLS_FURTHER,  # runs the change, names nothing of it
    }


def test_an_analysis_failure_costs_the_order_nothing_but_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: DependencyIndex, test_files: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(DependencyIndex, "scan", broken)
    found = ca.analyse(tmp_path, {"tests/test_x.py"}, ["tests/test_x.py::test_a"], {}, None)
    assert found.impacts == {} and found.digests == {}
    assert found.summary() == "change awareness is off this run (RuntimeError)"
    found.save()  # nothing to save, no error
