"""The store conformance suite: every backend must pass it unchanged.

Only the public :class:`Store` interface is used here (``open``, ``load_snapshot``,
``write_episode``, ``cleanup``, ``maybe_cleanup``, ``recent_sessions``, ``schema_version``,
``close``, and the read-only API of the ``qlearn`` inspector). Backend-specific checks (raw
rows, journal modes, files) live in ``test_store_<backend>.py``.

To add a backend, add one entry to :data:`STORE_FACTORIES`: a context manager that yields a
fresh, *unopened* store over empty storage and removes that storage afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from builders import AGENT, PARTITION, episode_write, session_record, sqlite_schema_at

from pytest_qlearn.agents.prioritizer import TestRef
from pytest_qlearn.engine.history import FAILED, PASSED, SKIPPED, TestHistory
from pytest_qlearn.engine.qlearner import QEntry
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.store import SqliteStore, Store
from pytest_qlearn.store import postgres as postgres_store
from pytest_qlearn.store import sqlite as sqlite_store
from pytest_qlearn.store.base import (
    SCHEMA_VERSION,
    SECONDS_PER_DAY,
    AgentProgress,
    CheckpointPush,
    CoverageSnapshot,
    CoverageWrite,
    EpisodeWrite,
    Observation,
    Partition,
    PatternDelta,
    PendingRun,
    PendingSkipDelta,
    RewardEvent,
    Snapshot,
    TrajectoryStep,
)
from pytest_qlearn.store.checkpoint import stale_after
from pytest_qlearn.store.postgres import PostgresStore

OTHER_AGENT = "other-agent"
DAY = SECONDS_PER_DAY


# -- backends ------------------------------------------------------------------------------
@contextmanager
def _sqlite_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    yield SqliteStore(tmp_path / "qlearn.sqlite3")


@contextmanager
def _sqlite_staged_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The SQLite store with every agent's Q deltas staged in its temporary table (the path
    of large writes, from ``STAGE_THRESHOLD`` deltas on), however few there are."""
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setattr(sqlite_store, "STAGE_THRESHOLD", 0)
    with _sqlite_store(request) as fresh:
        yield fresh


@contextmanager
def _postgres_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A schema of this test's own on the test server (see ``conftest.py``)."""
    url: str = request.getfixturevalue("pg_url")
    yield PostgresStore(url)


#: backend name -> factory of a fresh, unopened store over empty storage.
STORE_FACTORIES: dict[str, Callable[[pytest.FixtureRequest], AbstractContextManager[Store]]] = {
    "sqlite": _sqlite_store,
    "postgresql": _postgres_store,
}


#: the backends, and the SQLite store's large-write path with every write
_STORE_VARIANTS = {**STORE_FACTORIES, "sqlite-staged": _sqlite_staged_store}


@pytest.fixture(params=list(_STORE_VARIANTS), ids=list(_STORE_VARIANTS))
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    with _STORE_VARIANTS[request.param](request) as fresh:
        fresh.open()
        try:
            yield fresh
        finally:
            fresh.close()


# -- building writes by hand -----------------------------------------------------------------
def q_table(snapshot: Snapshot, agent: str = AGENT) -> dict[tuple[str, int], tuple[float, int]]:
    return {(e.state, e.action): (e.q, e.visits) for e in snapshot.q_entries.get(agent, [])}


def write(store: Store, w: EpisodeWrite, ttl_days: float = 30.0) -> None:
    assert store.write_episode(w, ttl_days=ttl_days) is True


