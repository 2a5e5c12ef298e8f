"""change_awareness: the glue between the static analysis and the prioritizer's classes."""

from __future__ import annotations

import json
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


def _episodes(
    tmp_path: Path,
    edits: list[list[tuple[str, str]]],
    watch: dict[str, int | tuple[int, ...]],
) -> list[ca.ChangeAwareness]:
    """One analysis per episode (1, 2, ...) of ``_project``: episode k first applies the
    ``(old, new)`` replacements ``edits[k - 2]`` to pkg/core.py; each analysis is saved with
    its episode and is the next one's baseline. The last one watches ``watch`` (known
    failures -> the episode they last passed in)."""
    _project(tmp_path)
    cache = tmp_path / "impact.json"
    core = tmp_path / "pkg" / "core.py"
    found: list[ca.ChangeAwareness] = []
    stored: dict[str, str] = {}
    for episode in range(1, len(edits) + 2):
        for old, new in edits[episode - 2] if episode > 1 else ():
            assert old in core.read_text()
            core.write_text(core.read_text().replace(old, new))
        watched = watch if episode == len(edits) + 1 else {}
        run = ca.analyse(tmp_path, {"tests/test_core.py"}, IDS, stored, cache, lambda w=watched: w)
        run.save(episode)
        stored = run.digests
        found.append(run)
    return found


BREAK = ("return 1", "return 2")
REVERT = ("return 2", "return 1")
INNER, OUTER, MODULE = IDS


def test_a_known_failure_whose_breaking_change_is_reverted_is_marked_reverted(
    tmp_path: Path,
) -> None:
    # episode 3 breaks inner (the watched tests last passed in 2), episode 4 reverts it
    *_, reverted = _episodes(tmp_path, [[], [BREAK], [REVERT]], {INNER: 2, OUTER: 2, MODULE: 2})
    assert reverted.changed_files == {"pkg/core.py"}
    # test_module only imports the module: nothing it names changed, it stays a failure
    assert reverted.reverted == {INNER, OUTER}
    # code back to its known-good version reaches no test as a change: nothing else changed
    assert reverted.impacts == {}
    assert reverted.summary() == (
        "1 changed file(s) since the last run; 2 failure(s) of the last run have the change "
        "they failed with reverted"
    )


def test_a_revert_the_failure_did_not_start_with_is_not_its_fix(tmp_path: Path) -> None:
    # the watched test last passed in episode 2, with the broken version (from episode 2):
    # it failed for another reason, and the revert does not put back what it passed with
    *_, reverted = _episodes(tmp_path, [[BREAK], [], [REVERT]], {INNER: 3})
    assert reverted.changed_files == {"pkg/core.py"}
    assert reverted.reverted == frozenset()


def test_a_new_version_is_not_a_revert(tmp_path: Path) -> None:
    *_, fixed = _episodes(tmp_path, [[], [BREAK], [("return 2", "return 3")]], {INNER: 2})
    assert fixed.changed_files == {"pkg/core.py"}
    assert fixed.reverted == frozenset()


def test_code_still_differing_from_when_it_passed_is_no_revert(tmp_path: Path) -> None:
    """Episode 2 breaks inner, episode 3 changes mid too; episode 4 reverts inner only. Not
    only test_outer (it calls mid) stays a failure: test_inner names only inner, but a fault
    its names miss may sit in the rest of the module it imports (mid is still changed)."""
    mid = ("return inner()", "return inner() + 0")
    *_, run = _episodes(tmp_path, [[BREAK], [mid], [REVERT]], {INNER: 1, OUTER: 1})
    assert run.changed_files == {"pkg/core.py"}
    assert run.reverted == frozenset()


OUTER_EDIT = ("return mid()", "return mid() + 0")
MID_EDIT = ("return inner()", "return inner() + 0")


def test_a_fix_with_a_new_change_in_the_same_file_undoes_the_failures_cause(
    tmp_path: Path,
) -> None:
    """Episode 3 breaks inner; episode 4 reverts it and changes outer in the same commit:
    core.py still differs from when test_inner passed, but what it started failing with is
    back and the rest changed in this very run."""
    *_, run = _episodes(tmp_path, [[], [BREAK], [REVERT, OUTER_EDIT]], {INNER: 2, MODULE: 2})
    assert run.changed_files == {"pkg/core.py"}
    # test_module names nothing that changed when it started failing: it stays a failure
    assert run.reverted == {INNER}


