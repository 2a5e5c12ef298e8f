"""The spool against the store (issue 13, case 1): a spool file goes only once its content is
in the store, a complete local record is never replaced by a partial checkpoint that another
run recovered, an entry that can never be written is set aside instead of blocking the queue,
and the spool directory is keyed by the store, not by how it is reached."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from builders import PARTITION, episode_write
from test_store_conformance import STORE_FACTORIES, dead_pid

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.engine.history import FAILED, PASSED
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.store import SqliteStore
from pytest_qlearn.store.base import (
    CheckpointPush,
    EpisodeWrite,
    PendingRun,
    Store,
    StoreDataError,
    StoreError,
)
from pytest_qlearn.store.spool import Spool, episode_from_json, spool_directory


def test_the_spool_is_keyed_by_the_store_not_by_its_connection_options(tmp_path: Path) -> None:
    """The same database with another timeout is the same store."""
    base = "postgresql://ci:***@db.example:5432/qlearn"
    same = [
        base,
        base + "?command_timeout=30",
        base + "?connect_timeout=5&command_timeout=9",
        base + "?sslmode=require&application_name=x",
        "postgres://ci:***@DB.example/qlearn?command_timeout=1",
    ]
    assert len({spool_directory(tmp_path, url) for url in same}) == 1
    other = [
        "postgresql://ci:***@db.example:5432/other",
        "postgresql://ci:***@db.example:5433/qlearn",
        "postgresql://someone@db.example:5432/qlearn",
        "postgresql://ci:***@db2.example:5432/qlearn",
        base + "?search_path=elsewhere",
    ]
    dirs = {spool_directory(tmp_path, url) for url in other}
    assert len(dirs) == len(other)
    assert spool_directory(tmp_path, base) not in dirs


def test_a_spool_directory_of_the_full_url_is_adopted(tmp_path: Path) -> None:
    """Episodes spooled before the spool was keyed by the store's identity are not lost."""
    url = "postgresql://ci:***@db.example:5432/qlearn?command_timeout=30"
    legacy = tmp_path / hashlib.sha256(url.encode()).hexdigest()[:16]
    legacy.mkdir()
    (legacy / "s1.json").write_text("{}", encoding="utf-8")
    directory = spool_directory(tmp_path, url)
    assert directory != legacy
    assert (directory / "s1.json").read_text(encoding="utf-8") == "{}"
    assert not legacy.exists()


# -- an entry no store can take is set aside, the queue moves on (case 3) -----------------------
@pytest.fixture(params=list(STORE_FACTORIES), ids=list(STORE_FACTORIES))
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    with STORE_FACTORIES[request.param](request) as fresh:
        fresh.open()
        try:
            yield fresh
        finally:
            fresh.close()


def _mtime_order(paths: list[Path]) -> None:
    """Make ``paths`` the spool's oldest-first order (mtimes one second apart)."""
    for i, path in enumerate(paths):
        os.utime(path, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))


def test_an_entry_the_store_refuses_for_its_data_is_set_aside_once(
    store: Store, tmp_path: Path
) -> None:
    """A spooled episode whose data the store refuses (here a seed beyond 64 bits; before the
    text escape, a NUL in a test id on PostgreSQL) made every later replay fail on it, and
    stopped the replay of every run spooled after it: nothing was learned any more."""
    spool = Spool(tmp_path / "spool")
    good1 = episode_write("good1", observations=[("t.py::test_a", PASSED, 1.0)])
    bad = episode_write("bad", observations=[("t.py::test_b", PASSED, 1.0)])
    bad.session = replace(bad.session, seed=2**64)
    good2 = episode_write("good2", observations=[("t.py::test_c", PASSED, 1.0)])
    _mtime_order([spool.add(good1), spool.add(bad), spool.add(good2)])
    warnings: list[str] = []

    assert spool.replay(store, on_warning=warnings.append) == 2
    [warning] = warnings
    assert "bad.json" in warning and "refused" in warning and "bad.unwritable" in warning
    assert spool.pending() == []
    assert (tmp_path / "spool" / "bad.unwritable").exists()  # kept, never deleted
    assert {s.session_id for s in store.sessions(PARTITION)} == {"good1", "good2"}

    assert spool.replay(store, on_warning=warnings.append) == 0  # once: no second warning
    assert len(warnings) == 1