# -- snapshots -------------------------------------------------------------------------------
def test_fresh_store_has_the_current_schema_and_an_empty_snapshot(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    snapshot = store.load_snapshot(PARTITION, [AGENT, OTHER_AGENT])
    assert snapshot.partition == PARTITION
    assert snapshot.histories == {}
    assert all(entries == [] for entries in snapshot.q_entries.values())
    assert snapshot.agent_states == {}
    assert snapshot.recent_sessions == []
    assert snapshot.episodes == 0
    assert store.recent_sessions(PARTITION) == []


def test_write_then_load_round_trips(store: Store) -> None:
    w = episode_write(
        "s1",
        episode=7,
        observations=[
            ("t.py::test_pass", PASSED, 0.5),
            ("t.py::test_fail", FAILED, 1.25),
            ("t.py::test_skip", SKIPPED, 0.0),
        ],
        q=[("state-a", 0, 0.1 + 0.2, 1), ("state-a", 2, -3.0, 2), ("state-b", 1, 1e-300, 5)],
        agents=[AgentProgress(AGENT, 1, 0.199, 0.125, 1)],
    )
    write(store, w)
    snapshot = store.load_snapshot(PARTITION, [AGENT])

    assert snapshot.histories == {
        "t.py::test_pass": TestHistory("t.py::test_pass").record(PASSED, 0.5, 7),
        "t.py::test_fail": TestHistory("t.py::test_fail").record(FAILED, 1.25, 7),
        "t.py::test_skip": TestHistory("t.py::test_skip").record(SKIPPED, 0.0, 7),
    }
    assert sorted(snapshot.q_entries[AGENT], key=lambda e: (e.state, e.action)) == [
        QEntry("state-a", 0, 0.1 + 0.2, 1),
        QEntry("state-a", 2, -3.0, 2),
        QEntry("state-b", 1, 1e-300, 5),
    ]
    for entry in snapshot.q_entries[AGENT]:
        assert type(entry.q) is float  # never Decimal, never int
        assert type(entry.visits) is int

    state = snapshot.agent_states[AGENT]
    assert (state.episodes, state.epsilon, state.reward_sum, state.rewards) == (1, 0.199, 0.125, 1)
    assert type(state.epsilon) is float
    assert type(state.reward_sum) is float
    assert isinstance(state.last_active, float)

    assert snapshot.recent_sessions == [w.session]
    session = snapshot.recent_sessions[0]
    for name in ("started_at", "duration", "epsilon", "apfd", "reward"):
        assert type(getattr(session, name)) is float, name
    assert session.collection_apfd is None
    assert snapshot.episodes == 1


def test_snapshot_holds_q_entries_of_the_requested_agents_only(store: Store) -> None:
    write(store, episode_write("s1", q=[("mine", 0, 1.0, 1)]))
    write(store, episode_write("s2", q=[("theirs", 0, 2.0, 1)], agent=OTHER_AGENT))

    only_other = store.load_snapshot(PARTITION, [OTHER_AGENT])
    assert only_other.q_entries.get(AGENT, []) == []
    assert only_other.q_entries[OTHER_AGENT] == [QEntry("theirs", 0, 2.0, 1)]
    both = store.load_snapshot(PARTITION, [AGENT, OTHER_AGENT])
    assert both.q_entries[AGENT] == [QEntry("mine", 0, 1.0, 1)]
    assert both.q_entries[OTHER_AGENT] == [QEntry("theirs", 0, 2.0, 1)]


def test_sessions_come_newest_first(store: Store) -> None:
    for session_id, started_at in (("old", 100.0), ("newest", 300.0), ("middle", 200.0)):
        write(store, episode_write(session_id, started_at=started_at))

    assert [s.session_id for s in store.recent_sessions(PARTITION)] == [
        "newest",
        "middle",
        "old",
    ]
    assert [s.session_id for s in store.recent_sessions(PARTITION, limit=2)] == [
        "newest",
        "middle",
    ]
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert [s.session_id for s in snapshot.recent_sessions] == ["newest", "middle", "old"]
    assert snapshot.episodes == 3


def test_agent_states_add_up_and_epsilon_only_decays(store: Store) -> None:
    write(store, episode_write("s1", agents=[AgentProgress(AGENT, 1, 0.3, 2.0, 1)]))
    write(store, episode_write("s2", agents=[AgentProgress(AGENT, 2, 0.2, 4.5, 3)]))
    state = store.load_snapshot(PARTITION, [AGENT]).agent_states[AGENT]
    assert (state.episodes, state.epsilon, state.reward_sum, state.rewards) == (3, 0.2, 6.5, 4)
    assert state.mean_reward == pytest.approx(6.5 / 4)

    # A concurrent run that started from an older snapshot does not raise ε again.
    write(store, episode_write("s3", agents=[AgentProgress(AGENT, 1, 0.25, 0.5, 1)]))
    state = store.load_snapshot(PARTITION, [AGENT]).agent_states[AGENT]
    assert (state.episodes, state.epsilon, state.reward_sum, state.rewards) == (4, 0.2, 7.0, 5)


# -- no lost updates -------------------------------------------------------------------------
def test_q_deltas_are_added_two_concurrent_runs_lose_nothing(store: Store) -> None:
    write(store, episode_write("base", q=[("s", 0, 1.0, 2), ("s", 1, -1.0, 1)]))
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert q_table(snapshot) == {("s", 0): (1.0, 2), ("s", 1): (-1.0, 1)}

    # Two runs learned from that same snapshot; each writes only its own change.
    run_a = episode_write("run-a", episode=2, q=[("s", 0, 0.5, 3), ("only-a", 2, 4.0, 1)])
    run_b = episode_write("run-b", episode=2, q=[("s", 0, -2.25, 1), ("s", 1, 0.75, 2)])
    write(store, run_a)
    write(store, run_b)

    assert q_table(store.load_snapshot(PARTITION, [AGENT])) == {
        ("s", 0): (1.0 + 0.5 - 2.25, 2 + 3 + 1),
        ("s", 1): (-1.0 + 0.75, 1 + 2),
        ("only-a", 2): (4.0, 1),
    }


@pytest.mark.parametrize("precomputed", [False, True], ids=["observations", "next-histories"])
def test_test_histories_of_two_concurrent_runs_are_both_applied(
    store: Store, precomputed: bool
) -> None:
    """Both runs learned from the same snapshot. With ``precomputed`` they also hand over the
    histories they computed from it, which the store may take only while nobody else wrote."""
    test_id = "tests/test_x.py::test_flaky"
    write(store, episode_write("base", observations=[(test_id, PASSED, 2.0)]))
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    runs = []
    for session_id, verdict, duration in (("run-a", FAILED, 1.0), ("run-b", PASSED, 3.0)):
        w = episode_write(session_id, episode=2, observations=[(test_id, verdict, duration)])
        if precomputed:
            w.base_episodes = snapshot.episodes
            w.next_histories = [snapshot.histories[test_id].record(verdict, duration, 2)]
        runs.append(w)
    for w in runs:
        write(store, w)

    history = store.load_snapshot(PARTITION, [AGENT]).histories[test_id]
    expected = TestHistory(test_id).record(PASSED, 2.0, 1)
    expected = expected.record(FAILED, 1.0, 2).record(PASSED, 3.0, 2)
    assert history == expected
    assert (history.runs, history.failures, history.flips, history.verdicts) == (3, 1, 2, "PFP")
    assert history.duration_mean == pytest.approx(2.0)


def test_precomputed_histories_are_taken_when_nobody_wrote_since(store: Store) -> None:
    write(store, episode_write("base", observations=[("t::a", PASSED, 1.0)]))
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    w = episode_write("next", episode=2, observations=[("t::a", FAILED, 2.0)])
    w.base_episodes = snapshot.episodes
    w.next_histories = [snapshot.histories["t::a"].record(FAILED, 2.0, 2)]
    write(store, w)

    assert store.load_snapshot(PARTITION, [AGENT]).histories == {
        "t::a": TestHistory("t::a").record(PASSED, 1.0, 1).record(FAILED, 2.0, 2)
    }


def _results(
    session: LearningSession, verdicts: dict[str, str], durations: dict[str, float]
) -> list[TestResult]:
    refs = [TestRef(test_id, test_id.split("::")[0], None, i) for i, test_id in enumerate(verdicts)]
    ranking = session.rank(refs)
    return [
        TestResult(
            ref.test_id,
            verdicts[ref.test_id],
            durations[ref.test_id],
            ref.index,
            position,
            ranking.decisions[ref.test_id].tier,
            ranking.decisions[ref.test_id].explored,
        )
        for position, ref in enumerate(ranking.order)
    ]


def test_realistic_concurrent_learning_sessions_lose_nothing(store: Store) -> None:
    ids = [f"tests/test_mod{i % 2}.py::test_{i}" for i in range(6)]
    durations = {t: 0.1 * (i + 1) for i, t in enumerate(ids)}

    first = LearningSession(store.load_snapshot(PARTITION, [AGENT]), seed=1, session_id="first")
    write_1, _ = first.finish(
        _results(first, dict.fromkeys(ids, PASSED) | {ids[1]: FAILED}, durations),
        started_at=1_000.0,
        duration=3.0,
        exit_status=1,
    )
    write(store, write_1)
    base = q_table(store.load_snapshot(PARTITION, [AGENT]))

    # Two runs start before either finishes: each loads the same stored state.
    writes = []
    for seed, failing in ((2, ids[1]), (3, ids[4])):
        run = LearningSession(
            store.load_snapshot(PARTITION, [AGENT]), seed=seed, session_id=f"concurrent-{seed}"
        )
        w, _ = run.finish(
            _results(run, dict.fromkeys(ids, PASSED) | {failing: FAILED}, durations),
            started_at=2_000.0 + seed,
            duration=3.0,
            exit_status=1,
        )
        writes.append(w)
    for w in writes:
        write(store, w)

    final = store.load_snapshot(PARTITION, [AGENT])
    expected = {key: list(value) for key, value in base.items()}
    for w in writes:
        for d in w.q_deltas[AGENT]:
            held = expected.setdefault((d.state, d.action), [0.0, 0])
            held[0] += d.dq
            held[1] += d.dvisits
    got = q_table(final)
    assert set(got) == set(expected)
    for key, (q, visits) in expected.items():
        assert got[key][0] == pytest.approx(q, rel=1e-12, abs=1e-15), key
        assert got[key][1] == visits, key
    assert final.episodes == 3
    assert final.agent_states[AGENT].episodes == 3
    assert {h.runs for h in final.histories.values()} == {3}
    assert final.histories[ids[1]].failures == 2
    assert final.histories[ids[4]].failures == 1


def test_a_stored_session_id_is_not_written_again(store: Store) -> None:
    other = Partition("other-project", "py3.12")
    original = episode_write(
        "s1",
        observations=[("t::a", PASSED, 1.0)],
        q=[("s", 0, 1.0, 1)],
        agents=[AgentProgress(AGENT, 1, 0.2, 1.0, 1)],
    )
    write(store, original)
    before = store.load_snapshot(PARTITION, [AGENT])
    before_other = store.load_snapshot(other, [AGENT])

    # A replay of the very same (spooled) episode...
    assert store.write_episode(original) is False
    # ...and a different episode under the same id, even in another partition.
    clash = episode_write(
        "s1",
        started_at=5_000.0,
        observations=[("t::a", FAILED, 2.0), ("t::b", PASSED, 1.0)],
        q=[("s", 0, 5.0, 3), ("t", 1, 1.0, 1)],
        agents=[AgentProgress(AGENT, 1, 0.1, 9.0, 1)],
    )
    assert store.write_episode(clash) is False
    assert store.write_episode(replace(clash, partition=other)) is False

    assert store.load_snapshot(PARTITION, [AGENT]) == before
    assert store.load_snapshot(other, [AGENT]) == before_other
    assert before_other.episodes == 0


# -- partitions and awkward names ------------------------------------------------------------
def test_partitions_never_see_each_other(store: Store) -> None:
    partitions = [
        Partition("proj", "py3.11"),
        Partition("proj", "py3.12"),
        Partition("other", "py3.11"),
        Partition("a:b", "c"),  # must not collide with ("a", "b:c") however keys are built
        Partition("a", "b:c"),
        Partition("a", "b"),
    ]
    for i, partition in enumerate(partitions):
        write(
            store,
            episode_write(
                f"session-{i}",
                partition=partition,
                started_at=100.0 + i,
                observations=[("t::shared", FAILED if i % 2 else PASSED, float(i))],
                q=[("shared-state", 0, float(i + 1), i + 1)],
                agents=[AgentProgress(AGENT, i + 1, 0.5, float(i), 1)],
            ),
        )

    for i, partition in enumerate(partitions):
        snapshot = store.load_snapshot(partition, [AGENT])
        assert snapshot.episodes == 1
        assert [s.session_id for s in snapshot.recent_sessions] == [f"session-{i}"]
        assert [s.session_id for s in store.recent_sessions(partition)] == [f"session-{i}"]
        assert q_table(snapshot) == {("shared-state", 0): (float(i + 1), i + 1)}
        history = snapshot.histories["t::shared"]
        assert (history.runs, history.last_duration) == (1, float(i))
        assert snapshot.agent_states[AGENT].episodes == i + 1

    empty = store.load_snapshot(Partition("proj", "py3.1"), [AGENT])
    assert (empty.histories, q_table(empty), empty.agent_states, empty.episodes) == ({}, {}, {}, 0)


AWKWARD = {
    "unicode": "tests/tëst_ünïcode.py::test_π[∞-🐍-日本語]",
    "brackets": "tests/test_x.py::TestC::test_y[[a]-{b}-(c)]",
    "quotes": "tests/test_x.py::test_q[\"double\"-'single'-`back`]",
    "semicolons": "test_sql[x'; DROP TABLE q_values; --]",
    "newlines": "tests/test_x.py::test_n[line1\nline2\r\n\tend]",
    "wildcards": "test_like[%_*?\\]",
    "long_ascii": "tests/test_long.py::test_p[" + "x" * 10_000 + "]",
    "long_unicode": "tests/test_long.py::test_u[" + "ä[;'\"\n]€" * 1_250 + "]",
    # issue 13: what a database cannot store as it is, and the characters that make an id
    # read as something else
    "nul": "tests/test_x.py::test_n[a\x00b\x00]",
    "lone_surrogates": "tests/test_x.py::test_s[\udc80-\ud800-\udfff\udbff]",
    "bidi_controls": "tests/test_x.py::test_b[\u202eevil\u202c\u2066x\u2069\u200f\u061c]",
    "escape_lookalike": "tests/test_x.py::test_e[\uffff0000\uffff\uffffzzzz]",
    "everything": "t.py::test[\x00\udc80\u202e\uffff\x01\t%_'\"]",
}
#: Text no database takes as it is: NUL, lone surrogates (and the store's escape character).
HOSTILE_TEXTS = {
    k: AWKWARD[k] for k in ("nul", "lone_surrogates", "escape_lookalike", "everything")
}


@pytest.mark.parametrize("name", list(AWKWARD), ids=list(AWKWARD))
def test_awkward_test_ids_and_project_names_round_trip(store: Store, name: str) -> None:
    text = AWKWARD[name]
    partition = Partition(text, text)
    w = episode_write(
        "awkward",
        partition=partition,
        observations=[(text, FAILED, 1.0), (text + "2", PASSED, 2.0)],
        q=[("state", 0, 1.5, 1)],
        agents=[AgentProgress(AGENT, 1, 0.5, 1.0, 1)],
    )
    write(store, w)

    snapshot = store.load_snapshot(partition, [AGENT])
    assert snapshot.partition == partition
    assert set(snapshot.histories) == {text, text + "2"}
    assert snapshot.histories[text].test_id == text
    assert snapshot.histories[text].verdicts == FAILED
    assert q_table(snapshot) == {("state", 0): (1.5, 1)}
    assert snapshot.recent_sessions == [w.session]
    assert store.recent_sessions(partition) == [w.session]

    # Near misses (prefixes, LIKE-style matches) see nothing.
    for near in (Partition(text[:-1], text), Partition(text, text[:-1]), Partition("%", "%")):
        assert store.load_snapshot(near, [AGENT]).episodes == 0
        assert store.load_snapshot(near, [AGENT]).histories == {}


@pytest.mark.parametrize("name", list(HOSTILE_TEXTS), ids=list(HOSTILE_TEXTS))
def test_hostile_text_round_trips_through_every_field_and_every_read(
    store: Store, name: str
) -> None:
    """Issue 13, cases 3 and 4: a NUL (PostgreSQL refused the whole write) or a lone surrogate
    (neither store could encode it) anywhere a write carries text comes back exactly, through
    every read of the interface, and near misses see nothing."""
    text = AWKWARD[name]
    partition = Partition(text, text + "env")
    agent = "agent" + text
    w = episode_write(
        "session" + text,
        partition=partition,
        observations=[(text, FAILED, 1.0), (text + "2", PASSED, 2.0)],
        q=[(text, 0, 1.5, 1), ("plain", 1, 2.0, 2)],
        agent=agent,
        agents=[AgentProgress(agent, 1, 0.5, 1.0, 1)],
        patterns=[PatternDelta(agent, text, "description " + text, 2, 1)],
    )
    w.session = replace(w.session, mode="reorder" + text)
    w.trajectories = [TrajectoryStep(agent, 0, text, text, 1, True, 0.5, text)]
    w.rewards = [RewardEvent("component" + text, 1.0, 0.5)]
    w.file_hashes = [(text + ".py", "digest" + text)]
    w.pending_skips = [PendingSkipDelta(text, "key" + text, 1.0)]
    w.coverage = CoverageWrite(
        maps=[(text, '{"map": "' + text + '"}', 1)],
        commit="commit" + text,
        dirty=[text + ".py"],
        percent=50.0,
        statements=[(text + ".py", "digest" + text, "1-2")],
    )
    write(store, w)
    assert store.write_episode(w) is False  # stored once, found by its id

    snapshot = store.load_snapshot(partition, [agent])
    assert snapshot.partition == partition
    assert set(snapshot.histories) == {text, text + "2"}
    assert snapshot.histories[text].test_id == text
    assert q_table(snapshot, agent) == {(text, 0): (1.5, 1), ("plain", 1): (2.0, 2)}
    assert set(snapshot.agent_states) == {agent}
    assert snapshot.recent_sessions == [w.session]
    assert snapshot.file_hashes == {text + ".py": "digest" + text}
    assert snapshot.pending_skips == {text: {"key" + text: 1.0}}
    coverage = store.load_coverage(partition)
    assert coverage.maps == {text: ('{"map": "' + text + '"}', 1)}
    assert (coverage.last_commit, coverage.last_dirty) == ("commit" + text, (text + ".py",))
    assert coverage.statements == {text + ".py": ("digest" + text, "1-2")}

    assert store.recent_sessions(partition) == [w.session]
    assert store.sessions(partition) == [w.session]
    assert partition in store.partitions()
    assert store.partitions(text) == [partition]
    assert {(r.agent, r.state, r.state_text) for r in store.q_values(partition, agent)} == {
        (agent, text, f"text of {text}"),
        (agent, "plain", "text of plain"),
    }
    assert set(store.q_table_summaries(partition)) == {agent}
    assert store.q_table_summaries(partition)[agent].agent == agent
    assert store.agent_states(partition)[agent].agent == agent
    assert store.rewards(partition) == {w.session.session_id: w.rewards}
    [step] = store.trajectories(partition, agent)
    assert (step.session_id, step.agent, step.test_id, step.state, step.next_state) == (
        w.session.session_id,
        agent,
        text,
        text,
        text,
    )
    assert set(store.episode_agent_stats(partition, agent)) == {w.session.session_id}
    assert store.patterns(partition) == [PatternDelta(agent, text, "description " + text, 2, 1)]

    # near misses and other partitions see nothing
    for near in (Partition(text[:-1], text + "env"), Partition("x", text + "env")):
        assert store.load_snapshot(near, [agent]).histories == {}
    assert store.cleanup("other project", ttl_days=30) == 0
    assert store.load_snapshot(partition, [agent]).histories.keys() == {text, text + "2"}
    # and the project's own cleanup finds its rows
    assert store.cleanup(text, ttl_days=30, now=time.time() + 40 * DAY) > 0
    assert store.maybe_cleanup(text, ttl_days=30) == 0


@pytest.mark.parametrize("name", list(HOSTILE_TEXTS), ids=list(HOSTILE_TEXTS))
def test_hostile_text_in_a_checkpoint_round_trips(store: Store, name: str) -> None:
    text = AWKWARD[name]
    partition = Partition(text, text)
    result = [text, FAILED, 0.5, 0, 0, 1, False]
    push = checkpoint_push(1, [result], session_id="killed" + text, partition=partition)
    push = replace(push, run=replace(push.run, owner=FAR_OWNER + text))
    store.push_checkpoint(push, now=1_000.0)
    store.beat_checkpoint(push.run.session_id, push.run.owner, now=1_500.0)
    assert store.claim_checkpoints(partition, "claimer:1", now=1_000.0 + STALE + 1) == []
    [run] = store.claim_checkpoints(partition, "claimer" + text, now=1_500.0 + STALE + 1)
    assert (run.partition, run.session_id, run.results) == (
        partition,
        "killed" + text,
        [result],
    )
    assert run.owner == "claimer" + text
    # the run's episode supersedes its checkpoint
    write(store, episode_write("killed" + text, partition=partition))
    assert store.claim_checkpoints(partition, "claimer:2", now=1e9) == []


# -- TTL ---------------------------------------------------------------------------------------
def test_cleanup_deletes_expired_rows_keeps_recent_ones_and_counts(store: Store) -> None:
    other_env = Partition(PARTITION.project, "py3.12")
    write(
        store,
        episode_write("old", observations=[("t::old", PASSED, 1.0)], q=[("old", 0, 1.0, 1)]),
        ttl_days=1,
    )
    write(
        store,
        episode_write("old-env", partition=other_env, q=[("old", 0, 1.0, 1), ("old", 1, 1.0, 1)]),
        ttl_days=1,
    )
    write(
        store,
        episode_write("new", observations=[("t::new", PASSED, 1.0)], q=[("new", 0, 2.0, 1)]),
        ttl_days=30,
    )
    written = time.time()

    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 0.5 * DAY) == 0
    assert set(store.load_snapshot(PARTITION, [AGENT]).histories) == {"t::old", "t::new"}

    # Every environment of the project is cleaned: 2 rows + 2 rows.
    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 2 * DAY) == 4
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert set(snapshot.histories) == {"t::new"}
    assert q_table(snapshot) == {("new", 0): (2.0, 1)}
    assert q_table(store.load_snapshot(other_env, [AGENT])) == {}
    # The learning curve (sessions) is kept.
    assert [s.session_id for s in store.recent_sessions(PARTITION)] == ["new", "old"]

    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 2 * DAY) == 0
    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 31 * DAY) == 2
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert (snapshot.histories, q_table(snapshot)) == ({}, {})


