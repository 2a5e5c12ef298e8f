"""End to end: ``--qlearn-cov`` through real pytest sessions — what is traced when, where the
maps go, how changed code reaches the budget, and how qlearn steps aside for pytest-cov and
debuggers."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import textwrap
import warnings
from contextlib import closing
from pathlib import Path

# pytester's in-process runs drop the modules they imported afterwards, and coverage.py's C
# tracer cannot be imported a second time in one process (its CTracer is then missing): the
# tracer imports coverage.py lazily, so it is imported here once, for every run below
import coverage  # noqa: F401
import pytest
from test_plugin_e2e import BASE_ARGS, DEFAULT_DB

from pytest_qlearn.changes.coverage_map import CoverageMap
from pytest_qlearn.changes.line_tracer import LineTracer, statements
from pytest_qlearn.coverage_plugin import READ_BATCH

SOURCES = {
    "pkg/__init__.py": "",
    "pkg/arith.py": """
        def add(x, y):
            return x + y


        def sub(x, y):
            return x - y
    """,
    "pkg/text.py": """
        def shout(word):
            return word.upper() + "!"
    """,
    "tests/test_arith.py": """
        from pkg.arith import add, sub


        def test_add():
            assert add(1, 2) == 3


        def test_sub():
            assert sub(3, 2) == 1
    """,
    "tests/test_text.py": """
        from pkg.text import shout


        def test_shout():
            assert shout("hi") == "HI!"


        def test_constant():
            assert 2 * 2 == 4
    """,
}
TRACED = re.compile(r"qlearn: coverage: (\d+) of (\d+) tests traced")


@pytest.fixture(autouse=True)
def _no_store_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QLEARN_DATABASE_URL", raising=False)


def make(pytester: pytest.Pytester, *, git: bool = True) -> Path:
    for name, text in SOURCES.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    pytester.makeini("[pytest]\npythonpath = .\nqlearn_exploration_rate = 0\n")
    if git:
        commit(pytester.path, "first")
    return pytester.path


def commit(root: Path, message: str) -> None:
    for args in (("init", "-q"), ("add", "-A"), ("commit", "-qm", message)):
        subprocess.run(
            ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
            cwd=root,
            check=True,
            capture_output=True,
        )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE_ARGS, "--qlearn", "--qlearn-cov", *args)


def traced(result: pytest.RunResult) -> tuple[int, int]:
    match = TRACED.search(result.stdout.str())
    assert match, result.stdout.str()
    return int(match.group(1)), int(match.group(2))


def stored_maps(root: Path) -> dict[str, CoverageMap]:
    with closing(sqlite3.connect(root / DEFAULT_DB)) as conn:
        rows = conn.execute("SELECT test_id, data, traced_episode FROM coverage_maps").fetchall()
    return {t: CoverageMap.from_json(t, data, episode) for t, data, episode in rows}


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_first_run_traces_all_later_runs_only_what_changed(pytester: pytest.Pytester) -> None:
    root = make(pytester)
    first = run(pytester)
    first.assert_outcomes(passed=4)
    assert traced(first) == (4, 4)
    maps = stored_maps(root)
    add_files = set(maps["tests/test_arith.py::test_add"].lines)
    assert add_files == {"pkg/arith.py", "tests/test_arith.py"}
    assert "pkg/text.py" in maps["tests/test_text.py::test_shout"].lines
    assert set(maps["tests/test_text.py::test_constant"].lines) == {"tests/test_text.py"}
    # the body of add() (line 2) ran in test_add, sub()'s body (line 6) did not
    assert maps["tests/test_arith.py::test_add"].lines["pkg/arith.py"] == "2"

    second = run(pytester)
    assert traced(second) == (0, 4)  # nothing changed: every map is reused
    assert "0 covered file(s) changed (git)" in second.stdout.str()

    # change the code only test_shout executes
    (root / "pkg/text.py").write_text('def shout(word):\n    return word.upper() + "!!"[:1]\n')
    third = run(pytester)
    third.assert_outcomes(passed=4)
    assert traced(third) == (1, 4)
    assert "1 covered file(s) changed (git); 1 test(s) cover them" in third.stdout.str()
    assert stored_maps(root)["tests/test_text.py::test_shout"].traced_episode == 3
    assert stored_maps(root)["tests/test_arith.py::test_add"].traced_episode == 1


def test_without_git_file_digests_find_the_change(pytester: pytest.Pytester) -> None:
    root = make(pytester, git=False)
    assert traced(run(pytester)) == (4, 4)
    arith = root / "pkg/arith.py"
    arith.write_text(arith.read_text().replace("x + y", "y + x"))
    result = run(pytester)
    assert traced(result) == (2, 4)  # test_add and test_sub cover arith.py
    assert "(file digests: not a git checkout)" in result.stdout.str()


@needs_git
def test_a_budget_always_runs_the_tests_covering_changed_code(pytester: pytest.Pytester) -> None:
    root = make(pytester)
    run(pytester).assert_outcomes(passed=4)
    run(pytester).assert_outcomes(passed=4)
    (root / "pkg/text.py").write_text('def shout(word):\n    return word.upper() + "?"\n')
    result = run(pytester, "--qlearn-budget", "1%", "--qlearn-report=report.json", "-v")
    result.assert_outcomes(failed=1)  # shout("hi") is now "HI?": the change broke it
    assert "tests/test_text.py::test_shout FAILED" in result.stdout.str()
    assert "3 deselected" in result.stdout.str()
    report = json.loads((root / "report.json").read_text(encoding="utf-8"))
    assert report["budget"]["always_run"] == {"covers changed code": 1}


@needs_git
def test_a_corrupt_stored_map_is_traced_again_with_a_warning(pytester: pytest.Pytester) -> None:
    root = make(pytester)
    run(pytester).assert_outcomes(passed=4)
    with closing(sqlite3.connect(root / DEFAULT_DB)) as conn:
        conn.execute(
            "UPDATE coverage_maps SET data = '{broken' WHERE test_id = ?",
            ("tests/test_arith.py::test_sub",),
        )
        conn.commit()
    result = run(pytester)
    result.assert_outcomes(passed=4)
    assert traced(result) == (1, 4)
    assert "1 stored coverage map(s) were unreadable" in result.stdout.str()
    assert stored_maps(root)["tests/test_arith.py::test_sub"].lines  # repaired


@needs_git
def test_coverage_gain_is_rewarded_from_the_second_run(pytester: pytest.Pytester) -> None:
    root = make(pytester)
    run(pytester, "--qlearn-report=one.json").assert_outcomes(passed=4)
    run(pytester, "--qlearn-report=two.json").assert_outcomes(passed=4)
    one = (root / "one.json").read_text(encoding="utf-8")
    two = (root / "two.json").read_text(encoding="utf-8")
    assert '"needs --qlearn-cov on this run and on an earlier one"' in one
    assert re.search(r'"coverage_gain": \{[^}]*"value": 50\.0', two), two


@needs_git
def test_xdist_workers_trace_and_the_maps_reach_the_store(pytester: pytest.Pytester) -> None:
    root = make(pytester)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=4)
    assert traced(result) == (4, 4)
    maps = stored_maps(root)
    assert len(maps) == 4 and maps["tests/test_arith.py::test_add"].lines["pkg/arith.py"] == "2"
    second = run(pytester, "-n", "2")
    assert traced(second) == (0, 4)
    # the controller recorded the commit: the workers compared with git
    assert "0 covered file(s) changed (git)" in second.stdout.str()
    (root / "pkg/text.py").write_text('def shout(word):\n    return word.upper() + "!" * 1\n')
    third = run(pytester, "-n", "2")
    assert traced(third) == (1, 4)
    assert "1 covered file(s) changed (git); 1 test(s) cover them" in third.stdout.str()


@needs_git
def test_pytest_cov_with_test_contexts_is_shared_and_its_report_unchanged(
    pytester: pytest.Pytester,
) -> None:
    root = make(pytester)
    plain = pytester.runpytest(*BASE_ARGS, "--cov=pkg", "--cov-context=test", "-p", "no:qlearn")
    together = run(pytester, "--cov=pkg", "--cov-context=test")
    together.assert_outcomes(passed=4)
    assert "qlearn: coverage: using pytest-cov's per-test contexts" in together.stdout.str()
    total = re.compile(r"^TOTAL\s+.*$", re.MULTILINE)
    assert total.findall(together.stdout.str()) == total.findall(plain.stdout.str())
    assert total.findall(plain.stdout.str())
    maps = stored_maps(root)
    assert maps["tests/test_arith.py::test_add"].lines == {"pkg/arith.py": "2"}


@needs_git
def test_pytest_cov_without_contexts_turns_the_features_off(pytester: pytest.Pytester) -> None:
    make(pytester)
    result = run(pytester, "--cov=pkg")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert "qlearn: coverage features are off: pytest-cov is measuring without per-test" in out
    assert re.search(r"^TOTAL\s+", out, re.MULTILINE)


def test_a_debugger_makes_qlearn_step_aside(pytester: pytest.Pytester) -> None:
    make(pytester, git=False)
    result = run(pytester, "--pdb")
    result.assert_outcomes(passed=4)
    assert "qlearn: coverage features are off: --pdb debugs this run" in result.stdout.str()


@needs_git
def test_the_reports_show_what_coverage_did(pytester: pytest.Pytester) -> None:
    root = make(pytester)
    run(pytester).assert_outcomes(passed=4)
    (root / "pkg/arith.py").write_text((root / "pkg/arith.py").read_text() + "\n# touched\n")
    result = run(
        pytester, "--qlearn-report", "--qlearn-report=r.json", "--qlearn-report=r.md",
        "--qlearn-report=r.html",
    )  # fmt: skip
    result.assert_outcomes(passed=4)
    section = json.loads((root / "r.json").read_text(encoding="utf-8"))["coverage"]
    assert section["mode"] == "trace"
    # the comment went in right after sub()'s body: test_sub is traced again, test_add's
    # map is carried across (it ran none of the lines around the insertion)
    assert (section["tests"], section["traced"], section["carried"]) == (4, 1, 1)
    assert section["new_information"] == 0  # a comment changes no executed line
    assert section["changed_files"] == ["pkg/arith.py"]
    assert section["change_source"] == "git"
    # line level (git): the comment went in right after sub()'s body, which only test_sub runs
    assert section["covering_changed"] == 1
    assert section["percent"] == section["previous_percent"] > 0
    # every test covers a line of its own test function
    assert {u["test_id"] for u in section["unique_lines"]} == {
        "tests/test_arith.py::test_add",
        "tests/test_arith.py::test_sub",
        "tests/test_text.py::test_shout",
        "tests/test_text.py::test_constant",
    }
    assert "### Coverage" in (root / "r.md").read_text(encoding="utf-8")
    assert "<h2>Coverage</h2>" in (root / "r.html").read_text(encoding="utf-8")
    out = result.stdout.str()
    assert "coverage, tests traced: 1 of 4" in out
    assert "coverage, maps carried: 1 across the change, not traced" in out
    assert "coverage, changed files: 1 (git): pkg/arith.py" in out


def many_tests(pytester: pytest.Pytester, count: int) -> None:
    body = ["from pkg.arith import add, sub", ""]
    for i in range(count):
        call = f"add({i}, 1) == {i + 1}" if i % 2 else f"sub({i}, 1) == {i - 1}"
        body += [f"def test_n{i}():", f"    assert {call}", ""]
    (pytester.path / "tests/test_many.py").write_text("\n".join(body), encoding="utf-8")


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_lines_read_in_batches_reach_every_test(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    root = make(pytester, git=False)
    count = 2 * READ_BATCH + 30  # more than two batches
    many_tests(pytester, count)
    result = run(pytester, *workers)
    result.assert_outcomes(passed=count + 4)
    assert traced(result) == (count + 4, count + 4)
    maps = stored_maps(root)
    assert len(maps) == count + 4
    assert maps["tests/test_many.py::test_n7"].lines["pkg/arith.py"] == "2"  # add's body
    assert maps["tests/test_many.py::test_n8"].lines["pkg/arith.py"] == "6"  # sub's body
    assert maps["tests/test_many.py::test_n8"].lines["tests/test_many.py"] == str(8 * 3 + 4)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_a_run_stopped_early_keeps_the_lines_it_traced(
    pytester: pytest.Pytester, workers: list[str]
) -> None:
    root = make(pytester, git=False)
    many_tests(pytester, 20)
    many = root / "tests/test_many.py"
    many.write_text(many.read_text().replace("add(11, 1) == 12", "add(11, 1) == 0"))
    result = run(pytester, "-x", *workers)
    assert result.ret in (1, 2)  # failed (interrupted, says pytest-xdist)
    maps = stored_maps(root)
    ran = {t for t in maps if t.startswith("tests/test_many.py")}
    assert "tests/test_many.py::test_n11" in ran
    assert all(maps[t].lines for t in ran)


def test_statements_are_analysed_again_only_for_changed_files(pytester: pytest.Pytester) -> None:
    root = make(pytester, git=False)
    run(pytester).assert_outcomes(passed=4)

    def analysed() -> dict[str, float]:
        with closing(sqlite3.connect(root / DEFAULT_DB)) as conn:
            return dict(conn.execute("SELECT path, updated_at FROM coverage_files").fetchall())

    first = analysed()
    assert set(first) == {
        "pkg/arith.py",
        "pkg/text.py",
        "tests/test_arith.py",
        "tests/test_text.py",
    }
    (root / "pkg/text.py").write_text((root / "pkg/text.py").read_text() + "\nX = 1\n")
    run(pytester).assert_outcomes(passed=4)
    second = analysed()
    assert {p for p in first if first[p] != second[p]} == {"pkg/text.py"}


@needs_git
def test_tests_covering_changed_code_run_first(pytester: pytest.Pytester) -> None:
    root = make(pytester)
    run(pytester).assert_outcomes(passed=4)
    run(pytester).assert_outcomes(passed=4)
    (root / "pkg/text.py").write_text('def shout(word):\n    return word.upper() + "!" * 1\n')
    result = run(pytester, "-v")
    result.assert_outcomes(passed=4)
    order = [line.split(" ")[0] for line in result.outlines if re.match(r"^tests/\S+ PASSED", line)]
    assert order[0] == "tests/test_text.py::test_shout", order


def test_coverage_warnings_never_reach_a_suite_that_turns_warnings_into_errors(
    tmp_path: Path,
) -> None:
    """Tracing tests that run no project code makes coverage.py warn "No data was
    collected"; under ``filterwarnings = error`` that once ended a run in INTERNALERROR."""
    tracer = LineTracer(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracer.start("t.py::test_nothing")
        tracer.stop()
        assert tracer.take() == {}
        assert statements(tmp_path, ["gone.py"]) == {}


def test_a_failing_tracer_turns_coverage_off_with_one_warning_and_the_run_goes_on(
    pytester: pytest.Pytester,
) -> None:
    make(pytester, git=False)
    (pytester.path / "conftest.py").write_text(
        textwrap.dedent(
            """
            from pytest_qlearn.changes import line_tracer

            def broken(self, test_id):
                raise RuntimeError("the tracer broke")

            line_tracer.LineTracer.start = broken
            """
        ),
        encoding="utf-8",
    )
    # a subprocess: the patch must not leak into this test process
    result = pytester.runpytest_subprocess(*BASE_ARGS, "--qlearn", "--qlearn-cov")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert out.count("coverage failed (RuntimeError: the tracer broke)") == 1, out
    assert "qlearn: coverage: off" in out
    assert "saved to" in out  # the rest of the learning was kept


def test_the_ini_key_turns_coverage_on(pytester: pytest.Pytester) -> None:
    make(pytester, git=False)
    pytester.makeini("[pytest]\npythonpath = .\nqlearn = true\nqlearn_cov = yes\n")
    result = pytester.runpytest(*BASE_ARGS)
    result.assert_outcomes(passed=4)
    assert traced(result) == (4, 4)
    assert "qlearn: coverage: per-test tracing with coverage.py" in result.stdout.str()


CARRY_SOURCES = {
    "pkg/calc.py": """
        def scale(x):
            if x > 10:
                x = x // 2
            return x * 3


        def shift(x):
            y = x + 1
            return y


        def both(x):
            return shift(scale(x))
    """,
    "tests/test_calc.py": """
        from pkg.calc import both, scale, shift


        def test_scale_small():
            assert scale(2) == 6


        def test_scale_big():
            assert scale(20) == 30


        def test_shift():
            assert shift(1) == 2


        def test_both():
            assert both(1) == 4


        def test_shift_many():
            assert [shift(n) for n in range(3)] == [1, 2, 3]
    """,
}


@needs_git
@pytest.mark.parametrize("committed", [True, False])
def test_a_one_line_change_retraces_only_its_tests_and_carries_the_others_exactly(
    pytester: pytest.Pytester, committed: bool
) -> None:
    """One line of scale()'s body changes and a line is inserted above shift(): the tests
    that executed the changed line are traced again; the others keep their maps, moved by
    one line, and those maps are exactly what tracing every test again finds."""
    root = make(pytester)
    for name, text in CARRY_SOURCES.items():
        (root / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    commit(root, "calc")
    run(pytester).assert_outcomes(passed=9)
    before = stored_maps(root)
    calc = (root / "pkg/calc.py").read_text(encoding="utf-8").splitlines(keepends=True)
    assert calc[2] == "        x = x // 2\n"
    calc[2] = "        x = x // 2 + 0\n"  # runs only when x > 10: test_scale_big
    calc.insert(5, "# shift() comes next\n")  # a comment: moves shift() and both() down
    (root / "pkg/calc.py").write_text("".join(calc), encoding="utf-8")
    if committed:
        commit(root, "one line")
    result = run(pytester)
    result.assert_outcomes(passed=9)
    assert traced(result) == (1, 9)
    assert "map(s) carried across the change" in result.stdout.str()
    after = stored_maps(root)
    assert after["tests/test_calc.py::test_scale_big"].traced_episode == 2
    assert after["tests/test_calc.py::test_shift"].traced_episode == 1
    assert before["tests/test_calc.py::test_shift"].lines["pkg/calc.py"] == "8-9"
    assert after["tests/test_calc.py::test_shift"].lines["pkg/calc.py"] == "9-10"

    # every test traced from scratch on the changed code: the same maps, line for line
    fresh = run(pytester, "--qlearn-db=sqlite:///fresh.db")
    assert traced(fresh) == (9, 9)
    with closing(sqlite3.connect(root / "fresh.db")) as conn:
        rows = conn.execute("SELECT test_id, data, traced_episode FROM coverage_maps").fetchall()
    retraced = {t: CoverageMap.from_json(t, data, e) for t, data, e in rows}
    assert set(retraced) == set(after)
    for test_id, cmap in after.items():
        assert (cmap.lines, cmap.digests) == (retraced[test_id].lines, retraced[test_id].digests)

    # the next run has nothing left to trace
    assert traced(run(pytester)) == (0, 9)


def test_the_phases_are_traced_and_the_reporting_hooks_are_not(pytester: pytest.Pytester) -> None:
    """The tracer runs inside setup, call and teardown: a fixture's code before and after its
    yield is in the map, a conftest reporting hook's (run between the phases) is not."""
    root = make(pytester, git=False)
    (root / "tests" / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest

            from pkg.arith import add, sub


            @pytest.fixture(autouse=True)
            def around():
                add(0, 0)
                yield
                sub(0, 0)


            @pytest.hookimpl(wrapper=True)
            def pytest_runtest_makereport(item, call):
                report = yield
                report.seen = True
                return report


            def pytest_runtest_logreport(report):
                report.logged = True
            """
        ).lstrip(),
        encoding="utf-8",
    )
    run(pytester).assert_outcomes(passed=4)
    lines = stored_maps(root)["tests/test_text.py::test_constant"].lines
    assert lines["pkg/arith.py"] == "2,6"  # add() in setup, sub() in teardown
    # the fixture ran; the hooks' bodies (lines 15-17, 21) ran outside the traced phases
    assert lines["tests/conftest.py"] == "8-10", lines  # it was "8-10,15-17,21"