def test_a_store_failure_still_stops_the_replay_and_keeps_every_file(
    store: Store, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    spool.add(episode_write("waiting"))
    store.close()  # unreachable now: not the data's fault
    with pytest.raises(StoreError) as info:
        spool.replay(store)
    assert not isinstance(info.value, StoreDataError)
    assert [p.stem for p in spool.pending()] == ["waiting"]


# -- a complete spooled record wins over a partial checkpoint (case 1) --------------------------
IDS = [f"t.py::test_{c}" for c in "abcdefgh"]
VERDICTS = {t: FAILED if t.endswith(("_c", "_g")) else PASSED for t in IDS}
AGENTS = [prio.NAME, "selector"]


def relearn_with(store: Store) -> Callable[[PendingRun], EpisodeWrite]:
    """What the plugin does with a run it did not learn itself (QLearnPlugin._relearn)."""

    def relearn(run: PendingRun) -> EpisodeWrite:
        learning = LearningSession(
            store.load_snapshot(run.partition, AGENTS), seed=run.seed, session_id=run.session_id
        )
        learning.mode = run.mode
        write, _ = learning.finish(
            [TestResult(*r) for r in run.results],
            started_at=run.started_at,
            duration=run.duration,
            exit_status=run.exit_status,
            session_failed=run.session_failed,
            riskiest=0,
        )
        return write

    return relearn


def raw_results(ids: list[str]) -> list[list[object]]:
    return [[t, VERDICTS[t], 0.25, IDS.index(t), IDS.index(t), 2, False, 0.0] for t in ids]


def run_a_records(store: Store, tmp_path: Path, landed: int) -> tuple[Spool, str]:
    """Runner A: pushes its first results in three checkpoint pushes (``landed`` of them reach
    the database), its process ends (its checkpoint is orphaned at once on this host), and its
    final write fails: the complete record of all eight results waits in its spool."""
    spool = Spool(tmp_path / "spool")
    session_id = "run-a"
    owner = f"{socket.gethostname()}:{dead_pid()}"
    pushes = [IDS[0:2], IDS[2:4], IDS[4:6]]
    for seq, ids in enumerate(pushes, start=1):
        duration = 1.5 * seq
        run = PendingRun(PARTITION, session_id, 7, "reorder", 1_000.0, duration, 2, True, [], owner)
        run = replace(run, results=raw_results(ids))
        spool.note_push(session_id, seq, duration, ids)
        if seq <= landed:
            store.push_checkpoint(CheckpointPush(run, seq, 1.0), now=1_001.0)
    learning = LearningSession(
        store.load_snapshot(PARTITION, AGENTS), seed=7, session_id=session_id
    )
    learning.rank([prio.TestRef(t, "t.py", None, i) for i, t in enumerate(IDS)])
    complete, _ = learning.finish(
        [TestResult(*r) for r in raw_results(IDS)],  # type: ignore[arg-type]
        started_at=1_000.0,
        duration=12.0,
        exit_status=1,
    )
    spool.add(complete)
    return spool, session_id


def runner_b_recovers(store: Store) -> None:
    """Runner B starts: it claims A's checkpoint and learns it as an interrupted run."""
    [run] = store.claim_checkpoints(PARTITION, "runner-b:1")
    assert store.write_episode(relearn_with(store)(run))


@pytest.mark.parametrize("landed", [1, 2, 3])
def test_a_complete_spooled_run_is_not_replaced_by_a_recovered_partial_checkpoint(
    store: Store, tmp_path: Path, landed: int
) -> None:
    """Issue 13, case 1: runner B recovered A's 16-test checkpoint, and A's next run found the
    session stored and deleted its spooled 40 results without a word. Now the results the
    checkpoint lacked are learned too (as a partial episode: the recovered one counted), each
    test exactly once, and the spool file goes only after that."""
    spool, session_id = run_a_records(store, tmp_path, landed)
    [path] = spool.pending()
    kept = path.read_text(encoding="utf-8")
    runner_b_recovers(store)
    recovered = IDS[: 2 * landed]
    assert set(store.load_snapshot(PARTITION, AGENTS).histories) == set(recovered)

    assert spool.replay(store, relearn=relearn_with(store)) == 1
    assert spool.pending() == []
    snapshot = store.load_snapshot(PARTITION, AGENTS)
    assert {t: h.runs for t, h in snapshot.histories.items()} == dict.fromkeys(IDS, 1)
    assert {t: h.failures for t, h in snapshot.histories.items()} == {
        t: int(VERDICTS[t] == FAILED) for t in IDS
    }
    sessions = {s.session_id: s for s in store.sessions(PARTITION)}
    assert set(sessions) == {session_id, session_id + "+rest"}
    assert (sessions[session_id].tests, sessions[session_id].exit_status) == (2 * landed, 2)
    rest = sessions[session_id + "+rest"]
    assert (rest.tests, rest.partial, rest.exit_status) == (8 - 2 * landed, True, 1)
    assert snapshot.episodes == 1  # one run, one episode
    assert snapshot.agent_states[prio.NAME].episodes == 1

    # replayed again (a copy of the file that outlived it): nothing is learned twice
    path.write_text(kept, encoding="utf-8")
    assert spool.replay(store, relearn=relearn_with(store)) == 0
    assert spool.pending() == []
    histories = store.load_snapshot(PARTITION, AGENTS).histories
    assert {t: h.runs for t, h in histories.items()} == dict.fromkeys(IDS, 1)


def test_a_spooled_run_whose_own_record_is_stored_is_not_learned_twice(
    store: Store, tmp_path: Path
) -> None:
    """The run's final write reached the store after all (its answer was lost): the stored
    session is the run's own, complete: the spool file goes, nothing is added."""
    spool, session_id = run_a_records(store, tmp_path, landed=2)
    [path] = spool.pending()
    write = episode_from_json(path.read_text(encoding="utf-8"))
    assert store.write_episode(write)
    assert spool.replay(store, relearn=relearn_with(store)) == 0
    assert spool.pending() == []
    histories = store.load_snapshot(PARTITION, AGENTS).histories
    assert {t: h.runs for t, h in histories.items()} == dict.fromkeys(IDS, 1)
    assert [s.session_id for s in store.sessions(PARTITION)] == [session_id]


def test_a_local_checkpoint_with_more_results_than_the_recovered_one_adds_the_rest(
    store: Store, tmp_path: Path
) -> None:
    """Runner A is killed: its local checkpoint (six results) waits in its spool, its
    database checkpoint holds the first push (two); runner B recovers that one first."""
    spool, session_id = run_a_records(store, tmp_path, landed=1)
    for path in spool.pending():
        path.unlink()
    owner = f"{socket.gethostname()}:{dead_pid()}"
    local = PendingRun(PARTITION, session_id, 7, "reorder", 1_000.0, 9.0, 2, True, [], owner)
    spool.add_run(replace(local, results=raw_results(IDS[:6])))
    runner_b_recovers(store)
    assert spool.replay(store, relearn=relearn_with(store)) == 1
    histories = store.load_snapshot(PARTITION, AGENTS).histories
    assert {t: h.runs for t, h in histories.items()} == dict.fromkeys(IDS[:6], 1)
    assert spool.pending() == []


def test_a_failed_write_of_the_rest_keeps_the_spool_file(store: Store, tmp_path: Path) -> None:
    """A spool file goes only once its content is in the store."""
    spool, _ = run_a_records(store, tmp_path, landed=1)
    runner_b_recovers(store)
    relearn = relearn_with(store)

    def failing(run: PendingRun) -> EpisodeWrite:
        raise StoreError("the store went away")

    with pytest.raises(StoreError):
        spool.replay(store, relearn=failing)
    assert len(spool.pending()) == 1
    assert spool.replay(store, relearn=relearn) == 1
    assert spool.pending() == []


def test_a_file_another_run_replayed_meanwhile_is_skipped_without_a_warning(
    tmp_path: Path,
) -> None:
    """Two runs sharing a spool replay at once: the file one of them lists may be gone by the
    time it reads it. That is not an unreadable file (it used to raise, or warn)."""

    class Racing(Spool):
        def pending(self) -> list[Path]:
            return [self.directory / "replayed-by-the-other-run.json", *super().pending()]

    spool = Racing(tmp_path / "spool")
    spool.add(episode_write("mine"))
    warnings: list[str] = []
    store = SqliteStore(tmp_path / "q.db")
    store.open()
    try:
        assert spool.replay(store, on_warning=warnings.append) == 1
    finally:
        store.close()
    assert warnings == []
    assert not list((tmp_path / "spool").glob("*.unreadable"))