def test_a_used_row_expiry_moves_forward(store: Store) -> None:
    write(
        store,
        episode_write("first", observations=[("t::used", PASSED, 1.0)], q=[("used", 0, 1.0, 1)]),
        ttl_days=1,
    )
    write(
        store,
        episode_write("second", observations=[("t::used", FAILED, 1.0)], q=[("used", 0, 1.0, 1)]),
        ttl_days=30,
    )
    written = time.time()

    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 2 * DAY) == 0
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert q_table(snapshot) == {("used", 0): (2.0, 2)}
    assert snapshot.histories["t::used"].runs == 2


def test_cleanup_never_touches_another_project(store: Store) -> None:
    mine, theirs = Partition("mine", "env"), Partition("theirs", "env")
    for partition in (mine, theirs):
        write(
            store,
            episode_write(
                f"s-{partition.project}",
                partition=partition,
                observations=[("t::a", PASSED, 1.0)],
                q=[("s", 0, 1.0, 1)],
            ),
            ttl_days=1,
        )
    written = time.time()

    assert store.cleanup("mine", ttl_days=30, now=written + 40 * DAY) == 2
    assert store.load_snapshot(mine, [AGENT]).histories == {}
    snapshot = store.load_snapshot(theirs, [AGENT])
    assert set(snapshot.histories) == {"t::a"}
    assert q_table(snapshot) == {("s", 0): (1.0, 1)}


def test_maybe_cleanup_runs_at_most_once_a_day_per_project(store: Store) -> None:
    mine, theirs = Partition("mine", "env"), Partition("theirs", "env")
    for partition in (mine, theirs):
        write(
            store,
            episode_write(f"s-{partition.project}", partition=partition, q=[("s", 0, 1.0, 1)]),
            ttl_days=1,
        )
    written = time.time()

    # Runs (nothing has expired yet) and remembers that it ran.
    assert store.maybe_cleanup("mine", ttl_days=30, now=written + 0.5 * DAY) == 0
    # Less than a day later the rows have expired, but cleanup does not run again...
    assert store.maybe_cleanup("mine", ttl_days=30, now=written + 1.25 * DAY) == 0
    assert q_table(store.load_snapshot(mine, [AGENT])) == {("s", 0): (1.0, 1)}
    # ...while another project's first cleanup does run.
    assert store.maybe_cleanup("theirs", ttl_days=30, now=written + 1.25 * DAY) == 1
    assert q_table(store.load_snapshot(theirs, [AGENT])) == {}
    # A day after the last one, it runs again.
    assert store.maybe_cleanup("mine", ttl_days=30, now=written + 1.6 * DAY) == 1
    assert q_table(store.load_snapshot(mine, [AGENT])) == {}


