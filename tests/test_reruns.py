"""Reruns: failure signatures, the flaky-hunter agent, and the rerun protocol end to end
(``--qlearn-reruns``; pytest-rerunfailures observed; pytest-xdist)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pytest_qlearn.agents import flaky_hunter as fh
from pytest_qlearn.engine.history import FAILED, PASSED, TestHistory
from pytest_qlearn.engine.signatures import (
    ASSERTION,
    CONNECTION,
    TIMEOUT,
    SignatureStats,
    failure_kind,
    normalise_message,
    signature,
)

QUIET = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")
STORE = Path(".pytest_cache", "d", "qlearn", "qlearn.db")
#: No exploration: the agent's prior decides (a rerun of a new assertion failure pays).
INI = """
[pytest]
qlearn = true
qlearn_agent_hyperparameters =
    flaky-hunter: exploration_rate=0
"""
SUITE = """
import pathlib
import pytest

COUNT = pathlib.Path(__file__).with_name("count.txt")


def test_flaky():
    n = int(COUNT.read_text()) if COUNT.exists() else 0
    COUNT.write_text(str(n + 1))
    assert n % 2 == 1, f"attempt {n} of object at 0x7f3a12"


def test_ok():
    pass
"""


# -- signatures ----------------------------------------------------------------------------
def test_signatures_mask_what_varies_between_runs() -> None:
    a = signature(
        "AssertionError",
        "took 1.53s at 0x7f00ab12, id 9f86d081884c7d65 in /tmp/pytest-of-ci/pytest-7/x/f.txt",
        "tests/test_x.py::test_y",
    )
    b = signature(
        "AssertionError",
        "took 22.1s at 0x7ffe0001, id 0a1b2c3d4e5f6071 in /tmp/pytest-of-ci/pytest-9/y/f.txt",
        "tests/test_x.py::test_y",
    )
    assert a == b and a.key == b.key and len(a.key) == 16
    assert a.message == "took <n>s at <addr>, id <id> in <tmp>"
    uuid = normalise_message("user 123e4567-e89b-12d3-a456-426614174000 gone")
    assert uuid == "user <uuid> gone"
    # a different location or type is a different failure
    assert signature("AssertionError", "x", "tests/test_x.py::test_z").key != a.key
    assert signature("ValueError", "x", "tests/test_x.py::test_y").kind == "error"
    assert len(normalise_message("word " * 200)) == 200


def test_failure_kinds() -> None:
    assert failure_kind("AssertionError") == ASSERTION
    assert failure_kind("Failed") == ASSERTION
    assert failure_kind("socket.timeout") == TIMEOUT
    assert failure_kind("httpx.ReadTimeout") == TIMEOUT
    assert failure_kind("ConnectionRefusedError") == CONNECTION
    assert failure_kind("PermissionError") == "os"
    assert failure_kind("ModuleNotFoundError") == "import"
    assert failure_kind("KeyError") == "error"
    assert failure_kind("MyDomainError") == "other"


def test_signature_labels() -> None:
    assert SignatureStats().label == "new"
    assert SignatureStats(seen=2).label == "seen"
    assert SignatureStats(seen=2, reruns=3).label == "real"
    assert SignatureStats(seen=2, flaky=1, reruns=1, rerun_passes=1).label == "flaky"


# -- the agent -------------------------------------------------------------------------------
def test_rewards_revealed_by_the_attempts() -> None:
    c = fh.rerun_cost(0.1)  # 0.12
    assert fh.reward(0, "FP", 0.1) == 0.0
    assert fh.reward(1, "FP", 0.1) == pytest.approx(1 - c)
    assert fh.reward(5, "FP", 0.1) == pytest.approx(1 - c)  # stopped at the first pass
    assert fh.reward(1, "FFP", 0.1) == pytest.approx(-c)
    assert fh.reward(2, "FFP", 0.1) == pytest.approx(1 - 2 * c)
    assert fh.reward(2, "FFF", 0.1) == pytest.approx(-2 * c)
    assert fh.reward(3, "FFF", 0.1) is None  # a third rerun might have passed: unknown
    assert fh.expected_reward(0, 0.5, c) == 0.0
    assert fh.expected_reward(1, 0.5, c) == pytest.approx(0.5 * (1 - c) - 0.5 * c)


def _hunter(epsilon: float = 0.0) -> fh.FlakyHunter:
    import random

    from pytest_qlearn.engine.hyperparams import Hyperparameters
    from pytest_qlearn.engine.qlearner import QLearner
    from pytest_qlearn.engine.rewards import RewardCalculator

    hyper = Hyperparameters(alpha=0.2, epsilon=epsilon)
    agent = fh.agent_type(hyper)
    learner = QLearner(fh.NAME, agent.n_actions, hyper, random.Random(1))
    return fh.FlakyHunter(learner, RewardCalculator(), agent)


def test_the_agent_learns_to_stop_rerunning_a_real_failure() -> None:
    hunter = _hunter()
    history = TestHistory("t", runs=20)
    real = fh.Failure("t", ASSERTION, "k", SignatureStats(seen=3), False, 0.0)
    first = hunter.decide(history, real, 2)
    assert first.reruns >= 1  # the prior: an assertion sometimes passes on a rerun
    for _ in range(20):
        decision = hunter.decide(history, real, 2)
        hunter.learn(decision.state.key, decision.reruns, "F" * (decision.reruns + 1), 0.0)
    assert hunter.decide(history, real, 2).reruns == 0
    flaky = real._replace(kind=TIMEOUT, known=SignatureStats(seen=3, flaky=3, reruns=3))
    for _ in range(20):
        decision = hunter.decide(history, flaky, 2)
        hunter.learn(decision.state.key, decision.reruns, "FP", 0.0)
    assert hunter.decide(history, flaky, 2).reruns >= 1  # a known flake is rerun


def test_exploration_only_ever_adds_reruns_to_the_greedy_choice() -> None:
    # k reruns reveal the reward of every action below k (they stop at the first pass):
    # exploring downwards teaches nothing and risks a false red the greedy choice avoids.
    history = TestHistory("t", runs=20)
    real = fh.Failure("t", ASSERTION, "k", SignatureStats(seen=3), False, 0.0)
    hunter = _hunter(epsilon=1.0)
    for _ in range(30):  # a real failure: every rerun fails, so the greedy choice drops to 0
        decision = hunter.decide(history, real, 3)
        hunter.learn(decision.state.key, decision.reruns, "F" * (decision.reruns + 1), 0.0)
    state = hunter.state(history, real)
    greedy = hunter.learner.greedy(hunter.scores(state, hunter.pass_chance(history, real), 0.0, 3))
    assert greedy == 0
    choices = [hunter.decide(history, real, 3) for _ in range(200)]
    assert all(d.explored and d.reruns in (1, 2, 3) for d in choices)
    assert {d.reruns for d in choices} == {1, 2, 3}
    # with the greedy choice at the limit there is nothing to add: no exploration
    flake = real._replace(kind=TIMEOUT, known=SignatureStats(seen=3, flaky=3, reruns=3))
    top = hunter.decide(history, flake, 1)
    assert top.reruns == 1 and not top.explored


def test_a_flaky_run_is_learned_as_a_flip() -> None:
    history = TestHistory("t").record(PASSED, 1.0, 1)
    after = history.record(PASSED, 2.0, 2, flaky=True)
    assert (after.runs, after.failures, after.flaky, after.verdicts) == (3, 1, 1, "PFP")
    assert after.flips == 2
    assert history.record(FAILED, 1.0, 2).flaky == 0


# -- the protocol, end to end -----------------------------------------------------------------
def assert_outcomes(result: pytest.RunResult, **expected: int) -> None:
    """Like ``RunResult.assert_outcomes``, which does not know the ``rerun`` outcome."""
    outcomes = result.parseoutcomes()
    assert {key: outcomes.get(key, 0) for key in expected} == expected, outcomes


def _store_history(pytester: pytest.Pytester, test_id: str) -> tuple[int, int, int, str]:
    with sqlite3.connect(pytester.path / STORE) as conn:
        row = conn.execute(
            "SELECT runs, failures, flaky, verdicts FROM test_history WHERE test_id = ?",
            (test_id,),
        ).fetchone()
    assert row is not None
    return tuple(row)  # type: ignore[return-value]


def test_a_test_passing_on_its_rerun_is_flaky_and_passes(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_s=SUITE)
    result = pytester.runpytest(*QUIET, "--qlearn-reruns", "2", "--junitxml=j.xml", "-v")
    assert_outcomes(result, passed=2, rerun=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "*test_s.py::test_flaky RERUN*",
            "*test_s.py::test_flaky PASSED*",
            "qlearn: reruns: 1 flaky (failed, then passed on a rerun), 1 rerun(s) took *",
            "qlearn: flaky test_s.py::test_flaky: passed on rerun 1 (AssertionError: attempt <n>"
            " of object at <addr>*@ test_s.py::test_flaky)",
        ]
    )
    xml = (pytester.path / "j.xml").read_text(encoding="utf-8")
    assert '<property name="qlearn_reruns" value="1" />' in xml
    assert '<property name="qlearn_flaky" value="true" />' in xml
    assert '<property name="qlearn_signature" value="AssertionError: attempt' in xml
    # learned as a flip, never as a plain pass; the signature and the agent are stored
    assert _store_history(pytester, "test_s.py::test_flaky") == (2, 1, 1, "FP")
    with sqlite3.connect(pytester.path / STORE) as conn:
        patterns = conn.execute(
            "SELECT occurrences, hits, reruns, rerun_passes, reward_sum > 0 FROM patterns "
            "WHERE agent = 'flaky-hunter'"
        ).fetchall()
        steps = conn.execute(
            "SELECT test_id, action FROM trajectories WHERE agent = 'flaky-hunter'"
        ).fetchall()
        episodes = conn.execute(
            "SELECT episodes FROM agent_states WHERE agent = 'flaky-hunter'"
        ).fetchone()
    assert patterns == [(1, 1, 1, 1, 1)]
    assert steps and steps[0][0] == "test_s.py::test_flaky" and steps[0][1] >= 1
    assert episodes == (1,)


def test_a_test_failing_every_rerun_stays_failed_with_every_report(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        OUTCOMES = []

        def pytest_runtest_logreport(report):
            if report.when == "call":
                OUTCOMES.append(report.outcome)

        def pytest_sessionfinish(session):
            import pathlib
            pathlib.Path("outcomes.txt").write_text(" ".join(OUTCOMES))
        """
    )
    pytester.makepyfile(
        test_r="""
        def test_real():
            assert 1 == 2
        """
    )
    result = pytester.runpytest(*QUIET, "--qlearn-reruns", "3")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = (pytester.path / "outcomes.txt").read_text().split()
    assert outcomes[-1] == "failed" and set(outcomes[:-1]) <= {"rerun"}
    assert 2 <= len(outcomes) <= 4  # the agent's prior reruns a new assertion failure
    assert_outcomes(result, failed=1, rerun=len(outcomes) - 1)
    result.stdout.fnmatch_lines(["*qlearn: reruns: 0 flaky*, 1 failed every attempt*"])
    assert _store_history(pytester, "test_r.py::test_real")[:3] == (1, 1, 0)


