"""End to end: pytest-qlearn driven through real pytest sessions with ``pytester``.

Each test writes a small suite (three modules, classes, parametrised tests with awkward ids),
runs pytest two or three times against one store and asserts on the learned order (``-v``
output or the JSON report), the outcomes and the exit code. Which tests fail is steered by a
``fail.txt`` file that the suite's conftest reads, so the same suite can fail differently
from run to run.

Order assertions use ini ``qlearn_exploration_rate = 0`` and ``qlearn_min_exploration_rate =
0`` (ε = 0: greedy, deterministic); one test checks reproducibility with exploration on.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

# pytest-randomly off except where it is under test; pytest-benchmark and hypothesis are
# unrelated and slow every in-process run down twentyfold.
BASE_ARGS = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")
DEFAULT_DB = Path(".pytest_cache", "d", "qlearn", "qlearn.db")

CONFTEST = '''
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def listed(name):
    path = HERE / name
    return set(path.read_text(encoding="utf-8").split()) if path.exists() else set()


def pytest_runtest_call(item):
    """Fail the tests whose names are listed in fail.txt (read on every run)."""
    if item.name in listed("fail.txt"):
        raise AssertionError(f"{item.name} is listed in fail.txt")


def pytest_configure(config):
    """On an xdist worker, log every sqlite3.connect: workers must never open the store."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    import sqlite3

    real_connect = sqlite3.connect
    log = HERE / f"sqlite-{workerinput['workerid']}.log"

    def spy(database, *args, **kwargs):
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"{database}\\n")
        return real_connect(database, *args, **kwargs)

    sqlite3.connect = spy