def test_close_is_safe_to_call_twice(store: Store) -> None:
    store.close()
    store.close()


# -- the read-only API (the qlearn inspector) ---------------------------------------------------
def test_read_api_of_an_empty_store(store: Store) -> None:
    assert store.partitions() == []
    assert store.partitions("project") == []
    assert store.q_values(PARTITION, AGENT) == []
    assert store.q_table_summaries(PARTITION) == {}
    assert store.agent_states(PARTITION) == {}
    assert store.sessions(PARTITION) == []
    assert store.rewards(PARTITION) == {}
    assert store.trajectories(PARTITION, AGENT) == []
    assert store.episode_agent_stats(PARTITION, AGENT) == {}
    assert store.patterns(PARTITION) == []


def test_partitions_lists_every_partition_sorted_and_filters_by_project(store: Store) -> None:
    partitions = [
        Partition("b", "y"),
        Partition("a", "z"),
        Partition("b", "x"),
        Partition("a", "y"),
    ]
    for i, partition in enumerate(partitions):
        write(store, episode_write(f"s{i}", partition=partition, q=[("s", 0, 1.0, 1)]))

    assert store.partitions() == sorted(partitions, key=lambda p: (p.project, p.environment))
    assert store.partitions("b") == [Partition("b", "x"), Partition("b", "y")]
    assert store.partitions("c") == []


def test_q_values_orders_limits_and_exact_summaries(store: Store) -> None:
    write(store, episode_write("s1", q=[("s1", 0, 1.5, 2), ("s1", 1, -0.5, 1), ("s2", 2, 3.0, 4)]))
    write(store, episode_write("s2", q=[("s1", 0, 0.25, 1), ("s3", 0, -2.0, 7)]))
    write(store, episode_write("s3", q=[("x", 0, 9.0, 9)], agent=OTHER_AGENT))
    other = Partition(PARTITION.project, "elsewhere")
    write(store, episode_write("s4", partition=other, q=[("s1", 0, 100.0, 100)]))

    def keys(order: str, limit: int | None = None) -> list[tuple[str, int, float, int]]:
        return [
            (r.state, r.action, r.q, r.visits)
            for r in store.q_values(PARTITION, AGENT, limit=limit, order=order)
        ]

    assert keys("q") == [("s2", 2, 3.0, 4), ("s1", 0, 1.75, 3), ("s1", 1, -0.5, 1),
                         ("s3", 0, -2.0, 7)]  # fmt: skip
    assert keys("-q") == list(reversed(keys("q")))
    assert keys("visits") == [("s3", 0, -2.0, 7), ("s2", 2, 3.0, 4), ("s1", 0, 1.75, 3),
                              ("s1", 1, -0.5, 1)]  # fmt: skip
    assert keys("key") == [("s1", 0, 1.75, 3), ("s1", 1, -0.5, 1), ("s2", 2, 3.0, 4),
                           ("s3", 0, -2.0, 7)]  # fmt: skip
    assert keys("q", limit=2) == [("s2", 2, 3.0, 4), ("s1", 0, 1.75, 3)]
    rows = store.q_values(PARTITION, AGENT, order="key")
    assert {r.agent for r in rows} == {AGENT}
    assert rows[0].state_text == "text of s1"
    for r in rows:
        assert type(r.q) is float and type(r.visits) is int and type(r.action) is int
        assert r.expires_at > r.updated_at
    with pytest.raises(ValueError):
        store.q_values(PARTITION, AGENT, order="nonsense")

    summaries = store.q_table_summaries(PARTITION)
    assert set(summaries) == {AGENT, OTHER_AGENT}
    mine = summaries[AGENT]
    assert (mine.entries, mine.states, mine.visits) == (4, 3, 15)
    assert (mine.q_min, mine.q_max) == (-2.0, 3.0)
    assert mine.q_mean == pytest.approx((1.75 - 0.5 + 3.0 - 2.0) / 4)
    for value in (mine.visits, mine.entries, mine.states):
        assert type(value) is int  # never Decimal
    assert type(mine.q_mean) is float
    theirs = summaries[OTHER_AGENT]
    assert (theirs.entries, theirs.states, theirs.visits, theirs.q_max) == (1, 1, 9, 9.0)
    assert store.q_table_summaries(other)[AGENT].visits == 100


def _steps(agent: str, rewards: Sequence[float], explored: Sequence[bool]) -> list[TrajectoryStep]:
    return [
        TrajectoryStep(agent, i, f"t::{i}", f"state-{i}", i % 3, e, r, f"next-{i}")
        for i, (r, e) in enumerate(zip(rewards, explored, strict=True))
    ]


def test_sessions_rewards_trajectories_and_episode_stats_add_up(store: Store) -> None:
    plan = {  # session -> (started_at, step rewards, explored flags)
        "a": (100.0, [1.0, -0.5, 2.0], [False, True, False]),
        "b": (300.0, [0.25, 0.25], [True, True]),
        "c": (200.0, [4.0], [False]),
    }
    for session_id, (started_at, rewards, explored) in plan.items():
        w = episode_write(session_id, started_at=started_at)
        w.trajectories = _steps(AGENT, rewards, explored) + _steps(OTHER_AGENT, [7.0], [True])
        # several reward rows per session: a join on them must not multiply the step totals
        w.rewards = [RewardEvent("quality", 0.5, 0.25), RewardEvent("time", None, 0.2),
                     RewardEvent("total", started_at, 1.0)]  # fmt: skip
        write(store, w)
    other = Partition("someone-else", PARTITION.environment)
    w = episode_write("elsewhere", partition=other, started_at=250.0)
    w.trajectories = _steps(AGENT, [100.0], [True])
    write(store, w)

    assert [s.session_id for s in store.sessions(PARTITION)] == ["a", "c", "b"]
    assert [s.session_id for s in store.sessions(PARTITION, since=200.0)] == ["c", "b"]
    assert store.sessions(PARTITION, since=301.0) == []
    assert store.sessions(PARTITION)[0] == session_record("a", started_at=100.0)

    rewards = store.rewards(PARTITION)
    assert set(rewards) == {"a", "b", "c"}
    assert rewards["b"] == [RewardEvent("quality", 0.5, 0.25), RewardEvent("time", None, 0.2),
                            RewardEvent("total", 300.0, 1.0)]  # fmt: skip
    assert set(store.rewards(PARTITION, since=250.0)) == {"b"}

    steps = store.trajectories(PARTITION, AGENT)
    assert [(t.session_id, t.step) for t in steps] == [
        ("b", 0), ("b", 1), ("c", 0), ("a", 0), ("a", 1), ("a", 2)
    ]  # fmt: skip
    first = steps[0]
    assert (first.started_at, first.agent, first.test_id, first.state, first.action) == (
        300.0, AGENT, "t::0", "state-0", 0
    )  # fmt: skip
    assert (first.explored, first.reward, first.next_state) == (True, 0.25, "next-0")
    assert type(first.explored) is bool
    assert [(t.session_id, t.step) for t in store.trajectories(PARTITION, AGENT, limit=3)] == [
        ("b", 0), ("b", 1), ("c", 0)
    ]  # fmt: skip
    assert [t.reward for t in store.trajectories(PARTITION, OTHER_AGENT)] == [7.0, 7.0, 7.0]

    stats = store.episode_agent_stats(PARTITION, AGENT)
    assert {k: (s.steps, s.explored, s.reward_sum) for k, s in stats.items()} == {
        "a": (3, 1, 2.5),
        "b": (2, 2, 0.5),
        "c": (1, 0, 4.0),
    }
    for s in stats.values():
        assert type(s.steps) is int and type(s.explored) is int and type(s.reward_sum) is float
    assert set(store.episode_agent_stats(PARTITION, AGENT, since=150.0)) == {"b", "c"}
    assert store.episode_agent_stats(PARTITION, "nobody") == {}


def test_agent_states_and_patterns_read_back_exactly(store: Store) -> None:
    write(
        store,
        episode_write(
            "s1",
            agents=[
                AgentProgress(AGENT, 1, 0.3, 2.0, 1),
                AgentProgress(OTHER_AGENT, 2, 0.1, 1.0, 2),
            ],
            patterns=[
                PatternDelta(AGENT, "p2", "second", 3, 1),
                PatternDelta(AGENT, "p1", "first", 2, 2),
            ],
        ),
    )
    write(
        store,
        episode_write(
            "s2",
            agents=[AgentProgress(AGENT, 1, 0.2, 0.5, 1)],
            patterns=[PatternDelta(AGENT, "p2", "second", 4, 0)],
        ),
    )

    states = store.agent_states(PARTITION)
    assert states == store.load_snapshot(PARTITION, [AGENT]).agent_states
    assert (states[AGENT].episodes, states[AGENT].epsilon, states[AGENT].reward_sum) == (
        2,
        0.2,
        2.5,
    )
    assert (states[OTHER_AGENT].episodes, states[OTHER_AGENT].rewards) == (2, 2)
    assert store.patterns(PARTITION) == [
        PatternDelta(AGENT, "p1", "first", 2, 2),
        PatternDelta(AGENT, "p2", "second", 7, 1),
    ]
    assert store.patterns(Partition("nobody", "env")) == []


