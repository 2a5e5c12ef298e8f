"""Order-dependence suspects are remembered across runs and kept out of the position that hurt
them (``suspects.py``): the guard of the order, and a planted polluter/victim pair end to end."""

from __future__ import annotations

import json
import sqlite3

import pytest
from test_reruns import INI, QUIET, STORE  # the same quiet runs and store

from pytest_qlearn import suspects as sus
from pytest_qlearn.agents.prioritizer import FAILED_LAST, NO_EVIDENCE, TestRef
from pytest_qlearn.engine.history import TestHistory
from pytest_qlearn.session import LearningSession
from pytest_qlearn.store.base import Partition, PatternDelta, Snapshot

#: The victim is collected first; the polluter leaves module state behind that makes the
#: victim fail once (the victim consumes it, so its rerun passes).
SUITE = """
import os

STATE = {}


def test_victim():
    leftover = STATE.pop("polluted", False)
    assert not leftover, "a polluter ran first"


def test_middle():
    pass


def test_polluter():
    if os.environ.get("QL_POLLUTE", "1") == "1":
        STATE["polluted"] = True
    assert os.environ.get("QL_POLLUTER_FAILS") != "1"


def test_broken():
    assert os.environ.get("QL_BROKEN") != "1"
"""
VICTIM = "test_od.py::test_victim"
POLLUTER = "test_od.py::test_polluter"
BROKEN = "test_od.py::test_broken"
ARGS = (*QUIET, "--qlearn-reruns", "1", "--qlearn-seed", "3", "-v", "--qlearn-report=r.json")


# -- the guard ---------------------------------------------------------------------------------
def _refs(n: int) -> list[TestRef]:
    return [TestRef(f"t::{i}", "t", None, i) for i in range(n)]


def _key(keys: dict[int, tuple[float, ...]]):  # type: ignore[no-untyped-def]
    return lambda ref: (*keys[ref.index], ref.index)


def _order(refs: list[TestRef], key, active, failed=()) -> list[int]:  # type: ignore[no-untyped-def]
    guarded = sus.guarded(refs, key, active, lambda t: t in failed)
    return [r.index for r in sorted(refs, key=guarded)]


def test_a_suspect_runs_before_every_test_collected_after_it() -> None:
    refs = _refs(5)
    # test 3 is the riskiest; test 1, collected before it, is a suspect
    key = _key({0: (NO_EVIDENCE, -1), 1: (NO_EVIDENCE, -1), 2: (NO_EVIDENCE, -2),
                3: (NO_EVIDENCE, -9), 4: (NO_EVIDENCE, -1)})  # fmt: skip
    assert _order(refs, key, {}) == [3, 2, 0, 1, 4]
    active = {"t::1": sus.Suspect("t::1", 1, 1, 0)}
    # only the suspect moves: to just before test 3
    assert _order(refs, key, active) == [1, 3, 2, 0, 4]
    # a forgotten suspect does not, nor does a suspect already ahead of the later ones
    assert sus.guarded(refs, key, {}, lambda t: False) is key
    assert _order(refs, key, {"t::3": sus.Suspect("t::3", 1, 1, 0)}) == [3, 2, 0, 1, 4]


def test_the_guard_never_puts_a_suspect_ahead_of_a_test_that_failed_last_run() -> None:
    refs = _refs(4)
    key = _key({0: (NO_EVIDENCE, -1), 1: (NO_EVIDENCE, -1), 2: (FAILED_LAST, -5),
                3: (NO_EVIDENCE, -3)})  # fmt: skip
    active = {"t::0": sus.Suspect("t::0", 1, 1, 0)}
    # evidence first: test 2 failed last run and still runs first; then the suspect
    assert _order(refs, key, active, {"t::2"}) == [2, 0, 3, 1]
    # nor past one by way of a test that joined their class on its estimate alone (test 1)
    key = _key({0: (NO_EVIDENCE, -1), 1: (FAILED_LAST, -9), 2: (FAILED_LAST, -5),
                3: (NO_EVIDENCE, -3)})  # fmt: skip
    assert _order(refs, key, {}, {"t::2"}) == [1, 2, 3, 0]
    assert _order(refs, key, active, {"t::2"}) == [1, 2, 0, 3]
    # a suspect that failed last run itself may go ahead of another such test
    key = _key({0: (FAILED_LAST, -1), 1: (NO_EVIDENCE, -1), 2: (FAILED_LAST, -5),
                3: (NO_EVIDENCE, -3)})  # fmt: skip
    assert _order(refs, key, active, {"t::0", "t::2"}) == [0, 2, 3, 1]


def test_exposed_means_a_test_collected_after_it_ran_before_it() -> None:
    class R:
        def __init__(self, test_id: str, collected_at: int, position: int) -> None:
            self.test_id, self.collected_at, self.position = test_id, collected_at, position

    results = [R("a", 0, 1), R("b", 1, 2), R("c", 2, 0)]
    assert sus.exposed(results, {"a": 1, "b": 1}) == {"a", "b"}
    assert sus.exposed([R("a", 0, 0), R("b", 1, 1)], {"a": 1, "b": 1}) == set()


# -- end to end ---------------------------------------------------------------------------------
def _suspect_row(pytester: pytest.Pytester) -> tuple[int, int, int] | None:
    with sqlite3.connect(pytester.path / STORE) as conn:
        row = conn.execute(
            "SELECT occurrences, hits, reruns FROM patterns WHERE agent = ? AND pattern_hash = ?",
            (sus.NAME, VICTIM),
        ).fetchone()
    return None if row is None else tuple(row)  # type: ignore[return-value]


