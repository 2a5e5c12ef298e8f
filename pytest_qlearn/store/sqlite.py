"""The embedded default store: one SQLite file (WAL mode), plain SQL, parameters only."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, fields
from itertools import compress, repeat
from operator import itemgetter, not_
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from ..engine.history import TestHistory
from ..engine.qlearner import QEntry, gc_paused
from .base import (
    CLEANUP_INTERVAL,
    DEFAULT_TTL_DAYS,
    Q_ORDER_SQL,
    Q_ORDERS,
    SCHEMA_VERSION,
    SECONDS_PER_DAY,
    SIGNATURE_AGENT,
    SUSPECT_AGENT,
    AgentState,
    CheckpointPush,
    CoverageSnapshot,
    CoverageWrite,
    EpisodeAgentStats,
    EpisodeWrite,
    Partition,
    PatternDelta,
    PendingRun,
    PendingSkipDelta,
    QDelta,
    QTableSummary,
    QValueRecord,
    RewardEvent,
    SchemaTooNewError,
    SessionRecord,
    Snapshot,
    Store,
    StoreDataError,
    StoreError,
    TrajectoryRecord,
    merged_pending_skips,
    takes_next_histories,
)
from .checkpoint import claimed_run, header_json, orphaned, results_json
from .text import (
    from_store,
    loaded,
    loaded_coverage,
    loaded_snapshot,
    stored_partition,
    stored_push,
    stored_write,
    to_store,
)


class AddColumn(NamedTuple):
    """A migration step: ``ALTER TABLE table ADD COLUMN column definition``, skipped when the
    table has that column already (SQLite has no ``ADD COLUMN IF NOT EXISTS``)."""

    table: str
    column: str
    definition: str


class Rebuild(NamedTuple):
    """A migration step that rebuilds ``table`` into a new layout: ``statements``, run only
    while the table lacks ``column`` (which the new layout has), so re-applying it changes
    nothing."""

    table: str
    column: str
    statements: tuple[str, ...]


# Forward-only migrations: version -> statements. Each runs once, in one transaction, and
# every statement is written to be safe to re-apply.
MIGRATIONS: dict[int, tuple[str | AddColumn | Rebuild, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS agent_types (
            name TEXT PRIMARY KEY,
            description TEXT NOT NULL,
            actions TEXT NOT NULL,
            features TEXT NOT NULL,
            version INTEGER NOT NULL,
            hyperparameters TEXT NOT NULL,
            registered_at REAL NOT NULL,
            updated_at REAL NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS q_values (
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            agent TEXT NOT NULL,
            state_hash TEXT NOT NULL,
            action INTEGER NOT NULL,
            state_text TEXT NOT NULL,
            q REAL NOT NULL,
            visits INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (project, environment, agent, state_hash, action)) WITHOUT ROWID""",
        # No expiry index: every run moves most rows' expiry, and keeping an index in step
        # doubled the cost of the Q upsert; the once-a-day cleanup scans the project's
        # primary-key range instead.
        """CREATE TABLE IF NOT EXISTS sessions (
            session_id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            episode INTEGER NOT NULL,
            started_at REAL NOT NULL,
            duration REAL NOT NULL,
            tests INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            seed INTEGER NOT NULL,
            epsilon REAL NOT NULL,
            q_table_size INTEGER NOT NULL,
            apfd REAL,
            collection_apfd REAL,
            reward REAL NOT NULL,
            exit_status INTEGER NOT NULL,
            mode TEXT NOT NULL)""",
        """CREATE INDEX IF NOT EXISTS sessions_partition
            ON sessions (project, environment, started_at)""",
        """CREATE TABLE IF NOT EXISTS trajectories (
            session_id TEXT NOT NULL,
            agent TEXT NOT NULL,
            step INTEGER NOT NULL,
            test_id TEXT NOT NULL,
            state_hash TEXT NOT NULL,
            action INTEGER NOT NULL,
            explored INTEGER NOT NULL,
            reward REAL NOT NULL,
            next_state_hash TEXT,
            PRIMARY KEY (session_id, agent, step)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS rewards (
            session_id TEXT NOT NULL,
            component TEXT NOT NULL,
            value REAL,
            weight REAL NOT NULL,
            PRIMARY KEY (session_id, component)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS patterns (
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            agent TEXT NOT NULL,
            pattern_hash TEXT NOT NULL,
            description TEXT NOT NULL,
            occurrences INTEGER NOT NULL,
            hits INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (project, environment, agent, pattern_hash)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS agent_states (
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            agent TEXT NOT NULL,
            episodes INTEGER NOT NULL,
            epsilon REAL,
            reward_sum REAL NOT NULL,
            rewards INTEGER NOT NULL,
            last_active REAL NOT NULL,
            PRIMARY KEY (project, environment, agent)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS test_history (
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            test_id TEXT NOT NULL,
            runs INTEGER NOT NULL,
            failures INTEGER NOT NULL,
            flips INTEGER NOT NULL,
            verdicts TEXT NOT NULL,
            last_failure_episode INTEGER NOT NULL,
            last_run_episode INTEGER NOT NULL,
            first_episode INTEGER NOT NULL,
            duration_mean REAL NOT NULL,
            duration_m2 REAL NOT NULL,
            last_duration REAL NOT NULL,
            updated_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (project, environment, test_id)) WITHOUT ROWID""",
        """CREATE TABLE IF NOT EXISTS maintenance (
            project TEXT PRIMARY KEY,
            last_cleanup REAL NOT NULL)""",
    ),
    2: (
        """CREATE TABLE IF NOT EXISTS file_hashes (
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            path TEXT NOT NULL,
            digest TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (project, environment, path)) WITHOUT ROWID""",
    ),
    3: (
        # the selector's skips of deselected tests, until their next run pays them back
        """CREATE TABLE IF NOT EXISTS pending_skips (
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            test_id TEXT NOT NULL,
            state_key TEXT NOT NULL,
            count REAL NOT NULL,
            updated_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (project, environment, test_id, state_key)) WITHOUT ROWID""",
        # they were rows of the selector's Q-table before; they do not move (they add up
        # to nothing a run could not learn again): they go
        "DELETE FROM q_values WHERE agent = 'selector' AND state_hash LIKE 'selector:pending:%'",
    ),
    4: (
        # results so far of runs in progress (see checkpoint.py): one row per run...
        """CREATE TABLE IF NOT EXISTS checkpoints (
            session_id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            owner TEXT NOT NULL,
            heartbeat REAL NOT NULL,
            beat REAL NOT NULL,
            pushes INTEGER NOT NULL,
            run TEXT NOT NULL)""",
        """CREATE INDEX IF NOT EXISTS checkpoints_partition
            ON checkpoints (project, environment)""",
        # ... and one per push, with the results new since the one before
        """CREATE TABLE IF NOT EXISTS checkpoint_results (
            session_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            results TEXT NOT NULL,
            PRIMARY KEY (session_id, seq)) WITHOUT ROWID""",
    ),
    5: (
        # --qlearn-cov: each test's coverage map (JSON, with its files' digests) ...
        """CREATE TABLE IF NOT EXISTS coverage_maps (
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            test_id TEXT NOT NULL,
            data TEXT NOT NULL,
            traced_episode INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (project, environment, test_id)) WITHOUT ROWID""",
        # ... and per coverage run: the commit and dirty files it ran on, its line coverage
        """CREATE TABLE IF NOT EXISTS coverage_runs (
            session_id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            started_at REAL NOT NULL,
            vcs_commit TEXT,
            dirty TEXT NOT NULL,
            coverage_percent REAL)""",
        """CREATE INDEX IF NOT EXISTS coverage_runs_newest
            ON coverage_runs (project, environment, started_at)""",
        # ... and the statements of each covered file (analysed again only when it changed)
        """CREATE TABLE IF NOT EXISTS coverage_files (
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            path TEXT NOT NULL,
            digest TEXT NOT NULL,
            statements TEXT NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (project, environment, path)) WITHOUT ROWID""",
    ),
    6: (
        # seconds each test spends in setup + teardown (running mean, as duration_mean) ...
        AddColumn("test_history", "fixture_mean", "REAL NOT NULL DEFAULT 0"),
        # ... and narrowed or stopped-early runs, which do not advance the episode schedule
        AddColumn("sessions", "partial", "INTEGER NOT NULL DEFAULT 0"),
    ),
    7: (
        # runs that passed only on a rerun (a flake confirmed) ...
        AddColumn("test_history", "flaky", "INTEGER NOT NULL DEFAULT 0"),
        # ... and what reruns of a failure signature did (the flaky-hunter's patterns)
        AddColumn("patterns", "reruns", "INTEGER NOT NULL DEFAULT 0"),
        AddColumn("patterns", "rerun_passes", "INTEGER NOT NULL DEFAULT 0"),
        AddColumn("patterns", "reward_sum", "REAL NOT NULL DEFAULT 0"),
    ),
    8: (
        # a recent, outlier-capped duration per test (the budget's estimate)
        AddColumn("test_history", "duration_recent", "REAL NOT NULL DEFAULT 0"),
    ),
    9: (
        # how early the first failure showed up, in the run's order and in collection order
        # (NULL: no failure, or a session stored before this version)
        AddColumn("sessions", "time_to_first_failure", "REAL"),
        AddColumn("sessions", "collection_time_to_first_failure", "REAL"),
        AddColumn("sessions", "first_failure_position", "INTEGER"),
        AddColumn("sessions", "collection_first_failure_position", "INTEGER"),
    ),
    10: (
        # q_values keyed by one integer per project, environment and agent instead of the
        # three texts: a run's upsert seeks and rewrites one row per (state, action), and
        # comparing and copying the texts in every key was a third of it (issue 16:
        # 300,003 deltas merged in 0.97 s with the texts, 0.64 s with the scope)
        """CREATE TABLE IF NOT EXISTS q_scopes (
            scope INTEGER PRIMARY KEY,
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            agent TEXT NOT NULL,
            UNIQUE (project, environment, agent))""",
        Rebuild(
            "q_values",
            "scope",
            (
                """INSERT OR IGNORE INTO q_scopes (project, environment, agent)
                    SELECT DISTINCT project, environment, agent FROM q_values
                    ORDER BY project, environment, agent""",
                "DROP TABLE IF EXISTS q_values_by_scope",
                """CREATE TABLE q_values_by_scope (
                    scope INTEGER NOT NULL,
                    state_hash TEXT NOT NULL,
                    action INTEGER NOT NULL,
                    state_text TEXT NOT NULL,
                    q REAL NOT NULL,
                    visits INTEGER NOT NULL,
                    updated_at REAL NOT NULL,
                    expires_at REAL NOT NULL,
                    PRIMARY KEY (scope, state_hash, action)) WITHOUT ROWID""",
                """INSERT INTO q_values_by_scope
                    SELECT s.scope, v.state_hash, v.action, v.state_text, v.q, v.visits,
                        v.updated_at, v.expires_at
                    FROM q_values v JOIN q_scopes s ON s.project = v.project
                        AND s.environment = v.environment AND s.agent = v.agent
                    ORDER BY s.scope, v.state_hash, v.action""",
                "DROP TABLE q_values",
                "ALTER TABLE q_values_by_scope RENAME TO q_values",
            ),
        ),
    ),
    11: (
        # test_history keyed by one integer per project and environment, for the same
        # reason (its upsert of 100,000 histories: 0.44 s with the texts, 0.25 s without)
        """CREATE TABLE IF NOT EXISTS partition_keys (
            partition_id INTEGER PRIMARY KEY,
            project TEXT NOT NULL,
            environment TEXT NOT NULL,
            UNIQUE (project, environment))""",
        Rebuild(
            "test_history",
            "partition_id",
            (
                """INSERT OR IGNORE INTO partition_keys (project, environment)
                    SELECT DISTINCT project, environment FROM test_history
                    ORDER BY project, environment""",
                "DROP TABLE IF EXISTS test_history_by_partition",
                """CREATE TABLE test_history_by_partition (
                    partition_id INTEGER NOT NULL,
                    test_id TEXT NOT NULL,
                    runs INTEGER NOT NULL,
                    failures INTEGER NOT NULL,
                    flips INTEGER NOT NULL,
                    verdicts TEXT NOT NULL,
                    last_failure_episode INTEGER NOT NULL,
                    last_run_episode INTEGER NOT NULL,
                    first_episode INTEGER NOT NULL,
                    duration_mean REAL NOT NULL,
                    duration_m2 REAL NOT NULL,
                    last_duration REAL NOT NULL,
                    fixture_mean REAL NOT NULL DEFAULT 0,
                    flaky INTEGER NOT NULL DEFAULT 0,
                    duration_recent REAL NOT NULL DEFAULT 0,
                    updated_at REAL NOT NULL,
                    expires_at REAL NOT NULL,
                    PRIMARY KEY (partition_id, test_id)) WITHOUT ROWID""",
                """INSERT INTO test_history_by_partition
                    SELECT k.partition_id, h.test_id, h.runs, h.failures, h.flips, h.verdicts,
                        h.last_failure_episode, h.last_run_episode, h.first_episode,
                        h.duration_mean, h.duration_m2, h.last_duration, h.fixture_mean,
                        h.flaky, h.duration_recent, h.updated_at, h.expires_at
                    FROM test_history h JOIN partition_keys k ON k.project = h.project
                        AND k.environment = h.environment
                    ORDER BY k.partition_id, h.test_id""",
                "DROP TABLE test_history",
                "ALTER TABLE test_history_by_partition RENAME TO test_history",
            ),
        ),
    ),
    12: (
        # what narrowed the run, so that a job narrowing the same way every run counts
        # its runs as full episodes
        AddColumn("sessions", "narrowing", "TEXT"),
    ),
}