# -- test file hashes ------------------------------------------------------------------------
def test_file_hashes_round_trip_are_replaced_per_path_and_partitioned(store: Store) -> None:
    long_path = "tests/" + "ü;'\"" * 700 + "/test_x.py"
    first = replace(
        episode_write("h1"),
        file_hashes=[("tests/test_a.py", "a1"), ("tests/test_b.py", "b1"), (long_path, "x1")],
    )
    write(store, first)
    assert store.load_snapshot(PARTITION, [AGENT]).file_hashes == {
        "tests/test_a.py": "a1",
        "tests/test_b.py": "b1",
        long_path: "x1",
    }
    # a later run: test_a changed, test_b unchanged, test_c new; the long path not collected
    second = replace(
        episode_write("h2"),
        file_hashes=[
            ("tests/test_a.py", "a2"),
            ("tests/test_b.py", "b1"),
            ("tests/test_c.py", "c"),
        ],
    )
    write(store, second)
    assert store.load_snapshot(PARTITION, [AGENT]).file_hashes == {
        "tests/test_a.py": "a2",
        "tests/test_b.py": "b1",
        "tests/test_c.py": "c",
        long_path: "x1",
    }
    assert store.load_snapshot(Partition(PARTITION.project, "other"), [AGENT]).file_hashes == {}


def test_cleanup_forgets_file_hashes_not_seen_for_the_ttl(store: Store) -> None:
    write(store, replace(episode_write("h1"), file_hashes=[("tests/test_a.py", "a1")]))
    written = time.time()
    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 2 * DAY) == 0
    assert store.load_snapshot(PARTITION, [AGENT]).file_hashes == {"tests/test_a.py": "a1"}
    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 31 * DAY) == 1
    assert store.load_snapshot(PARTITION, [AGENT]).file_hashes == {}


# -- the selector's pending skips --------------------------------------------------------------
def pending_write(
    session_id: str, *skips: tuple[str, str, float], partition: Partition = PARTITION
) -> EpisodeWrite:
    return replace(
        episode_write(session_id, partition=partition),
        pending_skips=[PendingSkipDelta(*skip) for skip in skips],
    )


def pending_skips(store: Store, partition: Partition = PARTITION) -> dict[str, dict[str, float]]:
    return store.load_snapshot(partition, [AGENT]).pending_skips


def test_pending_skips_round_trip_beside_the_q_table(store: Store) -> None:
    assert pending_skips(store) == {}
    long_id = "tests/test_x.py::test_" + "ü;'\"" * 700
    write(store, pending_write("p1", ("t::a", "k1", 1.0), ("t::a", "k2", 1.0), (long_id, "k1", 1)))
    snapshot = store.load_snapshot(PARTITION, [AGENT, "selector"])
    assert snapshot.pending_skips == {"t::a": {"k1": 1.0, "k2": 1.0}, long_id: {"k1": 1.0}}
    assert all(entries == [] for entries in snapshot.q_entries.values())  # not Q rows
    assert Snapshot.from_json(snapshot.to_json()).pending_skips == snapshot.pending_skips


def test_pending_skips_of_two_concurrent_runs_add_up(store: Store) -> None:
    # both learned from the same (empty) snapshot; the store adds, nobody's skip is lost
    write(store, pending_write("run-a", ("t::a", "k", 1.0), ("t::b", "k", 1.0)))
    write(store, pending_write("run-b", ("t::a", "k", 1.0), ("t::a", "k", 1.0)))
    assert pending_skips(store) == {"t::a": {"k": 3.0}, "t::b": {"k": 1.0}}
    # a run that saw 3 pays them back; one that saw 1 (and paid it back too) goes below 0
    write(store, pending_write("run-c", ("t::a", "k", -3.0), ("t::b", "k", -1.0)))
    assert pending_skips(store) == {}


def test_pending_skips_at_or_below_zero_are_deleted(store: Store) -> None:
    write(store, pending_write("p1", ("t::a", "k1", 1.0), ("t::a", "k2", 2.0)))
    write(store, pending_write("p2", ("t::a", "k1", -1.0), ("t::a", "k2", -1.0)))
    assert pending_skips(store) == {"t::a": {"k2": 1.0}}
    # paid back twice (two concurrent runs both ran the test): below 0, deleted as well;
    # paying back what is not stored (any more) leaves nothing either
    write(store, pending_write("p3", ("t::a", "k2", -1.0), ("t::a", "k2", -1.0), ("t::z", "k", -1)))
    assert pending_skips(store) == {}
    # set and paid back in one write: nothing stays
    write(store, pending_write("p4", ("t::b", "k", 1.0), ("t::b", "k", -1.0)))
    assert pending_skips(store) == {}
    write(store, pending_write("p5", ("t::b", "k", 1.0)))
    assert pending_skips(store) == {"t::b": {"k": 1.0}}


def test_pending_skips_of_partitions_never_mix(store: Store) -> None:
    other_env = Partition(PARTITION.project, "py3.12")
    other_project = Partition("other", PARTITION.environment)
    write(store, pending_write("p1", ("t::a", "k", 1.0)))
    write(store, pending_write("p2", ("t::a", "k", 1.0), partition=other_env))
    write(store, pending_write("p3", ("t::a", "k", -1.0), partition=other_project))
    assert pending_skips(store) == {"t::a": {"k": 1.0}}
    assert pending_skips(store, other_env) == {"t::a": {"k": 1.0}}
    assert pending_skips(store, other_project) == {}
    write(store, pending_write("p4", ("t::a", "k", -1.0), partition=other_env))
    assert pending_skips(store) == {"t::a": {"k": 1.0}}
    assert pending_skips(store, other_env) == {}


def test_cleanup_forgets_pending_skips_not_touched_for_the_ttl(store: Store) -> None:
    write(store, pending_write("p1", ("t::old", "k", 1.0), ("t::used", "k", 1.0)), ttl_days=1)
    write(store, pending_write("p2", ("t::used", "k", 1.0)), ttl_days=30)
    written = time.time()
    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 0.5 * DAY) == 0
    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 2 * DAY) == 1
    assert pending_skips(store) == {"t::used": {"k": 2.0}}
    assert store.cleanup(PARTITION.project, ttl_days=30, now=written + 31 * DAY) == 1
    assert pending_skips(store) == {}


def test_cleanup_keeps_the_trajectories_of_the_newest_sessions_only(store: Store) -> None:
    store.keep_trajectory_sessions = 2
    other_env = Partition(PARTITION.project, "py3.12")
    hour_ago = time.time() - 3600  # well inside the TTL: only the cap applies
    for session_id, started_at, partition in [
        ("oldest", hour_ago + 100, PARTITION),
        ("middle", hour_ago + 200, PARTITION),
        ("newest", hour_ago + 300, PARTITION),
        ("other-env", hour_ago + 50, other_env),  # alone in its partition: kept
    ]:
        w = episode_write(session_id, started_at=started_at, partition=partition)
        w.trajectories = _steps(AGENT, [1.0, 2.0], [False, True])
        write(store, w)
    assert store.cleanup(PARTITION.project, ttl_days=30, now=time.time()) == 2
    assert {t.session_id for t in store.trajectories(PARTITION, AGENT)} == {"middle", "newest"}
    assert {t.session_id for t in store.trajectories(other_env, AGENT)} == {"other-env"}
    # the sessions themselves (the learning curve) are all kept
    assert [s.session_id for s in store.sessions(PARTITION)] == ["oldest", "middle", "newest"]
    assert store.cleanup(PARTITION.project, ttl_days=30, now=time.time()) == 0


# -- coverage (--qlearn-cov) -------------------------------------------------------------------
HOSTILE_ID = "t.py::test_x[';DROP TABLE coverage_maps;--\u00e9\U0001f600" + "z" * 10_000 + "]"


def coverage_write(session_id: str, started_at: float, **coverage: object) -> EpisodeWrite:
    w = episode_write(session_id, started_at=started_at, observations=[(HOSTILE_ID, PASSED, 0.1)])
    w.coverage = CoverageWrite(**coverage)  # type: ignore[arg-type]
    return w


def test_coverage_maps_runs_and_statements_round_trip(store: Store) -> None:
    assert store.load_coverage(PARTITION) == CoverageSnapshot()
    write(
        store,
        coverage_write(
            "c1",
            1_000.0,
            maps=[(HOSTILE_ID, '{"d": {"a.py": "x"}, "l": {"a.py": "1-3"}}', 1)],
            commit="abc123",
            dirty=["b.py", "a.py"],
            percent=62.5,
            statements=[("a.py", "x", "1-5"), ("pkg/ü b.py", "y", "2")],
        ),
    )
    loaded = store.load_coverage(PARTITION)
    assert loaded.maps == {HOSTILE_ID: ('{"d": {"a.py": "x"}, "l": {"a.py": "1-3"}}', 1)}
    assert (loaded.last_commit, loaded.last_dirty, loaded.last_percent) == (
        "abc123",
        ("a.py", "b.py"),
        62.5,
    )
    assert loaded.statements == {"a.py": ("x", "1-5"), "pkg/ü b.py": ("y", "2")}
    # a later run retraces the test and re-analyses one file; the newest run's facts win
    write(
        store,
        coverage_write(
            "c2",
            2_000.0,
            maps=[(HOSTILE_ID, '{"d": {}, "l": {}}', 2)],
            commit=None,
            percent=None,
            statements=[("a.py", "x2", "1-6")],
        ),
    )
    later = store.load_coverage(PARTITION)
    assert later.maps == {HOSTILE_ID: ('{"d": {}, "l": {}}', 2)}
    assert (later.last_commit, later.last_dirty, later.last_percent) == (None, (), None)
    assert later.statements == {"a.py": ("x2", "1-6"), "pkg/ü b.py": ("y", "2")}
    assert store.load_coverage(Partition("project", "elsewhere")) == CoverageSnapshot()
    # the xdist hand-over keeps everything
    assert CoverageSnapshot.from_json(later.to_json()) == later