def test_a_breaking_commit_undone_only_in_part_is_no_revert(tmp_path: Path) -> None:
    """Episode 3 breaks inner and changes mid; episode 4 reverts inner only. test_inner
    names only inner, which is back, but the fault may be in mid, which came with the same
    commit and still differs (names miss faults): it stays a failure, as test_outer does."""
    *_, run = _episodes(tmp_path, [[], [BREAK, MID_EDIT], [REVERT]], {INNER: 2, OUTER: 2})
    assert run.reverted == frozenset()


def test_a_revert_in_one_module_with_a_change_in_a_module_the_test_does_not_reach(
    tmp_path: Path,
) -> None:
    _project(tmp_path)
    (tmp_path / "pkg" / "other.py").write_text("def far():\n    return 1\n")
    (tmp_path / "tests" / "test_other.py").write_text(
        "from pkg.other import far\n\ndef test_far():\n    assert far()\n"
    )
    ids = [*IDS, "tests/test_other.py::test_far"]
    files = {"tests/test_core.py", "tests/test_other.py"}
    cache = tmp_path / "impact.json"
    core, other = tmp_path / "pkg" / "core.py", tmp_path / "pkg" / "other.py"
    stored: dict[str, str] = {}
    for episode in (1, 2, 3):
        if episode == 2:
            core.write_text(core.read_text().replace(*BREAK))
        if episode == 3:  # the revert of core, and a new fault in other
            core.write_text(core.read_text().replace(*REVERT))
            other.write_text(other.read_text().replace("return 1", "return 0"))
        watch = {INNER: 1} if episode == 3 else {}
        run = ca.analyse(tmp_path, files, ids, stored, cache, lambda w=watch: w)
        run.save(episode)
        stored = run.digests
    assert run.changed_files == {"pkg/core.py", "pkg/other.py"}
    assert run.reverted == {INNER}


def test_a_cache_without_episodes_knows_no_reverts(tmp_path: Path) -> None:
    """A version 1 cache (one previous digest per path, no episodes) still loads."""
    _project(tmp_path)
    cache = tmp_path / "impact.json"
    core = tmp_path / "pkg" / "core.py"
    first = ca.analyse(tmp_path, {"tests/test_core.py"}, IDS, {}, cache)
    first.save(1)
    core.write_text(core.read_text().replace("return 1", "return 2"))
    second = ca.analyse(tmp_path, {"tests/test_core.py"}, IDS, first.digests, cache)
    second.save(2)
    data = json.loads(cache.read_text())
    data["version"] = 1
    data["paths"] = {path: [versions[0][0], None] for path, versions in data["paths"].items()}
    cache.write_text(json.dumps(data))
    core.write_text(core.read_text().replace("return 2", "return 1"))
    third = ca.analyse(
        tmp_path, {"tests/test_core.py"}, IDS, second.digests, cache, lambda: {INNER: 1}
    )
    assert third.impacts[INNER] == prio.DIRECT  # the facts of the old version still load
    assert third.reverted == frozenset()


MID_REVERT = ("return inner() + 0", "return inner()")


@pytest.mark.parametrize("streak", [(3, 2, 1), 3])
def test_a_cause_that_also_repaired_older_code_is_undone_once_its_fault_is_back(
    tmp_path: Path, streak: tuple[int, ...] | int
) -> None:
    """Episode 2 changes mid (test_inner passes on, in episodes 2 and 3); episode 4 repairs
    mid and breaks inner — test_inner fails from there; episode 5 reverts inner and changes
    outer. mid still differs from episode 3, where test_inner last passed, but it is back as
    in episode 1, where test_inner passed too: the failure's cause is undone (more-itertools
    commits 13-14 of the fault history). Knowing only the last passing episode, it is not."""
    edits = [[MID_EDIT], [], [MID_REVERT, BREAK], [REVERT, OUTER_EDIT]]
    *_, run = _episodes(tmp_path, edits, {INNER: streak})
    assert run.reverted == ({INNER} if isinstance(streak, tuple) else frozenset())
