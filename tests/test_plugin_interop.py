"""pytest-qlearn next to pytest's own reordering options and other ordering plugins.

The contract: qlearn reorders first and ``--lf``, ``--ff``, ``--nf``, ``--sw`` and
pytest-order still have the last word. pytest-randomly is a wrapper that shuffles before
qlearn: previously failing tests still come first and ties keep randomly's shuffle.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest
from test_plugin_e2e import load_report, run_order

# pytest-benchmark and hypothesis are unrelated and slow every in-process run down.
QUIET_PLUGINS = ("-p", "no:benchmark", "-p", "no:hypothesispytest")
BASE_ARGS = ("-p", "no:randomly", *QUIET_PLUGINS)
DEFAULT_STORE_DIR = Path(".pytest_cache", "d", "qlearn")

CONFTEST = """
from pathlib import Path

FAIL = Path(__file__).parent / "fail.txt"


def pytest_runtest_call(item):
    if FAIL.exists() and item.name in FAIL.read_text(encoding="utf-8").split():
        raise AssertionError(f"{item.name} is listed in fail.txt")
"""

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

            @pytest.mark.parametrize("x", ["ü", "[b]", "a\\nb"])
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

        def test_b4():
            pass
    """,
    "test_gamma": """
        def test_c1():
            pass

        def test_c2():
            pass

        class TestGamma:
            def test_g1(self):
                pass

            def test_g2(self):
                pass
    """,
}
A1 = "test_alpha.py::test_a1"
A2 = "test_alpha.py::test_a2"
B2 = "test_beta.py::test_b2"
G2 = "test_gamma.py::TestGamma::test_g2"
TOTAL = 14


@pytest.fixture(autouse=True)
def _no_store_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QLEARN_DATABASE_URL", raising=False)


def make_project(
    pytester: pytest.Pytester,
    *,
    fail: Iterable[str] = (),
    epsilon: float = 0.0,
    ini: str = "",
    suite: dict[str, str] | None = None,
) -> None:
    pytester.makefile(
        ".ini",
        pytest=f"[pytest]\nqlearn = true\nqlearn_exploration_rate = {epsilon:g}\n"
        f"qlearn_min_exploration_rate = {min(epsilon, 0.01):g}\n" + ini,
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(**(SUITE if suite is None else suite))
    set_failing(pytester, fail)


def set_failing(pytester: pytest.Pytester, names: Iterable[str]) -> None:
    (pytester.path / "fail.txt").write_text("\n".join(names) + "\n", encoding="utf-8")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE_ARGS, *args)