def test_cleanup_drops_maps_of_expired_tests_and_old_coverage_rows(store: Store) -> None:
    write(
        store,
        coverage_write(
            "c1", time.time(), maps=[(HOSTILE_ID, "{}", 1)], statements=[("a.py", "x", "1")]
        ),
    )
    assert store.cleanup(PARTITION.project, ttl_days=30, now=time.time()) == 0
    assert store.load_coverage(PARTITION).maps
    # 31 days later the test's history, its map, the run and the statements have expired
    removed = store.cleanup(PARTITION.project, ttl_days=30, now=time.time() + 31 * DAY)
    assert removed >= 4
    assert store.load_coverage(PARTITION) == CoverageSnapshot()


# -- checkpoints of runs in progress -----------------------------------------------------------
FAR_OWNER = "far-away-runner:4242"  # another host: alive as long as its heartbeat is fresh
BEAT = 60.0
STALE = stale_after(BEAT)


def checkpoint_push(
    seq: int,
    results: Sequence[Sequence[object]],
    *,
    session_id: str = "killed",
    owner: str = FAR_OWNER,
    duration: float = 10.0,
    partition: Partition = PARTITION,
) -> CheckpointPush:
    run = PendingRun(
        partition=partition,
        session_id=session_id,
        seed=7,
        mode="reorder",
        started_at=1_000.0,
        duration=duration,
        exit_status=2,
        session_failed=True,
        results=[list(r) for r in results],
        owner=owner,
    )
    return CheckpointPush(run, seq, BEAT)


R1 = ["t.py::test_a", PASSED, 0.5, 0, 0, 1, False]
R2 = ["t.py::test_b", FAILED, 1.5, 1, 1, 0, True]
R3 = ["t.py::test_c", SKIPPED, 0.0, 2, 2, None, False]


