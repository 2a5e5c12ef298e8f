"""Carrying coverage maps across an edit: hunks, line shifting, what cannot be carried."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_qlearn.agents import coverage_tracer as ct
from pytest_qlearn.changes import git as vcs
from pytest_qlearn.changes.coverage import detect
from pytest_qlearn.changes.coverage_map import CoverageMap
from pytest_qlearn.changes.line_shift import (
    FileShift,
    Hunk,
    analyse,
    changed_old_lines,
    hunks_from_texts,
    parse_hunks,
    shift_lines,
)
from pytest_qlearn.engine.hyperparams import Hyperparameters
from pytest_qlearn.engine.qlearner import QLearner
from pytest_qlearn.engine.rewards import RewardCalculator

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

DIFF = """\
diff --git a/m.py b/m.py
index 1111111..2222222 100644
--- a/m.py
+++ b/m.py
@@ -0,0 +1,2 @@
+# a
+# b
@@ -5 +7 @@ def one():
-    return 1
+    return 11
@@ -9,2 +10,0 @@ def two():
-    x = 2
-    return x
@@ -20,0 +19,3 @@
+    y = 1
+    y += 1
+    return y
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1 +0,0 @@
-X = 1
diff --git a/new.py b/new.py
new file mode 100644
--- /dev/null
+++ b/new.py
@@ -0,0 +1 @@
+N = 1
diff --git a/with space.py b/with space.py
--- a/with space.py\t
+++ b/with space.py\t
@@ -3,2 +3 @@
-a
-b
+c
"""


def test_hunks_are_parsed_with_gits_numbering() -> None:
    found = parse_hunks(DIFF)
    assert found == {
        "m.py": [Hunk(0, 0, 1, 2), Hunk(5, 1, 7, 1), Hunk(9, 2, 10, 0), Hunk(20, 0, 19, 3)],
        "gone.py": [Hunk(1, 1, 0, 0)],
        "with space.py": [Hunk(3, 2, 3, 1)],
    }
    # a change, a removal, insertions at the start and after line 20: the lines around them
    assert changed_old_lines(found["m.py"]) == {0, 1, 5, 9, 10, 20, 21}


def test_lines_move_by_the_hunks_above_them() -> None:
    hunks = parse_hunks(DIFF)["m.py"]
    # 2 lines inserted at the start; 5 changed in place; 9-10 removed; 3 inserted after 20
    assert shift_lines([2, 3, 4], hunks) == [4, 5, 6]
    assert shift_lines([6, 8], hunks) == [8, 10]
    assert shift_lines([11, 20], hunks) == [11, 20]
    assert shift_lines([21, 30], hunks) == [24, 33]
    assert shift_lines([], hunks) == []


def test_changes_at_the_start_and_the_end_of_a_file() -> None:
    old = "a\nb\nc\n"
    assert hunks_from_texts(old, "z\na\nb\nc\n") == [Hunk(0, 0, 1, 1)]
    assert hunks_from_texts(old, "b\nc\n") == [Hunk(1, 1, 0, 0)]
    assert hunks_from_texts(old, "a\nb\nc\nd\n") == [Hunk(3, 0, 4, 1)]
    assert hunks_from_texts(old, "a\nb\n") == [Hunk(3, 1, 2, 0)]
    assert hunks_from_texts(old, "a\nB\nc\n") == [Hunk(2, 1, 2, 1)]
    assert hunks_from_texts(old, old) == []
    assert shift_lines([1, 2, 3], [Hunk(0, 0, 1, 1)]) == [2, 3, 4]
    assert shift_lines([2, 3], [Hunk(1, 1, 0, 0)]) == [1, 2]
    assert shift_lines([1, 2, 3], [Hunk(3, 0, 4, 1)]) == [1, 2, 3]


@given(
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=25),
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=25),
)
def test_every_untouched_line_lands_on_the_same_text(old: list[str], new: list[str]) -> None:
    """difflib's hunks and the shift agree: an old line outside every hunk moves to a new
    line holding the same text (with several hunks, at the start and at the end)."""
    old_text, new_text = "\n".join(old) + "\n", "\n".join(new) + "\n"
    hunks = hunks_from_texts(old_text, new_text)
    changed: set[int] = set()
    for hunk in hunks:
        changed.update(range(hunk.old_start, hunk.old_start + hunk.old_count))
    kept = [n for n in range(1, len(old) + 1) if n not in changed]
    for before, after in zip(kept, shift_lines(kept, hunks), strict=True):
        assert new[after - 1] == old[before - 1]


SOURCE = '''\
"""Module docstring."""

LIMIT = 3


def one(x):
    """Its docstring."""
    if x > LIMIT:
        return compute(
            x,
            1,
        )
    return 0


class Box:
    size = 2

    def get(self):
        value = self.size
        return value


def compute(x, y):
    return x + y
'''


def edited(line: int, text: str | None, insert: bool = False) -> str:
    lines = SOURCE.splitlines(keepends=True)
    if insert:
        lines.insert(line, text or "")
    elif text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    return "".join(lines)


def shift_of(new: str) -> FileShift | None:
    return analyse(SOURCE, new, hunks_from_texts(SOURCE, new))


def test_a_change_inside_a_function_is_carried_for_tests_that_did_not_run_it() -> None:
    shift = shift_of(edited(13, "    return -1\n"))
    assert shift is not None
    assert shift.carry({20, 21, 25}) == [20, 21, 25]  # Box.get and compute()
    assert shift.carry({8, 13}) is None  # one() without the big x
    # a changed continuation line: the test recorded the statement's first line
    shift = shift_of(edited(11, "            2,\n"))
    assert shift is not None and shift.carry({8, 9}) is None
    assert shift.carry({8, 13}) == [8, 13]


def test_lines_inserted_or_removed_in_a_function_move_the_others() -> None:
    shift = shift_of(edited(20, "        self.size += 0\n", insert=True))  # after line 20
    assert shift is not None
    assert shift.carry({8, 13}) == [8, 13]
    assert shift.carry({25}) == [26]
    assert shift.carry({20, 21}) is None  # the lines around the insertion
    shift = shift_of(edited(7, None))  # one()'s docstring removed: nothing runs it
    assert shift is not None
    assert shift.carry({8, 13, 25}) == [7, 12, 24]


def test_changes_that_run_at_import_are_not_carried() -> None:
    assert shift_of(edited(3, "LIMIT = 4\n")) is None  # module level
    assert shift_of(edited(17, "    size = 3\n")) is None  # class level
    assert shift_of(edited(6, "def one(x, y=1):\n")) is None  # a def line
    assert shift_of(edited(24, "def plus(x, y):\n    return 0\n\n\n", insert=True)) is None
    assert shift_of(edited(25, "    return x +\n")) is None  # does not parse
    # the module docstring, comments and blank lines run nothing
    shift = shift_of(edited(1, '"""Another docstring."""\n# note\n'))
    assert shift is not None and shift.carry({8, 25}) == [9, 26]


def test_a_map_is_carried_only_from_the_version_it_was_traced_on() -> None:
    facts_shift = shift_of(edited(13, "    return -1\n"))
    assert facts_shift is not None
    from pytest_qlearn.changes.coverage import ChangeFacts

    facts = ChangeFacts(
        digests={"m.py": "new", "o.py": "o2"},
        changed={"m.py", "o.py"},
        shifts={"m.py": ("old", "new", facts_shift)},
    )
    maps = {
        "t_get": CoverageMap("t_get", {"m.py": "20-21"}, {"m.py": "old"}, 1),
        "t_one": CoverageMap("t_one", {"m.py": "8,13"}, {"m.py": "old"}, 1),
        "t_older": CoverageMap("t_older", {"m.py": "20-21"}, {"m.py": "older"}, 1),
        "t_other": CoverageMap(
            "t_other", {"m.py": "25", "o.py": "1"}, {"m.py": "old", "o.py": "o1"}, 1
        ),
        "t_same": CoverageMap("t_same", {"m.py": "25"}, {"m.py": "new"}, 2),
    }
    carried = facts.carry(maps)
    # t_one ran the change, t_older was traced on another version, t_other covers a file
    # that cannot be carried, t_same is not stale
    assert carried == {"t_get": CoverageMap("t_get", {"m.py": "20-21"}, {"m.py": "new"}, 1)}


def tracer() -> ct.CoverageTracer:
    hyper = Hyperparameters(epsilon=0.0, epsilon_min=0.0)
    learner = QLearner(ct.NAME, 2, hyper, random.Random(1))
    return ct.CoverageTracer(learner, RewardCalculator(), ct.agent_type(hyper))


def test_a_carried_map_is_a_state_of_its_own_that_reuses_by_default() -> None:
    agent = tracer()
    cmap = CoverageMap("t", {"m.py": "5"}, {"m.py": "d"}, 1)
    maps = {"t": cmap, "u": cmap._replace(test_id="u")}
    decisions = agent.decide(["t", "u"], maps, {}, carried={"t"}, episode=3)
    assert not decisions["t"].trace and not decisions["u"].trace
    assert decisions["t"].state is not None and decisions["u"].state is not None
    assert decisions["t"].state.key != decisions["u"].state.key
    assert "moved" in decisions["t"].state.readable


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@needs_git
def test_detect_reads_the_old_version_from_git_and_carries(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "sub" / "m.py").write_text(SOURCE)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    base = vcs.state(root).commit
    assert base is not None
    assert vcs.old_texts(root / "sub", base, ["m.py", "nope.py"]) == {"m.py": SOURCE.encode()}
    old = digest(SOURCE)
    maps = {
        "t_get": CoverageMap("t_get", {"sub/m.py": "20-21"}, {"sub/m.py": old}, 1),
        "t_one": CoverageMap("t_one", {"sub/m.py": "8,13"}, {"sub/m.py": old}, 1),
    }
    new = edited(12, "    x += 0\n", insert=True)
    (root / "sub" / "m.py").write_text(new)
    git(root, "commit", "-qam", "two")
    facts = detect(root, maps, {"sub/m.py": old}, base, ())
    assert set(facts.shifts) == {"sub/m.py"}
    carried = facts.carry(maps)
    assert carried == {
        "t_get": CoverageMap("t_get", {"sub/m.py": "21-22"}, {"sub/m.py": digest(new)}, 1)
    }
    # uncommitted at the last episode: the commit is not the version traced, file level
    assert detect(root, maps, {"sub/m.py": old}, base, ("sub/m.py",)).carry(maps) == {}
