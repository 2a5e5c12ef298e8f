"""SQLite faults that are not corruption (issue 13, cases 2 and 9): a full disk, an I/O error,
a read-only file system or missing permissions must leave the store where it is (one error,
the run spools), and must be reported by their real cause. Only a damaged file
(``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) is moved aside.

The faults are injected where SQLite reports them, through a connection factory that fails
the way SQLite does (the codes and messages are SQLite's own), so the tests run anywhere; a
real full tmpfs behaves the same (see the README's safety section).
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from builders import PARTITION, episode_write

from pytest_qlearn.store import SqliteStore, StoreError
from pytest_qlearn.store import sqlite as sqlite_store


def sqlite_error(kind: type[sqlite3.Error], code: int | None, message: str) -> sqlite3.Error:
    """An error as SQLite raises it; without a code, as Python 3.10 raises it (no
    ``sqlite_errorcode`` attribute: the message is all there is)."""
    exc = kind(message)
    if code is not None:
        exc.sqlite_errorcode = code  # type: ignore[attr-defined]
        exc.sqlite_errorname = f"code {code}"  # type: ignore[attr-defined]
    return exc


class FailingStore(SqliteStore):
    """A store whose connections fail ``statement`` (matched by prefix) with ``error``;
    ``rollback_first`` rolls the transaction back before failing, as SQLite does itself when
    a COMMIT hits a full disk."""

    def __init__(
        self,
        path: Path,
        statement: str,
        error: sqlite3.Error,
        *,
        rollback_first: bool = False,
        times: int | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(path, on_warning=on_warning)
        self.statement, self.error, self.rollback_first = statement, error, rollback_first
        self.times = times  # how often it fails (None: always)

    def _connect(self) -> sqlite3.Connection:
        store = self

        class Failing(sqlite3.Connection):
            def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                if sql.strip().startswith(store.statement) and store.times != 0:
                    if store.times is not None:
                        store.times -= 1
                    if store.rollback_first and self.in_transaction:
                        super().execute("ROLLBACK")
                    raise store.error
                return super().execute(sql, *args)

        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, factory=Failing
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn


def a_store_with_one_session(tmp_path: Path) -> Path:
    path = tmp_path / "qlearn.db"
    store = SqliteStore(path)
    store.open()
    assert store.write_episode(episode_write("kept"))
    store.close()
    return path


def sessions_in(path: Path) -> list[str]:
    store = SqliteStore(path)
    store.open()
    try:
        return [s.session_id for s in store.recent_sessions(PARTITION)]
    finally:
        store.close()


def moved_aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".*.unusable*"))


NOT_CORRUPTION = [
    (sqlite3.OperationalError, 10, "disk I/O error"),  # SQLITE_IOERR
    (sqlite3.OperationalError, 4618, "disk I/O error"),  # SQLITE_IOERR_SHMOPEN
    (sqlite3.OperationalError, 13, "database or disk is full"),  # SQLITE_FULL
    (sqlite3.OperationalError, 8, "attempt to write a readonly database"),  # SQLITE_READONLY
    (sqlite3.OperationalError, 3, "access permission denied"),  # SQLITE_PERM
    (sqlite3.OperationalError, 14, "unable to open database file"),  # SQLITE_CANTOPEN
    (sqlite3.DatabaseError, 23, "authorization denied"),  # SQLITE_AUTH
]
NOT_CORRUPTION_IDS = ["ioerr", "ioerr-shmopen", "full", "readonly", "perm", "cantopen", "auth"]


@pytest.mark.parametrize("with_code", [True, False], ids=["py311", "py310-message-only"])
@pytest.mark.parametrize(("kind", "code", "message"), NOT_CORRUPTION, ids=NOT_CORRUPTION_IDS)
@pytest.mark.parametrize("statement", ["SELECT name FROM sqlite_master", "PRAGMA journal_mode"])
def test_an_io_full_disk_or_permission_error_keeps_the_store(
    tmp_path: Path,
    kind: type[sqlite3.Error],
    code: int,
    message: str,
    with_code: bool,
    statement: str,
) -> None:
    path = a_store_with_one_session(tmp_path)
    warnings: list[str] = []
    error = sqlite_error(kind, code if with_code else None, message)
    store = FailingStore(path, statement, error, on_warning=warnings.append)
    with pytest.raises(StoreError) as info:
        store.open()
    store.close()
    assert message in str(info.value)
    assert "left as it is" in str(info.value)
    assert warnings == []  # nothing was moved, so nothing to warn about
    assert moved_aside(path) == []
    assert sessions_in(path) == ["kept"]  # every bit of learning still there


@pytest.mark.parametrize("with_code", [True, False], ids=["py311", "py310-message-only"])
@pytest.mark.parametrize(
    ("code", "message"),
    [(11, "database disk image is malformed"), (26, "file is not a database")],
    ids=["corrupt", "notadb"],
)
def test_only_corruption_moves_the_store_aside(
    tmp_path: Path, code: int, message: str, with_code: bool
) -> None:
    path = a_store_with_one_session(tmp_path)
    warnings: list[str] = []
    error = sqlite_error(sqlite3.DatabaseError, code if with_code else None, message)
    store = FailingStore(
        path, "SELECT name FROM sqlite_master", error, times=1, on_warning=warnings.append
    )
    try:
        store.open()  # the damaged file is moved aside, and a fresh store is created
        assert store.recent_sessions(PARTITION) == []
    finally:
        store.close()
    [warning] = warnings
    assert "is corrupt" in warning and message in warning
    assert len([p for p in moved_aside(path) if p.suffix == ".unusable"]) == 1


def test_a_really_damaged_file_is_still_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "qlearn.db"
    path.write_bytes(random.Random(0).randbytes(8192))
    warnings: list[str] = []
    store = SqliteStore(path, on_warning=warnings.append)
    store.open()
    store.close()
    assert len(warnings) == 1 and len(moved_aside(path)) == 1


@pytest.mark.parametrize(
    ("code", "message", "corrupt"),
    [
        (11, "database disk image is malformed", True),
        (26, "file is not a database", True),
        (267, "database disk image is malformed", True),  # SQLITE_CORRUPT_VTAB
        (10, "disk I/O error", False),
        (13, "database or disk is full", False),
        (8, "attempt to write a readonly database", False),
        (5, "database is locked", False),
        (None, "database disk image is malformed", True),
        (None, "file is not a database", True),
        (None, "disk I/O error", False),
    ],
)
def test_is_corruption_reads_the_code_or_on_310_the_message(
    code: int | None, message: str, corrupt: bool
) -> None:
    assert sqlite_store.is_corruption(sqlite_error(sqlite3.DatabaseError, code, message)) is corrupt


# -- case 9: a full disk while creating the store ------------------------------------------------
FULL = (13, "database or disk is full")


def test_a_full_disk_while_creating_the_store_reports_the_full_disk(tmp_path: Path) -> None:
    """SQLite rolls a transaction back itself when its COMMIT hits a full disk; the store's
    own ROLLBACK then failed with "cannot rollback - no transaction is active", hiding why."""
    path = tmp_path / "qlearn.db"
    error = sqlite_error(sqlite3.OperationalError, *FULL)
    store = FailingStore(path, "COMMIT", error, rollback_first=True)
    with pytest.raises(StoreError) as info:
        store.open()
    store.close()
    assert "database or disk is full" in str(info.value)
    assert "cannot rollback" not in str(info.value)


@pytest.mark.parametrize("doing", ["write_episode", "cleanup", "push_checkpoint"])
def test_a_full_disk_at_commit_reports_the_full_disk(tmp_path: Path, doing: str) -> None:
    from pytest_qlearn.store.base import CheckpointPush, PendingRun

    path = a_store_with_one_session(tmp_path)
    error = sqlite_error(sqlite3.OperationalError, *FULL)
    store = FailingStore(path, "COMMIT", error, rollback_first=True)
    store.statement = "never matches"
    store.open()
    store.statement = "COMMIT"
    calls: dict[str, Callable[[], object]] = {
        "write_episode": lambda: store.write_episode(episode_write("new")),
        "cleanup": lambda: store.cleanup(PARTITION.project, 30.0),
        "push_checkpoint": lambda: store.push_checkpoint(
            CheckpointPush(
                PendingRun(PARTITION, "run", 1, "reorder", 1.0, 1.0, 2, True, [], "h:1"), 1, 1.0
            )
        ),
    }
    try:
        with pytest.raises((StoreError, sqlite3.Error)) as info:
            calls[doing]()
    finally:
        store.close()
    assert "database or disk is full" in str(info.value)
    assert "cannot rollback" not in str(info.value)
    assert sessions_in(path) == ["kept"]
