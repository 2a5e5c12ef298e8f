"""Keeping an episode without pytest (pytest_qlearn/keeping.py): open, spool, checkpoint,
write, recover, and every store fault turned into a warning and a status."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_qlearn.engine.history import FAILED, PASSED
from pytest_qlearn.keeping import EpisodeKeeper, StrictStoreError
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.settings import RawOptions, Settings, resolve
from pytest_qlearn.store import Snapshot
from pytest_qlearn.store.base import EpisodeWrite, PendingRun
from pytest_qlearn.store.sqlite import SqliteStore

IDS = ["t.py::test_a", "t.py::test_b", "t.py::test_c"]


def settings(tmp_path: Path, **raw: Any) -> Settings:
    return resolve(RawOptions(cli_enabled=True, rootpath=tmp_path, environ={}, **raw))


def keeper(tmp_path: Path, **raw: Any) -> EpisodeKeeper:
    def make_session(snapshot: Snapshot, seed: int, session_id: str | None) -> LearningSession:
        return LearningSession(snapshot, seed=seed, session_id=session_id)

    return EpisodeKeeper(
        settings(tmp_path, **raw),
        tmp_path / "cache" / "qlearn.db",
        make_session,
        ["prioritizer", "selector"],
    )


def run_once(
    k: EpisodeKeeper, snapshot: Snapshot, seed: int = 7
) -> tuple[LearningSession, list[TestResult], EpisodeWrite]:
    learning = k.make_session(snapshot, seed, None)
    from pytest_qlearn.agents.prioritizer import TestRef

    ranking = learning.rank([TestRef(t, "t.py", None, i) for i, t in enumerate(IDS)])
    results = [
        TestResult(ref.test_id, FAILED if ref.test_id == IDS[1] else PASSED, 0.01, ref.index, pos)
        for pos, ref in enumerate(ranking.order)
    ]
    write, _ = learning.finish(results, started_at=k.started_at, duration=0.1, exit_status=1)
    return learning, results, write


def offline(
    k: EpisodeKeeper, learning: LearningSession, results: list[TestResult]
) -> Callable[[], PendingRun]:
    return lambda: k.pending_run(learning, results, 1, False)


def spooled_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "spool").rglob("*.json"))


def test_a_fresh_store_opens_learns_and_the_next_keeper_sees_it(tmp_path: Path) -> None:
    k = keeper(tmp_path)
    opened = k.open()
    assert opened is not None
    snapshot, coverage = opened
    assert coverage is None and not snapshot.histories
    assert k.status == "loaded 0 test histories"
    assert k.display == f"sqlite:///{tmp_path / 'cache' / 'qlearn.db'}"
    learning, results, write = run_once(k, snapshot)
    k.save(write, offline(k, learning, results))
    assert k.status == f"saved to {k.display}" and k.messages == []
    k.close()

    again = keeper(tmp_path)
    opened = again.open()
    assert opened is not None
    assert sorted(opened[0].histories) == IDS
    assert again.status == "loaded 3 test histories"
    again.close()


def unreachable(tmp_path: Path) -> dict[str, Any]:
    """A store that cannot be opened: the database file's folder is a file."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder", encoding="utf-8")
    return {"cli_db": f"sqlite:///{blocker}/qlearn.db"}


def test_an_unreachable_store_spools_the_raw_run_and_the_next_run_learns_it(
    tmp_path: Path,
) -> None:
    k = keeper(tmp_path, **unreachable(tmp_path))
    assert k.open() is None
    assert k.can_spool and k.store is None
    assert k.status == "unavailable (open)"
    [message] = k.messages
    assert message.endswith(
        "running the tests in collection order; this run's learning is spooled locally and "
        "saved by the next run that reaches the store"
    )
    learning, results, write = run_once(k, Snapshot(k.partition))
    k.save(write, offline(k, learning, results))
    assert k.status.startswith("unavailable, spooled to ")
    assert len(spooled_files(tmp_path)) == 1
    # the store is back (the same URL now works): the next run writes the spooled run first
    (tmp_path / "blocker").unlink()
    (tmp_path / "blocker").mkdir()
    back = keeper(tmp_path, **unreachable_fixed(tmp_path))
    opened = back.open()
    assert opened is not None and back.replayed == 1
    assert sorted(opened[0].histories) == IDS  # learned from the spooled run
    assert not spooled_files(tmp_path)
    back.close()


def unreachable_fixed(tmp_path: Path) -> dict[str, Any]:
    return {"cli_db": f"sqlite:///{tmp_path / 'blocker'}/qlearn.db"}


def test_strict_refuses_to_run_without_its_store(tmp_path: Path) -> None:
    k = keeper(tmp_path, strict=True, **unreachable(tmp_path))
    with pytest.raises(StrictStoreError, match="nothing will be learned"):
        k.open()
    assert k.store is None


def test_a_failed_write_spools_the_learned_episode_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = keeper(tmp_path)
    opened = k.open()
    assert opened is not None and isinstance(k.store, SqliteStore)
    learning, results, write = run_once(k, opened[0])

    def broken(*args: object, **kwargs: object) -> bool:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(k.store, "write_episode", broken)
    k.save(write, offline(k, learning, results))
    [message] = k.messages
    assert "internal error in the qlearn store (OperationalError: database is locked)" in message
    assert "this run's learning is spooled to" in message
    assert k.status.startswith("unavailable (write), spooled to ")
    assert len(spooled_files(tmp_path)) == 1
    k.close()

    later = keeper(tmp_path)
    opened = later.open()
    assert opened is not None and later.replayed == 1
    assert sorted(opened[0].histories) == IDS
    later.close()


def test_a_failed_clean_up_keeps_the_write_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = keeper(tmp_path)
    opened = k.open()
    assert opened is not None and k.store is not None
    learning, results, write = run_once(k, opened[0])

    def broken(*args: object) -> int:
        raise OSError("disk went away")

    monkeypatch.setattr(k.store, "maybe_cleanup", broken)
    k.save(write, offline(k, learning, results))
    assert k.status == f"saved to {k.display}"
    assert k.messages == [
        "disk went away; this run's learning was saved, expired rows were not removed"
    ]
    assert not spooled_files(tmp_path)
    k.close()


def test_a_checkpoint_is_spooled_during_the_run_and_removed_once_the_episode_is_saved(
    tmp_path: Path,
) -> None:
    k = keeper(tmp_path, ini_checkpoint_seconds="0.001")
    opened = k.open()
    assert opened is not None
    learning, results, write = run_once(k, opened[0])
    k.checkpoint(learning, results[:2])
    assert len(spooled_files(tmp_path)) == 1
    k.save(write, offline(k, learning, results))
    assert not spooled_files(tmp_path)
    assert k.status == f"saved to {k.display}"
    k.close()


def test_a_killed_run_s_checkpoint_is_learned_by_the_next_run(tmp_path: Path) -> None:
    k = keeper(tmp_path, ini_checkpoint_seconds="0.001")
    opened = k.open()
    assert opened is not None
    learning, results, _ = run_once(k, opened[0])
    k.checkpoint(learning, results[:2])
    k.close()  # killed: no save

    nxt = keeper(tmp_path)
    opened = nxt.open()
    assert opened is not None and nxt.replayed == 1
    snapshot = opened[0]
    assert sorted(snapshot.histories) == sorted(r.test_id for r in results[:2])
    [session] = snapshot.recent_sessions
    assert session.exit_status == 2  # learned as an interrupted run
    nxt.close()