def dead_pid() -> int:
    """The pid of a process that has ended."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_checkpoint_pushes_are_kept_once_and_claimed_once_with_every_result(
    store: Store,
) -> None:
    store.push_checkpoint(checkpoint_push(1, [R1, R2], duration=5.0), now=2_000.0)
    store.push_checkpoint(checkpoint_push(2, [R3], duration=9.0), now=2_010.0)
    store.push_checkpoint(checkpoint_push(2, [R3], duration=9.0), now=2_011.0)  # sent twice
    store.push_checkpoint(checkpoint_push(1, [R1, R2], duration=5.0), now=2_012.0)  # late
    # its owner is on another host and its heartbeat is fresh: the run is alive
    assert store.claim_checkpoints(PARTITION, "claimer:1", now=2_011.0 + STALE - 1) == []
    assert store.claim_checkpoints(Partition("other", "py3.11"), "claimer:1", now=1e9) == []

    [run] = store.claim_checkpoints(PARTITION, "claimer:1", now=2_011.0 + STALE + 1)
    assert run.results == [R1, R2, R3]
    assert (run.session_id, run.partition, run.owner) == ("killed", PARTITION, "claimer:1")
    assert (run.seed, run.mode, run.started_at, run.duration) == (7, "reorder", 1_000.0, 9.0)
    assert (run.exit_status, run.session_failed) == (2, True)
    # claimed once: the claimer owns it now, with a fresh heartbeat
    assert store.claim_checkpoints(PARTITION, "claimer:2", now=2_011.0 + STALE + 2) == []
    # its former owner's pushes no longer change it
    store.push_checkpoint(checkpoint_push(3, [R1]), now=2_011.0 + STALE + 3)
    # a claimer that never wrote it leaves it orphaned again
    [again] = store.claim_checkpoints(PARTITION, "claimer:2", now=2_011.0 + 3 * STALE)
    assert again.results == [R1, R2, R3] and again.owner == "claimer:2"


def test_a_heartbeat_keeps_a_checkpoint_owned(store: Store) -> None:
    store.push_checkpoint(checkpoint_push(1, [R1]), now=1_000.0)
    store.beat_checkpoint("killed", FAR_OWNER, now=1_500.0)
    store.beat_checkpoint("killed", "someone-else:1", now=9_000.0)  # not its owner: ignored
    assert store.claim_checkpoints(PARTITION, "claimer:1", now=1_000.0 + STALE + 1) == []
    [run] = store.claim_checkpoints(PARTITION, "claimer:1", now=1_500.0 + STALE + 1)
    assert run.results == [R1]


def test_a_checkpoint_whose_process_on_this_host_ended_is_orphaned_at_once(
    store: Store,
) -> None:
    host = socket.gethostname()
    store.push_checkpoint(checkpoint_push(1, [R1], owner=f"{host}:{dead_pid()}"), now=1_000.0)
    alive = checkpoint_push(1, [R2], session_id="alive", owner=f"{host}:{os.getppid()}")
    store.push_checkpoint(alive, now=1_000.0)
    [run] = store.claim_checkpoints(PARTITION, "claimer:1", now=1_001.0)
    assert run.session_id == "killed" and run.results == [R1]


def test_the_episode_write_supersedes_the_checkpoint(store: Store) -> None:
    store.push_checkpoint(checkpoint_push(1, [R1]), now=1_000.0)
    write(store, episode_write("killed", observations=[("t.py::test_a", PASSED, 0.5)]))
    assert store.claim_checkpoints(PARTITION, "claimer:1", now=1e9) == []
    # a push that arrives after the episode is stored keeps nothing
    store.push_checkpoint(checkpoint_push(2, [R2]), now=1_001.0)
    assert store.claim_checkpoints(PARTITION, "claimer:1", now=1e9) == []
    # a checkpoint of an episode stored already goes with the write that finds it stored
    store.push_checkpoint(checkpoint_push(1, [R1], session_id="twice"), now=1_000.0)
    write(store, episode_write("twice"))
    store.push_checkpoint(checkpoint_push(1, [R1], session_id="again"), now=1_000.0)
    write(store, episode_write("again"))
    store.push_checkpoint(checkpoint_push(2, [R2], session_id="again"), now=1_000.0)
    assert store.write_episode(episode_write("again")) is False
    assert store.claim_checkpoints(PARTITION, "claimer:1", now=1e9) == []
    assert store.load_snapshot(PARTITION, [AGENT]).episodes == 3


def test_cleanup_forgets_checkpoints_unclaimed_for_the_ttl(store: Store) -> None:
    now = 100 * DAY
    store.push_checkpoint(checkpoint_push(1, [R1], session_id="old"), now=now - 31 * DAY)
    store.push_checkpoint(checkpoint_push(1, [R2], session_id="new"), now=now - 29 * DAY)
    other = checkpoint_push(1, [R3], session_id="elsewhere", partition=Partition("x", "y"))
    store.push_checkpoint(other, now=now - 31 * DAY)
    assert store.cleanup(PARTITION.project, ttl_days=30, now=now) == 1
    [run] = store.claim_checkpoints(PARTITION, "claimer:1", now=now)
    assert run.session_id == "new" and run.results == [R2]
    assert len(store.claim_checkpoints(Partition("x", "y"), "claimer:1", now=now)) == 1


# -- schema 6: fixture time per test, partial sessions ----------------------------------------
def fixture_write(
    session_id: str,
    observations: Sequence[tuple[str, str, float, float]],
    *,
    episode: int = 1,
    started_at: float = 1_000.0,
    partial: bool = False,
) -> EpisodeWrite:
    """A write whose observations carry setup + teardown seconds: (id, verdict, s, fixture s)."""
    w = episode_write(session_id, episode=episode, started_at=started_at)
    w.session = replace(w.session, partial=partial)
    w.observations = [Observation(*o) for o in observations]
    return w


def test_fixture_time_round_trips_and_skipped_runs_leave_it(store: Store) -> None:
    write(store, fixture_write("s1", [("t::a", PASSED, 1.0, 0.5), ("t::b", FAILED, 2.0, 3.0)]))
    write(store, fixture_write("s2", [("t::a", FAILED, 1.0, 1.5), ("t::b", SKIPPED, 0.0, 9.0)]))
    histories = store.load_snapshot(PARTITION, [AGENT]).histories
    assert histories["t::a"] == TestHistory("t::a").record(PASSED, 1.0, 1, 0.5).record(
        FAILED, 1.0, 1, 1.5
    )
    assert histories["t::a"].fixture_mean == 1.0
    assert type(histories["t::a"].fixture_mean) is float
    assert histories["t::b"].fixture_mean == 3.0  # the skipped run's 9.0 is not counted


@pytest.mark.parametrize("precomputed", [False, True], ids=["observations", "next-histories"])
def test_fixture_time_of_two_concurrent_runs_is_merged(store: Store, precomputed: bool) -> None:
    """As :func:`test_test_histories_of_two_concurrent_runs_are_both_applied`, with fixture
    time: the first writer may take the fast path, the second is replayed onto it."""
    write(store, fixture_write("base", [("t::a", PASSED, 2.0, 1.0)]))
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    runs = []
    for session_id, verdict, fixture in (("run-a", FAILED, 2.0), ("run-b", PASSED, 6.0)):
        w = fixture_write(session_id, [("t::a", verdict, 1.0, fixture)], episode=2)
        if precomputed:
            w.base_episodes = snapshot.episodes
            w.base_session_count = snapshot.session_count
            w.next_histories = [snapshot.histories["t::a"].record(verdict, 1.0, 2, fixture)]
        runs.append(w)
    for w in runs:
        write(store, w)
    history = store.load_snapshot(PARTITION, [AGENT]).histories["t::a"]
    expected = TestHistory("t::a").record(PASSED, 2.0, 1, 1.0)
    assert history == expected.record(FAILED, 1.0, 2, 2.0).record(PASSED, 1.0, 2, 6.0)
    assert history.fixture_mean == pytest.approx(3.0)


def test_a_partial_session_is_listed_but_does_not_advance_the_episodes(store: Store) -> None:
    write(store, fixture_write("full-1", [("t::a", PASSED, 1.0, 0.5)], started_at=100.0))
    # a narrowed run: numbered as the next full run will be, learned from all the same
    write(
        store,
        fixture_write(
            "part", [("t::a", FAILED, 1.0, 1.5)], episode=2, started_at=200.0, partial=True
        ),
    )
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert (snapshot.episodes, snapshot.session_count) == (1, 2)
    assert [(s.session_id, s.partial) for s in snapshot.recent_sessions] == [
        ("part", True),
        ("full-1", False),
    ]
    assert snapshot.histories["t::a"].runs == 2
    assert snapshot.histories["t::a"].fixture_mean == 1.0
    # the next full run has the same episode number: numbers are not unique
    write(store, fixture_write("full-2", [("t::a", PASSED, 1.0, 0.5)], episode=2, started_at=300.0))
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert (snapshot.episodes, snapshot.session_count) == (2, 3)
    listed = [(s.session_id, s.episode, s.partial) for s in store.sessions(PARTITION)]
    assert listed == [("full-1", 1, False), ("part", 2, True), ("full-2", 2, False)]
    assert all(type(s.partial) is bool for s in store.sessions(PARTITION))
    assert store.recent_sessions(PARTITION, limit=1)[0].partial is False
    assert [s.partial for s in store.sessions(PARTITION, since=150.0)] == [True, False]


#: Schema 9: how early the first failure showed up, in the run's order and in collection order.
FIRST_FAILURE = {
    "time_to_first_failure": 0.1 + 0.2,
    "collection_time_to_first_failure": 12.75,
    "first_failure_position": 1,
    "collection_first_failure_position": 2_000_000,
}


def test_first_failure_figures_round_trip_through_every_read(store: Store) -> None:
    with_failure = episode_write("s1", started_at=100.0, **FIRST_FAILURE)
    # a run without failures has none of them
    without = episode_write("s2", started_at=200.0, episode=2, failures=0, apfd=None)
    write(store, with_failure)
    write(store, without)
    reads = [
        store.sessions(PARTITION),
        list(reversed(store.recent_sessions(PARTITION))),
        list(reversed(store.load_snapshot(PARTITION, [AGENT]).recent_sessions)),
    ]
    for sessions in reads:
        assert sessions == [with_failure.session, without.session]
        first, none = sessions
        assert first.time_to_first_failure == 0.1 + 0.2  # a float, exactly
        assert type(first.time_to_first_failure) is float
        assert type(first.first_failure_position) is int
        assert first.collection_first_failure_position == 2_000_000
        assert (
            none.time_to_first_failure,
            none.collection_time_to_first_failure,
            none.first_failure_position,
            none.collection_first_failure_position,
        ) == (None, None, None, None)
    # and through the snapshot handed to pytest-xdist workers
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert Snapshot.from_json(snapshot.to_json()).recent_sessions == snapshot.recent_sessions


def test_the_narrowing_of_a_run_round_trips_through_every_read(store: Store) -> None:
    """Schema 12: what narrowed a run, read back by the next run (a job narrowing the same
    way every time counts as full episodes) and by every listing; None when nothing did."""
    narrowed = episode_write(
        "s1", started_at=100.0, narrowing=f"-m 'not slow and not ünïcode' {AWKWARD['everything']}"
    )
    plain = episode_write("s2", started_at=200.0, episode=2)
    write(store, narrowed)
    write(store, plain)
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    for sessions in (
        store.sessions(PARTITION),
        list(reversed(store.recent_sessions(PARTITION))),
        list(reversed(snapshot.recent_sessions)),
        list(reversed(Snapshot.from_json(snapshot.to_json()).recent_sessions)),
    ):
        assert [s.narrowing for s in sessions] == [narrowed.session.narrowing, None]


def _fast_path_probe(snapshot: Snapshot, session_id: str, *, counts: bool = True) -> EpisodeWrite:
    """A run that learned from ``snapshot`` and hands over next histories the store could not
    compute by replaying its observation (fixture_mean 99.0): they are stored only if the
    store takes the fast path."""
    w = fixture_write(session_id, [("t::a", PASSED, 1.0, 1.0)], episode=snapshot.episodes + 1)
    w.base_episodes = snapshot.episodes
    if counts:
        w.base_session_count = snapshot.session_count
    w.next_histories = [
        snapshot.histories["t::a"]
        .record(PASSED, 1.0, snapshot.episodes + 1)
        ._replace(fixture_mean=99.0)
    ]
    return w


def test_the_history_fast_path_counts_partial_sessions(store: Store) -> None:
    write(store, fixture_write("s1", [("t::a", PASSED, 1.0, 1.0)], started_at=100.0))
    write(
        store,
        fixture_write(
            "s2", [("t::a", PASSED, 1.0, 1.0)], episode=2, started_at=200.0, partial=True
        ),
    )
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert (snapshot.episodes, snapshot.session_count) == (1, 2)

    # nobody wrote since the snapshot (which holds a partial session): taken as handed over
    write(store, _fast_path_probe(snapshot, "fast"))
    assert store.load_snapshot(PARTITION, [AGENT]).histories["t::a"].fixture_mean == 99.0

    # a partial run wrote meanwhile: detected, the observation is replayed onto its verdict
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    probe = _fast_path_probe(snapshot, "late")
    write(store, fixture_write("concurrent", [("t::a", FAILED, 1.0, 3.0)], episode=3, partial=True))
    write(store, probe)
    history = store.load_snapshot(PARTITION, [AGENT]).histories["t::a"]
    assert history.fixture_mean != 99.0
    assert history.verdicts == "PPPFP" and history.runs == 5

    # a writer that fills only base_episodes (a spool file of the previous version) is
    # replayed once partial sessions exist: slower, never wrong
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert snapshot.session_count > snapshot.episodes
    write(store, _fast_path_probe(snapshot, "old-writer", counts=False))
    history = store.load_snapshot(PARTITION, [AGENT]).histories["t::a"]
    assert history.fixture_mean != 99.0 and history.runs == 6


def test_snapshot_json_carries_the_new_facts_and_reads_what_older_controllers_wrote(
    store: Store,
) -> None:
    write(store, fixture_write("s1", [("t::a", PASSED, 1.0, 0.25)], partial=True))
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    assert Snapshot.from_json(snapshot.to_json()) == snapshot
    # as pytest-qlearn 5 serialised it for its xdist workers
    data = json.loads(snapshot.to_json())
    del data["session_count"]
    for h in data["histories"]:
        del h["fixture_mean"]
    for s in data["sessions"]:
        del s["partial"]
    old = Snapshot.from_json(json.dumps(data))
    assert old.histories["t::a"].fixture_mean == 0.0
    assert old.recent_sessions[0].partial is False
    assert old.session_count == old.episodes == 0


# -- stores left by earlier versions (schema 5, schema 8) --------------------------------------
class OldSchema(NamedTuple):
    """Storage as pytest-qlearn of an earlier schema version left it, with the backend's raw
    access."""

    new_store: Callable[[], Store]
    execute: Callable[..., list[Any]]  # statements -> rows of the last one
    key: str  # SQL for the partition key column's value ("" where there is none)


def _sqlite_schema(request: pytest.FixtureRequest, version: int) -> OldSchema:
    path: Path = request.getfixturevalue("tmp_path") / f"v{version}.sqlite3"

    def execute(*statements: str) -> list[Any]:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            rows: list[Any] = []
            for statement in statements:
                rows = conn.execute(statement).fetchall()
            return rows

    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        sqlite_schema_at(conn, version)
    return OldSchema(lambda: SqliteStore(path), execute, "")


def _postgres_schema(request: pytest.FixtureRequest, version: int) -> OldSchema:
    url: str = request.getfixturevalue("pg_url")
    from conftest import pg_execute

    def execute(*statements: str) -> list[Any]:
        return [tuple(row) for row in pg_execute(url, *statements)]

    execute(
        "CREATE TABLE qlearn_schema (version integer PRIMARY KEY, applied_at float8 NOT NULL)",
        *(s for v in range(1, version + 1) for s in postgres_store.MIGRATIONS[v]),
        "INSERT INTO qlearn_schema VALUES " + ", ".join(f"({v}, 0)" for v in range(1, version + 1)),
    )
    key = f"md5(md5('{PARTITION.project}') || md5('{PARTITION.environment}'))::uuid"
    return OldSchema(lambda: PostgresStore(url), execute, key)


OLD_SCHEMA_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, int], OldSchema]] = {
    "sqlite": _sqlite_schema,
    "postgresql": _postgres_schema,
}
assert set(OLD_SCHEMA_FACTORIES) == set(STORE_FACTORIES)


@pytest.fixture(params=list(OLD_SCHEMA_FACTORIES), ids=list(OLD_SCHEMA_FACTORIES))
def schema5(request: pytest.FixtureRequest) -> OldSchema:
    """A schema-5 store holding two sessions and a test's history, written with its DDL."""
    old = OLD_SCHEMA_FACTORIES[request.param](request, 5)
    key_column, key_value = ("partition_key, ", f"{old.key}, ") if old.key else ("", "")
    where = f"{key_value}'{PARTITION.project}', '{PARTITION.environment}'"
    now = time.time()
    old.execute(
        f"INSERT INTO sessions ({key_column}project, environment, session_id, episode, "
        "started_at, duration, tests, failures, seed, epsilon, q_table_size, apfd, "
        "collection_apfd, reward, exit_status, mode) VALUES "
        f"({where}, 'old-1', 1, 100.0, 2.0, 3, 1, 7, 0.2, 4, 0.5, NULL, 10.0, 1, 'reorder'), "
        f"({where}, 'old-2', 2, 200.0, 2.5, 3, 0, 8, 0.1, 5, NULL, NULL, 5.0, 0, 'observe')",
        f"INSERT INTO test_history ({key_column}project, environment, test_id, runs, failures, "
        "flips, verdicts, last_failure_episode, last_run_episode, first_episode, "
        "duration_mean, duration_m2, last_duration, updated_at, expires_at) VALUES "
        f"({where}, 't::a', 2, 1, 1, 'FP', 1, 2, 1, 1.5, 0.5, 2.0, {now}, {now + DAY})",
    )
    return old


