"""End to end: ``--qlearn-budget`` and the ``selector`` agent through real pytest sessions.

The suite has six instant tests and three slow ones of clearly different durations (0.12 s,
0.2 s, 0.28 s). After a first run has measured them, a 0.2 s budget runs the instant tests and
the shortest slow one; the other two are deselected. Which tests fail is steered by
``fail.txt`` (see ``test_plugin_e2e``).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from conftest import pg_execute
from test_plugin_e2e import (
    BASE_ARGS,
    DEFAULT_DB,
    assert_workers_never_opened_sqlite,
    assert_xdist_ran_cleanly,
    load_report,
    make_project,
    run,
    run_order,
    set_failing,
)

SUITE = {
    "test_suite": """
        import time

        import pytest

        def test_f1():
            pass

        def test_f2():
            pass

        def test_f3():
            pass

        def test_f4():
            pass

        def test_f5():
            pass

        def test_f6():
            pass

        def test_slow_1():
            time.sleep(0.12)

        def test_slow_2():
            time.sleep(0.2)

        def test_slow_3():
            time.sleep(0.28)
    """
}
MARKED_SUITE = {
    "test_suite": SUITE["test_suite"].replace(
        "        def test_slow_3():",
        "        @pytest.mark.qlearn_always\n        def test_slow_3():",
    )
}
FAST = [f"test_suite.py::test_f{i}" for i in range(1, 7)]
SLOW = [f"test_suite.py::test_slow_{i}" for i in range(1, 4)]
BUDGET = ("--qlearn-budget", "0.2s")


@pytest.fixture(autouse=True)
def _no_store_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QLEARN_DATABASE_URL", raising=False)


def project(
    pytester: pytest.Pytester, *, ini: str = "", suite: dict[str, str] = SUITE, epsilon: float = 0
) -> None:
    make_project(pytester, ini=ini, suite=suite, epsilon=epsilon)
    first = run(pytester)  # measures every test's duration
    first.assert_outcomes(passed=9)


def budget_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("qlearn: budget")]


def test_budget_runs_what_fits_in_priority_order_and_deselects_the_rest(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    result = run(pytester, *BUDGET, "-v", "--qlearn-report=r.json")
    result.assert_outcomes(passed=7, deselected=2)
    # the instant tests first (their order is decided by durations too small to matter),
    # then the shortest slow one
    order = run_order(result)
    assert (sorted(order[:6]), order[6:]) == (FAST, [SLOW[0]])
    assert "qlearn: budget 0.2s, tests chosen by the selector agent" in result.outlines
    budget = load_report(pytester.path / "r.json")["budget"]
    assert (budget["mode"], budget["selected"], budget["deselected"]) == ("select", 7, 2)
    assert budget["budget_seconds"] == 0.2
    assert 0.12 <= budget["estimated_selected"] <= 0.2 < budget["estimated_total"]
    assert budget["actual_time"] >= 0.12
    text = result.stdout.str()
    assert "budget 0.2s (0.20s): ran 7 tests, deselected 2; 0 of 0 failures caught" in text
    # deselected, never passed: not in the JSON's tests either
    tests = load_report(pytester.path / "r.json")["tests"]
    assert sorted(t["test_id"] for t in tests) == sorted([*FAST, SLOW[0]])

    quiet_default = run(pytester, *BUDGET)
    quiet_default.assert_outcomes(passed=7, deselected=2)
    assert len(budget_lines(quiet_default)) == 2  # header note and one summary line


def test_a_share_of_the_suite_time_is_a_budget(pytester: pytest.Pytester) -> None:
    project(pytester)
    # 25 % of ~0.6 s is ~0.15 s: the instant tests and the 0.12 s one
    result = run(pytester, "--qlearn-budget", "25%", "--qlearn-report=r.json")
    result.assert_outcomes(passed=7, deselected=2)
    assert load_report(pytester.path / "r.json")["budget"]["budget"] == "25%"


def test_failed_last_time_new_and_marked_tests_always_run(pytester: pytest.Pytester) -> None:
    project(pytester, suite=MARKED_SUITE)
    set_failing(pytester, ["test_slow_2"])
    run(pytester).assert_outcomes(passed=8, failed=1)  # no budget: every test runs
    set_failing(pytester, [])
    pytester.makepyfile(test_new="def test_brand_new():\n    pass\n")
    result = run(pytester, "--strict-markers", *BUDGET, "-v", "--qlearn-report=r.json")
    ran = set(run_order(result))
    assert {SLOW[1], SLOW[2], "test_new.py::test_brand_new"} <= ran
    # always-run: 0.2 s (failed last) + 0.28 s (marked) + new already exceed 0.2 s
    assert ran == {SLOW[1], SLOW[2], "test_new.py::test_brand_new"}
    result.assert_outcomes(passed=3, deselected=7)
    assert "the always-run tests alone exceed it, ran only those" in result.stdout.str()
    assert load_report(pytester.path / "r.json")["budget"]["always_over_budget"] is True


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("-k", "slow or f1"), "-k"),
        (("-m", "not nothing"), "-m"),
        (("--lf",), "--lf"),
        (("test_suite.py::test_slow_3", "test_suite.py::test_f1"), "explicit node ids"),
    ],
)
def test_narrowing_the_run_turns_selection_off(
    pytester: pytest.Pytester, args: tuple[str, ...], why: str
) -> None:
    project(pytester)
    result = run(pytester, *BUDGET, *args, "--qlearn-report=r.json")
    assert f"qlearn: budget 0.2s not applied: {why} narrows the run, selection is off" in (
        result.outlines
    )
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] >= 2
    if why == "--lf":  # nothing failed: --lf runs everything
        assert outcomes["passed"] == 9 and "deselected" not in outcomes
    assert "budget" not in load_report(pytester.path / "r.json")
    # -q hides the header: the summary says it instead
    quiet = run(pytester, *BUDGET, *args, "-q")
    note = f"qlearn: budget 0.2s not applied: {why} narrows the run, selection is off"
    assert quiet.outlines.count(note) == 1
    assert (
        quiet.outlines.index(note)
        > quiet.outlines.index(
            next(line for line in quiet.outlines if line.startswith("qlearn: ") and "·" in line)
        )
        - 2
    )


def test_full_run_every_n_episodes(pytester: pytest.Pytester) -> None:
    project(pytester, ini="qlearn_full_run_every = 3\n")
    run(pytester, *BUDGET).assert_outcomes(passed=7, deselected=2)  # episode 2
    full = run(pytester, *BUDGET, "--qlearn-report=r.json")  # episode 3
    full.assert_outcomes(passed=9)
    assert load_report(pytester.path / "r.json")["budget"]["mode"] == "full run"
    assert "full run (qlearn_full_run_every), all 9 tests ran" in full.stdout.str()
    run(pytester, *BUDGET).assert_outcomes(passed=7, deselected=2)  # episode 4


def test_observe_runs_everything_and_reports_what_the_budget_would_miss(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    set_failing(pytester, ["test_slow_3"])
    result = run(pytester, *BUDGET, "--qlearn-observe", "--qlearn-report=r.json")
    result.assert_outcomes(passed=8, failed=1)
    budget = load_report(pytester.path / "r.json")["budget"]
    assert (budget["mode"], budget["selected"], budget["deselected"]) == ("observe", 7, 2)
    assert budget["missed"] == [SLOW[2]]
    assert budget["saved"] >= 0.2  # slow_2's time (slow_3 failed before sleeping)
    assert f"failures it would miss: {SLOW[2]}" in result.stdout.str()
    assert budget_lines(result)[0].startswith("qlearn: budget 0.2s observed: every test runs")


def test_a_deselected_test_that_fails_later_penalises_its_skip(
    pytester: pytest.Pytester,
) -> None:
    project(pytester)
    run(pytester, *BUDGET).assert_outcomes(passed=7, deselected=2)  # slow 2 and 3 skipped
    pending = "SELECT test_id, count FROM pending_skips ORDER BY test_id"
    with closing(sqlite3.connect(pytester.path / DEFAULT_DB)) as conn:
        assert conn.execute(pending).fetchall() == [(SLOW[1], 1.0), (SLOW[2], 1.0)]
    set_failing(pytester, ["test_slow_3"])
    run(pytester).assert_outcomes(passed=8, failed=1)  # a full run finds the failure
    with closing(sqlite3.connect(pytester.path / DEFAULT_DB)) as conn:
        steps = conn.execute(
            "SELECT test_id, action, reward FROM trajectories WHERE agent = 'selector' "
            "AND reward < 0 AND action = 1"
        ).fetchall()
        # both skips paid back: their rows are gone; none was ever a Q-table row
        assert conn.execute(pending).fetchall() == []
        assert conn.execute(
            "SELECT count(*) FROM q_values WHERE state_hash LIKE '%pending%'"
        ).fetchone() == (0,)
    assert steps == [(SLOW[2], 1, -1.0)]


def test_xdist_workers_select_the_same_tests(pytester: pytest.Pytester) -> None:
    project(pytester, epsilon=1.0)
    args = ("-n", "2", "--qlearn-seed", "11", "--qlearn-budget", "1m", "--qlearn-report=r.json")
    result = pytester.runpytest_subprocess(*BASE_ARGS, *args)
    budget = load_report(pytester.path / "r.json")["budget"]
    # ε = 1: a random run/skip per test; every worker must have drawn the same ones
    assert 0 < budget["deselected"] < 9
    assert_xdist_ran_cleanly(result, passed=budget["selected"])
    assert budget["selected"] + budget["deselected"] == 9
    assert_workers_never_opened_sqlite(pytester)


@pytest.mark.parametrize("value", ["0", "-5s", "150%", "abc", "10x"])
def test_bad_budget_values_are_usage_errors(pytester: pytest.Pytester, value: str) -> None:
    make_project(pytester, suite=SUITE)
    result = run(pytester, f"--qlearn-budget={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert f"--qlearn-budget = {value!r} is not valid" in err
    assert "90s" in err and "25%" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("ini", "key"),
    [
        ("qlearn_budget = 10x\n", "qlearn_budget"),
        ("qlearn_full_run_every = -1\n", "qlearn_full_run_every"),
        ("qlearn_full_run_every = often\n", "qlearn_full_run_every"),
    ],
)
def test_bad_ini_values_are_usage_errors(pytester: pytest.Pytester, ini: str, key: str) -> None:
    make_project(pytester, suite=SUITE, ini=ini)
    result = run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"pytest-qlearn: {key} = " in result.stderr.str()


def test_ini_budget_and_marker_without_qlearn(pytester: pytest.Pytester) -> None:
    make_project(pytester, suite=MARKED_SUITE, ini="qlearn_budget = 0.5s\n")
    run(pytester).assert_outcomes(passed=9)  # first run: every test is new
    # slow_3 (0.28 s) is marked: it runs; then the instant tests and slow_1 (0.12 s) fit,
    # slow_2 (0.2 s) does not
    result = run(pytester, "-v")
    result.assert_outcomes(passed=8, deselected=1)
    assert SLOW[1] not in run_order(result)
    # the marker is registered even when the plugin is disabled (--strict-markers)
    run(pytester, "--no-qlearn", "--strict-markers").assert_outcomes(passed=9)
    assert not Path(pytester.path / "nothing").exists()


def test_budget_learning_round_trips_through_postgresql(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    make_project(pytester, suite=SUITE)
    db = ("--qlearn-db", pg_url)
    run(pytester, *db).assert_outcomes(passed=9)
    run(pytester, *db, *BUDGET).assert_outcomes(passed=7, deselected=2)
    query = "SELECT test_id, count FROM pending_skips ORDER BY test_id"
    assert [(row["test_id"], row["count"]) for row in pg_execute(pg_url, query)] == [
        (SLOW[1], 1.0),
        (SLOW[2], 1.0),
    ]
    set_failing(pytester, ["test_slow_3"])
    run(pytester, *db).assert_outcomes(passed=8, failed=1)
    assert pg_execute(pg_url, query) == []  # both paid back: deleted
    assert pg_execute(pg_url, "SELECT 1 FROM q_values WHERE state_hash LIKE '%pending%'") == []
    penalised = pg_execute(
        pg_url,
        "SELECT test_id, reward FROM trajectories WHERE agent = 'selector' AND action = 1 "
        "ORDER BY test_id",
    )
    # both skips paid back: slow_2 passed (0), slow_3 failed (−1)
    assert [(row["test_id"], row["reward"]) for row in penalised] == [
        (SLOW[1], 0.0),
        (SLOW[2], -1.0),
    ]


def test_an_unreachable_store_runs_every_test_under_a_budget(pytester: pytest.Pytester) -> None:
    make_project(pytester, suite=SUITE)
    (pytester.path / "blocker").write_text("a regular file, not a directory\n", encoding="utf-8")
    result = run(pytester, "--qlearn-db", "sqlite:///blocker/q.db", *BUDGET)
    result.assert_outcomes(passed=9)
    assert "INTERNALERROR" not in result.stdout.str()


def test_markdown_and_html_reports_carry_the_budget_section(pytester: pytest.Pytester) -> None:
    project(pytester)
    result = run(pytester, *BUDGET, "--qlearn-report=r.md", "--qlearn-report=r.html")
    result.assert_outcomes(passed=7, deselected=2)
    markdown = (pytester.path / "r.md").read_text(encoding="utf-8")
    section = markdown.split("### Time budget", 1)[1].split("###", 1)[0]
    assert "| tests run | 7 |" in section and "| deselected | 2 |" in section
    assert "| budget | 0.2s \\(0.20s\\) |" in section
    assert "| failures caught | 0 of 0 |" in section
    html = (pytester.path / "r.html").read_text(encoding="utf-8")
    assert "<h2>Time budget</h2>" in html
    assert '<tr><th scope="row">deselected</th><td>2</td></tr>' in html

    unbudgeted = run(pytester, "--qlearn-report=plain.md", "--qlearn-report=plain.html")
    unbudgeted.assert_outcomes(passed=9)
    assert "Time budget" not in (pytester.path / "plain.md").read_text(encoding="utf-8")
    assert "Time budget" not in (pytester.path / "plain.html").read_text(encoding="utf-8")


def test_the_tests_of_a_changed_test_file_always_run(pytester: pytest.Pytester) -> None:
    """The safety contract: a test someone just edited is never skipped to save time."""
    make_project(pytester, suite={**SUITE, "test_other": "def test_o1():\n    pass\n"})
    run(pytester).assert_outcomes(passed=10)  # measures the durations, keeps the digests
    unchanged = run(pytester, *BUDGET, "-v")
    unchanged.assert_outcomes(passed=8, deselected=2)  # 0.2 s: slow_2 and slow_3 stay out
    assert not {SLOW[1], SLOW[2]} & set(run_order(unchanged))

    suite = pytester.path / "test_suite.py"
    suite.write_text(suite.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    edited = run(pytester, *BUDGET, "-v", "--qlearn-report=r.json")
    # every test of the edited file runs, however long; they alone exceed the budget, so
    # the unchanged file's test is the one left out
    edited.assert_outcomes(passed=9, deselected=1)
    assert set(run_order(edited)) == {*FAST, *SLOW}
    assert load_report(pytester.path / "r.json")["budget"]["always_over_budget"] is True

    # unchanged since the last run: selecting again (the 0.28 s test cannot fit 0.2 s)
    again = run(pytester, *BUDGET, "-v")
    assert SLOW[2] not in run_order(again)
    assert again.parseoutcomes()["deselected"] >= 2


def test_a_marker_expression_in_the_ini_addopts_is_the_projects_normal_run(
    pytester: pytest.Pytester,
) -> None:
    # `-m 'not stress'` in addopts: every run of this project is narrowed that way, so the
    # budget selects within what it leaves and the runs are full episodes, not partial ones.
    suite = {
        **SUITE,
        "test_stress": """
            import pytest

            @pytest.mark.stress
            def test_hammer_1():
                pass

            @pytest.mark.stress
            def test_hammer_2():
                pass
        """,
    }
    ini = 'addopts = -m "not stress"\nmarkers =\n    stress: long stress tests\n'
    project(pytester, ini=ini, suite=suite)
    result = run(pytester, *BUDGET, "--qlearn-report=r.json")
    assert (
        "qlearn: budget 0.2s, tests chosen by the selector agent among the tests "
        "-m 'not stress' (ini addopts) leaves"
    ) in result.outlines
    result.assert_outcomes(passed=7, deselected=4)
    report = load_report(pytester.path / "r.json")
    assert report["budget"]["deselected"] == 2
    assert report["session"]["episode"] == 2 and not report["session"]["partial"]
    # the same expression given on the command line is the user's narrowing
    narrowed = run(pytester, *BUDGET, "-m", "not stress", "--qlearn-report=r.json")
    assert (
        "qlearn: budget 0.2s not applied: -m narrows the run, selection is off" in narrowed.outlines
    )
    assert load_report(pytester.path / "r.json")["session"]["partial"]


def test_the_budget_line_says_what_share_of_the_wall_time_it_saved(
    pytester: pytest.Pytester,
) -> None:
    # the deselected slow tests (0.2 s + 0.28 s) against the whole run's wall time, with the
    # time outside the tests (collection, plugins) named: no budget saves that
    project(pytester)
    result = run(pytester, *BUDGET, "--qlearn-report=r.json")
    (line,) = [line for line in result.outlines if line.startswith("qlearn: budget 0.2s (")]
    budget = load_report(pytester.path / "r.json")["budget"]
    # a sleep never ends early, but a loaded machine makes it late: a floor, and a loose roof
    assert 0.45 <= budget["wall_saved"] < 1.2
    assert budget["wall_time"] > budget["tests_time"] > 0.1
    share = budget["wall_saved"] / (budget["wall_time"] + budget["wall_saved"])
    assert f"saved ≈{budget['wall_saved']:.1f}s of a full run's ≈" in line
    assert f"({share:.0%}; " in line
    assert "which no budget saves" in line
