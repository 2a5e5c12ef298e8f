"""The ``qlearn`` inspector: every subcommand against both stores with known data (exact
figures, tables and JSON), ``migrate`` between stores, and every error path (exit status and
one-line message, no traceback, no password)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.agents.prioritizer import TestRef
from pytest_qlearn.cli import main
from pytest_qlearn.engine.history import FAILED, PASSED
from pytest_qlearn.names import DATABASE_URL_ENV
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.store import Store, open_store, parse_store_url
from pytest_qlearn.store.base import (
    SCHEMA_VERSION,
    AgentProgress,
    CoverageWrite,
    EpisodeWrite,
    Observation,
    Partition,
    PatternDelta,
    PendingSkipDelta,
    QDelta,
    RewardEvent,
    SessionRecord,
    TrajectoryStep,
)

AGENT = prio.NAME
HUNTER = "flaky-hunter"
SHOP = Partition("shop", "py3.11")
SHOP_12 = Partition("shop", "py3.12")
OTHER = Partition("other", "default")
HOUR = 3_600.0
NOW = time.time()


# -- stores with known data --------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_store_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATABASE_URL_ENV, raising=False)


def _url(kind: str, request: pytest.FixtureRequest, name: str = "qlearn.db") -> str:
    if kind == "sqlite":
        tmp_path: Path = request.getfixturevalue("tmp_path")
        return f"sqlite:///{tmp_path / name}"  # an absolute path: sqlite:////...
    url: str = request.getfixturevalue("pg_url")
    return url


def store_at(url: str) -> Store:
    store = open_store(parse_store_url(url))
    store.open()
    return store


def session(
    session_id: str,
    started_at: float,
    episode: int,
    *,
    failures: int,
    epsilon: float,
    apfd: float | None,
    collection_apfd: float | None,
    reward: float,
    **first_failure: Any,
) -> SessionRecord:
    return SessionRecord(
        session_id=session_id,
        started_at=started_at,
        duration=5.0,
        tests=4,
        failures=failures,
        seed=7,
        epsilon=epsilon,
        q_table_size=episode + 4,
        apfd=apfd,
        collection_apfd=collection_apfd,
        reward=reward,
        exit_status=1 if failures else 0,
        mode="reorder",
        episode=episode,
        **first_failure,
    )


def steps(agent: str, rewards: list[float], explored: list[bool]) -> list[TrajectoryStep]:
    return [
        TrajectoryStep(agent, i, f"t::{i}", f"st-{i}", i % 3, e, r, None)
        for i, (r, e) in enumerate(zip(rewards, explored, strict=True))
    ]


def q(rows: list[tuple[str, int, float, int]]) -> list[QDelta]:
    return [QDelta(s, f"text of {s}", a, dq, n) for s, a, dq, n in rows]


def known_writes() -> list[EpisodeWrite]:
    """shop/py3.11: three sessions (3 days, 2 hours and 1 hour ago) of the prioritizer and one
    of a second agent; shop/py3.12 and other/default: one session each."""
    s1 = EpisodeWrite(
        partition=SHOP,
        session=session(
            "s1",
            NOW - 72 * HOUR,
            1,
            failures=1,
            epsilon=0.2,
            apfd=0.5,
            collection_apfd=0.25,
            reward=10.0,
        ),
        agent_types=[prio.agent_type()],
        observations=[Observation("t::a", PASSED, 1.0), Observation("t::b", FAILED, 2.0)],
        q_deltas={
            AGENT: q([("sA", 0, 1.0, 2), ("sA", 1, -0.5, 1), ("sB", 2, 2.0, 3)]),
            HUNTER: q([("fX", 0, 0.75, 1)]),
        },
        trajectories=steps(AGENT, [1.0, -0.5], [True, False]) + steps(HUNTER, [3.0], [False]),
        rewards=[
            RewardEvent("quality", 0.5, 0.25),
            RewardEvent("time", 0.1, 0.2),
            RewardEvent("total", 10.0, 1.0),
        ],
        patterns=[PatternDelta(AGENT, "p1", "fail_rate=0", 2, 1)],
        agents=[AgentProgress(AGENT, 1, 0.2, 1.0, 1), AgentProgress(HUNTER, 1, 0.5, 3.0, 1)],
    )
    s2 = EpisodeWrite(
        partition=SHOP,
        session=session(
            "s2",
            NOW - 2 * HOUR,
            2,
            failures=0,
            epsilon=0.19,
            apfd=None,
            collection_apfd=None,
            reward=20.0,
        ),
        agent_types=[prio.agent_type()],
        observations=[Observation("t::a", PASSED, 1.5)],
        q_deltas={AGENT: q([("sA", 0, 0.5, 1), ("sC", 1, -1.0, 1)])},
        trajectories=steps(AGENT, [2.0], [False]),
        rewards=[RewardEvent("quality", None, 0.25), RewardEvent("total", 20.0, 1.0)],
        agents=[AgentProgress(AGENT, 1, 0.19, 3.0, 1)],
    )
    s3 = EpisodeWrite(
        partition=SHOP,
        session=session(
            "s3",
            NOW - 1 * HOUR,
            3,
            failures=2,
            epsilon=0.18,
            apfd=0.9,
            collection_apfd=0.4,
            reward=30.0,
            # schema 9; s1, a failing run too, is as older stores hold it: without them
            time_to_first_failure=0.5,
            collection_time_to_first_failure=2.0,
            first_failure_position=1,
            collection_first_failure_position=3,
        ),
        agent_types=[prio.agent_type()],
        q_deltas={AGENT: q([("sB", 2, 0.5, 1)])},
        trajectories=steps(AGENT, [0.25, 0.25, 0.5], [True, True, False]),
        rewards=[RewardEvent("total", 30.0, 1.0)],
        agents=[AgentProgress(AGENT, 1, 0.18, 0.5, 1)],
    )
    t1 = EpisodeWrite(
        partition=SHOP_12,
        session=session(
            "t1",
            NOW - 0.5 * HOUR,
            1,
            failures=0,
            epsilon=0.15,
            apfd=None,
            collection_apfd=None,
            reward=1.0,
        ),
        agent_types=[prio.agent_type()],
        q_deltas={AGENT: q([("sA", 0, -1.0, 1), ("sA", 1, 0.5, 2), ("sD", 0, 1.0, 1)])},
        agents=[AgentProgress(AGENT, 1, 0.15, 2.0, 1)],
    )
    o1 = EpisodeWrite(
        partition=OTHER,
        session=session(
            "o1",
            NOW - HOUR,
            1,
            failures=0,
            epsilon=0.2,
            apfd=None,
            collection_apfd=None,
            reward=0.0,
        ),
        agent_types=[prio.agent_type()],
        q_deltas={AGENT: q([("z", 0, 5.0, 5)])},
        agents=[AgentProgress(AGENT, 1, 0.2, 0.0, 1)],
    )
    return [s1, s2, s3, t1, o1]


def _results(run: LearningSession, verdicts: dict[str, str]) -> list[TestResult]:
    refs = [TestRef(t, t.split("::")[0], None, i) for i, t in enumerate(verdicts)]
    ranking = run.rank(refs)
    return [
        TestResult(
            ref.test_id,
            verdicts[ref.test_id],
            0.1 * (ref.index + 1),
            ref.index,
            position,
            ranking.decisions[ref.test_id].tier,
            ranking.decisions[ref.test_id].explored,
        )
        for position, ref in enumerate(ranking.order)
    ]


LEARNED = Partition("shop", "learned")
LEARNED_IDS = [f"tests/test_m{i % 2}.py::test_{i}" for i in range(6)]


def learn(store: Store, episodes: int = 4) -> None:
    """Real episodes through LearningSession, exactly as the plugin runs them."""
    for episode in range(episodes):
        run = LearningSession(
            store.load_snapshot(LEARNED, [AGENT]), seed=episode, session_id=f"learned-{episode}"
        )
        failing = LEARNED_IDS[episode % 3]
        write, _ = run.finish(
            _results(run, dict.fromkeys(LEARNED_IDS, PASSED) | {failing: FAILED}),
            started_at=NOW - 10 * HOUR + episode,
            duration=1.0,
            exit_status=1,
        )
        assert store.write_episode(write)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[str]:
    """A store URL holding :func:`known_writes`."""
    url = _url(request.param, request)
    store = store_at(url)
    try:
        for w in known_writes():
            assert store.write_episode(w)
    finally:
        store.close()
    yield url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert (code, err) == (0, ""), err
    return json.loads(out)


def shop(db: str, env: str = "py3.11") -> list[str]:
    return ["--db", db, "--project", "shop", "--env", env]


def table_rows(out: str) -> list[list[str]]:
    """The body rows of a rich table (SIMPLE_HEAD: cells separated by 2+ spaces)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append([cell for cell in line.strip().split("  ") if cell.strip()])
    return [[cell.strip() for cell in row] for row in rows]