def run_randomly(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    result = pytester.runpytest(*QUIET_PLUGINS, *args)
    assert "Using --randomly-seed=" in result.stdout.str()  # pytest-randomly is active
    return result


class StoreSnapshot:
    """Copy of the default store directory, restorable to replay a run from the same state."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.store = pytester.path / DEFAULT_STORE_DIR
        self.copy = pytester.path / "store-snapshot"
        shutil.copytree(self.store, self.copy)

    def restore(self) -> None:
        shutil.rmtree(self.store)
        shutil.copytree(self.copy, self.store)


# -- pytest's cache options ---------------------------------------------------------------
def test_failed_first_wins_over_the_learned_order(pytester: pytest.Pytester) -> None:
    make_project(pytester, fail=["test_g2"])
    run(pytester).assert_outcomes(passed=TOTAL - 1, failed=1)  # qlearn learns: g2 fails
    # a run qlearn does not see: a2 fails, g2 passes, so pytest's last-failed is {a2}
    set_failing(pytester, ["test_a2"])
    run(pytester, "--no-qlearn").assert_outcomes(passed=TOTAL - 1, failed=1)

    set_failing(pytester, [])
    result = run(pytester, "-v", "--ff", "--qlearn-report=r.json")
    result.assert_outcomes(passed=TOTAL)
    order = run_order(result)
    assert order[0] == A2  # --ff: last failed first...
    assert order[1] == G2  # ...then qlearn's order, which starts with g2
    assert len(order) == TOTAL
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 2


def test_last_failed_runs_only_the_failures(pytester: pytest.Pytester) -> None:
    make_project(pytester, fail=["test_g2", "test_b2"])
    run(pytester).assert_outcomes(passed=TOTAL - 2, failed=2)

    result = run(pytester, "-v", "--lf", "--qlearn-report=r.json")
    result.assert_outcomes(failed=2)
    assert sorted(run_order(result)) == sorted([B2, G2])
    data = load_report(pytester.path / "r.json")
    assert data["session"]["tests"] == 2  # deselected tests were not run, nor recorded
    assert data["session"]["episode"] == 2

    set_failing(pytester, [])
    fixed = run(pytester, "-v", "--lf")
    fixed.assert_outcomes(passed=2)
    everything = run(pytester, "-v", "--lf")  # no failures left: --lf runs all
    everything.assert_outcomes(passed=TOTAL)


def test_new_first_wins_over_the_learned_order(pytester: pytest.Pytester) -> None:
    make_project(pytester, fail=["test_g2"])
    run(pytester).assert_outcomes(passed=TOTAL - 1, failed=1)

    pytester.makepyfile(test_delta="def test_d1():\n    pass\n\ndef test_d2():\n    pass\n")
    old = 1_700_000_000
    for name in SUITE:
        os.utime(pytester.path / f"{name}.py", (old, old))
    os.utime(pytester.path / "test_delta.py", (old + 100, old + 100))
    result = run(pytester, "-v", "--nf")
    result.assert_outcomes(passed=TOTAL + 1, failed=1)
    order = run_order(result)
    assert order[:2] == ["test_delta.py::test_d1", "test_delta.py::test_d2"]
    assert order[2] == G2  # among the old tests, qlearn's order stands


def test_stepwise_stops_at_the_first_failure_and_resumes_there(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, fail=["test_g2", "test_b2"])
    first = run(pytester, "-v", "--sw")
    order = run_order(first)
    assert order[-1] == B2 and len(order) < TOTAL  # collection order, stopped at b2
    first.assert_outcomes(passed=len(order) - 1, failed=1)
    first.stdout.fnmatch_lines(["*Interrupted: Test failed, continuing from this test next run*"])
    first.stdout.fnmatch_lines(["qlearn: partial run (stopped early by -x, --maxfail or *"])

    set_failing(pytester, ["test_g2"])
    second = run(pytester, "-v", "--sw")
    # stepwise skips what passed; qlearn ranks what is left: b2 (failed last run) first
    order = run_order(second)
    assert order[0] == B2
    assert order[-1] == G2
    second.assert_outcomes(failed=1, passed=len(order) - 1)
    second.stdout.fnmatch_lines(["qlearn: partial run (* test(s) were deselected)*"])

    set_failing(pytester, [])
    third = run(pytester, "-v", "--sw")
    order = run_order(third)
    assert order[0] == G2  # resumes at the last failure, which qlearn also runs first
    assert third.ret == pytest.ExitCode.OK


# -- pytest-order -----------------------------------------------------------------------------
ORDER_SUITE = {
    "test_one": """
        import pytest

        @pytest.mark.order(1)
        def test_pinned_first():
            pass

        def test_o2():
            pass

        @pytest.mark.order(-1)
        def test_pinned_last():
            pass
    """,
    "test_two": """
        def test_t1():
            pass

        def test_t2():
            pass

        def test_t3():
            pass
    """,
}


def test_pytest_order_markers_win_over_qlearn(pytester: pytest.Pytester) -> None:
    make_project(
        pytester,
        suite=ORDER_SUITE,
        fail=["test_pinned_last", "test_t3"],
        ini="qlearn_order_scope = test\n",
    )
    for _ in range(3):
        result = run(pytester, "-v")
        result.assert_outcomes(passed=4, failed=2)
        order = run_order(result)
        assert order[0] == "test_one.py::test_pinned_first"
        assert order[-1] == "test_one.py::test_pinned_last"  # failing, still last
    assert order[1] == "test_two.py::test_t3"  # qlearn's pick right after the pinned one


# -- pytest-randomly ----------------------------------------------------------------------------
def test_randomly_shuffles_first_and_failing_tests_still_come_first(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, fail=["test_g2"])
    run_randomly(pytester, "--randomly-seed=1").assert_outcomes(passed=TOTAL - 1, failed=1)
    snapshot = StoreSnapshot(pytester)

    orders = {}
    for seed in (2, 3):
        snapshot.restore()
        result = run_randomly(pytester, "-v", f"--randomly-seed={seed}")
        result.assert_outcomes(passed=TOTAL - 1, failed=1)
        orders[seed] = run_order(result)
        assert orders[seed][0] == G2

        # ties keep randomly's shuffle: outside g2's module the order is randomly's own
        shuffled = run_order(run_randomly(pytester, "-v", "--no-qlearn", f"--randomly-seed={seed}"))
        assert [t for t in orders[seed] if "gamma" not in t] == [
            t for t in shuffled if "gamma" not in t
        ]
    assert orders[2] != orders[3]


def test_randomly_and_qlearn_seeds_reproduce_the_run(pytester: pytest.Pytester) -> None:
    make_project(pytester, fail=["test_g2", "test_b2"], epsilon=1.0)
    run_randomly(pytester, "--randomly-seed=1").assert_outcomes(passed=TOTAL - 2, failed=2)
    snapshot = StoreSnapshot(pytester)

    def replay(randomly_seed: int, qlearn_seed: int) -> list[str]:
        snapshot.restore()
        result = run_randomly(
            pytester,
            "-v",
            f"--randomly-seed={randomly_seed}",
            f"--qlearn-seed={qlearn_seed}",
        )
        result.assert_outcomes(passed=TOTAL - 2, failed=2)
        return run_order(result)

    order = replay(5, 7)
    assert replay(5, 7) == order
    assert any(replay(5, qlearn_seed) != order for qlearn_seed in (8, 9, 10))