def test_setup_errors_xfail_and_maxfail_keep_pytest_semantics(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_a="""
        import pytest

        @pytest.fixture
        def db():
            raise ConnectionError("refused 127.0.0.1:5432")

        def test_setup_error(db):
            pass

        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert False

        @pytest.mark.xfail(strict=True, reason="strict")
        def test_xpass_strict():
            pass
        """
    )
    result = pytester.runpytest(*QUIET, "--qlearn-reruns", "2", "-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes["errors"] == 1 and outcomes["xfailed"] == 1 and outcomes["failed"] == 1
    assert outcomes.get("rerun", 0) <= 2  # only the setup error may be rerun
    assert result.ret == pytest.ExitCode.TESTS_FAILED

    # -x: a flaky test passing on its rerun does not stop the run; a real failure does
    pytester.makepyfile(
        test_a=SUITE + "\n\ndef test_real():\n    assert 0\n\n\ndef test_z():\n    pass\n"
    )
    # (no exploration: an explored decision may put the new test_z ahead of the new
    # test_real, its equal — seen once in CI — and then it rightly runs)
    result = pytester.runpytest(
        *QUIET, "--qlearn-reruns", "1", "-x", "-p", "no:cacheprovider",
        "-o", "qlearn_exploration_rate=0",
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert (outcomes["passed"], outcomes["failed"]) == (2, 1)  # test_z never ran


def test_reruns_zero_is_off_and_bad_values_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_s=SUITE)
    result = pytester.runpytest(*QUIET, "-p", "no:rerunfailures")
    result.assert_outcomes(passed=1, failed=1)
    assert "rerun" not in result.parseoutcomes()
    for bad in ("-1", "6", "x"):
        result = pytester.runpytest(*QUIET, "--qlearn-reruns", bad)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*--qlearn-reruns*{bad}*0-5*"])


def test_rerunfailures_is_observed_and_its_flip_learned(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_rerunfailures")
    pytester.makeini(INI)
    pytester.makepyfile(test_s=SUITE)
    # --qlearn-reruns too: rerunfailures reruns, qlearn only watches (never reruns twice)
    result = pytester.runpytest(*QUIET, "--reruns", "2", "--qlearn-reruns", "2")
    assert_outcomes(result, passed=2, rerun=1)
    result.stdout.fnmatch_lines(["qlearn: reruns: 1 flaky*"])
    assert _store_history(pytester, "test_s.py::test_flaky") == (2, 1, 1, "FP")
    with sqlite3.connect(pytester.path / STORE) as conn:
        pattern = conn.execute(
            "SELECT occurrences, hits, reruns, rerun_passes FROM patterns "
            "WHERE agent = 'flaky-hunter'"
        ).fetchall()
        steps = conn.execute(
            "SELECT action, explored FROM trajectories WHERE agent = 'flaky-hunter'"
        ).fetchall()
    assert pattern == [(1, 1, 1, 1)]
    assert steps == [(1, 0)]  # observed: rerunfailures' one rerun, not an exploration


def test_reruns_under_xdist_happen_on_the_worker(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makeini(INI)
    pytester.makepyfile(test_s=SUITE)
    result = pytester.runpytest_subprocess(
        *QUIET, "-n", "2", "--qlearn-reruns", "2", "-p", "no:rerunfailures"
    )
    assert_outcomes(result, passed=2, rerun=1)
    result.stdout.fnmatch_lines(["qlearn: reruns: 1 flaky*"])
    assert _store_history(pytester, "test_s.py::test_flaky") == (2, 1, 1, "FP")


# -- the observer steps aside when nothing can rerun (issue 16) ----------------------------
#: A conftest that writes, as the first test starts, whether qlearn's rerun observer is
#: still registered.
OBSERVER_PROBE = """
import pathlib


def pytest_runtestloop(session):
    present = session.config.pluginmanager.get_plugin("qlearn-reruns") is not None
    pathlib.Path("observer.txt").write_text(str(present))
"""


@pytest.mark.parametrize(
    ("args", "marker", "ini", "observed"),
    [
        ((), "", "", False),  # nothing can rerun: the observer unregisters
        (("--reruns", "2"), "", "", True),
        (("--force-reruns", "2"), "", "", True),
        ((), "@pytest.mark.flaky(reruns=2)", "", True),
        ((), "", "reruns = 2", True),
        (("--qlearn-reruns", "2"), "", "", True),  # qlearn's own protocol
    ],
)
def test_the_rerunfailures_observer_stays_exactly_when_a_rerun_can_happen(
    pytester: pytest.Pytester, args: tuple[str, ...], marker: str, ini: str, observed: bool
) -> None:
    pytest.importorskip("pytest_rerunfailures")
    pytester.makeini(INI + ini + "\n")
    pytester.makeconftest(OBSERVER_PROBE)
    pytester.makepyfile(test_s=SUITE.replace("def test_flaky", f"{marker}\ndef test_flaky"))
    result = pytester.runpytest(*QUIET, *args)
    assert (pytester.path / "observer.txt").read_text() == str(observed)
    if observed:  # every way of asking for a rerun is observed and learned as a flip
        assert_outcomes(result, passed=2, rerun=1)
        assert _store_history(pytester, "test_s.py::test_flaky") == (2, 1, 1, "FP")
    else:
        assert_outcomes(result, passed=1, failed=1)
        assert _store_history(pytester, "test_s.py::test_flaky") == (1, 1, 0, "F")


def test_without_the_observer_the_run_learns_what_the_observer_would(
    pytester: pytest.Pytester,
) -> None:
    """The fast path (observer unregistered) and the slow one (kept by ``reruns = 0``,
    which asks for no rerun) store the same learning, row for row."""
    pytest.importorskip("pytest_rerunfailures")
    stored = {}
    for name, ini in (("fast", ""), ("slow", "reruns = 0\n")):
        pytester.makeini(INI + ini)
        pytester.makeconftest(OBSERVER_PROBE)
        pytester.makepyfile(test_s=SUITE)
        for _ in range(3):
            pytester.runpytest(*QUIET, "--qlearn-seed", "7")
        assert (pytester.path / "observer.txt").read_text() == str(name == "slow")
        with sqlite3.connect(pytester.path / STORE) as conn:
            stored[name] = {
                table: conn.execute(f"SELECT {columns} FROM {table} ORDER BY {columns}").fetchall()
                # what reruns and their observation touch; the prioritizer's states carry
                # measured durations, which differ from run to run on a loaded machine
                for table, columns in (
                    ("test_history", "test_id, runs, failures, flaky, verdicts"),
                    ("trajectories", "agent, test_id, action, explored"),
                    ("patterns", "agent, occurrences, hits"),
                )
            }
        for path in (pytester.path / STORE.parent).iterdir():
            path.unlink()
        (pytester.path / "count.txt").unlink()
    assert stored["fast"] == stored["slow"]
    assert stored["fast"]["test_history"]  # something was learned
    # and no rerun was observed in either: the flaky-hunter learned nothing in both
    assert not [row for row in stored["slow"]["trajectories"] if row[0] == "flaky-hunter"]