#: Tables whose rows simply age out: (table, the column of their last use).
_AGED_TABLES = (
    ("file_hashes", "updated_at"),
    ("coverage_runs", "started_at"),
    ("coverage_files", "updated_at"),
)
_HISTORY_FIELDS = TestHistory._fields
_HISTORY_COLUMNS = tuple(range(len(_HISTORY_FIELDS)))
_SESSION_FIELDS = tuple(f.name for f in fields(SessionRecord))
T = TypeVar("T")


class SqliteStore(Store):
    """The default store. ``path`` may be ``:memory:`` for tests and the replay harness."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.path = str(path)
        self.display_url = f"sqlite:///{self.path}"
        self.timeout = timeout
        self._on_warning = on_warning
        self._conn: sqlite3.Connection | None = None

    # -- connection ----------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the store is not open")
        return self._conn

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = self._connect_checked()
            self._migrate()
        except SchemaTooNewError:
            self.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            self.close()
            raise StoreError(f"cannot open the qlearn store {self.display_url}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return conn

    def _connect_checked(self) -> sqlite3.Connection:
        """Connect; a damaged file or someone else's database is moved aside, not used. Any
        other failure (a full disk, an I/O or permission error, a read-only file system)
        leaves the file where it is: it raises, and the run spools its learning."""
        conn = self._connect()
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
            if tables and "qlearn_schema" not in tables:
                conn.close()
                return self._move_aside("is not a pytest-qlearn store")
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn
        except sqlite3.DatabaseError as exc:
            conn.close()
            if not is_corruption(exc):
                raise sqlite3.OperationalError(f"{exc} (the file was left as it is)") from exc
            return self._move_aside(f"is corrupt ({exc})")

    def _move_aside(self, why: str) -> sqlite3.Connection:
        if self.path == ":memory:":
            raise StoreError(f"in-memory store {why}")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = f"{self.path}.{stamp}.unusable"
        counter = 1
        while any(os.path.exists(aside + s) for s in ("", "-wal", "-shm")):
            # Never overwrite an earlier damaged file: it may be the only copy of what it held.
            counter += 1
            aside = f"{self.path}.{stamp}-{counter}.unusable"
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.replace(self.path + suffix, aside + suffix)
        self._warn(f"{self.path} {why}; moved it to {aside} and started a fresh store")
        conn = self._connect()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    def _warn(self, message: str) -> None:
        if self._on_warning is not None:
            self._on_warning(message)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- schema ----------------------------------------------------------------------------
    def _migrate(self) -> None:
        conn = self.conn
        conn.execute(
            "CREATE TABLE IF NOT EXISTS qlearn_schema ("
            "version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = self.schema_version()
        if current > SCHEMA_VERSION:
            raise SchemaTooNewError(current, SCHEMA_VERSION, self.display_url)
        if current == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: a concurrent run may have migrated meanwhile.
            current = self.schema_version()
            for version in sorted(v for v in MIGRATIONS if v > current):
                for statement in MIGRATIONS[version]:
                    _apply(conn, statement)
                conn.execute(
                    "INSERT INTO qlearn_schema (version, applied_at) VALUES (?, ?)",
                    (version, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def schema_version(self) -> int:
        row = self.conn.execute("SELECT MAX(version) FROM qlearn_schema").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # -- reading ---------------------------------------------------------------------------
    def load_snapshot(self, partition: Partition, agents: Sequence[str]) -> Snapshot:
        conn = self.conn
        asked = partition
        partition = stored_partition(partition)
        agents = [to_store(agent) for agent in agents]
        key = (partition.project, partition.environment)
        try:
            # One read transaction: a run committing meanwhile is seen entirely or not at all
            # (the history fast path relies on histories and episode count agreeing).
            conn.execute("BEGIN")
            try:
                with gc_paused():
                    snapshot = self._read_snapshot(partition, agents, key)
            except BaseException:
                _rollback(conn)
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the qlearn store {self.display_url}: {exc}") from exc
        snapshot = loaded_snapshot(snapshot)
        if SIGNATURE_AGENT in agents:
            snapshot.signatures = self.signatures(asked)
        snapshot.suspects = self.agent_patterns(asked, SUSPECT_AGENT)
        return snapshot

    def _read_snapshot(
        self, partition: Partition, agents: Sequence[str], key: tuple[str, str]
    ) -> Snapshot:
        conn = self.conn
        histories = {
            row[0]: TestHistory(*row)
            for row in conn.execute(
                f"SELECT {', '.join(_HISTORY_FIELDS)} FROM test_history WHERE {_IN_PARTITION}",
                key,
            )
        }
        q_entries: dict[str, list[QEntry]] = {}
        for agent in agents:
            # map, not a comprehension: ~7 % cheaper per row at 15,000 rows
            q_entries[agent] = list(
                map(
                    QEntry._make,
                    conn.execute(
                        f"SELECT state_hash, action, q, visits FROM q_values WHERE {_IN_SCOPE}",
                        (*key, agent),
                    ),
                )
            )
        states = {
            row[0]: AgentState(row[0], int(row[1]), row[2], float(row[3]), int(row[4]), row[5])
            for row in conn.execute(
                "SELECT agent, episodes, epsilon, reward_sum, rewards, last_active "
                "FROM agent_states WHERE project = ? AND environment = ?",
                key,
            )
        }
        (sessions, episodes) = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(NOT partial), 0) FROM sessions "
            "WHERE project = ? AND environment = ?",
            key,
        ).fetchone()
        return Snapshot(
            partition=partition,
            histories=histories,
            q_entries=q_entries,
            agent_states=states,
            recent_sessions=self._recent_sessions(partition, 20),
            episodes=int(episodes),
            file_hashes=dict(
                conn.execute(
                    "SELECT path, digest FROM file_hashes WHERE project = ? AND environment = ?",
                    key,
                ).fetchall()
            ),
            pending_skips=_pending_skips(
                conn.execute(
                    "SELECT test_id, state_key, count FROM pending_skips "
                    "WHERE project = ? AND environment = ?",
                    key,
                )
            ),
            session_count=int(sessions),
        )

    def load_coverage(self, partition: Partition) -> CoverageSnapshot:
        return loaded_coverage(self._load_coverage(stored_partition(partition)))

    def _load_coverage(self, partition: Partition) -> CoverageSnapshot:
        key = (partition.project, partition.environment)
        try:
            conn = self.conn
            maps = {
                test_id: (data, int(episode))
                for test_id, data, episode in conn.execute(
                    "SELECT test_id, data, traced_episode FROM coverage_maps "
                    "WHERE project = ? AND environment = ?",
                    key,
                )
            }
            newest = conn.execute(
                "SELECT vcs_commit, dirty, coverage_percent FROM coverage_runs "
                "WHERE project = ? AND environment = ? ORDER BY started_at DESC LIMIT 1",
                key,
            ).fetchone()
            files = {
                path: (digest, ranges)
                for path, digest, ranges in conn.execute(
                    "SELECT path, digest, statements FROM coverage_files "
                    "WHERE project = ? AND environment = ?",
                    key,
                )
            }
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the qlearn store {self.display_url}: {exc}") from exc
        if newest is None:
            return CoverageSnapshot(maps, statements=files)
        dirty = tuple(_dirty_list(newest[1]))
        return CoverageSnapshot(maps, newest[0], dirty, newest[2], statements=files)

    def recent_sessions(self, partition: Partition, limit: int = 20) -> list[SessionRecord]:
        return loaded(self._recent_sessions(stored_partition(partition), limit))

    def _recent_sessions(self, partition: Partition, limit: int) -> list[SessionRecord]:
        rows = self.conn.execute(
            f"SELECT {', '.join(_SESSION_FIELDS)} FROM sessions "
            "WHERE project = ? AND environment = ? ORDER BY started_at DESC, rowid DESC LIMIT ?",
            (partition.project, partition.environment, limit),
        ).fetchall()
        return [_session(row) for row in rows]

    # -- the read-only API -------------------------------------------------------------------
    def _rows(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the qlearn store {self.display_url}: {exc}") from exc

    def partitions(self, project: str | None = None) -> list[Partition]:
        project = None if project is None else to_store(project)
        rows = self._rows(
            "SELECT project, environment FROM sessions WHERE (? IS NULL OR project = ?) "
            # the scopes that hold Q-values (a cleanup may have emptied one)
            "UNION SELECT project, environment FROM q_scopes WHERE (? IS NULL OR project = ?) "
            "AND EXISTS (SELECT 1 FROM q_values v WHERE v.scope = q_scopes.scope) "
            "UNION SELECT project, environment FROM agent_states "
            "WHERE (? IS NULL OR project = ?)",
            (project, project) * 3,
        )
        found = loaded([Partition(str(p), str(e)) for p, e in rows])
        return sorted(found, key=lambda p: (p.project, p.environment))

    def q_values(
        self, partition: Partition, agent: str, limit: int | None = None, order: str = "q"
    ) -> list[QValueRecord]:
        if order not in Q_ORDERS:
            raise ValueError(f"order must be one of {', '.join(Q_ORDERS)}")
        partition, agent = stored_partition(partition), to_store(agent)
        by = Q_ORDER_SQL[order]
        rows = self._rows(
            "SELECT ?, state_hash, state_text, action, q, visits, updated_at, expires_at "
            f"FROM q_values WHERE {_IN_SCOPE} ORDER BY {by} LIMIT ?",
            (
                agent,
                partition.project,
                partition.environment,
                agent,
                -1 if limit is None else limit,
            ),
        )
        return loaded(
            [
                QValueRecord(a, s, t, int(n), float(q), int(v), float(u), float(x))
                for a, s, t, n, q, v, u, x in rows
            ]
        )

    def q_table_summaries(self, partition: Partition) -> dict[str, QTableSummary]:
        partition = stored_partition(partition)
        rows = self._rows(
            "SELECT s.agent, COUNT(*), COUNT(DISTINCT v.state_hash), SUM(v.visits), MIN(v.q), "
            "MAX(v.q), AVG(v.q), MAX(v.updated_at) FROM q_scopes s JOIN q_values v "
            "ON v.scope = s.scope WHERE s.project = ? AND s.environment = ? GROUP BY s.agent",
            (partition.project, partition.environment),
        )
        summaries = {
            row[0]: QTableSummary(
                row[0],
                int(row[1]),
                int(row[2]),
                int(row[3]),
                float(row[4]),
                float(row[5]),
                float(row[6]),
                float(row[7]),
            )
            for row in rows
        }
        return loaded(summaries)

    def agent_states(self, partition: Partition) -> dict[str, AgentState]:
        partition = stored_partition(partition)
        rows = self._rows(
            "SELECT agent, episodes, epsilon, reward_sum, rewards, last_active "
            "FROM agent_states WHERE project = ? AND environment = ?",
            (partition.project, partition.environment),
        )
        return loaded(
            {
                row[0]: AgentState(row[0], int(row[1]), row[2], float(row[3]), int(row[4]), row[5])
                for row in rows
            }
        )

    def sessions(self, partition: Partition, since: float | None = None) -> list[SessionRecord]:
        partition = stored_partition(partition)
        rows = self._rows(
            f"SELECT {', '.join(_SESSION_FIELDS)} FROM sessions "
            "WHERE project = ? AND environment = ? AND (? IS NULL OR started_at >= ?) "
            "ORDER BY started_at, rowid",
            (partition.project, partition.environment, since, since),
        )
        return loaded([_session(row) for row in rows])

    def rewards(
        self, partition: Partition, since: float | None = None
    ) -> dict[str, list[RewardEvent]]:
        partition = stored_partition(partition)
        out: dict[str, list[RewardEvent]] = {}
        for session_id, component, value, weight in self._rows(
            "SELECT r.session_id, r.component, r.value, r.weight FROM rewards AS r "
            "JOIN sessions AS s ON s.session_id = r.session_id "
            "WHERE s.project = ? AND s.environment = ? AND (? IS NULL OR s.started_at >= ?) "
            "ORDER BY s.started_at, s.rowid, r.component",
            (partition.project, partition.environment, since, since),
        ):
            out.setdefault(session_id, []).append(RewardEvent(component, value, weight))
        return loaded(out)

    def trajectories(
        self, partition: Partition, agent: str, limit: int | None = None
    ) -> list[TrajectoryRecord]:
        partition, agent = stored_partition(partition), to_store(agent)
        rows = self._rows(
            "SELECT t.session_id, s.started_at, t.agent, t.step, t.test_id, t.state_hash, "
            "t.action, t.explored, t.reward, t.next_state_hash FROM trajectories AS t "
            "JOIN sessions AS s ON s.session_id = t.session_id "
            "WHERE s.project = ? AND s.environment = ? AND t.agent = ? "
            "ORDER BY s.started_at DESC, s.rowid DESC, t.step LIMIT ?",
            (partition.project, partition.environment, agent, -1 if limit is None else limit),
        )
        return loaded(
            [
                TrajectoryRecord(i, float(t), a, int(n), tid, s, int(act), bool(e), float(r), nxt)
                for i, t, a, n, tid, s, act, e, r, nxt in rows
            ]
        )

    def episode_agent_stats(
        self, partition: Partition, agent: str, since: float | None = None
    ) -> dict[str, EpisodeAgentStats]:
        partition, agent = stored_partition(partition), to_store(agent)
        rows = self._rows(
            "SELECT t.session_id, COUNT(*), SUM(t.explored), SUM(t.reward) FROM trajectories AS t "
            "JOIN sessions AS s ON s.session_id = t.session_id "
            "WHERE s.project = ? AND s.environment = ? AND t.agent = ? "
            "AND (? IS NULL OR s.started_at >= ?) GROUP BY t.session_id",
            (partition.project, partition.environment, agent, since, since),
        )
        return loaded(
            {
                row[0]: EpisodeAgentStats(row[0], int(row[1]), int(row[2]), float(row[3]))
                for row in rows
            }
        )

    def patterns(self, partition: Partition) -> list[PatternDelta]:
        partition = stored_partition(partition)
        rows = self._rows(
            "SELECT agent, pattern_hash, description, occurrences, hits, reruns, rerun_passes, "
            "reward_sum FROM patterns "
            "WHERE project = ? AND environment = ? ORDER BY agent, pattern_hash",
            (partition.project, partition.environment),
        )
        return loaded(
            [
                PatternDelta(a, p, d, int(o), int(h), int(r), int(rp), float(rs))
                for a, p, d, o, h, r, rp, rs in rows
            ]
        )

    def agent_patterns(self, partition: Partition, agent: str) -> list[PatternDelta]:
        partition = stored_partition(partition)
        rows = self._rows(
            "SELECT agent, pattern_hash, description, occurrences, hits, reruns, rerun_passes, "
            "reward_sum FROM patterns "
            "WHERE project = ? AND environment = ? AND agent = ? ORDER BY pattern_hash",
            (partition.project, partition.environment, to_store(agent)),
        )
        return loaded(
            [
                PatternDelta(a, p, d, int(o), int(h), int(r), int(rp), float(rs))
                for a, p, d, o, h, r, rp, rs in rows
            ]
        )

    # -- writing ---------------------------------------------------------------------------
    def write_episode(self, write: EpisodeWrite, ttl_days: float = DEFAULT_TTL_DAYS) -> bool:
        with gc_paused():
            return self._write_episode(write, ttl_days)

    def _write_episode(self, write: EpisodeWrite, ttl_days: float) -> bool:
        conn = self.conn
        write = stored_write(write)
        now = time.time()
        expires = now + ttl_days * SECONDS_PER_DAY
        project, environment = write.partition.project, write.partition.environment
        session = write.session
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the qlearn store {self.display_url}: {exc}") from exc
        try:
            # the run's checkpoint (if any) is superseded by its episode, or by the one stored
            self._drop_checkpoint(session.session_id)
            exists = conn.execute(
                "SELECT 1 FROM sessions WHERE session_id = ?", (session.session_id,)
            ).fetchone()
            if exists:
                conn.execute("COMMIT")
                return False
            record = asdict(session)
            conn.execute(
                f"INSERT INTO sessions (project, environment, {', '.join(_SESSION_FIELDS)}) "
                f"VALUES (?, ?, {', '.join('?' * len(_SESSION_FIELDS))})",
                (project, environment, *(record[name] for name in _SESSION_FIELDS)),
            )
            conn.executemany(
                "INSERT INTO agent_types (name, description, actions, features, version, "
                "hyperparameters, registered_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET description = excluded.description, "
                "actions = excluded.actions, features = excluded.features, "
                "version = excluded.version, hyperparameters = excluded.hyperparameters, "
                "updated_at = excluded.updated_at",
                [
                    (
                        t.name,
                        t.description,
                        json.dumps(list(t.actions)),
                        json.dumps(list(t.features)),
                        t.version,
                        json.dumps(asdict(t.hyper), sort_keys=True),
                        now,
                        now,
                    )
                    for t in write.agent_types
                ],
            )
            for agent, deltas in write.q_deltas.items():
                if deltas:
                    scope = self._scope(project, environment, agent)
                    self._merge_q_deltas(scope, deltas, now, expires)
            if write.trajectories:
                # the fields of TrajectoryStep, explored as 0/1
                (agents, steps, test_ids, states, actions, explored, rewards, next_states) = zip(
                    *write.trajectories, strict=True
                )
                conn.executemany(
                    "INSERT INTO trajectories (session_id, agent, step, test_id, state_hash, "
                    "action, explored, reward, next_state_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    zip(
                        repeat(session.session_id),
                        agents,
                        steps,
                        test_ids,
                        states,
                        actions,
                        map(int, explored),
                        rewards,
                        next_states,
                    ),
                )
            conn.executemany(
                "INSERT INTO rewards (session_id, component, value, weight) VALUES (?, ?, ?, ?)",
                [(session.session_id, r.component, r.value, r.weight) for r in write.rewards],
            )
            conn.executemany(
                "INSERT INTO patterns (project, environment, agent, pattern_hash, description, "
                "occurrences, hits, reruns, rerun_passes, reward_sum, updated_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (project, environment, agent, pattern_hash) DO UPDATE SET "
                "occurrences = occurrences + excluded.occurrences, hits = hits + excluded.hits, "
                "reruns = reruns + excluded.reruns, "
                "rerun_passes = rerun_passes + excluded.rerun_passes, "
                "reward_sum = reward_sum + excluded.reward_sum, "
                "updated_at = excluded.updated_at, expires_at = excluded.expires_at",
                [
                    (
                        project,
                        environment,
                        p.agent,
                        p.pattern,
                        p.description,
                        p.occurrences,
                        p.hits,
                        p.reruns,
                        p.rerun_passes,
                        p.reward_sum,
                        now,
                        expires,
                    )
                    for p in write.patterns
                ],
            )
            conn.executemany(
                "INSERT INTO agent_states (project, environment, agent, episodes, epsilon, "
                "reward_sum, rewards, last_active) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (project, environment, agent) DO UPDATE SET "
                "episodes = episodes + excluded.episodes, "
                "epsilon = MIN(COALESCE(epsilon, excluded.epsilon), excluded.epsilon), "
                "reward_sum = reward_sum + excluded.reward_sum, "
                "rewards = rewards + excluded.rewards, last_active = excluded.last_active",
                [
                    (
                        project,
                        environment,
                        a.agent,
                        a.episodes,
                        a.epsilon,
                        a.reward_sum,
                        a.rewards,
                        now,
                    )
                    for a in write.agents
                ],
            )
            self._merge_histories(write, now, expires)
            conn.executemany(
                "INSERT INTO file_hashes (project, environment, path, digest, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project, environment, path) DO UPDATE SET "
                "digest = excluded.digest, updated_at = excluded.updated_at",
                [(project, environment, path, digest, now) for path, digest in write.file_hashes],
            )
            self._merge_pending_skips(write.pending_skips, (project, environment), now, expires)
            if write.coverage is not None:
                self._write_coverage(write.coverage, write, now)
            conn.execute("COMMIT")
            return True
        except BaseException as exc:
            _rollback(conn)
            if refuses_the_data(exc):
                raise StoreDataError(
                    f"the qlearn store {self.display_url} refused the episode's data: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"cannot write to the qlearn store {self.display_url}: {exc}"
                ) from exc
            raise

    def _scope(self, project: str, environment: str, agent: str) -> int:
        """The integer ``q_values`` keys an agent's Q-table in a partition by (made on its
        first write; inside the write transaction)."""
        conn = self.conn
        conn.execute(
            "INSERT INTO q_scopes (project, environment, agent) VALUES (?, ?, ?) "
            "ON CONFLICT (project, environment, agent) DO NOTHING",
            (project, environment, agent),
        )
        (scope,) = conn.execute(
            "SELECT scope FROM q_scopes WHERE project = ? AND environment = ? AND agent = ?",
            (project, environment, agent),
        ).fetchone()
        return int(scope)

    def _merge_q_deltas(
        self, scope: int, deltas: Sequence[QDelta], now: float, expires: float
    ) -> None:
        """``q = q + Δq``, ``visits = visits + Δvisits`` for each delta (an upsert), in key
        order: B-tree pages are visited once, in sequence (a session's deltas come in that
        order, so the sort only checks). (Updating the rows of stored states in place
        instead measured the same.)

        From :data:`STAGE_THRESHOLD` deltas on, they are staged first: bound as they are
        (five values a row, no tuple rebuilt per row) into a connection-private temporary
        table, then merged by one ``INSERT … SELECT … ON CONFLICT`` with the partition, the
        agent and the times bound once. The same upsert, in the same transaction and order;
        measured 15–20 % cheaper than ``executemany`` of the ten-value rows at 300,000
        deltas (the binding, and a statement step per row, were the difference)."""
        conn = self.conn
        ordered = sorted(deltas, key=_STATE_ACTION)
        if len(ordered) < STAGE_THRESHOLD:
            conn.executemany(
                "INSERT INTO q_values (scope, state_hash, action, state_text, q, visits, "
                "updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) " + _Q_UPSERT,
                _rows_of(ordered, (scope,), (0, 2, 1, 3, 4), (now, expires)),
            )
            return
        # created inside the write transaction: a rollback takes it away again
        conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_Q_STAGE} (state_hash TEXT, "
            "state_text TEXT NOT NULL DEFAULT '', action INTEGER, q REAL, visits INTEGER)"
        )
        conn.execute(f"DELETE FROM {_Q_STAGE}")
        # Bound as plain tuples: sqlite3 binds an exact tuple item by item, a named tuple
        # through the sequence protocol (300,000 rows: 0.53 s as QDelta, 0.38 s as tuples).
        # Only the rows of states new to the table carry a text (the stored text stays); the
        # others, most of a warm run's, are bound without it (0.29 s). Each group in key
        # order, the new states first.
        texted = list(map(_TEXT, ordered))
        if any(texted):
            conn.executemany(
                f"INSERT INTO {_Q_STAGE} VALUES (?, ?, ?, ?, ?)",  # QDelta's field order
                map(tuple, compress(ordered, texted)),
            )
        if not all(texted):
            conn.executemany(
                f"INSERT INTO {_Q_STAGE} (state_hash, action, q, visits) VALUES (?, ?, ?, ?)",
                map(_WITHOUT_TEXT, compress(ordered, map(not_, texted))),
            )
        del texted
        # ``WHERE true``: SQLite's parser needs it between a SELECT and ON CONFLICT
        conn.execute(
            "INSERT INTO q_values (scope, state_hash, action, state_text, q, visits, "
            "updated_at, expires_at) SELECT ?, state_hash, action, state_text, q, visits, ?, ? "
            f"FROM {_Q_STAGE} WHERE true ORDER BY rowid " + _Q_UPSERT,
            (scope, now, expires),
        )
        conn.execute(f"DELETE FROM {_Q_STAGE}")

    def _drop_checkpoint(self, session_id: str) -> None:
        self.conn.execute("DELETE FROM checkpoints WHERE session_id = ?", (session_id,))
        self.conn.execute("DELETE FROM checkpoint_results WHERE session_id = ?", (session_id,))

    # -- checkpoints -------------------------------------------------------------------------
    def push_checkpoint(self, push: CheckpointPush, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._in_write_transaction("write to", lambda conn: self._push(conn, push, now))

    def _push(self, conn: sqlite3.Connection, push: CheckpointPush, now: float) -> None:
        # the columns hold the run's ids as stored, the JSON its header and results as ASCII
        header, results = header_json(push.run), results_json(push.run)
        run = stored_push(push).run
        if conn.execute(
            "SELECT 1 FROM sessions WHERE session_id = ?", (run.session_id,)
        ).fetchone():
            return  # the run's episode is stored: nothing to keep
        held = conn.execute(
            "SELECT owner, pushes FROM checkpoints WHERE session_id = ?", (run.session_id,)
        ).fetchone()
        if held is None:
            conn.execute(
                "INSERT INTO checkpoints (session_id, project, environment, owner, heartbeat, "
                "beat, pushes, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run.session_id,
                    run.partition.project,
                    run.partition.environment,
                    run.owner,
                    now,
                    push.beat,
                    push.seq,
                    header,
                ),
            )
        elif held[0] != run.owner:
            return  # claimed by a later run meanwhile: its owner decides now
        elif held[1] < push.seq:
            conn.execute(
                "UPDATE checkpoints SET heartbeat = ?, beat = ?, pushes = ?, run = ? "
                "WHERE session_id = ?",
                (now, push.beat, push.seq, header, run.session_id),
            )
        conn.execute(
            "INSERT INTO checkpoint_results (session_id, seq, results) VALUES (?, ?, ?) "
            "ON CONFLICT (session_id, seq) DO NOTHING",
            (run.session_id, push.seq, results),
        )

    def beat_checkpoint(self, session_id: str, owner: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._in_write_transaction(
            "write to",
            lambda conn: conn.execute(
                "UPDATE checkpoints SET heartbeat = ? WHERE session_id = ? AND owner = ?",
                (now, to_store(session_id), to_store(owner)),
            ),
        )

    def claim_checkpoints(
        self, partition: Partition, claimer: str, now: float | None = None
    ) -> list[PendingRun]:
        now = time.time() if now is None else now
        stored_claim = (stored_partition(partition), to_store(claimer))
        return self._in_write_transaction(
            "claim checkpoints in", lambda conn: self._claim(conn, *stored_claim, claimer, now)
        )

    def _claim(
        self,
        conn: sqlite3.Connection,
        partition: Partition,
        stored_claimer: str,
        claimer: str,
        now: float,
    ) -> list[PendingRun]:
        """Claim the orphaned checkpoints of ``partition`` (as stored); the runs come from
        their ASCII JSON, with their ids as written."""
        runs = []
        for session_id, owner, heartbeat, beat, header in conn.execute(
            "SELECT session_id, owner, heartbeat, beat, run FROM checkpoints "
            "WHERE project = ? AND environment = ? ORDER BY session_id",
            (partition.project, partition.environment),
        ).fetchall():
            if not orphaned(from_store(owner), heartbeat, beat, now):
                continue
            conn.execute(
                "UPDATE checkpoints SET owner = ?, heartbeat = ? WHERE session_id = ?",
                (stored_claimer, now, session_id),
            )
            chunks = [
                row[0]
                for row in conn.execute(
                    "SELECT results FROM checkpoint_results WHERE session_id = ? ORDER BY seq",
                    (session_id,),
                )
            ]
            runs.append(claimed_run(header, chunks, claimer))
        return runs

    def _in_write_transaction(self, doing: str, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return result
        except sqlite3.Error as exc:
            raise StoreError(f"cannot {doing} the qlearn store {self.display_url}: {exc}") from exc

    def _merge_histories(self, write: EpisodeWrite, now: float, expires: float) -> None:
        """Apply this run's verdicts to the histories as stored *now* (under the write lock),
        so a concurrent run's verdicts are kept, not overwritten."""
        if not write.observations:
            return
        key = (write.partition.project, write.partition.environment)
        (sessions,) = self.conn.execute(
            "SELECT COUNT(*) FROM sessions WHERE project = ? AND environment = ?", key
        ).fetchone()
        partition_id = (self._partition_id(*key),)
        if takes_next_histories(write, sessions):
            self._upsert_histories(
                _rows_of(write.next_histories, partition_id, _HISTORY_COLUMNS, (now, expires))
            )
            return
        stored = {
            row[0]: TestHistory(*row)
            for row in self.conn.execute(
                f"SELECT {', '.join(_HISTORY_FIELDS)} FROM test_history WHERE partition_id = ?",
                partition_id,
            )
        }
        rows = []
        for obs in write.observations:
            history = stored.get(obs.test_id) or TestHistory(obs.test_id)
            updated = history.record(
                obs.verdict, obs.duration, write.session.episode, obs.fixture, obs.flaky
            )
            stored[obs.test_id] = updated
            rows.append((*partition_id, *updated, now, expires))
        self._upsert_histories(rows)

    def _partition_id(self, project: str, environment: str) -> int:
        """The integer ``test_history`` keys a partition by (made on its first write; inside
        the write transaction)."""
        conn = self.conn
        conn.execute(
            "INSERT INTO partition_keys (project, environment) VALUES (?, ?) "
            "ON CONFLICT (project, environment) DO NOTHING",
            (project, environment),
        )
        (partition_id,) = conn.execute(
            "SELECT partition_id FROM partition_keys WHERE project = ? AND environment = ?",
            (project, environment),
        ).fetchone()
        return int(partition_id)

    def _merge_pending_skips(
        self,
        deltas: Sequence[PendingSkipDelta],
        key: tuple[str, str],
        now: float,
        expires: float,
    ) -> None:
        """``count = count + Δ``; a count that drops to 0 or below is paid back: deleted."""
        if not deltas:
            return
        merged = merged_pending_skips(deltas)
        self.conn.executemany(
            "INSERT INTO pending_skips (project, environment, test_id, state_key, count, "
            "updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (project, environment, test_id, state_key) DO UPDATE SET "
            "count = count + excluded.count, updated_at = excluded.updated_at, "
            "expires_at = excluded.expires_at",
            [(*key, test_id, state, delta, now, expires) for (test_id, state), delta in merged],
        )
        # no row is left at 0 or below, so only this write's can be: one primary-key range
        self.conn.execute(
            "DELETE FROM pending_skips WHERE project = ? AND environment = ? AND count <= 0", key
        )

    def _upsert_histories(self, rows: Iterable[tuple[object, ...]]) -> None:
        self.conn.executemany(
            f"INSERT OR REPLACE INTO test_history (partition_id, "
            f"{', '.join(_HISTORY_FIELDS)}, updated_at, expires_at) "
            f"VALUES ({', '.join('?' * (len(_HISTORY_FIELDS) + 3))})",
            rows,
        )

    def _write_coverage(self, coverage: CoverageWrite, write: EpisodeWrite, now: float) -> None:
        key = (write.partition.project, write.partition.environment)
        self.conn.executemany(
            "INSERT INTO coverage_maps (project, environment, test_id, data, traced_episode, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project, environment, test_id) "
            "DO UPDATE SET data = excluded.data, traced_episode = excluded.traced_episode, "
            "updated_at = excluded.updated_at",
            [(*key, test_id, data, episode, now) for test_id, data, episode in coverage.maps],
        )
        self.conn.executemany(
            "INSERT INTO coverage_files (project, environment, path, digest, statements, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (project, environment, path) "
            "DO UPDATE SET digest = excluded.digest, statements = excluded.statements, "
            "updated_at = excluded.updated_at",
            [(*key, path, digest, ranges, now) for path, digest, ranges in coverage.statements],
        )
        self.conn.execute(
            "INSERT INTO coverage_runs (session_id, project, environment, started_at, "
            "vcs_commit, dirty, coverage_percent) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                write.session.session_id,
                *key,
                write.session.started_at,
                coverage.commit,
                json.dumps(sorted(coverage.dirty)),
                coverage.percent,
            ),
        )

    # -- maintenance -------------------------------------------------------------------------
    def cleanup(self, project: str, ttl_days: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        project = to_store(project)
        cutoff = now - ttl_days * SECONDS_PER_DAY
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            removed = 0
            removed += conn.execute(
                "DELETE FROM q_values WHERE scope IN (SELECT scope FROM q_scopes "
                "WHERE project = ?) AND (expires_at < ? OR updated_at < ?)",
                (project, now, cutoff),
            ).rowcount
            removed += conn.execute(
                "DELETE FROM test_history WHERE partition_id IN (SELECT partition_id FROM "
                "partition_keys WHERE project = ?) AND (expires_at < ? OR updated_at < ?)",
                (project, now, cutoff),
            ).rowcount
            for table in ("patterns", "pending_skips"):
                removed += conn.execute(
                    f"DELETE FROM {table} WHERE project = ? AND (expires_at < ? OR updated_at < ?)",
                    (project, now, cutoff),
                ).rowcount
            for table, column in _AGED_TABLES:
                removed += conn.execute(
                    f"DELETE FROM {table} WHERE project = ? AND {column} < ?", (project, cutoff)
                ).rowcount
            # a map outlives neither its test's history nor the TTL
            removed += conn.execute(
                "DELETE FROM coverage_maps WHERE project = ? AND (updated_at < ? OR NOT EXISTS ("
                "SELECT 1 FROM test_history h JOIN partition_keys k "
                "ON k.partition_id = h.partition_id WHERE k.project = coverage_maps.project "
                "AND k.environment = coverage_maps.environment "
                "AND h.test_id = coverage_maps.test_id))",
                (project, cutoff),
            ).rowcount
            # checkpoints nobody claimed within the TTL (the results go with them)
            conn.execute(
                "DELETE FROM checkpoint_results WHERE session_id IN (SELECT session_id FROM "
                "checkpoints WHERE project = ? AND heartbeat < ?)",
                (project, cutoff),
            )
            removed += conn.execute(
                "DELETE FROM checkpoints WHERE project = ? AND heartbeat < ?", (project, cutoff)
            ).rowcount
            # Trajectories are the bulky per-step log; sessions and rewards (the learning
            # curve) are kept.
            removed += conn.execute(
                "DELETE FROM trajectories WHERE session_id IN (SELECT session_id FROM sessions "
                "WHERE project = ? AND started_at < ?)",
                (project, cutoff),
            ).rowcount
            removed += conn.execute(
                "DELETE FROM trajectories WHERE session_id IN (SELECT session_id FROM ("
                "SELECT session_id, ROW_NUMBER() OVER (PARTITION BY environment "
                "ORDER BY started_at DESC, rowid DESC) AS newest FROM sessions "
                "WHERE project = ?) WHERE newest > ?)",
                (project, self.keep_trajectory_sessions),
            ).rowcount
            conn.execute(
                "INSERT INTO maintenance (project, last_cleanup) VALUES (?, ?) "
                "ON CONFLICT (project) DO UPDATE SET last_cleanup = excluded.last_cleanup",
                (project, now),
            )
            conn.execute("COMMIT")
            return removed
        except BaseException as exc:
            _rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(
                    f"cannot clean up the qlearn store {self.display_url}: {exc}"
                ) from exc
            raise

    def maybe_cleanup(self, project: str, ttl_days: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        row = self.conn.execute(
            "SELECT last_cleanup FROM maintenance WHERE project = ?", (to_store(project),)
        ).fetchone()
        if row is not None and now - float(row[0]) < CLEANUP_INTERVAL:
            return 0
        return self.cleanup(project, ttl_days, now)


#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
CORRUPTION_CODES = frozenset({11, 26})
#: Their messages, for Python 3.10, whose sqlite3 errors carry no code.
_CORRUPTION_MESSAGES = ("malformed", "not a database", "corrupt")


#: From this many Q deltas of an agent on, :meth:`SqliteStore._merge_q_deltas` stages them.
STAGE_THRESHOLD = 2_000
#: The staging table (``temp``: private to the connection, never in the store's file).
_Q_STAGE = "temp.qlearn_q_deltas"
_Q_UPSERT = (
    "ON CONFLICT (scope, state_hash, action) DO UPDATE SET "
    "q = q + excluded.q, visits = visits + excluded.visits, "
    "updated_at = excluded.updated_at, expires_at = excluded.expires_at"
)
#: A Q delta's (state, action), its primary key in a partition.
_STATE_ACTION = itemgetter(0, 2)
#: A Q delta's state text, and the delta without it (a plain tuple).
_TEXT, _WITHOUT_TEXT = itemgetter(1), itemgetter(0, 2, 3, 4)
#: ``q_values`` rows of one project (?), environment (?) and agent (?): none when the
#: agent never wrote there.
_IN_SCOPE = (
    "scope = (SELECT scope FROM q_scopes WHERE project = ? AND environment = ? AND agent = ?)"
)
#: ``test_history`` rows of one project (?) and environment (?).
_IN_PARTITION = (
    "partition_id = (SELECT partition_id FROM partition_keys WHERE project = ? AND environment = ?)"
)


def _rows_of(
    records: Sequence[tuple[Any, ...]],
    before: tuple[object, ...],
    fields: tuple[int, ...],
    after: tuple[object, ...],
) -> Iterator[tuple[Any, ...]]:
    """Statement parameters for each of ``records`` (tuples of equal length): ``before``,
    the records' ``fields`` in that order, then ``after``; built by zip, not a tuple display
    per record (a write has one per test and tier)."""
    if not records:
        return iter(())
    columns = list(zip(*records, strict=True))
    return zip(
        *(repeat(value) for value in before),
        *(columns[index] for index in fields),
        *(repeat(value) for value in after),
        strict=False,  # the repeats are endless; the columns are of equal length
    )


def is_corruption(exc: sqlite3.Error) -> bool:
    """Whether an error means the file itself is damaged (only then may a store be moved
    aside): ``SQLITE_CORRUPT`` or ``SQLITE_NOTADB`` (any extended code of theirs), read from
    ``sqlite_errorcode`` (Python 3.11+), else from the message. A full disk, an I/O error, a
    read-only file system or a permission error is not."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in CORRUPTION_CODES
    text = str(exc).lower()
    return any(word in text for word in _CORRUPTION_MESSAGES)


#: SQLITE_TOOBIG, SQLITE_MISMATCH, SQLITE_RANGE: the data, not the database, is at fault.
_DATA_CODES = frozenset({18, 20, 25})


def refuses_the_data(exc: BaseException) -> bool:
    """Whether a write failed for its data (and would fail again the same way): a value
    SQLite cannot bind or hold, a constraint it breaks. Not a locked, busy, full, read-only
    or failing disk."""
    if isinstance(exc, (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError)):
        return True
    if isinstance(exc, sqlite3.ProgrammingError):
        return "binding" in str(exc)  # not "Cannot operate on a closed database"
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return isinstance(code, int) and code & 0xFF in _DATA_CODES
    return isinstance(exc, (OverflowError, UnicodeError, TypeError, ValueError))


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is still open. SQLite rolls a transaction back itself on some errors (a
    COMMIT that hits a full disk): a ROLLBACK then would fail with "no transaction is active"
    and hide the real error, which is the one that propagates."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _apply(conn: sqlite3.Connection, statement: str | AddColumn | Rebuild) -> None:
    if isinstance(statement, str):
        conn.execute(statement)
        return
    table, column = statement.table, statement.column
    if column in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
        return
    if isinstance(statement, AddColumn):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {statement.definition}")
        return
    for step in statement.statements:
        conn.execute(step)


def _session(row: Sequence[Any]) -> SessionRecord:
    """A ``sessions`` row (its columns in :data:`_SESSION_FIELDS` order); ``partial`` is
    stored as an integer, read back as a bool."""
    record = dict(zip(_SESSION_FIELDS, row, strict=True))
    record["partial"] = bool(record["partial"])
    return SessionRecord(**record)


def _dirty_list(text: str) -> list[str]:
    """The stored dirty-file list; a damaged one counts as unknown (empty)."""
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _pending_skips(rows: Iterable[tuple[str, str, float]]) -> dict[str, dict[str, float]]:
    """Rows of (test id, state key, count) as test id -> {state key: count}."""
    out: dict[str, dict[str, float]] = {}
    for test_id, state_key, count in rows:
        out.setdefault(test_id, {})[state_key] = float(count)
    return out