# -- show-qvalues --------------------------------------------------------------------------------
def test_show_qvalues_table_and_json(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show-qvalues", AGENT, *shop(db))
    assert (code, err) == (0, "")
    assert "Q-values of prioritizer (4 of 4, order q)" in out
    assert [row[:4] for row in table_rows(out)] == [
        ["text of sB", "last", "2.5000", "4"],
        ["text of sA", "first", "1.5000", "3"],
        ["text of sA", "middle", "-0.5000", "1"],
        ["text of sC", "middle", "-1.0000", "1"],
    ]
    assert "project shop, environment py3.11" in out

    doc = ok_json(capsys, "show-qvalues", AGENT, *shop(db), "--limit", "2")
    assert (doc["agent"], doc["project"], doc["environment"], doc["total"]) == (
        AGENT,
        "shop",
        "py3.11",
        4,
    )
    assert [
        (r["state"], r["action"], r["action_label"], r["q"], r["visits"]) for r in doc["q_values"]
    ] == [("sB", 2, "last", 2.5, 4), ("sA", 0, "first", 1.5, 3)]
    assert doc["q_values"][0]["state_text"] == "text of sB"

    by_visits = ok_json(capsys, "show-qvalues", AGENT, *shop(db), "--order", "visits", "--all")
    assert [(r["state"], r["action"]) for r in by_visits["q_values"]] == [
        ("sB", 2),
        ("sA", 0),
        ("sA", 1),
        ("sC", 1),
    ]
    hunter = ok_json(capsys, "show-qvalues", HUNTER, *shop(db))
    assert [(r["state"], r["action_label"], r["q"]) for r in hunter["q_values"]] == [
        ("fX", "no rerun", 0.75)
    ]
    other_env = ok_json(capsys, "show-qvalues", AGENT, *shop(db, "py3.12"), "--order", "key")
    assert [(r["state"], r["action"], r["q"], r["visits"]) for r in other_env["q_values"]] == [
        ("sA", 0, -1.0, 1),
        ("sA", 1, 0.5, 2),
        ("sD", 0, 1.0, 1),
    ]


# -- progress ------------------------------------------------------------------------------------
def test_progress_json_exact_figures(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = ok_json(capsys, "progress", AGENT, *shop(db))
    assert doc["since"] is None
    episodes = doc["episodes"]
    assert [e["session_id"] for e in episodes] == ["s1", "s2", "s3"]
    assert [e["episode"] for e in episodes] == [1, 2, 3]
    assert [e["agent_steps"] for e in episodes] == [2, 1, 3]
    assert [e["agent_explored"] for e in episodes] == [1, 0, 2]
    assert [e["agent_reward"] for e in episodes] == [0.5, 2.0, 1.0]
    assert [e["apfd"] for e in episodes] == [0.5, None, 0.9]
    assert episodes[0]["reward_components"] == {"quality": 0.5, "time": 0.1}
    assert episodes[1]["reward_components"] == {"quality": None}
    assert episodes[2]["reward_components"] == {}
    assert [e["partial"] for e in episodes] == [False, False, False]
    assert doc["summary"] == {
        "episodes": 3,
        "partial_episodes": 0,
        "tests": 12,
        "failures": 3,
        "mean_apfd": pytest.approx(0.7),
        "mean_collection_apfd": pytest.approx(0.325),
        "first_half_apfd": 0.5,
        "second_half_apfd": 0.9,
        "mean_episode_reward": 20.0,
        "first_epsilon": 0.2,
        "last_epsilon": 0.18,
        "agent_steps": 6,
        "agent_explored": 3,
        "first_failure_runs": 1,
        "mean_first_failure_saved_seconds": 1.5,
        "mean_first_failure_saved_tests": 2.0,
        "first_failure_runs_without_figures": 1,
    }
    assert [e["first_failure_saved"] for e in episodes] == [
        None,
        None,
        {"seconds": 1.5, "tests": 2},
    ]
    assert episodes[2]["collection_first_failure_position"] == 3
    assert episodes[0]["time_to_first_failure"] is None
    # the other agent's steps in the same sessions are its own
    hunter = ok_json(capsys, "progress", HUNTER, *shop(db))
    assert [e["agent_steps"] for e in hunter["episodes"]] == [1, 0, 0]
    assert [e["agent_reward"] for e in hunter["episodes"]] == [3.0, 0.0, 0.0]
    # the sessions' ε and Q-table size are the prioritizer's, not the flaky-hunter's
    assert {(e["epsilon"], e["q_table_size"]) for e in hunter["episodes"]} == {(None, None)}
    assert hunter["summary"]["first_epsilon"] is None
    code, out, err = run(capsys, "progress", HUNTER, *shop(db))
    assert (code, err) == (0, "")
    rows = table_rows(out)
    assert [(row[8], row[9], row[-1]) for row in rows] == [
        ("—", "—", "3.0000"),
        ("—", "—", "—"),
        ("—", "—", "—"),
    ]
    assert "; ε " not in " ".join(out.split())  # no ε in the caption either


def test_progress_since_and_table(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = ok_json(capsys, "progress", AGENT, *shop(db), "--since", "3h")
    assert [e["session_id"] for e in doc["episodes"]] == ["s2", "s3"]
    assert doc["since"] == pytest.approx(time.time() - 3 * HOUR, abs=60)
    assert ok_json(capsys, "progress", AGENT, *shop(db), "--since", "30m")["episodes"] == []

    code, out, err = run(capsys, "progress", AGENT, *shop(db), "--since", "4d")
    assert (code, err) == (0, "")
    rows = table_rows(out)
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert rows[0][2:] == [
        "4",
        "1",
        "0.5000",
        "0.2500",
        "—",
        "10.00",
        "0.2000",
        "5",
        "2",
        "1",
        "0.2500",  # the mean step reward: 0.5 over 2 steps (the JSON keeps the sum)
    ]
    assert rows[1][4:7] == ["—", "—", "—"]
    assert rows[2][6] == "+1.50 s, +2 tests"
    caption = " ".join(out.split())
    assert "3 episodes, 12 tests, 3 failures; mean APFD 0.7000" in caption
    assert (
        "first failure saved: mean +1.50 s, +2.0 tests over 1 run (1 older run without the "
        "figures);" in caption
    )
    code, out, _ = run(capsys, "progress", AGENT, *shop(db), "--since", "10m")
    assert code == 0
    assert out.startswith("no episodes since ")


def test_progress_marks_a_partial_episode(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A narrowed or stopped-early run is listed, with its flag, under the episode number the
    next full run will have too."""
    partial = known_writes()[2]
    partial.session = replace(
        partial.session, session_id="s4", started_at=NOW - 0.5 * HOUR, episode=4, partial=True
    )
    store = store_at(db)
    try:
        assert store.write_episode(partial)
    finally:
        store.close()

    doc = ok_json(capsys, "progress", AGENT, *shop(db))
    assert [(e["episode"], e["partial"]) for e in doc["episodes"]] == [
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]
    assert (doc["summary"]["episodes"], doc["summary"]["partial_episodes"]) == (4, 1)
    code, out, err = run(capsys, "progress", AGENT, *shop(db))
    assert (code, err) == (0, "")
    assert [row[0] for row in table_rows(out)] == ["1", "2", "3", "4 (partial)"]
    assert "4 runs (3 episodes, 1 partial), 16 tests" in " ".join(out.split())
    code, out, err = run(capsys, "export", AGENT, *shop(db), "-o", "-")
    assert (code, err) == (0, "")
    exported = json.loads(out)
    assert [s["partial"] for s in exported["sessions"]] == [False, False, False, True]


# -- top-actions ---------------------------------------------------------------------------------
def test_top_actions(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = ok_json(capsys, "top-actions", AGENT, *shop(db))
    assert doc["states"] == 3
    assert [
        (a["action_label"], a["greedy_states"], a["entries"], a["visits"], a["q_mean"], a["q_max"])
        for a in doc["actions"]
    ] == [
        ("last", 1, 1, 4, 2.5, 2.5),
        ("first", 1, 1, 3, 1.5, 1.5),
        ("middle", 1, 2, 2, -0.75, -0.5),
    ]
    assert sum(a["visit_share"] for a in doc["actions"]) == pytest.approx(1.0)
    assert [
        (d["state"], d["action_label"], d["q"], d["visits"], d["margin"]) for d in doc["top"]
    ] == [
        ("sB", "last", 2.5, 4, None),
        ("sA", "first", 1.5, 3, 2.0),
        ("sC", "middle", -1.0, 1, None),
    ]
    assert len(ok_json(capsys, "top-actions", AGENT, *shop(db), "--top", "2")["top"]) == 2

    code, out, err = run(capsys, "top-actions", AGENT, *shop(db), "--top", "1")
    assert (code, err) == (0, "")
    assert table_rows(out)[0] == ["last", "1", "1", "4", "44.4%", "2.5000", "2.5000"]
    assert "Top 1 decisions by visits" in out
    assert "The prioritizer's actions are priority tiers" in " ".join(out.split())


# -- export --------------------------------------------------------------------------------------
def test_export_writes_everything(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "export.json"
    code, out, err = run(capsys, "export", AGENT, *shop(db), "-o", str(target))
    assert (code, err) == (0, "")
    assert out.strip() == (
        f"exported 4 Q-values, 3 sessions and 6 trajectory steps of prioritizer to {target}"
    )
    doc = json.loads(target.read_text(encoding="utf-8"))
    assert doc["qlearn_export"] == 1
    assert (doc["project"], doc["environment"], doc["agent"]) == ("shop", "py3.11", AGENT)
    assert doc["summary"]["q_table"] | {"last_updated": None} == {
        "entries": 4,
        "states": 3,
        "visits": 9,
        "q_min": -1.0,
        "q_max": 2.5,
        "q_mean": 0.625,
        "last_updated": None,
    }
    assert (doc["summary"]["sessions"], doc["summary"]["trajectory_steps"]) == (3, 6)
    assert doc["summary"]["mean_apfd"] == pytest.approx(0.7)
    assert doc["summary"]["mean_episode_reward"] == 20.0  # of the sessions' episode rewards
    state = doc["agent_state"]
    assert (state["episodes"], state["epsilon"], state["reward_sum"], state["rewards"]) == (
        3,
        0.18,
        4.5,
        3,
    )
    assert state["mean_step_reward"] == 1.5  # of the agent's decisions: a different quantity
    assert [(r["state"], r["action"], r["q"], r["visits"]) for r in doc["q_values"]] == [
        ("sA", 0, 1.5, 3),
        ("sA", 1, -0.5, 1),
        ("sB", 2, 2.5, 4),
        ("sC", 1, -1.0, 1),
    ]
    assert [s["session_id"] for s in doc["sessions"]] == ["s1", "s2", "s3"]
    assert doc["sessions"][0]["rewards"] == [
        {"component": "quality", "value": 0.5, "weight": 0.25},
        {"component": "time", "value": 0.1, "weight": 0.2},
        {"component": "total", "value": 10.0, "weight": 1.0},
    ]
    assert [(t["session_id"], t["step"], t["reward"]) for t in doc["trajectories"]] == [
        ("s3", 0, 0.25),
        ("s3", 1, 0.25),
        ("s3", 2, 0.5),
        ("s2", 0, 2.0),
        ("s1", 0, 1.0),
        ("s1", 1, -0.5),
    ]
    assert {t["agent"] for t in doc["trajectories"]} == {AGENT}
    assert doc["patterns"] == [
        {
            "agent": AGENT,
            "pattern": "p1",
            "description": "fail_rate=0",
            "occurrences": 2,
            "hits": 1,
            "reruns": 0,
            "rerun_passes": 0,
            "reward_sum": 0.0,
        }
    ]

    code, out, _ = run(capsys, "export", AGENT, *shop(db), "-o", "-", "--trajectories", "2")
    assert code == 0
    assert len(json.loads(out)["trajectories"]) == 2


def test_patterns_of_the_prioritizer_count_failures_not_flakes(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "patterns", AGENT, *shop(db))
    assert (code, err) == (0, "")
    header = next(line for line in out.splitlines() if "pattern" in line and "seen" in line)
    assert header.split() == ["pattern", "seen", "failed", "failure", "rate"]
    assert table_rows(out) == [["fail_rate=0", "2", "1", "50.0%"]]


# -- fleet-status --------------------------------------------------------------------------------
def test_fleet_status(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = ok_json(capsys, "fleet-status", "--db", db, "--project", "shop")
    rows = [
        (
            a["environment"],
            a["agent"],
            a["episodes"],
            a["epsilon"],
            a["q_table_size"],
            a["states"],
            a["mean_step_reward"],
            a["sessions"],
        )
        for a in doc["agents"]
    ]
    assert rows == [
        ("py3.11", HUNTER, 1, 0.5, 1, 1, 3.0, 3),
        ("py3.11", AGENT, 3, 0.18, 4, 3, 1.5, 3),
        ("py3.12", AGENT, 1, 0.15, 3, 2, 2.0, 1),
    ]
    for a in doc["agents"]:
        assert a["last_active"] == pytest.approx(time.time(), abs=600)

    only = ok_json(capsys, "fleet-status", *shop(db, "py3.12"))
    assert [(a["environment"], a["agent"]) for a in only["agents"]] == [("py3.12", AGENT)]
    other = ok_json(capsys, "fleet-status", "--db", db, "--project", "other")
    assert [(a["agent"], a["q_table_size"]) for a in other["agents"]] == [(AGENT, 1)]

    code, out, err = run(capsys, "fleet-status", "--db", db, "--project", "shop")
    assert (code, err) == (0, "")
    assert [row[:7] for row in table_rows(out)] == [
        ["py3.11", HUNTER, "1", "0.5000", "1", "1", "3.0000"],
        ["py3.11", AGENT, "3", "0.1800", "4", "3", "1.5000"],
        ["py3.12", AGENT, "1", "0.1500", "3", "2", "2.0000"],
    ]


# -- compare -------------------------------------------------------------------------------------
def test_compare_environments_and_agents(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    doc = ok_json(capsys, "compare", AGENT, f"{AGENT}@py3.12", *shop(db))
    a, b = doc["sides"]
    assert (a["environment"], b["environment"]) == ("py3.11", "py3.12")
    assert (a["agent_state"]["episodes"], b["agent_state"]["episodes"]) == (3, 1)
    assert (a["q_table"]["entries"], b["q_table"]["entries"]) == (4, 3)
    assert doc["shared"] == {
        "states": 1,
        "entries": 2,
        "greedy_agreement": 0,  # sA: first in py3.11, middle in py3.12
        "greedy_agreement_share": 0.0,
        "mean_abs_q_difference": 1.75,
        "max_abs_q_difference": 2.5,
    }
    agents = ok_json(capsys, "compare", AGENT, HUNTER, *shop(db))
    assert agents["shared"]["states"] == 0
    assert agents["shared"]["greedy_agreement_share"] is None

    code, out, err = run(capsys, "compare", AGENT, f"{AGENT}@py3.12", *shop(db))
    assert (code, err) == (0, "")
    rows = {row[0]: row[1:] for row in table_rows(out)}
    assert rows["episodes"] == ["3", "1"]
    assert rows["Q entries"] == ["4", "3"]
    assert rows["ε"] == ["0.1800", "0.1500"]
    assert "same greedy action in 0 of 1 states (0.0%)" in out


# -- cleanup -------------------------------------------------------------------------------------
def test_cleanup_removes_what_expired_only(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    # nothing is older than 30 days
    assert ok_json(capsys, "cleanup", *shop(db))["removed"] == 0
    # the trajectories of s1 (3 days ago: 2 + 1 steps) are older than 1 day; Q rows are fresh
    doc = ok_json(capsys, "cleanup", *shop(db), "--ttl-days", "1")
    assert (doc["project"], doc["ttl_days"], doc["removed"]) == ("shop", 1.0, 3)
    progress = ok_json(capsys, "progress", AGENT, *shop(db))
    assert [e["agent_steps"] for e in progress["episodes"]] == [0, 1, 3]
    assert len(ok_json(capsys, "show-qvalues", AGENT, *shop(db))["q_values"]) == 4

    code, out, err = run(capsys, "cleanup", *shop(db), "--ttl-days", "1")
    assert (code, err) == (0, "")
    assert out.startswith("removed 0 rows of project shop unused for 1 days from ")


def test_cleanup_counts_expired_rows(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _url("sqlite", request)
    store = store_at(url)
    w = known_writes()[0]
    assert store.write_episode(w, ttl_days=1e-9)  # expires at once
    store.close()
    # 4 Q rows + 1 pattern + 2 histories; the other project's rows stay
    assert ok_json(capsys, "cleanup", *shop(url))["removed"] == 7
    assert (
        ok_json(capsys, "fleet-status", "--db", url, "--project", "shop")["agents"][0][
            "q_table_size"
        ]
        == 0
    )


# -- migrate -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_migrate_creates_and_reports_the_schema(
    kind: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _url(kind, request, "fresh.db")
    doc = ok_json(capsys, "migrate", "--db", url)
    assert doc["schema_version"] == SCHEMA_VERSION == 12
    code, out, err = run(capsys, "migrate", "--db", url)
    assert (code, err) == (0, "")
    assert out.strip().endswith("schema version 12 (up to date)")
    store = store_at(url)
    try:
        assert store.partitions() == []
    finally:
        store.close()


def everything(store: Store, partition: Partition) -> dict[str, Any]:
    agents = sorted(set(store.agent_states(partition)) | set(store.q_table_summaries(partition)))
    return {
        "q": {
            a: [
                (r.state, r.state_text, r.action, r.q, r.visits)
                for r in store.q_values(partition, a, order="key")
            ]
            for a in agents
        },
        "sessions": store.sessions(partition),
        "rewards": store.rewards(partition),
        "histories": store.load_snapshot(partition, []).histories,
        "pending_skips": store.load_snapshot(partition, []).pending_skips,
        "file_hashes": store.load_snapshot(partition, []).file_hashes,
        "coverage": store.load_coverage(partition),
        "trajectories": {a: store.trajectories(partition, a) for a in agents},
        "patterns": store.patterns(partition),
        "agents": {
            n: (s.episodes, s.epsilon, s.reward_sum, s.rewards)
            for n, s in store.agent_states(partition).items()
        },
    }


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("sqlite", "postgresql"), ("postgresql", "sqlite"), ("sqlite", "sqlite")],
)
def test_migrate_copies_a_project_exactly(
    source_kind: str,
    target_kind: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source_url = _url(source_kind, request, "source.db")
    target_url = _url(target_kind, request, "target.db")
    source = store_at(source_url)
    writes = known_writes()
    assert writes[0].partition == SHOP
    writes[0].pending_skips = [
        PendingSkipDelta("t::a", "k1", 2.0),
        PendingSkipDelta("t::b", "k", 1),
    ]
    writes[0].file_hashes = [("t.py", "d1"), ("pkg/ü.py", "d2")]
    # fixture time per test (schema 6), and a partial session in the middle
    writes[0].observations = [
        Observation("t::a", PASSED, 1.0, 0.25),
        Observation("t::b", FAILED, 2.0, 1.5),
    ]
    writes[1].observations = [Observation("t::a", PASSED, 1.5, 0.75)]
    writes[1].session = replace(writes[1].session, partial=True)
    writes[0].coverage = CoverageWrite(
        maps=[("t::a", '{"d": {"t.py": "d1"}, "l": {"t.py": "1-3"}}', 1)],
        commit="c0ffee",
        dirty=["t.py"],
        percent=71.5,
        statements=[("t.py", "d1", "1-9")],
    )
    for w in writes:
        assert source.write_episode(w)
    learn(source)
    assert source.load_snapshot(SHOP, []).pending_skips == {"t::a": {"k1": 2.0}, "t::b": {"k": 1}}
    assert source.load_coverage(SHOP).last_percent == 71.5
    # the target already holds another project: it is left alone
    target = store_at(target_url)
    marker = known_writes()[-1]
    assert target.write_episode(marker)
    target.close()

    doc = ok_json(capsys, "migrate", "--from", source_url, "--to", target_url, "--project", "shop")
    assert [
        (c["environment"], c["sessions"], c["q_values"], c["trajectories"], c["agents"])
        for c in doc["copied"]
    ] == [
        ("learned", 4, doc["copied"][0]["q_values"], 24, 1),
        ("py3.11", 3, 5, 7, 2),
        ("py3.12", 1, 3, 0, 1),
    ]
    assert doc["copied"][0]["histories"] == 6

    target = store_at(target_url)
    try:
        for partition in (SHOP, SHOP_12, LEARNED):
            assert everything(target, partition) == everything(source, partition), partition
        assert target.partitions() == [OTHER, LEARNED, SHOP, SHOP_12]
        assert [s.partial for s in target.sessions(SHOP)] == [False, True, False]
        copied = target.load_snapshot(SHOP, [])
        assert (copied.episodes, copied.session_count) == (2, 3)
        assert copied.histories["t::a"].fixture_mean == pytest.approx(0.5)
        assert copied.histories["t::b"].fixture_mean == 1.5
        # a run on the copy orders exactly as a run on the original would
        refs = [TestRef(t, t.split("::")[0], None, i) for i, t in enumerate(LEARNED_IDS)]
        orders = [
            [
                r.test_id
                for r in LearningSession(s.load_snapshot(LEARNED, [AGENT]), seed=99)
                .rank(refs)
                .order
            ]
            for s in (source, target)
        ]
        assert orders[0] == orders[1]
    finally:
        target.close()
        source.close()

    # a second copy into the same partitions is refused, and nothing is written
    code, out, err = run(
        capsys, "migrate", "--from", source_url, "--to", target_url, "--project", "shop"
    )
    assert (code, out) == (1, "")
    assert_one_line_error(
        err,
        "qlearn migrate: error:",
        "already holds learning for project 'shop', environment 'learned'",
    )


def test_migrate_one_environment_and_table(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    source_url = _url("sqlite", request, "source.db")
    target_url = _url("sqlite", request, "target.db")
    source = store_at(source_url)
    for w in known_writes():
        assert source.write_episode(w)
    source.close()
    code, out, err = run(
        capsys,
        "migrate",
        "--from",
        source_url,
        "--to",
        target_url,
        "--project",
        "shop",
        "--env",
        "py3.12",
    )
    assert (code, err) == (0, "")
    assert table_rows(out) == [["py3.12", "1", "3", "0", "0", "0", "1"]]
    target = store_at(target_url)
    try:
        assert target.partitions() == [SHOP_12]
    finally:
        target.close()


# -- store options -------------------------------------------------------------------------------
def test_default_store_project_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "myproj"
    path = root / ".pytest_cache" / "d" / "qlearn" / "qlearn.db"
    path.parent.mkdir(parents=True)
    store = store_at(f"sqlite:///{path}")
    w = known_writes()[0]
    w.partition = Partition("myproj", "default")
    assert store.write_episode(w)
    store.close()
    monkeypatch.chdir(root)

    doc = ok_json(capsys, "show-qvalues", AGENT)
    assert (doc["project"], doc["environment"], doc["total"]) == ("myproj", "default", 3)
    assert doc["store"] == "sqlite:///.pytest_cache/d/qlearn/qlearn.db"

    # QLEARN_DATABASE_URL comes before the default file
    monkeypatch.setenv(DATABASE_URL_ENV, "sqlite:///elsewhere.db")
    code, _, err = run(capsys, "show-qvalues", AGENT)
    assert code == 1
    assert_one_line_error(err, "no qlearn store at sqlite:///elsewhere.db")
    # and --db before both
    assert ok_json(capsys, "show-qvalues", AGENT, "--db", f"sqlite:///{path}")["total"] == 3


# -- errors --------------------------------------------------------------------------------------
def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("qlearn") and "error:" in lines[0], err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_agent_and_empty_partition(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (
        ["show-qvalues", "nobody"],
        ["progress", "nobody"],
        ["top-actions", "nobody"],
        ["export", "nobody", "-o", "-"],
        ["compare", AGENT, "nobody"],
    ):
        code, out, err = run(capsys, *command, *shop(db))
        assert (code, out) == (1, ""), command
        assert_one_line_error(
            err,
            f"qlearn {command[0]}: error: unknown agent 'nobody' in project 'shop', "
            "environment 'py3.11'; agents: flaky-hunter, prioritizer",
        )
    code, _, err = run(capsys, "show-qvalues", AGENT, *shop(db, "py3.99"))
    assert code == 1
    assert_one_line_error(
        err,
        "unknown agent 'prioritizer': nothing is stored for project 'shop', environment "
        "'py3.99' (stored: other/default, shop/py3.11, shop/py3.12; choose with --project",
    )
    code, _, err = run(capsys, "fleet-status", "--db", db, "--project", "nope")
    assert code == 1
    assert_one_line_error(err, "qlearn fleet-status: error: nothing is stored for project 'nope'")


@pytest.mark.parametrize(
    "command",
    [
        ["show-qvalues", AGENT],
        ["progress", AGENT],
        ["top-actions", AGENT],
        ["export", AGENT, "-o", "-"],
        ["fleet-status"],
        ["compare", AGENT, AGENT],
        ["cleanup"],
        ["migrate"],
    ],
    ids=lambda c: c[0],
)
def test_unreachable_store_never_shows_the_password(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://ci:s3cr3t-pw@127.0.0.1:1/qlearn?connect_timeout=2"
    code, out, err = run(capsys, *command, "--db", url)
    assert (code, out) == (1, "")
    assert_one_line_error(
        err, f"qlearn {command[0]}: error: cannot connect to the qlearn store", "ci:***@127.0.0.1"
    )
    assert "s3cr3t" not in err


def test_missing_and_foreign_sqlite_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    code, _, err = run(capsys, "show-qvalues", AGENT, "--db", f"sqlite:///{missing}")
    assert code == 1
    assert_one_line_error(err, f"no qlearn store at sqlite:///{missing}: the file does not exist")
    assert not missing.exists()  # an inspector never creates a store

    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE mine (x)")
    conn.commit()
    conn.close()
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some text " * 100)
    for path in (foreign, text):
        before = path.read_bytes()
        code, _, err = run(capsys, "fleet-status", "--db", f"sqlite:///{path}")
        assert code == 1
        assert_one_line_error(err, f"sqlite:///{path} is not a pytest-qlearn store")
        assert path.read_bytes() == before  # not moved aside, not changed
        assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.db", "notes.txt"]


def test_schema_newer_than_the_code_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    store_at(url).close()
    conn = sqlite3.connect(tmp_path / "q.db")
    conn.execute("INSERT INTO qlearn_schema VALUES (99, 0)")
    conn.commit()
    conn.close()
    for command in (["fleet-status"], ["migrate"]):
        code, _, err = run(capsys, *command, "--db", url)
        assert code == 1
        assert_one_line_error(err, "schema version 99, newer than the 12 this pytest-qlearn knows")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["show-qvalues"], ["qlearn show-qvalues: error:", "required: AGENT"]),
        (
            ["show-qvalues", AGENT, "--limit", "0"],
            ["argument --limit: '0' is not a whole number >= 1"],
        ),
        (["show-qvalues", AGENT, "--order", "up"], ["argument --order: invalid choice: 'up'"]),
        (
            ["progress", AGENT, "--since", "yesterday"],
            ["argument --since: 'yesterday' is not a duration"],
        ),
        (["top-actions", AGENT, "--top", "x"], ["argument --top: 'x' is not a whole number"]),
        (["export", AGENT], ["required: -o/--output"]),
        (["cleanup", "--ttl-days", "0"], ["argument --ttl-days: '0' is not a number of days"]),
        (["fleet-status", "--project", ""], ["argument --project:"]),
        (["compare", AGENT], ["required: AGENT[@ENV]"]),
        (
            ["compare", "@py3.12", AGENT],
            ["qlearn compare: error: '@py3.12': expected AGENT or AGENT@ENV"],
        ),
        (
            ["migrate", "--from", "sqlite:///a.db"],
            ["qlearn migrate: error: --from and --to go together"],
        ),
        (
            [
                "migrate",
                "--db",
                "sqlite:///a.db",
                "--from",
                "sqlite:///a.db",
                "--to",
                "sqlite:///b.db",
            ],
            ["--db does not go with --from/--to"],
        ),
        (["migrate", "--from", "", "--to", "sqlite:///b.db"], ["need a store URL each"]),
        (
            ["migrate", "--from", "sqlite:///a.db", "--to", "sqlite:///a.db"],
            ["name the same store"],
        ),
        (
            ["fleet-status", "--db", "mysql://x/y"],
            ["qlearn fleet-status: error: --db = 'mysql://x/y' is not valid"],
        ),
        (["fleet-status", "--db", "postgresql://u:s3cr3t@host:99999/db"], ["u:***@host:99999"]),
        (
            ["migrate", "--from", "nonsense", "--to", "sqlite:///b.db"],
            ["--from = 'nonsense' is not valid"],
        ),
        (
            ["no-such-command"],
            ["qlearn: error: argument COMMAND: invalid choice: 'no-such-command'"],
        ),
        ([], ["qlearn: error: a command is required: cleanup, compare, export, fleet-status"]),
    ],
)
def test_bad_command_lines_exit_2(
    argv: list[str],
    fragments: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert_one_line_error(err, *fragments)
    assert "s3cr3t" not in err
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_export_to_an_unwritable_place(
    db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "such" / "dir" / "x.json"
    code, out, err = run(capsys, "export", AGENT, *shop(db), "-o", str(target))
    assert (code, out) == (1, "")
    assert_one_line_error(err, f"qlearn export: error: cannot write {target}: No such file")


SUBCOMMANDS = [
    "import-junit",
    "show-qvalues",
    "progress",
    "top-actions",
    "export",
    "fleet-status",
    "compare",
    "cleanup",
    "migrate",
]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_every_subcommand_has_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, command, "--help")
    assert (code, err) == (0, "")
    assert f"usage: qlearn {command}" in out
    assert "examples:\n  qlearn " + command in out
    for option in ("--db URL", "--project NAME", "--env NAME"):
        assert option in out
    if command not in ("export", "migrate"):
        assert "--json" in out


def test_console_script_exit_status(tmp_path: Path) -> None:
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_qlearn.cli",
            "progress",
            AGENT,
            "--db",
            f"sqlite:///{tmp_path / 'none.db'}",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert missing.returncode == 1
    assert_one_line_error(missing.stderr, "qlearn progress: error: no qlearn store at")
    helped = subprocess.run(
        [sys.executable, "-m", "pytest_qlearn.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert helped.returncode == 0
    for command in SUBCOMMANDS:
        assert command in helped.stdout


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_names_the_installed_distribution(flag: str) -> None:
    from importlib import metadata

    import pytest_qlearn

    shown = subprocess.run(
        [sys.executable, "-m", "pytest_qlearn.cli", flag],
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    installed = metadata.version("pytest-qlearn")
    assert shown.stdout == f"qlearn (pytest-qlearn) {installed}\n"
    assert pytest_qlearn.__version__ == installed  # the package and its metadata agree


# -- import-junit --------------------------------------------------------------------------------
def junit_xml(timestamp: str | None, failing: set[str], skipped: set[str] = frozenset()) -> str:
    """A pytest-style JUnit XML report of five tests (two in a class, one parametrised, one in
    a module that does not exist under the root)."""
    cases = [
        ("tests.test_a.TestX", "test_one", 0.5),
        ("tests.test_a.TestX", "test_two", 0.25),
        ("tests.test_a", "test_three[1-x]", 1.0),
        ("tests.sub.test_b", "test_four", 2.0),
        ("pkg.test_gone.TestY", "test_five", 0.125),
    ]
    body = []
    for classname, name, seconds in cases:
        inner = ""
        if name in failing:
            inner = '<failure message="assert 1 == 2">AssertionError</failure>'
        elif name in skipped:
            inner = '<skipped message="later" />'
        body.append(
            f'<testcase classname="{classname}" name="{name}" time="{seconds}">{inner}</testcase>'
        )
    stamp = f' timestamp="{timestamp}"' if timestamp else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
        f'errors="0" failures="{len(failing)}" skipped="0" tests="5"{stamp}>'
        + "".join(body)
        + "</testsuite></testsuites>"
    )


@pytest.fixture
def project_root(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "tests" / "sub").mkdir(parents=True)
    (root / "tests" / "test_a.py").write_text("")
    (root / "tests" / "sub" / "test_b.py").write_text("")
    return root


IDS = {
    "one": "tests/test_a.py::TestX::test_one",
    "two": "tests/test_a.py::TestX::test_two",
    "three": "tests/test_a.py::test_three[1-x]",
    "four": "tests/sub/test_b.py::test_four",
    "five": "pkg/test_gone.py::TestY::test_five",
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_import_junit_learns_oldest_first_and_only_once(
    kind: str,
    project_root: Path,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = _url(kind, request, "imported.db")
    files = {
        "c.xml": junit_xml("2024-03-03T10:00:00+00:00", {"test_three[1-x]", "test_five"}),
        "a.xml": junit_xml("2024-03-01T10:00:00", set(), {"test_four"}),
        "b.xml": junit_xml("2024-03-02T10:00:00.5Z", {"test_three[1-x]"}),
    }
    paths = []
    for name_, text in files.items():
        path = project_root / name_
        path.write_text(text, encoding="utf-8")
        paths.append(str(path))
    argv = ["import-junit", *paths, "--root", str(project_root), *shop(url, "ci")]

    doc = ok_json(capsys, *argv)
    runs = doc["runs"]
    assert [Path(r["file"]).name for r in runs] == ["a.xml", "b.xml", "c.xml"]
    assert [r["started_at"] for r in runs] == [1709287200.0, 1709373600.5, 1709460000.0]
    assert [(r["tests"], r["failures"], r["imported"]) for r in runs] == [
        (5, 0, True),
        (5, 1, True),
        (5, 2, True),
    ]
    assert runs[0]["apfd"] is None and 0.0 <= runs[2]["apfd"] <= 1.0

    store = store_at(url)
    try:
        partition = Partition("shop", "ci")
        snapshot = store.load_snapshot(partition, [AGENT])
        assert snapshot.episodes == 3
        assert [s.started_at for s in store.sessions(partition)] == [
            1709287200.0,
            1709373600.5,
            1709460000.0,
        ]
        assert set(snapshot.histories) == set(IDS.values())
        verdicts = {k: snapshot.histories[v].verdicts for k, v in IDS.items()}
        assert verdicts == {
            "one": "PPP",
            "two": "PPP",
            "three": "PFF",
            "four": "PP",  # a skip is not a run
            "five": "PPF",
        }
        assert snapshot.histories[IDS["four"]].duration_mean == 2.0
        assert snapshot.agent_states[AGENT].episodes == 3
        assert len(snapshot.q_entries[AGENT]) > 0
        # the warm start pays: the test that failed in the last two runs is the likeliest
        # failure on the next one
        run_ = LearningSession(snapshot, seed=5)
        refs = [TestRef(t, t.split("::")[0], None, i) for i, t in enumerate(IDS.values())]
        decisions = run_.rank(refs).decisions
        assert max(decisions.values(), key=lambda d: d.p_fail).test_id == IDS["three"]
    finally:
        store.close()

    # again: nothing changes
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert [row[-1] for row in table_rows(out)] == ["already imported"] * 3
    assert ok_json(capsys, "progress", AGENT, *shop(url, "ci"))["summary"]["episodes"] == 3


def test_import_junit_errors_write_nothing(
    project_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "never.db"
    good = project_root / "good.xml"
    good.write_text(junit_xml("2024-03-01T10:00:00", set()))
    bad = {
        "broken.xml": ("<testsuites><testsuite>", "is not XML"),
        "html.xml": ("<html><body/></html>", "is not JUnit XML (no <testsuite>)"),
        "empty.xml": ('<testsuite name="x" tests="0"/>', "holds no test cases"),
        "stamp.xml": (junit_xml("yesterday", set()), "timestamp 'yesterday' is not ISO 8601"),
        "time.xml": (
            '<testsuite><testcase classname="a" name="t" time="fast"/></testsuite>',
            "time 'fast' is not a number",
        ),
    }
    for name_, (text, message) in bad.items():
        path = project_root / name_
        path.write_text(text)
        code, out, err = run(
            capsys,
            "import-junit",
            str(good),
            str(path),
            "--db",
            f"sqlite:///{db}",
            "--root",
            str(project_root),
        )
        assert (code, out) == (1, ""), name_
        assert_one_line_error(err, "qlearn import-junit: error:", str(path), message)
    missing = project_root / "missing.xml"
    code, _, err = run(capsys, "import-junit", str(missing), "--db", f"sqlite:///{db}")
    assert code == 1
    assert_one_line_error(err, f"cannot read {missing}: No such file")
    code, _, err = run(capsys, "import-junit", str(good), "--root", str(missing))
    assert code == 2
    assert_one_line_error(err, f"--root {missing}: not a directory")
    code, _, err = run(capsys, "import-junit")
    assert code == 2
    assert_one_line_error(err, "the following arguments are required: FILE")
    assert not db.exists()


def test_import_junit_uses_the_given_hyperparameters(
    project_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    paths = []
    for day in (1, 2):
        path = project_root / f"run{day}.xml"
        path.write_text(junit_xml(f"2024-03-0{day}T10:00:00", {"test_one"}))
        paths.append(str(path))
    argv = ["import-junit", *paths, "--root", str(project_root), "--db", url]
    ok_json(capsys, *argv, "--set", "exploration_rate=0.05", "--set", "exploration_decay=0.9")
    progress = ok_json(
        capsys, "progress", AGENT, "--db", url, "--env", "default", "--project", "proj"
    )
    assert [e["epsilon"] for e in progress["episodes"]] == [0.05, pytest.approx(0.045)]

    # a value that was not set keeps the prioritizer's own default (ε₀ = 0.02, decay 0.9)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    ok_json(capsys, *argv[:-1], other, "--set", "learning_rate=0.2")
    progress = ok_json(
        capsys, "progress", AGENT, "--db", other, "--env", "default", "--project", "proj"
    )
    assert [e["epsilon"] for e in progress["episodes"]] == [0.02, pytest.approx(0.018)]

    for bad, message in (
        ("alpha=0.5", "--set 'alpha=0.5': expected KEY=VALUE with KEY one of learning_rate"),
        ("exploration_rate=2", "--set exploration_rate=2: allowed is"),
        ("exploration_rate", "expected KEY=VALUE"),
    ):
        code, out, err = run(capsys, *argv, "--set", bad)
        assert (code, out) == (2, "")
        assert_one_line_error(err, "qlearn import-junit: error:", message)


def test_tables_take_the_width_columns_asks_for_when_piped(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped, tables are never squeezed into 80 columns — unless COLUMNS says so."""
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = run(capsys, "progress", AGENT, *shop(db))
    assert code == 0 and max(map(len, out.splitlines())) > 80
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(capsys, "progress", AGENT, *shop(db))
    assert code == 0 and max(map(len, out.splitlines())) <= 80


def test_without_db_the_store_is_found_from_a_subdirectory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest keeps the default store under its rootdir: a shell in tests/ (or deeper) finds
    it, and the default project is that directory's, as the plugin names it."""
    monkeypatch.delenv("QLEARN_DATABASE_URL", raising=False)
    root = tmp_path / "shop"
    store_file = root / ".pytest_cache" / "d" / "qlearn" / "qlearn.db"
    store_file.parent.mkdir(parents=True)
    store = store_at(f"sqlite:///{store_file}")
    try:
        for w in known_writes():
            assert store.write_episode(w)
    finally:
        store.close()
    (root / "tests" / "unit").mkdir(parents=True)
    monkeypatch.chdir(root / "tests" / "unit")
    doc = ok_json(capsys, "progress", AGENT, "--env", "py3.11")
    assert doc["project"] == "shop" and len(doc["episodes"]) == 3
    assert doc["store"] == f"sqlite:///{store_file.as_posix()}"
    monkeypatch.chdir(tmp_path)  # above the project: nothing there, the error says where
    code, _, err = run(capsys, "progress", AGENT)
    assert code == 1 and "no qlearn store at sqlite:///.pytest_cache/d/qlearn/qlearn.db" in err