def _ran(result: pytest.RunResult) -> list[str]:
    """The test ids in the order they ran (``-v`` lines; reruns included)."""
    return [
        line.split(" ")[0]
        for line in result.outlines
        if line.startswith("test_od.py::") and (" PASSED" in line or " FAILED" in line
                                                or " RERUN" in line)
    ]  # fmt: skip


def _report(pytester: pytest.Pytester) -> dict:  # type: ignore[type-arg]
    return json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))


def _flag_the_victim(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run 1: the polluter fails (collection order). Run 2: it ran first (it failed last
    run), the victim failed after it and passed on its rerun: flagged."""
    pytester.makeini(INI)
    pytester.makepyfile(test_od=SUITE)
    monkeypatch.setenv("QL_POLLUTER_FAILS", "1")
    first = pytester.runpytest(*ARGS)
    first.assert_outcomes(passed=3, failed=1)
    monkeypatch.delenv("QL_POLLUTER_FAILS")
    second = pytester.runpytest(*ARGS)
    ran = _ran(second)
    assert ran[0] == POLLUTER and ran.count(VICTIM) == 2, ran  # failed, passed on its rerun
    second.stdout.fnmatch_lines(
        [f"qlearn: order-dependent? {VICTIM} failed after being moved (ran after *{POLLUTER}*"]
    )
    assert _suspect_row(pytester) == (1, 0, 2)  # flagged once, since episode 2


def test_a_flagged_victim_is_kept_before_its_polluter_next_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flag_the_victim(pytester, monkeypatch)
    third = pytester.runpytest(*ARGS)
    ran = _ran(third)
    assert ran.index(VICTIM) < ran.index(POLLUTER), ran
    assert ran.count(VICTIM) == 1  # no rerun: it passed at once
    third.assert_outcomes(passed=4)
    assert "order-dependent?" not in third.stdout.str()
    doc = _report(pytester)
    why = {t["test_id"]: t["why"] for t in doc["tests"]}
    assert why[VICTIM] == "kept in collection order: order-dependent suspect since episode 2"
    assert doc["order_suspects"] == [
        {
            "test_id": VICTIM,
            "since_episode": 2,
            "flagged": 1,
            "clean_runs": 0,
            "kept": True,
            "suspected": True,
        }
    ]
    # the guarded run taught nothing new: no row was written (its expiry stays)
    assert _suspect_row(pytester) == (1, 0, 2)


def test_under_xdist_the_workers_keep_the_suspect_in_place(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    _flag_the_victim(pytester, monkeypatch)
    third = pytester.runpytest_subprocess(*ARGS, "-n", "1", "-p", "no:rerunfailures")
    third.assert_outcomes(passed=4)
    assert "RERUN" not in third.stdout.str()
    doc = _report(pytester)
    position = {t["test_id"]: t["qlearn_position"] for t in doc["tests"]}
    assert position[VICTIM] < position[POLLUTER]


def test_a_suspect_is_forgotten_after_exposed_clean_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    _flag_the_victim(pytester, monkeypatch)
    # the polluter is fixed; another test collected after the victim breaks
    monkeypatch.setenv("QL_POLLUTE", "0")
    monkeypatch.setenv("QL_BROKEN", "1")
    guarded = pytester.runpytest(*ARGS)  # it had passed: the guard keeps it behind the victim
    ran = _ran(guarded)
    assert ran.index(VICTIM) < ran.index(BROKEN), ran
    assert _suspect_row(pytester) == (1, 0, 2)
    for n in range(1, sus.FORGET_AFTER + 1):
        # it failed last run: evidence first, it runs before the victim, which passes
        exposed = pytester.runpytest(*ARGS)
        ran = _ran(exposed)
        assert ran.index(BROKEN) < ran.index(VICTIM), ran
        assert ran.count(VICTIM) == 1
        assert _suspect_row(pytester) == (1, n, 2)
    (note,) = _report(pytester)["order_suspects"]
    assert note["suspected"] is False and note["clean_runs"] == sus.FORGET_AFTER
    # forgotten: no longer kept
    monkeypatch.delenv("QL_BROKEN")
    later = pytester.runpytest(*ARGS)
    later.assert_outcomes(passed=4)
    assert "order_suspects" not in _report(pytester)


def test_a_reverted_failure_does_not_hold_a_suspect_back() -> None:
    """The guard keeps a suspect behind the tests that failed in their last run; a failure
    whose breaking change is reverted (class REVERTED) no longer counts as one."""

    def history(test_id: str, verdicts: str) -> TestHistory:
        return TestHistory(
            test_id, runs=len(verdicts), failures=verdicts.count("F"), verdicts=verdicts,
            last_run_episode=len(verdicts), first_episode=1, duration_mean=0.001,
        )  # fmt: skip

    histories = {
        "t.py::test_s": history("t.py::test_s", "PPPP"),  # the suspect, collected first
        "t.py::test_a": history("t.py::test_a", "PPPF"),  # failed last run
        "t.py::test_x": history("t.py::test_x", "PPPP"),
    }
    refs = [TestRef(test_id, "t.py", None, index) for index, test_id in enumerate(histories)]
    flagged = PatternDelta(sus.NAME, "t.py::test_s", sus.DESCRIPTION, 1, 0, 3)

    def order(reverted: frozenset[str]) -> list[str]:
        snapshot = Snapshot(
            Partition("p", "e"), histories=dict(histories), episodes=4, suspects=[flagged]
        )
        session = LearningSession(snapshot, seed=1)
        session.reverted = reverted
        return [ref.test_id for ref in session.rank(refs, "test").order]

    assert order(frozenset()) == ["t.py::test_a", "t.py::test_s", "t.py::test_x"]
    assert order(frozenset({"t.py::test_a"})) == ["t.py::test_s", "t.py::test_a", "t.py::test_x"]
