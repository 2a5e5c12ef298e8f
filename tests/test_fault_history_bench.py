"""The pure helpers of benchmarks/fault_history.py: mutation sites, history plan, metrics."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import random
import shutil
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "fault_history.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fault_history_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


fh = _load()

SOURCE = textwrap.dedent(
    """\
    LIMIT = 10

    def clamp(x, low=0):
        if x < low and x != -1:
            return low
        while x >= LIMIT:
            x -= 3
        return f"{x > 1}" if x is None else x

    class Box:
        def full(self):
            return True
    """
)


def _mutated_lines(source: str, mutant: object) -> list[tuple[str, str]]:
    out = fh.apply_mutants(source, [mutant])
    return [(a, b) for a, b in zip(source.splitlines(), out.splitlines(), strict=True) if a != b]


def test_find_mutants_covers_every_operator_inside_functions_only() -> None:
    mutants = fh.find_mutants(SOURCE, "pkg/mod.py")
    changes = {(m.operator, *_mutated_lines(SOURCE, m)[0]) for m in mutants}
    assert ("compare < -> <=", "    if x < low and x != -1:", "    if x <= low and x != -1:") in (
        changes
    )
    assert (
        "compare != -> ==",
        "    if x < low and x != -1:",
        "    if x < low and x == -1:",
    ) in changes
    assert ("boolean and -> or", "    if x < low and x != -1:", "    if x < low or x != -1:") in (
        changes
    )
    assert ("negate if", "    if x < low and x != -1:", "    if not (x < low and x != -1):") in (
        changes
    )
    assert ("negate while", "    while x >= LIMIT:", "    while not (x >= LIMIT):") in changes
    assert ("constant +1", "        x -= 3", "        x -= 4") in changes
    assert ("return None", "        return low", "        return None") in changes
    assert ("return flipped", "        return True", "        return False") in changes
    # Module level (LIMIT = 10), defaults (low=0) and f-string contents are never mutated.
    assert not any("LIMIT = " in before for _, before, _ in changes)
    assert not any("def clamp" in before for _, before, _ in changes)
    assert not any(m.operator == "compare > -> >=" for m in mutants)
    for mutant in mutants:
        ast.parse(fh.apply_mutants(SOURCE, [mutant]))


def test_find_mutants_handles_multibyte_text_before_the_site() -> None:
    source = 'def f(x):\n    return "éé" if x in "ü" else 2\n'
    flipped = [m for m in fh.find_mutants(source, "m.py") if m.operator == "compare in -> not in"]
    assert len(flipped) == 1
    assert fh.apply_mutants(source, flipped) == (
        'def f(x):\n    return "éé" if x not in "ü" else 2\n'
    )


def test_apply_mutants_applies_several_and_rejects_overlaps() -> None:
    mutants = fh.find_mutants(SOURCE, "pkg/mod.py")
    by_op = {m.operator: m for m in mutants}
    both = fh.apply_mutants(SOURCE, [by_op["constant +1"], by_op["compare < -> <="]])
    assert "x <= low" in both and "x -= 4" in both
    with pytest.raises(ValueError, match="overlapping mutants"):
        fh.apply_mutants(SOURCE, [by_op["negate if"], by_op["compare < -> <="]])


def test_plan_history_is_seeded_starts_clean_and_faults_persist_then_end() -> None:
    plan = fh.plan_history(60, random.Random(7))
    assert plan == fh.plan_history(60, random.Random(7))
    assert len(plan) == 60 and plan[0] == ()
    assert any(not active for active in plan[1:]) and any(plan)
    spans: dict[int, list[int]] = {}
    for commit, active in enumerate(plan):
        for fault in active:
            spans.setdefault(fault, []).append(commit)
    assert sorted(spans) == list(range(len(spans)))
    for commits in spans.values():
        assert commits == list(range(commits[0], commits[0] + len(commits)))
        assert 1 <= len(commits) <= 4
    with pytest.raises(ValueError, match="at least 2"):
        fh.plan_history(1, random.Random(0))


def test_read_junit_keeps_run_order_and_folds_teardown_errors(tmp_path: Path) -> None:
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="t.test_b" name="test_2" time="0.5"/>'
        '<testcase classname="t.test_a" name="test_1" time="1.0"><failure message="x"/>'
        "</testcase>"
        '<testcase classname="t.test_b" name="test_2" time="0.25"><error message="td"/>'
        "</testcase>"
        '<testcase classname="t.test_a" name="test_3" time="0.1"><skipped/></testcase>'
        "</testsuite></testsuites>"
    )
    assert fh.read_junit(xml) == [
        fh.Case("t.test_b::test_2", True, 0.75),
        fh.Case("t.test_a::test_1", True, 1.0),
        fh.Case("t.test_a::test_3", False, 0.1),
    ]


def test_caught_within_counts_the_prefix_that_fits_the_time_fraction() -> None:
    cases = [
        fh.Case("a", False, 1.0),
        fh.Case("b", True, 1.0),
        fh.Case("c", True, 6.0),
        fh.Case("d", True, 0.5),
    ]
    assert fh.caught_within(cases, 0.25) == (1, 3)  # 2.125 s: a, b; c does not fit, stop
    assert fh.caught_within(cases, 1.0) == (3, 3)
    assert fh.caught_within([], 0.25) == (0, 0)


def test_score_run_and_summarise() -> None:
    first = fh.score_run(0, [fh.Case("a", False, 1.0), fh.Case("b", False, 1.0)])
    second = fh.score_run(
        1, [fh.Case("a", True, 1.0), fh.Case("b", False, 2.0), fh.Case("c", True, 1.0)]
    )
    assert first.apfd is None and first.failures == 0
    assert second.apfd == pytest.approx(1 - 4 / 6 + 1 / 6)
    assert second.ttff == 1.0 and second.caught == 1 and second.failing_ids == ("a", "c")
    row = fh.summarise("ff", [first, second], 2, {}, {})
    assert row["failing_commits"] == 1 and row["apfd"] == second.apfd
    assert row["apfd_second_half"] == second.apfd and row["caught_pct"] == 50.0

    budget = fh.score_run(1, [fh.Case("c", True, 1.0)])
    row = fh.summarise("qlearn-budget", [budget], 2, {1: {"a", "c"}}, {1: 4.0})
    assert row["caught"] == 1 and row["failures"] == 2
    assert row["caught_pct"] == 50.0 and row["time_used_pct"] == 25.0


def test_repeat_commits_are_those_that_only_repeat_the_previous_failures() -> None:
    truth = {0: set(), 1: {"a"}, 2: {"a"}, 3: {"a", "b"}, 4: {"b"}, 5: set(), 6: {"b"}}
    assert fh.repeat_commits(truth) == {2, 4}
    runs = [
        fh.score_run(1, [fh.Case("b", False, 1.0), fh.Case("a", True, 1.0)]),
        fh.score_run(2, [fh.Case("a", True, 1.0), fh.Case("b", False, 1.0)]),
    ]
    row = fh.summarise("qlearn", runs, 3, {0: set(), 1: {"a"}, 2: {"a"}}, {})
    assert row["apfd_repeat"] == pytest.approx(0.75)
    assert row["apfd_new"] == pytest.approx(0.25)
    # Both commits are in the second half (>= 3 // 2); 25 % of 2 s fits no 1 s test; the
    # first failure runs 2nd and 1st (median 1.5); no wall times were measured here.
    assert (
        "| qlearn | 2 | 0.500 | 0.250 | 0.750 | 0.500 | 1.5 / 1.5 | 1.50 | 0 % (0/2) | 0.00 (—) |"
    ) in fh.table([row])


def test_first_failure_position_is_one_based_and_none_without_failures() -> None:
    assert fh.first_failure_position([False, False, True, True]) == 3
    assert fh.first_failure_position([True]) == 1
    assert fh.first_failure_position([False, False]) is None
    assert fh.first_failure_position([]) is None
    run = fh.score_run(4, [fh.Case("a", False, 1.0), fh.Case("b", True, 1.0)], wall=2.5)
    assert run.first_failure == 2 and run.wall == 2.5


def test_median_and_mean_of_first_failures_and_wall_ratios() -> None:
    assert fh._median([3, None, 1, 10]) == 3
    assert fh._median([4, 1]) == 2.5
    assert fh._median([None]) is None
    runs = [
        fh.score_run(0, [fh.Case("a", False, 1.0)], wall=1.0),
        fh.score_run(1, [fh.Case("a", True, 1.0), fh.Case("b", True, 1.0)], wall=2.0),
        fh.score_run(2, [fh.Case("a", False, 1.0), fh.Case("b", True, 1.0)], wall=3.0),
        fh.score_run(3, [fh.Case("a", False, 1.0)] * 4 + [fh.Case("b", True, 1.0)], wall=6.0),
    ]
    row = fh.summarise("qlearn", runs, 4, {}, {})
    assert row["first_failure_median"] == 2 and row["first_failure_mean"] == pytest.approx(8 / 3)
    assert row["wall_mean"] == 3.0  # over every commit, failing or not
    base = fh.summarise("collection", runs[:2], 4, {}, {})
    rows = [base, row]
    fh.add_wall_ratios(rows)
    assert base["wall_ratio"] == 1.0 and row["wall_ratio"] == pytest.approx(2.0)
    alone = [fh.summarise("ff", runs, 4, {}, {})]
    fh.add_wall_ratios(alone)
    assert alone[0]["wall_ratio"] is None
    table = fh.table(rows)
    assert "| 2 / 2.7 |" in table and "| 3.00 (2.00) |" in table and "| 1.50 (1.00) |" in table


def test_rotation_starts_each_commit_with_the_next_ordering() -> None:
    orderings = ["a", "b", "c"]
    assert fh.rotation(orderings, 0) == ["a", "b", "c"]
    assert fh.rotation(orderings, 1) == ["b", "c", "a"]
    assert fh.rotation(orderings, 5) == ["c", "a", "b"]
    firsts = [fh.rotation(orderings, commit)[0] for commit in range(9)]
    assert all(firsts.count(o) == 3 for o in orderings)
    assert fh.rotation([], 3) == []


def test_each_ordering_disables_the_other_ordering_plugins(tmp_path: Path) -> None:
    def blocked(ordering: str) -> set[str]:
        args = fh.ordering_args(ordering, tmp_path, 1, 0)
        return {b for a, b in itertools.pairwise(args) if a == "-p"}

    everything = {"no:qlearn", "no:ranking", "no:pytest-testmon"}
    assert blocked("collection") == blocked("ff") == everything
    assert blocked("ranking") == blocked("ranking-010") == {"no:qlearn", "no:pytest-testmon"}
    assert blocked("testmon") == {"no:qlearn", "no:ranking"}
    for ordering in ("qlearn", "qlearn-cov", "qlearn-budget", "qlearn-test", "qlearn-cov-test"):
        assert blocked(ordering) == {"no:ranking", "no:pytest-testmon"}
    assert "--rank-weight=0-1-0" in fh.ordering_args("ranking-010", tmp_path, 1, 0)
    assert "--testmon-noselect" in fh.ordering_args("testmon", tmp_path, 1, 0)
    assert fh.ordering_env("testmon", tmp_path) == {
        "TESTMON_DATAFILE": str(tmp_path / "testmondata")
    }
    assert fh.ordering_env("qlearn", tmp_path) == {}
    # qlearn runs with its default settings: no -o overrides but for the -test variants
    for ordering in ("qlearn", "qlearn-cov", "qlearn-budget"):
        assert "-o" not in fh.ordering_args(ordering, tmp_path, 1, 0)
    assert set(fh.DEFAULT_ORDERINGS) <= set(fh.ALL_ORDERINGS)
    assert "qlearn-test" not in fh.DEFAULT_ORDERINGS


def test_collection_failed_spots_import_errors_that_x_reports_as_exit_1() -> None:
    output = (
        "_____ ERROR collecting pkg/tests/test_a.py _____\n"
        "E   IndexError: tuple index out of range\n"
        "!!!! stopping after 1 failures !!!!\n1 error in 0.09s\n"
    )
    assert fh.collection_failed(output)
    assert not fh.collection_failed("F\n___ test_b ___\n1 failed, 3 passed in 0.1s\n")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_history_commits_every_state_with_fixed_identity(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "pkg").mkdir(parents=True)
    (work / "pkg" / "mod.py").write_text("X = 1\n")
    first = fh.git_init(work)
    assert fh.git_junk(work) == []
    # What Python and pytest leave is ignored, not a change.
    (work / "pkg" / "__pycache__").mkdir()
    (work / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"x")
    (work / ".pytest_cache").mkdir()
    (work / ".pytest_cache" / "README.md").write_text("cache")
    assert fh.git_junk(work) == []
    # An unchanged state is still a commit of its own.
    second = fh.git_commit(work, 1)
    assert second != first
    (work / "pkg" / "mod.py").write_text("X = 2\n")
    assert fh.git_junk(work) == [" M pkg/mod.py"]
    third = fh.git_commit(work, 2)
    assert fh.git_junk(work) == []
    log = fh.git(work, 2, "log", "--format=%H|%an|%ae|%cn|%ce|%at|%ct|%s").splitlines()
    assert [line.split("|")[0] for line in log] == [third, second, first]
    for commit, line in zip((2, 1, 0), log, strict=True):
        _, an, ae, cn, ce, at, ct, subject = line.split("|")
        assert an == cn == fh.GIT_NAME and ae == ce == fh.GIT_EMAIL
        assert int(at) == int(ct) == fh.GIT_EPOCH + 3600 * commit
        assert subject == f"commit {commit}"
    assert fh.git(work, 2, "diff", "--name-only", first, third).split() == ["pkg/mod.py"]
    # The same states give the same commit ids anywhere.
    again = tmp_path / "again"
    (again / "pkg").mkdir(parents=True)
    (again / "pkg" / "mod.py").write_text("X = 1\n")
    assert fh.git_init(again) == first
    (again / "stray.txt").write_text("left by a run")
    assert fh.git_junk(again) == ["?? stray.txt"]