OLD_HISTORY = TestHistory("t::a", 2, 1, 1, "FP", 1, 2, 1, 1.5, 0.5, 2.0)


def test_a_schema_5_store_is_migrated_keeping_its_data(schema5: OldSchema) -> None:
    store = schema5.new_store()
    store.open()
    try:
        assert store.schema_version() == SCHEMA_VERSION == 12
        snapshot = store.load_snapshot(PARTITION, [AGENT])
        assert snapshot.histories == {"t::a": OLD_HISTORY}
        assert snapshot.histories["t::a"].fixture_mean == 0.0
        assert [(s.session_id, s.episode, s.partial) for s in snapshot.recent_sessions] == [
            ("old-2", 2, False),
            ("old-1", 1, False),
        ]
        assert (snapshot.episodes, snapshot.session_count) == (2, 2)
        old_1 = store.sessions(PARTITION)[0]
        assert (old_1.apfd, old_1.reward, old_1.mode, old_1.partial) == (
            0.5,
            10.0,
            "reorder",
            False,
        )
        # the new columns are there: a partial run with fixture time is stored and read back
        write(store, fixture_write("new", [("t::a", PASSED, 1.0, 4.0)], episode=3, partial=True))
        snapshot = store.load_snapshot(PARTITION, [AGENT])
        assert snapshot.histories["t::a"] == OLD_HISTORY.record(PASSED, 1.0, 3, 4.0)
        # the old history had no measurement: the first one is taken as is
        assert snapshot.histories["t::a"].fixture_mean == pytest.approx(4.0)
        assert (snapshot.episodes, snapshot.session_count) == (2, 3)
    finally:
        store.close()
    before = schema5.execute("SELECT version, applied_at FROM qlearn_schema ORDER BY version")
    assert [row[0] for row in before] == list(range(1, SCHEMA_VERSION + 1))

    # opening again is a no-op
    store = schema5.new_store()
    store.open()
    try:
        assert store.schema_version() == SCHEMA_VERSION
        again = store.load_snapshot(PARTITION, [AGENT])
        assert again == snapshot
    finally:
        store.close()
    assert schema5.execute("SELECT version, applied_at FROM qlearn_schema ORDER BY version") == (
        before
    )

    # migrations 6 to 10 applied again over their own layout (records lost) change nothing
    schema5.execute("DELETE FROM qlearn_schema WHERE version >= 6")
    store = schema5.new_store()
    store.open()
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.load_snapshot(PARTITION, [AGENT]) == snapshot
    finally:
        store.close()
    versions = schema5.execute("SELECT version FROM qlearn_schema ORDER BY version")
    assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))


@pytest.fixture(params=list(OLD_SCHEMA_FACTORIES), ids=list(OLD_SCHEMA_FACTORIES))
def schema8(request: pytest.FixtureRequest) -> OldSchema:
    """A schema-8 store holding two sessions (one with a failure, one partial without) and a
    test's history, written with its DDL."""
    old = OLD_SCHEMA_FACTORIES[request.param](request, 8)
    key_column, key_value = ("partition_key, ", f"{old.key}, ") if old.key else ("", "")
    where = f"{key_value}'{PARTITION.project}', '{PARTITION.environment}'"
    partial, whole = ("true", "false") if old.key else ("1", "0")
    now = time.time()
    old.execute(
        f"INSERT INTO sessions ({key_column}project, environment, session_id, episode, "
        "started_at, duration, tests, failures, seed, epsilon, q_table_size, apfd, "
        "collection_apfd, reward, exit_status, mode, partial) VALUES "
        f"({where}, 'old-1', 1, 100.0, 2.0, 3, 1, 7, 0.2, 4, 0.5, 0.25, 10.0, 1, 'reorder', "
        f"{partial}), "
        f"({where}, 'old-2', 2, 200.0, 2.5, 3, 0, 8, 0.1, 5, NULL, NULL, 5.0, 0, 'observe', "
        f"{whole})",
        f"INSERT INTO test_history ({key_column}project, environment, test_id, runs, failures, "
        "flips, verdicts, last_failure_episode, last_run_episode, first_episode, "
        "duration_mean, duration_m2, last_duration, updated_at, expires_at, fixture_mean, "
        "flaky, duration_recent) VALUES "
        f"({where}, 't::a', 2, 1, 1, 'FP', 1, 2, 1, 1.5, 0.5, 2.0, {now}, {now + DAY}, 0.25, 1, "
        "1.75)",
    )
    return old


def test_a_schema_8_store_is_migrated_keeping_its_sessions_without_first_failure_figures(
    schema8: OldSchema,
) -> None:
    store = schema8.new_store()
    store.open()
    try:
        assert store.schema_version() == SCHEMA_VERSION == 12
        snapshot = store.load_snapshot(PARTITION, [AGENT])
        assert snapshot.histories == {
            "t::a": OLD_HISTORY._replace(fixture_mean=0.25, flaky=1, duration_recent=1.75)
        }
        assert (snapshot.episodes, snapshot.session_count) == (1, 2)
        old_1, old_2 = store.sessions(PARTITION)
        assert old_1 == session_record(
            "old-1",
            started_at=100.0,
            episode=1,
            duration=2.0,
            tests=3,
            failures=1,
            seed=7,
            epsilon=0.2,
            q_table_size=4,
            apfd=0.5,
            collection_apfd=0.25,
            reward=10.0,
            exit_status=1,
            mode="reorder",
            partial=True,
        )
        # the old rows have no first-failure figures: NULL, read as None
        assert (
            old_1.time_to_first_failure,
            old_1.collection_time_to_first_failure,
            old_1.first_failure_position,
            old_1.collection_first_failure_position,
        ) == (None, None, None, None)
        assert (old_2.session_id, old_2.mode, old_2.partial, old_2.failures) == (
            "old-2",
            "observe",
            False,
            0,
        )
        assert old_2.time_to_first_failure is None and old_2.first_failure_position is None
        # the new columns are there: a session with the figures is stored and read back
        new = episode_write("new", started_at=300.0, episode=2, **FIRST_FAILURE)
        write(store, new)
        assert store.sessions(PARTITION)[-1] == new.session
        snapshot = store.load_snapshot(PARTITION, [AGENT])
        assert [s.session_id for s in snapshot.recent_sessions] == ["new", "old-2", "old-1"]
        assert snapshot.recent_sessions[0] == new.session
    finally:
        store.close()
    before = schema8.execute("SELECT version, applied_at FROM qlearn_schema ORDER BY version")
    assert [row[0] for row in before] == list(range(1, SCHEMA_VERSION + 1))

    # migrations 9 and 10 applied again over their own layout (records lost) change nothing
    schema8.execute("DELETE FROM qlearn_schema WHERE version >= 9")
    store = schema8.new_store()
    store.open()
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.load_snapshot(PARTITION, [AGENT]) == snapshot
        assert store.sessions(PARTITION)[-1] == new.session
    finally:
        store.close()
    versions = schema8.execute("SELECT version FROM qlearn_schema ORDER BY version")
    assert [row[0] for row in versions] == list(range(1, SCHEMA_VERSION + 1))


# -- order-dependence suspects (a pattern kind of their own) ----------------------------------
def test_order_suspects_persist_across_restarts_and_are_forgotten_or_expire(store: Store) -> None:
    from pytest_qlearn import suspects as sus

    victim = "t.py::test_victim ü"
    signature = PatternDelta("flaky-hunter", "sig", "AssertionError", 1, 1, 1, 1, 0.5)
    write(store, episode_write("o1", episode=4, patterns=[signature, sus.flagged(victim, 4, None)]))

    def held() -> dict[str, sus.Suspect]:
        # loaded with every snapshot, whichever agents are asked for
        return sus.suspects(store.load_snapshot(PARTITION, [AGENT]).suspects)

    assert held() == {victim: sus.Suspect(victim, 4, 1, 0)}
    assert held()[victim].active
    assert store.agent_patterns(PARTITION, sus.NAME) == [
        PatternDelta(sus.NAME, victim, sus.DESCRIPTION, 1, 0, 4, 0, 0.0)
    ]
    assert store.load_snapshot(Partition("nobody", "env"), [AGENT]).suspects == []

    store.close()  # a new process: it is still there
    store.open()
    assert held() == {victim: sus.Suspect(victim, 4, 1, 0)}

    # exposed clean runs count up, until the suspect is forgotten
    for n in range(1, sus.FORGET_AFTER + 1):
        assert held()[victim].active
        write(store, episode_write(f"c{n}", episode=4 + n, patterns=[sus.passed_exposed(victim)]))
        assert held()[victim].clean == n
    assert not held()[victim].active
    # flagged again: a new suspicion, from that episode on, its clean runs back to 0
    again = sus.flagged(victim, 12, held()[victim])
    write(store, episode_write("o2", episode=12, patterns=[again]))
    assert held() == {victim: sus.Suspect(victim, 12, 2, 0)}
    # flagged while still suspected: the suspicion keeps its start
    write(
        store, episode_write("o3", episode=13, patterns=[sus.flagged(victim, 13, held()[victim])])
    )
    assert held() == {victim: sus.Suspect(victim, 12, 3, 0)}
    # the flaky-hunter's signatures are untouched by all this
    assert store.signatures(PARTITION) == {"sig": (1, 1, 1, 1, 0.5)}

    # unused for the TTL, it expires like other learned rows
    store.cleanup(PARTITION.project, ttl_days=30, now=time.time() + 31 * DAY)
    assert held() == {}