'''

SUITE = {
    "test_alpha": """
        import pytest

        def test_a1():
            pass

        def test_a2():
            pass

        class TestAlpha:
            def test_m1(self):
                pass

            @pytest.mark.parametrize("x", ["ü", "[b]", "a\\nb", "日本"])
            def test_p(self, x):
                pass
    """,
    "test_beta": """
        def test_b1():
            pass

        def test_b2():
            pass

        def test_b3():
            pass

        class TestBeta:
            def test_m1(self):
                pass

            def test_m2(self):
                pass
    """,
    "test_gamma": """
        import pytest

        def test_c1():
            pass

        @pytest.mark.parametrize("n", [1, 2])
        def test_c2(n):
            pass

        class TestGamma:
            def test_g1(self):
                pass

            def test_g2(self):
                pass

            def test_g3(self):
                pass
    """,
}

G2 = "test_gamma.py::TestGamma::test_g2"
B2 = "test_beta.py::test_b2"
NEWLINE_PARAM = "test_alpha.py::TestAlpha::test_p[a\\nb]"
UNICODE_PARAM = "test_alpha.py::TestAlpha::test_p[\\xfc]"
ORDER_LINE = re.compile(r"^(\S+\.py::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


@pytest.fixture(autouse=True)
def _no_store_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QLEARN_DATABASE_URL", raising=False)


# -- helpers ------------------------------------------------------------------------------
def make_project(
    pytester: pytest.Pytester,
    *,
    fail: Iterable[str] = (),
    ini: str = "",
    epsilon: float = 0.0,
    enabled: bool = True,
    suite: dict[str, str] | None = None,
) -> None:
    lines = ["[pytest]"]
    if enabled:
        lines.append("qlearn = true")
    lines += [
        f"qlearn_exploration_rate = {epsilon:g}",
        f"qlearn_min_exploration_rate = {min(epsilon, 0.01):g}",
    ]
    pytester.makefile(".ini", pytest="\n".join(lines) + "\n" + ini)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(**(SUITE if suite is None else suite))
    set_failing(pytester, fail)


def set_failing(pytester: pytest.Pytester, names: Iterable[str]) -> None:
    (pytester.path / "fail.txt").write_text("\n".join(names) + "\n", encoding="utf-8")


def run(pytester: pytest.Pytester, *args: str | Path) -> pytest.RunResult:
    return pytester.runpytest(*BASE_ARGS, *args)


def run_order(result: pytest.RunResult) -> list[str]:
    """Node ids in the order a ``-v`` run reported them (each once)."""
    seen: dict[str, None] = {}
    for line in result.outlines:
        match = ORDER_LINE.match(line)
        if match:
            seen.setdefault(match.group(1), None)
    return list(seen)


def collection_order(pytester: pytest.Pytester) -> list[str]:
    result = run(pytester, "-p", "no:qlearn", "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line and " " not in line]
    assert ids, result.stdout.str()
    return ids


def load_report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def module_of(test_id: str) -> str:
    return test_id.split("::", 1)[0]


def class_of(test_id: str) -> str | None:
    parts = test_id.split("::")
    return "::".join(parts[:2]) if len(parts) == 3 else None


def assert_contiguous(groups: Sequence[str]) -> None:
    """Each group's members form one block (fixture locality kept)."""
    assert groups
    seen: set[str] = set()
    previous = None
    for group in groups:
        if group != previous:
            assert group not in seen, f"group {group} is split: {list(groups)}"
            seen.add(group)
            previous = group


def dump_store(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def qlearn_warnings(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("qlearn: warning")]


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    """The outcome counts, without the warnings count (unknown ini keys warn when the
    plugin is removed)."""
    counts = result.parseoutcomes()
    counts.pop("warnings", None)
    return counts


# -- learning the order -------------------------------------------------------------------
def test_failing_test_moves_to_the_front_keeping_module_and_class_locality(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, fail=["test_g2"], ini="qlearn_order_scope = module\n")
    collected = collection_order(pytester)
    assert len(collected) == 18

    first = run(pytester, "-v")
    first.assert_outcomes(passed=17, failed=1)
    assert run_order(first) == collected  # nothing learned yet: collection order

    second = run(pytester, "-v")
    second.assert_outcomes(passed=17, failed=1)
    order = run_order(second)
    assert sorted(order) == sorted(collected)  # same tests, only reordered
    assert order[0] == G2  # failing test first inside its module...
    assert all(module_of(t) == "test_gamma.py" for t in order[:6])  # ...and its module first
    assert order != collected
    assert_contiguous([module_of(t) for t in order])
    assert_contiguous([class_of(t) or t for t in order])

    third = run(pytester, "-v")
    assert run_order(third)[0] == G2


def test_order_scope_test_puts_failing_tests_strictly_first(pytester: pytest.Pytester) -> None:
    make_project(
        pytester,
        fail=["test_g2", "test_b2", "test_p[a\\nb]"],
        ini="qlearn_order_scope = test\n",
    )
    failing = {G2, B2, NEWLINE_PARAM}
    first = run(pytester, "-v")
    first.assert_outcomes(passed=15, failed=3)
    assert set(run_order(first)[:3]) != failing  # collection order: not first yet

    for _ in range(2):
        again = run(pytester, "-v")
        again.assert_outcomes(passed=15, failed=3)
        order = run_order(again)
        assert len(order) == 18
        assert set(order[:3]) == failing, order


def test_header_line_names_agent_seed_epsilon_and_store(pytester: pytest.Pytester) -> None:
    make_project(pytester, epsilon=0.5)
    result = run(pytester, "--qlearn-seed", "4242")
    assert result.ret == pytest.ExitCode.OK
    headers = [line for line in result.outlines if line.startswith("qlearn: agent")]
    assert len(headers) == 1, result.stdout.str()
    match = re.match(
        r"qlearn: agent prioritizer, seed 4242, ε 0\.500, store sqlite:///(\S+)", headers[0]
    )
    assert match, headers[0]
    store = Path(match.group(1))
    assert store == (pytester.path / DEFAULT_DB).resolve() or store == pytester.path / DEFAULT_DB
    assert store.is_file()


def test_terminal_summary_one_line_in_every_mode_but_qq_detail_only_on_request(
    pytester: pytest.Pytester,
) -> None:
    """As pytest-cov or pytest-benchmark do: one line at -q, default and -v; nothing of qlearn
    at -qq; the detailed report only with --qlearn-report (a file path prints it too)."""
    make_project(pytester, fail=["test_b2"])

    def summary_lines(result: pytest.RunResult) -> list[str]:
        return [
            line
            for line in result.outlines
            if line.startswith("qlearn: ") and " · learned from 18 tests" in line
        ]

    for args, episode in ((), 1), (("-q",), 2), (("-v",), 3), (("-vv",), 4):
        result = run(pytester, *args)
        result.assert_outcomes(passed=17, failed=1)
        summary = summary_lines(result)
        assert len(summary) == 1, (args, result.stdout.str())
        # where the failure ran, against collection order (test_b2 is collected 9th)
        assert summary[0].startswith("qlearn: 1 failure of 18 tests, at test ")
        assert "; collection order: at test 9 (" in summary[0]
        if episode > 1:  # it failed last run: it runs first
            assert summary[0].startswith("qlearn: 1 failure of 18 tests, at test 1 (")
        assert f"episode {episode}" in summary[0]
        assert "qlearn report" not in result.stdout.str(), args

    for args in (("--qlearn-report",), ("-q", "--qlearn-report=r.md")):
        detailed = run(pytester, *args)
        text = detailed.stdout.str()
        seps = [line for line in detailed.outlines if re.match(r"^-+ qlearn report -+$", line)]
        assert len(seps) == 1, text
        assert "APFD:" in text and "1 = every failure first" in text
        assert f"      1  FAILED {B2}  (failed last run)" in detailed.outlines
        assert text.index("what ran first, and why") < text.index("learner details")
        assert "riskiest tests" in text
        assert B2 in text.split("riskiest tests", 1)[1]
        assert len(summary_lines(detailed)) == 1  # the short account closes it
    assert (pytester.path / "r.md").exists()

    very_quiet = run(pytester, "-qq")
    assert very_quiet.ret == pytest.ExitCode.TESTS_FAILED  # -qq prints no outcome counts
    assert not [line for line in very_quiet.outlines if "qlearn" in line], very_quiet.stdout.str()

    # the very quiet run still learned: episode 8 (7 earlier runs)
    last = run(pytester)
    assert any("episode 8" in line for line in last.outlines if line.startswith("qlearn:"))


def test_json_report_counts_episodes_and_has_apfd_and_riskiest_tests(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, fail=["test_g2"])
    reports = []
    for n in (1, 2, 3):
        result = run(pytester, f"--qlearn-report=reports/run{n}.json")
        result.assert_outcomes(passed=17, failed=1)
        reports.append(load_report(pytester.path / "reports" / f"run{n}.json"))

    assert [r["session"]["episode"] for r in reports] == [1, 2, 3]
    assert [r["learner"]["episodes"] for r in reports] == [1, 2, 3]
    ran = 18
    for r in reports:
        assert r["schema_version"] == 1
        assert r["session"]["tests"] == 18
        assert r["session"]["failures"] == 1
        assert r["session"]["mode"] == "reorder"
        assert r["store"]["status"].startswith("saved to")
        assert r["failures_first"] == [G2]
        assert 0.0 <= r["session"]["collection_apfd"] <= 1.0
    # run 1 is in collection order; runs 2 and 3 put the failure first: APFD 1 - 1/(2n)
    assert reports[0]["session"]["apfd"] == pytest.approx(reports[0]["session"]["collection_apfd"])
    for r in reports[1:]:
        assert r["session"]["apfd"] == pytest.approx(1 - 1 / (2 * ran))
        assert r["session"]["apfd"] > r["session"]["collection_apfd"]

    riskiest = reports[2]["riskiest"]
    assert riskiest[0]["test_id"] == G2
    assert riskiest[0]["runs"] == 3 and riskiest[0]["failures"] == 3  # no run lost
    assert all(risk["p_fail"] < riskiest[0]["p_fail"] for risk in riskiest[1:])
    assert all(risk["failures"] == 0 and risk["runs"] == 3 for risk in riskiest[1:])


def test_same_seed_and_store_snapshot_give_the_same_order_with_exploration_on(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, fail=["test_b2"], epsilon=1.0, ini="qlearn_order_scope = test\n")
    run(pytester).assert_outcomes(passed=17, failed=1)
    store = pytester.path / DEFAULT_DB.parent
    snapshot = pytester.path / "snapshot"
    shutil.copytree(store, snapshot)

    def replay(seed: int) -> tuple[list[str], dict[str, Any]]:
        shutil.rmtree(store)
        shutil.copytree(snapshot, store)
        result = run(pytester, "-v", "--qlearn-seed", str(seed), "--qlearn-report=r.json")
        result.assert_outcomes(passed=17, failed=1)
        assert f"seed {seed}," in result.stdout.str()
        return run_order(result), load_report(pytester.path / "r.json")

    order, data = replay(7)
    assert data["session"]["episode"] == 2
    assert data["learner"]["explored"] > 0  # exploration really was on
    again, data_again = replay(7)
    assert again == order
    assert data_again["session"]["episode"] == 2  # the replay started from the same snapshot
    others = [replay(seed)[0] for seed in (8, 9, 10)]
    assert any(other != order for other in others)  # the seed, not luck, fixed the order


# -- the safety contract --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fail", "args", "expected"),
    [
        (["test_g2"], [], pytest.ExitCode.TESTS_FAILED),
        ([], [], pytest.ExitCode.OK),
        ([], ["-k", "nomatch"], pytest.ExitCode.NO_TESTS_COLLECTED),
        ([], ["-x", "--maxfail=1"], pytest.ExitCode.OK),
        (["test_a1"], ["-x"], pytest.ExitCode.TESTS_FAILED),
    ],
    ids=["failing", "passing", "none-selected", "exitfirst-passing", "exitfirst-failing"],
)
def test_exit_codes_are_unchanged_by_the_plugin(
    pytester: pytest.Pytester, fail: list[str], args: list[str], expected: pytest.ExitCode
) -> None:
    make_project(pytester, fail=fail)
    assert run(pytester, "-p", "no:qlearn", *args).ret == expected
    assert run(pytester, "--no-qlearn", *args).ret == expected
    for _ in range(2):  # learning run, then a reordered run
        assert run(pytester, "--qlearn", *args).ret == expected


def test_exit_code_of_a_collection_error_is_unchanged(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makepyfile(test_broken="import no_such_module_anywhere\n")
    for extra, expected in (
        ((), pytest.ExitCode.INTERRUPTED),
        (("--continue-on-collection-errors",), pytest.ExitCode.TESTS_FAILED),
    ):
        assert run(pytester, "-p", "no:qlearn", *extra).ret == expected
        for _ in range(2):
            result = run(pytester, *extra)
            assert result.ret == expected
            assert not qlearn_warnings(result)


OUTCOME_SUITE = {
    "test_mixed": """
        import pytest

        @pytest.fixture
        def broken():
            raise RuntimeError("setup fails")

        def test_pass():
            pass

        def test_fail():
            assert 0

        def test_error(broken):
            pass

        @pytest.mark.skip(reason="never")
        def test_skip():
            pass

        def test_skip_inside():
            pytest.skip("inside")

        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert 0

        @pytest.mark.xfail(reason="fixed")
        def test_xpass():
            pass

        @pytest.mark.xfail(strict=True, reason="strict")
        def test_xpass_strict():
            pass

        @pytest.mark.xfail(run=False, reason="not run")
        def test_xfail_not_run():
            assert 0
    """,
    "test_other": """
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_p(i):
            assert i != 2
    """,
}


def test_outcomes_are_never_changed_and_every_test_runs(pytester: pytest.Pytester) -> None:
    make_project(pytester, suite=OUTCOME_SUITE)
    baseline = run(pytester, "-p", "no:qlearn", "-v")
    expected = outcomes(baseline)
    assert expected == {
        "passed": 4,
        "failed": 3,
        "skipped": 2,
        "xfailed": 2,
        "xpassed": 1,
        "errors": 1,
    }
    for _ in range(3):
        result = run(pytester, "-v")
        assert outcomes(result) == expected
        assert result.ret == baseline.ret == pytest.ExitCode.TESTS_FAILED
        assert sorted(run_order(result)) == sorted(run_order(baseline))
    assert run_order(result) != run_order(baseline)  # it did reorder meanwhile


def test_observe_keeps_collection_order_but_learns_and_reports(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, fail=["test_g2"])
    collected = collection_order(pytester)
    for episode in (1, 2):
        result = run(pytester, "-v", "--qlearn-observe", "--qlearn-report=r.json")
        result.assert_outcomes(passed=17, failed=1)
        assert run_order(result) == collected
        assert "(observe)" in result.stdout.str()
        assert "qlearn order (not used: observe)" in result.stdout.str()
        data = load_report(pytester.path / "r.json")
        assert data["session"]["episode"] == episode
        assert data["session"]["mode"] == "observe"
    # what the order would have been: the failure first, so a better APFD than collection's
    assert data["session"]["apfd"] == pytest.approx(1 - 1 / 36)
    assert data["session"]["apfd"] > data["session"]["collection_apfd"]

    default = run(pytester, "--qlearn-observe")
    assert any(line.startswith("qlearn: would reorder 18 tests") for line in default.outlines)

    # learning from the observed runs is what the reordering run uses
    reordered = run(pytester, "-v", "--qlearn-report=r.json")
    assert run_order(reordered)[0] == G2
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 4


@pytest.mark.parametrize("disable", [("-p", "no:qlearn"), ("--no-qlearn",)], ids=" ".join)
def test_disabled_plugin_leaves_order_alone_and_writes_no_store(
    pytester: pytest.Pytester, disable: tuple[str, ...]
) -> None:
    make_project(pytester, fail=["test_g2"])
    collected = collection_order(pytester)
    db = pytester.path / DEFAULT_DB

    result = run(pytester, "-v", *disable)
    result.assert_outcomes(passed=17, failed=1)
    assert run_order(result) == collected
    assert not db.parent.exists()
    assert "qlearn:" not in result.stdout.str()

    run(pytester).assert_outcomes(passed=17, failed=1)  # learns: g2 fails
    before = dump_store(db)
    for _ in range(2):
        result = run(pytester, "-v", *disable)
        assert run_order(result) == collected  # the store says g2 first; ignored
    assert dump_store(db) == before


def test_collect_only_writes_no_episode(pytester: pytest.Pytester) -> None:
    make_project(pytester, fail=["test_g2"])
    run(pytester, "--qlearn-report=r.json").assert_outcomes(passed=17, failed=1)
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 1
    db = pytester.path / DEFAULT_DB
    before = dump_store(db)

    collected = run(pytester, "--collect-only", "-q")
    assert collected.ret == pytest.ExitCode.OK
    assert collected.outlines[0] == G2  # collection shows the learned order...
    assert dump_store(db) == before  # ...and writes nothing

    run(pytester, "--qlearn-report=r.json").assert_outcomes(passed=17, failed=1)
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 2


FIXTURE_ERRORS = {
    "test_fixtures": """
        import pytest

        @pytest.fixture
        def broken_setup():
            raise RuntimeError("setup fails")

        @pytest.fixture
        def broken_teardown():
            yield
            raise RuntimeError("teardown fails")

        def test_f1():
            pass

        def test_f2():
            pass

        def test_setup_error(broken_setup):
            pass

        def test_f3():
            pass

        def test_teardown_error(broken_teardown):
            pass
    """,
    "test_plain": """
        def test_q1():
            pass

        def test_q2():
            pass
    """,
}


def test_setup_and_teardown_errors_count_as_failures(pytester: pytest.Pytester) -> None:
    make_project(pytester, suite=FIXTURE_ERRORS, ini="qlearn_order_scope = test\n")
    first = run(pytester, "-v", "--qlearn-report=r.json")
    # the teardown-error test passed its call, then errored in teardown
    first.assert_outcomes(passed=6, errors=2)
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    data = load_report(pytester.path / "r.json")
    assert data["session"]["failures"] == 2
    erroring = {
        "test_fixtures.py::test_setup_error",
        "test_fixtures.py::test_teardown_error",
    }
    assert set(data["failures_first"]) == erroring

    second = run(pytester, "-v")
    second.assert_outcomes(passed=6, errors=2)
    assert set(run_order(second)[:2]) == erroring


XFAIL_SUITE = {
    "test_x": """
        import pytest

        def test_ok():
            pass

        @pytest.mark.xfail(reason="known")
        def test_known_bug():
            assert 0

        @pytest.mark.xfail(reason="maybe", raises=ZeroDivisionError)
        def test_raises():
            1 / 0

        @pytest.mark.xfail(reason="fixed")
        def test_fixed():
            pass

        @pytest.mark.xfail(run=False, reason="hangs")
        def test_not_run():
            pass

        def test_imperative():
            pytest.xfail("imperative")
    """,
}


def test_xfail_tests_do_not_break_anything(pytester: pytest.Pytester) -> None:
    make_project(pytester, suite=XFAIL_SUITE)
    baseline = run(pytester, "-p", "no:qlearn")
    assert baseline.ret == pytest.ExitCode.OK
    for episode in (1, 2, 3):
        result = run(pytester, "--qlearn-report=r.json")
        assert result.ret == pytest.ExitCode.OK
        assert outcomes(result) == outcomes(baseline)
        assert not qlearn_warnings(result)
        data = load_report(pytester.path / "r.json")
        assert data["session"]["episode"] == episode
        assert data["session"]["failures"] == 0
        assert data["store"]["status"].startswith("saved to")


# -- pytest-xdist -----------------------------------------------------------------------------
def assert_xdist_ran_cleanly(result: pytest.RunResult, **outcomes: int) -> None:
    text = result.stdout.str() + result.stderr.str()
    assert "Different tests were collected" not in text, text
    assert "INTERNALERROR" not in text, text
    result.assert_outcomes(**outcomes)


def assert_workers_never_opened_sqlite(pytester: pytest.Pytester) -> None:
    logs = sorted(pytester.path.glob("sqlite-gw*.log"))
    opened = [line for log in logs for line in log.read_text(encoding="utf-8").splitlines()]
    assert not [db for db in opened if "qlearn" in db or db.endswith(".db")], opened


def test_xdist_learns_on_the_controller_and_workers_use_its_order(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, fail=["test_g2"], ini="qlearn_order_scope = test\n")
    args = ("-n", "2", "--qlearn-db", "sqlite:///store/q.db")

    first = pytester.runpytest_subprocess(*BASE_ARGS, *args, "--qlearn-report=r1.json")
    assert_xdist_ran_cleanly(first, passed=17, failed=1)
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    headers = [line for line in first.outlines if line.startswith("qlearn: agent")]
    assert len(headers) == 1 and "store sqlite:///store/q.db" in headers[0]
    assert len([line for line in first.outlines if " · learned from 18 tests" in line]) == 1
    assert load_report(pytester.path / "r1.json")["session"]["episode"] == 1

    second = pytester.runpytest_subprocess(*BASE_ARGS, *args, "--qlearn-report=r2.json")
    assert_xdist_ran_cleanly(second, passed=17, failed=1)
    data = load_report(pytester.path / "r2.json")
    assert data["session"]["episode"] == 2
    assert data["session"]["tests"] == 18
    # positions come from the workers' item order: the failure was scheduled first
    assert data["session"]["apfd"] == pytest.approx(1 - 1 / 36)
    assert data["failures_first"] == [G2]

    assert_workers_never_opened_sqlite(pytester)

    # the learned order, seen without xdist (the controller saved both episodes)
    plain = run(pytester, "-v", "--qlearn-db", "sqlite:///store/q.db", "--qlearn-report=r3.json")
    assert run_order(plain)[0] == G2
    data = load_report(pytester.path / "r3.json")
    assert data["session"]["episode"] == 3
    assert data["riskiest"][0]["test_id"] == G2
    assert (data["riskiest"][0]["runs"], data["riskiest"][0]["failures"]) == (3, 3)


def test_xdist_workers_use_the_controllers_seed_and_snapshot(pytester: pytest.Pytester) -> None:
    """With exploration on, the workers must compute one identical order (else xdist
    reports 'Different tests were collected'), and it is the order a run without xdist
    computes from the same snapshot and seed."""
    make_project(pytester, fail=["test_g2"], epsilon=1.0, ini="qlearn_order_scope = test\n")
    args = ("--qlearn-db", "sqlite:///store/q.db", "--qlearn-seed", "5", "--qlearn-report=r.json")
    run(pytester, "--qlearn-db", "sqlite:///store/q.db").assert_outcomes(passed=17, failed=1)
    store, snapshot = pytester.path / "store", pytester.path / "snapshot"
    shutil.copytree(store, snapshot)

    with_xdist = pytester.runpytest_subprocess(*BASE_ARGS, "-n", "2", *args)
    assert_xdist_ran_cleanly(with_xdist, passed=17, failed=1)
    xdist_report = load_report(pytester.path / "r.json")
    assert xdist_report["session"]["episode"] == 2
    assert_workers_never_opened_sqlite(pytester)

    shutil.rmtree(store)
    shutil.copytree(snapshot, store)
    without = run(pytester, "-v", *args)
    without.assert_outcomes(passed=17, failed=1)
    plain_report = load_report(pytester.path / "r.json")
    assert plain_report["session"]["episode"] == 2
    assert plain_report["learner"]["explored"] > 0
    # one failure: its APFD encodes its position, so both runs scheduled it alike
    assert xdist_report["session"]["apfd"] == pytest.approx(plain_report["session"]["apfd"])
    position = run_order(without).index(G2)
    assert xdist_report["session"]["apfd"] == pytest.approx(1 - (position + 1) / 18 + 1 / 36)


def test_xdist_with_an_unwritable_store_still_runs(pytester: pytest.Pytester) -> None:
    make_project(pytester, fail=["test_b2"], epsilon=1.0)
    (pytester.path / "blocker").write_text("a regular file, not a directory\n", encoding="utf-8")
    result = pytester.runpytest_subprocess(
        *BASE_ARGS, "-n", "2", "--qlearn-db", "sqlite:///blocker/q.db"
    )
    assert_xdist_ran_cleanly(result, passed=17, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(qlearn_warnings(result)) == 1, result.stdout.str()
    assert "blocker" in qlearn_warnings(result)[0]
    assert_workers_never_opened_sqlite(pytester)


# -- faults in the store ---------------------------------------------------------------------
def test_corrupt_store_is_moved_aside_and_a_fresh_one_works(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    db = pytester.path / DEFAULT_DB
    db.parent.mkdir(parents=True)
    garbage = random.Random(1234).randbytes(8192)
    db.write_bytes(garbage)

    result = run(pytester, "--qlearn-report=r.json")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=18)
    aside = [p for p in db.parent.iterdir() if p.name.startswith("qlearn.db.")]
    assert len(aside) == 1 and aside[0].name.endswith(".unusable")
    assert aside[0].read_bytes() == garbage  # kept for inspection, not deleted
    warnings = qlearn_warnings(result)
    assert len(warnings) == 1
    assert str(aside[0]) in warnings[0]
    data = load_report(pytester.path / "r.json")
    assert data["session"]["episode"] == 1
    assert data["store"]["status"].startswith("saved to")

    again = run(pytester, "--qlearn-report=r.json")
    assert again.ret == pytest.ExitCode.OK
    assert not qlearn_warnings(again)
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 2


def test_unwritable_store_warns_once_and_keeps_collection_order(
    pytester: pytest.Pytester,
) -> None:
    # ε = 1 and scope test: a working store reorders, so collection order proves the fallback
    make_project(pytester, fail=["test_b2"], epsilon=1.0, ini="qlearn_order_scope = test\n")
    collected = collection_order(pytester)
    seed = ("--qlearn-seed", "3")
    run(pytester, "-v", *seed, "--qlearn-db", "sqlite:///ok/q.db")  # learns: b2 fails
    working = run(pytester, "-v", *seed, "--qlearn-db", "sqlite:///ok/q.db")
    assert run_order(working) != collected  # positive control: a working store reorders

    (pytester.path / "blocker").write_text("not a directory\n", encoding="utf-8")
    result = run(pytester, "-v", *seed, "--qlearn-db", "sqlite:///blocker/q.db")
    result.assert_outcomes(passed=17, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert run_order(result) == collected
    warnings = qlearn_warnings(result)
    assert len(warnings) == 1, result.stdout.str()
    assert "blocker/q.db" in warnings[0]
    assert not (pytester.path / "blocker").is_dir()


def test_unwritable_store_with_strict_fails_the_run(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    (pytester.path / "blocker").write_text("not a directory\n", encoding="utf-8")
    result = run(pytester, "--qlearn-strict", "--qlearn-db", "sqlite:///blocker/q.db")
    assert result.ret != pytest.ExitCode.OK
    text = result.stdout.str() + result.stderr.str()
    assert "blocker/q.db" in text
    assert "Traceback" not in text


def test_store_with_a_newer_schema_is_refused_and_left_alone(pytester: pytest.Pytester) -> None:
    make_project(pytester, fail=["test_b2"], epsilon=1.0, ini="qlearn_order_scope = test\n")
    collected = collection_order(pytester)
    seed = ("--qlearn-seed", "3")
    run(pytester, "-v", *seed)  # an empty store keeps collection order; it learns b2 fails
    assert run_order(run(pytester, "-v", *seed)) != collected  # positive control, and a store
    db = pytester.path / DEFAULT_DB
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO qlearn_schema VALUES (999, 0)")
    conn.close()
    before = dump_store(db)

    result = run(pytester, "-v", *seed, "--qlearn-report=r.json")
    result.assert_outcomes(passed=17, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert run_order(result) == collected
    warnings = qlearn_warnings(result)
    assert len(warnings) == 1
    assert "schema version 999" in warnings[0] and "upgrade" in warnings[0]
    assert dump_store(db) == before  # nothing written
    assert not (pytester.path / "r.json").exists()  # nothing learned, nothing to report


# -- known bug, kept last so `-x` runs everything else first -------------------------------
def test_xdist_report_counts_the_decisions_made_on_the_workers(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, epsilon=1.0)
    result = pytester.runpytest_subprocess(
        *BASE_ARGS, "-n", "2", "--qlearn-seed", "5", "--qlearn-report=r.json"
    )
    assert_xdist_ran_cleanly(result, passed=18)
    learner = load_report(pytester.path / "r.json")["learner"]
    # every test got one decision, made on a worker with ε = 1; the report must not say
    # "exploration share 0.0% of 0 decisions" for a run whose order was all exploration
    assert learner["decisions"] == 18
    assert learner["explored"] == 18
    assert learner["exploration_share"] == pytest.approx(1.0)


def _learned(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """Q rows (q rounded to 1e-9), histories without timings, and the episode count."""
    with closing(sqlite3.connect(db)) as conn:
        q = [
            (state, action, round(value, 9), visits)
            for state, action, value, visits in conn.execute(
                "SELECT state_hash, action, q, visits FROM q_values ORDER BY state_hash, action"
            )
        ]
        histories = conn.execute(
            "SELECT test_id, runs, failures, flips, verdicts, last_failure_episode, "
            "last_run_episode, first_episode FROM test_history ORDER BY test_id"
        ).fetchall()
        (episodes,) = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()
    return q, histories, episodes


def test_an_offline_run_is_learned_later_exactly_as_if_it_had_reached_the_store(
    pytester: pytest.Pytester,
) -> None:
    """Run 2 cannot reach its store (the store's directory is a file for a while). Its raw
    results are spooled; run 3 learns them against the stored table before its own episode.
    The Q-table and histories must then equal those of a store that saw all three runs."""
    make_project(pytester, epsilon=0.2)
    # Every test reports 1 ms: on a loaded machine a trivial test can take 0.1 s now and then,
    # which moves it to another duration bucket (another shared state) in one store only.
    conftest = pytester.path / "conftest.py"
    conftest.write_text(
        conftest.read_text(encoding="utf-8") + "\n\n@pytest.hookimpl(wrapper=True)\n"
        "def pytest_runtest_makereport(item, call):\n"
        "    report = yield\n"
        "    report.duration = 0.001\n"
        "    return report\n",
        encoding="utf-8",
    )
    failing = [{"test_b2"}, {"test_b2", "test_g2"}, {"test_g2"}]
    control = ("--qlearn-db", "sqlite:///control/q.db")
    for names in failing:
        set_failing(pytester, names)
        run(pytester, *control).assert_outcomes(passed=18 - len(names), failed=len(names))

    store_dir = pytester.path / "store"
    store_dir.mkdir()
    offline = ("--qlearn-db", "sqlite:///store/q.db")
    set_failing(pytester, failing[0])
    run(pytester, *offline).assert_outcomes(passed=17, failed=1)
    store_dir.rename(pytester.path / "store.bak")
    store_dir.write_text("the store's directory is a file now", encoding="utf-8")
    set_failing(pytester, failing[1])
    result = run(pytester, *offline)
    result.assert_outcomes(passed=16, failed=2)
    assert "spooled" in result.stdout.str()
    store_dir.unlink()
    (pytester.path / "store.bak").rename(store_dir)
    set_failing(pytester, failing[2])
    result = run(pytester, *offline)
    result.assert_outcomes(passed=17, failed=1)
    assert "1 spooled earlier run" in result.stdout.str()

    assert _learned(store_dir / "q.db") == _learned(pytester.path / "control" / "q.db")
    assert _learned(store_dir / "q.db")[2] == 3


@pytest.mark.parametrize("during", ["open", "write"])
def test_an_unexpected_error_inside_the_store_never_breaks_the_run(
    pytester: pytest.Pytester, during: str
) -> None:
    """Not a foreseen store fault (a bug, a driver's odd exception): one warning naming it,
    the run's outcomes and exit status untouched."""
    make_project(pytester, fail=["test_b2"])
    method = {"open": "open", "write": "write_episode"}[during]
    pytester.makeconftest(
        CONFTEST
        + f"""

from pytest_qlearn.store.sqlite import SqliteStore


def _broken(self, *args, **kwargs):
    raise RuntimeError("boom in {method}")


SqliteStore.{method} = _broken
"""
    )
    result = pytester.runpytest_subprocess(*BASE_ARGS)  # the patch must not leak
    result.assert_outcomes(passed=17, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    warnings = [line for line in result.outlines if line.startswith("qlearn: warning:")]
    assert len(warnings) == 1, result.stdout.str()
    assert f"internal error in the qlearn store (RuntimeError: boom in {method})" in warnings[0]
    assert "INTERNALERROR" not in result.stdout.str()


def test_a_killed_run_loses_nothing_it_saw_the_next_run_learns_its_checkpoint(
    pytester: pytest.Pytester,
) -> None:
    """A CI runner killed mid-run (a timeout, the OOM killer): the results it saved as a
    checkpoint are learned by the next run, as an interrupted episode."""
    make_project(pytester, fail=["test_b2"], ini="qlearn_checkpoint_seconds = 1e-9\n")  # every test
    pytester.makepyfile(
        test_zz_killer="""
        import os
        import signal

        def test_zz_kill():
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = pytester.runpytest_subprocess(*BASE_ARGS, "-p", "no:cacheprovider")
    assert killed.ret == -9, killed.stdout.str()
    (pytester.path / "test_zz_killer.py").unlink()
    # the cache provider stays off in both runs: the store and spool live in .pytest_cache
    result = run(pytester, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=17, failed=1)
    assert "with 1 spooled earlier run" in result.stdout.str()
    with closing(sqlite3.connect(pytester.path / DEFAULT_DB)) as conn:
        sessions = conn.execute(
            "SELECT tests, exit_status FROM sessions ORDER BY episode"
        ).fetchall()
        runs = dict(conn.execute("SELECT test_id, runs FROM test_history").fetchall())
    assert sessions[0] == (18, int(pytest.ExitCode.INTERRUPTED))  # all 18 ran before the kill
    assert sessions[1][0] == 18
    assert runs[B2] == 2 and runs[G2] == 2 and set(runs.values()) == {2}


def test_without_the_cache_provider_the_store_directory_is_marked_as_pytest_marks_it(
    pytester: pytest.Pytester,
) -> None:
    """Under ``-p no:cacheprovider`` the store still lives in ``.pytest_cache``; the plugin
    writes the ``.gitignore`` and ``CACHEDIR.TAG`` pytest would, so ``git status`` and backup
    tools ignore it."""
    make_project(pytester, fail=[])
    subprocess.run(["git", "init", "-q"], cwd=pytester.path, check=True)
    result = run(pytester, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=18)
    cache = pytester.path / ".pytest_cache"
    assert (pytester.path / DEFAULT_DB).exists()
    assert (cache / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (
        (cache / "CACHEDIR.TAG")
        .read_text()
        .startswith("Signature: 8a477f597d28d172789f06886806bc55")
    )
    git = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "."],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert git.stdout.strip() and ".pytest_cache" not in git.stdout  # the tests show, not it
