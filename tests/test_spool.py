"""The local spool of episodes that could not reach their store (backend-independent)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_qlearn.agents.prioritizer import TestRef
from pytest_qlearn.engine.history import FAILED, PASSED, SKIPPED
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.store import SqliteStore
from pytest_qlearn.store.base import (
    EpisodeWrite,
    Partition,
    PendingSkipDelta,
    QDelta,
    Snapshot,
)
from pytest_qlearn.store.checkpoint import claimed_run
from pytest_qlearn.store.spool import (
    PendingRun,
    Spool,
    episode_from_json,
    episode_to_json,
    owner_id,
    spool_directory,
)

PARTITION = Partition("proj'; --", "py3.11 ü")


def learned_write(session_id: str, snapshot: Snapshot | None = None) -> EpisodeWrite:
    ids = ["t.py::test_a", "t.py::test_b[x'\"\n]", "t.py::test_c", "u.py::test_π"]
    session = LearningSession(snapshot or Snapshot(PARTITION), seed=3, session_id=session_id)
    ranking = session.rank([TestRef(t, t.split("::")[0], None, i) for i, t in enumerate(ids)])
    verdicts = {ids[0]: PASSED, ids[1]: FAILED, ids[2]: SKIPPED, ids[3]: PASSED}
    results = [
        TestResult(
            ref.test_id,
            verdicts[ref.test_id],
            0.125 * (pos + 1),
            ref.index,
            pos,
            ranking.decisions[ref.test_id].tier,
            ranking.decisions[ref.test_id].explored,
        )
        for pos, ref in enumerate(ranking.order)
    ]
    write, _ = session.finish(results, started_at=1_000.5, duration=2.0, exit_status=1)
    return write


def test_an_episode_round_trips_through_json_exactly() -> None:
    write = learned_write("s1")
    assert write.trajectories and write.q_deltas and write.patterns and write.next_histories
    again = episode_from_json(episode_to_json(write))
    assert again == write
    assert episode_to_json(again) == episode_to_json(write)


def test_pending_skips_round_trip_and_old_files_carry_them_as_selector_q_rows() -> None:
    write = dataclasses.replace(
        learned_write("s1"),
        pending_skips=[PendingSkipDelta("t.py::test_b", "k1", 1.0)],
    )
    assert episode_from_json(episode_to_json(write)) == write
    # a file spooled before schema version 3: no "pending_skips", the skips as Q rows
    data = json.loads(episode_to_json(write))
    del data["pending_skips"]
    data["q_deltas"]["selector"] = [
        ["k2", "", 0, 0.5, 1],
        ["selector:pending:k1:t.py::test_b", "pending skip of t.py::test_b", 1, 1.0, 1],
        ["selector:pending:k3:t.py::test_c", "", 1, -2.0, 0],
    ]
    old = episode_from_json(json.dumps(data))
    assert old.q_deltas["selector"] == [QDelta("k2", "", 0, 0.5, 1)]
    assert old.pending_skips == [
        PendingSkipDelta("t.py::test_b", "k1", 1.0),
        PendingSkipDelta("t.py::test_c", "k3", -2.0),
    ]


def test_replay_writes_each_spooled_episode_once_and_empties_the_spool(tmp_path: Path) -> None:
    spool = Spool(spool_directory(tmp_path / "spool", "sqlite:///x.db"))
    first, second = learned_write("first"), learned_write("second")
    paths = [spool.add(first), spool.add(second)]
    assert spool.pending() == paths
    store = SqliteStore(tmp_path / "q.db")
    store.open()
    try:
        assert store.write_episode(first)  # as if the first had reached the store after all
        assert spool.replay(store) == 1
        assert spool.pending() == []
        assert [s.session_id for s in store.recent_sessions(PARTITION)] == ["second", "first"]
        spool.add(first)  # replayed again: already stored, removed, nothing doubled
        assert spool.replay(store) == 0
        assert spool.pending() == []
        assert store.load_snapshot(PARTITION, ["prioritizer"]).episodes == 2
    finally:
        store.close()


def test_an_unreadable_spool_file_is_moved_aside_with_a_warning(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.add(learned_write("good"))
    (tmp_path / "spool" / "broken.json").write_text("{not json", encoding="utf-8")
    warnings: list[str] = []
    store = SqliteStore(":memory:")
    store.open()
    try:
        assert spool.replay(store, on_warning=warnings.append) == 1
    finally:
        store.close()
    assert spool.pending() == []
    assert (tmp_path / "spool" / "broken.unreadable").exists()
    assert len(warnings) == 1 and "broken.json" in warnings[0]


def test_the_spool_keeps_at_most_its_limit_dropping_the_oldest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", limit=3)
    warnings: list[str] = []
    for i in range(5):
        spool.add(learned_write(f"s{i}"), on_warning=warnings.append)
    assert [p.stem for p in spool.pending()] == ["s2", "s3", "s4"]
    assert len(warnings) == 2


def test_each_store_has_its_own_spool(tmp_path: Path) -> None:
    a = spool_directory(tmp_path, "postgresql://u:***@db/a")
    b = spool_directory(tmp_path, "postgresql://u:***@db/b")
    assert a != b and a.parent == b.parent == tmp_path
    assert spool_directory(tmp_path, "postgresql://u:***@db/a") == a


@pytest.mark.parametrize("session_id", ["../../escape", "a" * 300, "x/y", ""])
def test_odd_session_ids_cannot_escape_the_spool_directory(tmp_path: Path, session_id: str) -> None:
    spool = Spool(tmp_path / "spool")
    write = learned_write("placeholder")
    write.session = type(write.session)(**{**write.session.__dict__, "session_id": session_id})
    path = spool.add(write)
    assert path.parent == tmp_path / "spool"
    assert episode_from_json(path.read_text(encoding="utf-8")).session.session_id == session_id


def _pending_run(session_id: str) -> PendingRun:
    return PendingRun(
        partition=PARTITION,
        session_id=session_id,
        seed=7,
        mode="observe",
        started_at=1_000.5,
        duration=2.0,
        exit_status=1,
        session_failed=False,
        results=[
            ["t.py::test_a", PASSED, 0.5, 0, 0, 1, False],
            ["t.py::test_b[x'\"\n]", FAILED, 0.25, 1, 1, 2, True],
        ],
    )


def test_an_offline_run_waits_until_it_can_be_relearned_then_is_written_once(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool")
    path = spool.add_run(_pending_run("offline-1"))
    seen: list[PendingRun] = []

    def relearn(run: PendingRun) -> EpisodeWrite:
        seen.append(run)
        return learned_write(run.session_id)

    store = SqliteStore(tmp_path / "q.db")
    store.open()
    try:
        assert spool.replay(store) == 0  # nobody to learn it: it keeps waiting
        assert spool.pending() == [path]
        assert spool.replay(store, relearn=relearn) == 1
        assert seen == [_pending_run("offline-1")]  # the results came back exactly
        assert spool.pending() == []
        assert [s.session_id for s in store.recent_sessions(PARTITION)] == ["offline-1"]
    finally:
        store.close()


def _finished_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    ("owner", "waits"),
    [
        (lambda: f"{socket.gethostname()}:{os.getppid()}", True),  # its run is still going
        (lambda: f"{socket.gethostname()}:{_finished_pid()}", False),  # killed: learn it now
        (lambda: f"another-host:{os.getppid()}", False),  # a CI cache from another machine
        (lambda: f"{socket.gethostname()}:{os.getpid()}", False),  # a reused pid: not alive
    ],
)
def test_a_checkpoint_is_replayed_only_once_its_run_is_gone(
    tmp_path: Path, owner: Callable[[], str], waits: bool
) -> None:
    spool = Spool(tmp_path / "spool")
    checkpoint = dataclasses.replace(_pending_run("killed-run"), owner=owner())
    path = spool.add_run(checkpoint)
    store = SqliteStore(tmp_path / "q.db")
    store.open()
    try:
        written = spool.replay(store, relearn=lambda run: learned_write(run.session_id))
    finally:
        store.close()
    assert written == (0 if waits else 1)
    assert spool.pending() == ([path] if waits else [])


def test_a_finished_run_replaces_or_removes_its_checkpoint(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    first = spool.add_run(dataclasses.replace(_pending_run("run-1"), owner=owner_id()))
    final = spool.add(learned_write("run-1"))  # the run's write failed: it is spooled whole
    assert final == first and spool.pending() == [first]
    assert "owner" not in first.read_text(encoding="utf-8")
    spool.add_run(dataclasses.replace(_pending_run("run-2"), owner=owner_id()))
    spool.remove("run-2")  # the run's episode reached the store
    spool.remove("never-spooled")  # nothing to remove: no error
    assert spool.pending() == [first]


def _as_schema_5_wrote_it(text: str) -> str:
    """A spooled episode as pytest-qlearn of schema version 5 wrote it: no fixture time in
    observations and histories, no partial flag, no session count."""
    data = json.loads(text)
    del data["base_session_count"]
    del data["session"]["partial"]
    data["observations"] = [o[:3] for o in data["observations"]]
    for h in data["next_histories"]:
        del h["fixture_mean"]
    return json.dumps(data)


def test_an_episode_spooled_by_the_previous_version_loads_and_takes_the_fast_path(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "q.db")
    store.open()
    try:
        assert store.write_episode(learned_write("base"))
        snapshot = store.load_snapshot(PARTITION, ["prioritizer"])
        write = learned_write("next", snapshot)
        assert write.base_session_count == snapshot.session_count == 1
        old = episode_from_json(_as_schema_5_wrote_it(episode_to_json(write)))
        assert old.base_session_count is None  # base_episodes is compared instead
        assert dataclasses.replace(old, base_session_count=1) == write
        assert {h.fixture_mean for h in old.next_histories} == {0.0}
        assert {o.fixture for o in old.observations} == {0.0}
        assert old.session.partial is False

        spool = Spool(tmp_path / "spool")
        spool.directory.mkdir()
        (spool.directory / "next.json").write_text(
            _as_schema_5_wrote_it(episode_to_json(write)), encoding="utf-8"
        )
        assert spool.replay(store) == 1
        stored = store.load_snapshot(PARTITION, ["prioritizer"])
        assert stored.histories == {h.test_id: h for h in write.next_histories}
        assert (stored.episodes, stored.session_count) == (2, 2)
    finally:
        store.close()


def test_checkpoints_of_the_previous_version_still_load(tmp_path: Path) -> None:
    """The local checkpoint (a run spool file) and a store's checkpoint header as the previous
    version wrote them (their format did not change with schema 6)."""
    run = _pending_run("old-run")
    text = (
        '{"format": 1, "kind": "run", "partition": {"project": "proj\'; --", "environment": '
        '"py3.11 \\u00fc"}, "session_id": "old-run", "seed": 7, "mode": "observe", '
        '"started_at": 1000.5, "duration": 2.0, "exit_status": 1, "session_failed": false, '
        '"results": [["t.py::test_a", "P", 0.5, 0, 0, 1, false], '
        '["t.py::test_b[x\'\\"\\n]", "F", 0.25, 1, 1, 2, true]], "owner": ""}'
    )
    spool = Spool(tmp_path / "spool")
    spool.directory.mkdir()
    (spool.directory / "old-run.json").write_text(text, encoding="utf-8")
    seen: list[PendingRun] = []

    def relearn(pending: PendingRun) -> EpisodeWrite:
        seen.append(pending)
        return learned_write(pending.session_id)

    store = SqliteStore(":memory:")
    store.open()
    try:
        assert spool.replay(store, relearn=relearn) == 1
    finally:
        store.close()
    assert seen == [run]
    header = json.loads(text)
    del header["kind"], header["results"], header["owner"]
    claimed = claimed_run(json.dumps(header), [json.dumps(run.results)], "me:1")
    assert claimed == dataclasses.replace(run, owner="me:1")
