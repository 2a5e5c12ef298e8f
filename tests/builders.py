"""Builders of store records for the store tests (conformance, SQLite, PostgreSQL, spool):
one session record and one episode write with sensible defaults, every field overridable."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.store import sqlite as sqlite_store
from pytest_qlearn.store.base import (
    AgentProgress,
    EpisodeWrite,
    Observation,
    Partition,
    PatternDelta,
    QDelta,
    SessionRecord,
)

AGENT = prio.NAME
PARTITION = Partition("project", "py3.11")


def session_record(
    session_id: str, *, started_at: float = 1_000.0, episode: int = 1, **fields: Any
) -> SessionRecord:
    """A finished session; ``fields`` override any other :class:`SessionRecord` field."""
    values: dict[str, Any] = {
        "duration": 12.5,
        "tests": 3,
        "failures": 1,
        "seed": 424242,
        "epsilon": 0.25,
        "q_table_size": 9,
        "apfd": 0.75,
        "collection_apfd": None,
        "reward": 61.5,
        "exit_status": 1,
        "mode": "reorder",
    }
    values.update(fields)
    return SessionRecord(session_id=session_id, started_at=started_at, episode=episode, **values)


def episode_write(
    session_id: str,
    q: Sequence[tuple[str, int, float, int]] = (),
    observations: Sequence[tuple[str, str, float]] = (),
    *,
    partition: Partition = PARTITION,
    started_at: float = 1_000.0,
    episode: int = 1,
    agent: str = AGENT,
    agents: Sequence[AgentProgress] = (),
    patterns: Sequence[PatternDelta] = (),
    **session_fields: Any,
) -> EpisodeWrite:
    """A write of one session; ``q`` rows are ``(state, action, dq, dvisits)`` for ``agent``,
    ``observations`` are ``(test_id, verdict, duration)``; ``session_fields`` go to
    :func:`session_record`."""
    return EpisodeWrite(
        partition=partition,
        session=session_record(
            session_id, started_at=started_at, episode=episode, **session_fields
        ),
        agent_types=[prio.agent_type()],
        observations=[Observation(t, v, d) for t, v, d in observations],
        q_deltas={agent: [QDelta(s, f"text of {s}", a, dq, n) for s, a, dq, n in q]} if q else {},
        agents=list(agents),
        patterns=list(patterns),
    )


def sqlite_schema_at(conn: sqlite3.Connection, version: int) -> None:
    """Give an empty SQLite database the schema of ``version``, as a pytest-qlearn of that
    version left it: its migrations 1 to ``version``, applied and recorded one by one."""
    conn.execute(
        "CREATE TABLE qlearn_schema (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    for v in range(1, version + 1):
        for statement in sqlite_store.MIGRATIONS[v]:
            sqlite_store._apply(conn, statement)
        conn.execute("INSERT INTO qlearn_schema VALUES (?, 0)", (v,))
