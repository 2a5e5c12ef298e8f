"""PostgreSQL-specific store behaviour against a real server (see ``conftest.py``): column
types, indexes, migrations under the advisory lock, refusal of a newer schema, the private
event loop, timeouts, password hygiene, bulk writes, hostile ids, concurrent writers."""

from __future__ import annotations

import asyncio
import random
import socket
import string
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from builders import AGENT, PARTITION, episode_write, session_record
from conftest import new_schema, pg_execute, with_query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.agents.prioritizer import TestRef
from pytest_qlearn.engine.history import FAILED, PASSED
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.store import SchemaTooNewError, StoreError, open_store, parse_store_url
from pytest_qlearn.store.base import (
    SCHEMA_VERSION,
    AgentProgress,
    CheckpointPush,
    EpisodeWrite,
    Partition,
    PendingRun,
    PendingSkipDelta,
    QDelta,
)
from pytest_qlearn.store.postgres import COPY_THRESHOLD, MIGRATIONS, PostgresStore, partition_key

TABLES = {
    "agent_types",
    "q_values",
    "sessions",
    "trajectories",
    "rewards",
    "patterns",
    "agent_states",
    "test_history",
    "maintenance",
    "file_hashes",
    "pending_skips",
    "coverage_maps",
    "coverage_runs",
    "coverage_files",
    "checkpoints",
    "checkpoint_results",
    "qlearn_schema",
}


@contextmanager
def opened(url: str, **kwargs: Any) -> Iterator[PostgresStore]:
    store = PostgresStore(url, **kwargs)
    store.open()
    try:
        yield store
    finally:
        store.close()


def tables(url: str) -> set[str]:
    rows = pg_execute(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    return {row[0] for row in rows}


def q_table(store: PostgresStore, partition: Partition = PARTITION) -> dict[Any, Any]:
    snapshot = store.load_snapshot(partition, [AGENT, "a", "b"])
    return {
        (agent, e.state, e.action): (e.q, e.visits)
        for agent, entries in snapshot.q_entries.items()
        for e in entries
    }


# -- the schema ----------------------------------------------------------------------------------
def test_the_partition_key_is_the_documented_sql_expression(pg_url: str) -> None:
    for project, environment in (("p", "e"), ("a:b", "c"), ("a", "b:c"), ("ü'; --", "🐍" * 900)):
        rows = pg_execute(pg_url, f"SELECT md5(md5($${project}$$) || md5($${environment}$$))::uuid")
        assert rows[0][0] == partition_key(project, environment)
    assert partition_key("a:b", "c") != partition_key("a", "b:c")


def test_every_float_is_double_precision_and_nothing_is_numeric(pg_url: str) -> None:
    with opened(pg_url):
        pass
    rows = pg_execute(
        pg_url,
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema()",
    )
    types = {(t, c): d for t, c, d in rows}
    assert {t for t, _ in types} == TABLES
    assert not [k for k, d in types.items() if d in ("numeric", "real", "money")]
    for column in ("q", "updated_at", "expires_at"):
        assert types[("q_values", column)] == "double precision"
    for column in ("started_at", "duration", "epsilon", "apfd", "collection_apfd", "reward"):
        assert types[("sessions", column)] == "double precision"
    assert types[("agent_states", "epsilon")] == "double precision"
    assert types[("test_history", "duration_mean")] == "double precision"
    assert types[("q_values", "visits")] == "bigint"


KEY = "md5(md5('p') || md5('e'))::uuid"
PART = f"partition_key = {KEY} AND project = 'p' AND environment = 'e'"


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (f"SELECT * FROM q_values WHERE {PART} AND agent = ANY(ARRAY['prioritizer'])", "q_values"),
        (f"SELECT * FROM test_history WHERE {PART}", "test_history_key"),
        (
            f"SELECT * FROM test_history WHERE {PART} AND md5(test_id)::uuid = md5('t')::uuid",
            "test_history_key",
        ),
        (f"SELECT * FROM sessions WHERE {PART} ORDER BY started_at DESC LIMIT 20", "sessions"),
        (f"SELECT * FROM agent_states WHERE {PART}", "agent_states_key"),
        (f"SELECT * FROM patterns WHERE {PART}", "patterns_key"),
        (f"SELECT * FROM pending_skips WHERE {PART}", "pending_skips_key"),
        ("SELECT * FROM trajectories WHERE session_id = 'x'", "trajectories_pkey"),
        ("SELECT * FROM sessions WHERE session_id = 'x'", "sessions_pkey"),
        (f"SELECT * FROM checkpoints WHERE partition_key = {KEY}", "checkpoints_partition"),
        ("SELECT * FROM checkpoints WHERE session_id = 'x'", "checkpoints_pkey"),
        (
            "SELECT * FROM checkpoint_results WHERE session_id = 'x' ORDER BY seq",
            "checkpoint_results_pkey",
        ),
    ],
)
def test_the_queries_are_served_by_indexes(pg_url: str, query: str, index: str) -> None:
    with opened(pg_url):
        pass
    plan = "\n".join(
        row[0] for row in pg_execute(pg_url, "SET enable_seqscan = off", f"EXPLAIN {query}")
    )
    assert "Seq Scan" not in plan
    assert index in plan, plan


def test_migrations_are_idempotent_and_recorded_once(pg_url: str) -> None:
    for _ in range(3):
        with opened(pg_url) as store:
            assert store.schema_version() == SCHEMA_VERSION
    # every statement may be applied again without harm
    for version in sorted(MIGRATIONS):
        pg_execute(pg_url, *MIGRATIONS[version])
    rows = pg_execute(pg_url, "SELECT version FROM qlearn_schema ORDER BY version")
    assert [row[0] for row in rows] == sorted(MIGRATIONS)
    assert sorted(MIGRATIONS)[-1] == SCHEMA_VERSION
    assert tables(pg_url) == TABLES


def test_a_version_2_schema_is_migrated_losing_the_selectors_pending_rows_only(
    pg_url: str,
) -> None:
    pending_row = "selector:pending:k1:t.py::test_b"
    with opened(pg_url) as store:
        q = [("k1", 0, 0.5, 2), (pending_row, 1, 1.0, 1)]
        assert store.write_episode(episode_write("s1", q=q, agent="selector"))
    # as a pytest-qlearn of schema version 2 left it
    pg_execute(
        pg_url,
        "DROP TABLE pending_skips",
        "DROP TABLE checkpoints",
        "DROP TABLE checkpoint_results",
        "DELETE FROM qlearn_schema WHERE version > 2",
    )
    with opened(pg_url) as store:
        assert store.schema_version() == SCHEMA_VERSION == 12
        snapshot = store.load_snapshot(PARTITION, ["selector"])
        assert [(e.state, e.action, e.q) for e in snapshot.q_entries["selector"]] == [
            ("k1", 0, 0.5)
        ]
        w = episode_write("s2")
        w.pending_skips = [PendingSkipDelta("t", "k", 1.0)]
        assert store.write_episode(w)
        assert store.load_snapshot(PARTITION, []).pending_skips == {"t": {"k": 1.0}}
    assert tables(pg_url) == TABLES


def test_ten_concurrent_starters_migrate_exactly_once(pg_url: str) -> None:
    starters = 10
    barrier = threading.Barrier(starters)
    errors: list[BaseException] = []
    versions: list[int] = []

    def start() -> None:
        store = PostgresStore(pg_url)
        try:
            barrier.wait(timeout=30)
            store.open()
            versions.append(store.schema_version())
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=start) for _ in range(starters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert versions == [SCHEMA_VERSION] * starters
    rows = pg_execute(pg_url, "SELECT version, applied_at FROM qlearn_schema")
    # each migration recorded once (the key would refuse a second)
    assert sorted(row[0] for row in rows) == sorted(MIGRATIONS)
    assert tables(pg_url) == TABLES


def test_newer_schema_is_refused_and_nothing_is_written(pg_url: str) -> None:
    with opened(pg_url) as store:
        assert store.write_episode(episode_write("s1", q=[("s", 0, 1.0, 1)]))
    pg_execute(pg_url, "INSERT INTO qlearn_schema VALUES (999, 0)")
    dump = "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM q_values), " \
        "(SELECT array_agg(version ORDER BY version) FROM qlearn_schema)"  # fmt: skip
    before = pg_execute(pg_url, dump)

    store = PostgresStore(pg_url)
    with pytest.raises(SchemaTooNewError) as info:
        store.open()
    message = str(info.value)
    assert "schema version 999" in message and "upgrade pytest-qlearn" in message
    assert "nothing was written" in message
    with pytest.raises(StoreError):
        store.write_episode(episode_write("s2"))
    store.close()
    assert pg_execute(pg_url, dump) == before


def test_a_schema_of_a_future_version_gets_no_tables_of_ours(pg_url: str) -> None:
    pg_execute(
        pg_url,
        "CREATE TABLE qlearn_schema (version integer PRIMARY KEY, applied_at float8 NOT NULL)",
        "INSERT INTO qlearn_schema VALUES (2, 0), (99, 0)",
    )
    with pytest.raises(SchemaTooNewError, match="schema version 99"):
        PostgresStore(pg_url).open()
    assert tables(pg_url) == {"qlearn_schema"}


# -- the event loop ----------------------------------------------------------------------------
def test_the_store_never_touches_the_callers_event_loop(pg_url: str) -> None:
    """A suite's loop (pytest-asyncio's, say) is current and even running while the store is
    used from it synchronously: the store's own loop lives in its own thread."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:

        async def inside_a_running_loop() -> int:
            running = asyncio.get_running_loop()
            with opened(pg_url) as store:
                assert store.write_episode(episode_write("s1", q=[("s", 0, 1.5, 1)]))
                entries = store.load_snapshot(PARTITION, [AGENT]).q_entries[AGENT]
            assert asyncio.get_running_loop() is running
            assert not running.is_closed()
            return len(entries)

        assert loop.run_until_complete(inside_a_running_loop()) == 1
        assert asyncio.get_event_loop_policy().get_event_loop() is loop
        assert not loop.is_closed()
        assert [t for t in asyncio.all_tasks(loop) if not t.done()] == []
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert not [t for t in threading.enumerate() if t.name == "pytest-qlearn-store"]


def test_floats_come_back_as_float_never_decimal(pg_url: str) -> None:
    with opened(pg_url) as store:
        progress = [AgentProgress(AGENT, 1, 0.2, 0.5, 1)]
        largest = 2**63 - 1  # the largest seed a BIGINT holds
        w1 = episode_write("s1", [("s", 0, 0.1, 1), ("s", 1, 1e-300, 2)], agents=progress)
        store.write_episode(w1)
        store.write_episode(episode_write("s2", [("s", 0, 0.2, 1)], agents=progress, seed=largest))
        snapshot = store.load_snapshot(PARTITION, [AGENT])
    for entry in snapshot.q_entries[AGENT]:
        assert type(entry.q) is float and type(entry.visits) is int
    assert {(e.state, e.action): e.q for e in snapshot.q_entries[AGENT]} == {
        ("s", 0): 0.1 + 0.2,
        ("s", 1): 1e-300,
    }
    state = snapshot.agent_states[AGENT]
    assert type(state.reward_sum) is float and type(state.episodes) is int
    assert snapshot.recent_sessions[0].seed == 2**63 - 1


# -- bulk writes ---------------------------------------------------------------------------------
def test_a_write_is_a_fixed_number_of_statements_whatever_its_size(pg_url: str) -> None:
    def statements_for(size: int, session_id: str) -> list[str]:
        ids = [f"tests/test_m.py::test_{i}" for i in range(size)]
        w = episode_write(
            session_id,
            q=[(f"state-{i}", i % 3, 0.5, 1) for i in range(size)],
            observations=[(t, PASSED, 0.1) for t in ids],
        )
        w.pending_skips = [PendingSkipDelta(t, "k", 1.0) for t in ids]
        log: list[str] = []
        with opened(pg_url) as store:
            assert store._conn is not None
            store._conn.add_query_logger(lambda record: log.append(record.query))
            assert store.write_episode(w)
        return log

    # parameter arrays below COPY_THRESHOLD deltas per agent, COPY from there on
    small, smaller = statements_for(COPY_THRESHOLD - 1, "small"), statements_for(10, "smaller")
    assert len(small) == len(smaller) <= 20, small
    large, larger = statements_for(COPY_THRESHOLD, "large"), statements_for(30_000, "larger")
    assert len(large) == len(larger) <= 30, large


def test_a_large_merge_by_copy_adds_up_exactly_for_two_agents_in_one_write(pg_url: str) -> None:
    n = COPY_THRESHOLD + 500
    first = episode_write("first", q=[(f"s{i}", i % 3, 0.5, 1) for i in range(n)])
    first.q_deltas["selector"] = [QDelta(f"x{i}", f"text x{i}", 1, 1.0, 2) for i in range(n)]
    # half of them known, half new, and one key given twice
    rows = [(f"s{i}", i % 3, 0.25, 2) for i in range(n // 2, n + n // 2)] + [("s0", 0, 1.0, 1)]
    second = episode_write("second", q=rows)
    second.q_deltas["selector"] = [QDelta(f"x{i}", "changed text", 1, -1.0, 1) for i in range(n)]
    with opened(pg_url) as store:
        assert store.write_episode(first) and store.write_episode(second)
        table = q_table(store)
        snapshot = store.load_snapshot(PARTITION, ["selector"])
    expected: dict[tuple[str, str, int], tuple[float, int]] = {}
    for s_, a, dq, dn in [(f"s{i}", i % 3, 0.5, 1) for i in range(n)] + rows:
        q, v = expected.get((AGENT, s_, a), (0.0, 0))
        expected[(AGENT, s_, a)] = (q + dq, v + dn)
    assert table == expected
    assert {(e.state, e.action, e.q, e.visits) for e in snapshot.q_entries["selector"]} == {
        (f"x{i}", 1, 0.0, 3) for i in range(n)
    }
    texts = pg_execute(pg_url, "SELECT DISTINCT state_text FROM q_values WHERE agent = 'selector'")
    assert len(texts) == n  # a state keeps the text it first came with


def test_a_write_is_one_transaction(pg_url: str) -> None:
    """A write that fails half-way (here: a trajectory step given twice violates the key)
    leaves nothing behind, not even its session row."""
    with opened(pg_url) as store:
        w = episode_write("broken", q=[("s", 0, 1.0, 1)], observations=[("t::a", PASSED, 1.0)])
        session = LearningSession(store.load_snapshot(PARTITION, [AGENT]), seed=1)
        good, _ = session.finish(
            [TestResult("t::a", PASSED, 1.0, 0, 0, 0, False)],
            started_at=1.0,
            duration=1.0,
            exit_status=0,
        )
        w.trajectories = good.trajectories * 2
        with pytest.raises(StoreError, match="UniqueViolation"):
            store.write_episode(w)
        assert store.recent_sessions(PARTITION) == []
        assert q_table(store) == {}
        # the connection is still usable, and the same session id can be written properly
        w.trajectories = good.trajectories
        assert store.write_episode(w)
    counts = pg_execute(
        pg_url,
        "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM trajectories), "
        "(SELECT count(*) FROM q_values), (SELECT count(*) FROM test_history)",
    )
    assert tuple(counts[0]) == (1, 1, 1, 1)


def test_duplicate_keys_in_one_write_are_summed(pg_url: str) -> None:
    with opened(pg_url) as store:
        store.write_episode(episode_write("s1", q=[("s", 0, 1.0, 1), ("s", 0, 2.0, 3)]))
        assert q_table(store) == {(AGENT, "s", 0): (3.0, 4)}


# -- hostile input -----------------------------------------------------------------------------
def _incompressible(rng: random.Random, length: int) -> str:
    alphabet = string.ascii_letters + string.digits + "'\";%_\\-[](){}ÄÖÜßπ∞🐍日本語\t"
    return "".join(rng.choice(alphabet) for _ in range(length))


@pytest.mark.parametrize("seed", [1, 2])
def test_hostile_incompressible_10k_ids_and_names_round_trip_exactly(
    pg_url: str, seed: int
) -> None:
    """Random 10 kB text does not compress: a B-tree entry of it would exceed PostgreSQL's
    ~2.7 kB limit, which is why keys of user text are indexed by their md5."""
    rng = random.Random(seed)
    partition = Partition(
        "proj'; DROP TABLE q_values; --" + _incompressible(rng, 10_000),
        'env"$1' + _incompressible(rng, 10_000),
    )
    ids = [f"tests/t.py::test[{_incompressible(rng, 10_000)}]" for _ in range(3)]
    ids.append("tests/t.py::test[x'); DELETE FROM sessions; --]")
    with opened(pg_url) as store:
        w = episode_write(
            "hostile",
            partition=partition,
            q=[("state", 0, 1.25, 1)],
            observations=[(t, FAILED, 1.0) for t in ids],
        )
        assert store.write_episode(w)
        assert store.write_episode(episode_write("again", partition=partition, observations=[
            (ids[0], PASSED, 2.0)]))  # fmt: skip
        snapshot = store.load_snapshot(partition, [AGENT])
        assert set(snapshot.histories) == set(ids)
        assert snapshot.histories[ids[0]].verdicts == "FP"
        assert snapshot.episodes == 2
        assert q_table(store, partition) == {(AGENT, "state", 0): (1.25, 1)}
        for near in (Partition(partition.project[:-1], partition.environment),):
            assert store.load_snapshot(near, [AGENT]).episodes == 0
    rows = pg_execute(pg_url, "SELECT project, environment, test_id FROM test_history")
    assert {tuple(r) for r in rows} == {(partition.project, partition.environment, t) for t in ids}
    assert tables(pg_url) == TABLES


# -- failures, timeouts and passwords ----------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_a_store_error_without_the_password() -> None:
    url = f"postgresql://ci:hunter2secret@127.0.0.1:{_closed_port()}/db?connect_timeout=5"
    store = open_store(parse_store_url(url))
    with pytest.raises(StoreError) as info:
        store.open()
    for text in (str(info.value), repr(info.value), repr(store), repr(vars(store))):
        assert "hunter2" not in text
    assert "ci:***@127.0.0.1" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None
    store.close()


def test_a_driver_error_that_quotes_the_url_or_password_is_scrubbed() -> None:
    url = "postgresql://ci:hunter2secret@127.0.0.1:1/db?sslmode=bogus"
    store = PostgresStore(url)
    with pytest.raises(StoreError) as info:
        store.open()
    assert "ClientConfigurationError" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert info.value.__context__ is None
    # whatever a driver puts in its message: the URL, the DSN asyncpg got, the bare password
    for quoted in (url, "postgresql://ci:hunter2secret@127.0.0.1:1/db", "hunter2secret"):
        described = store._describe(ValueError(f"cannot use {quoted}!"))
        assert "hunter2" not in described and described.startswith("ValueError: cannot use")


def test_connect_timeout_is_enforced() -> None:
    """A server that accepts the TCP connection and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = PostgresStore(f"postgresql://u:pw@127.0.0.1:{port}/db?connect_timeout=0.5")
        started = time.perf_counter()
        with pytest.raises(StoreError, match=r"timed out|Timeout"):
            store.open()
        assert time.perf_counter() - started < 10
        store.close()


def test_command_timeout_is_enforced_and_the_store_stays_safe(pg_url: str) -> None:
    with opened(with_query(pg_url, command_timeout="0.5")) as store:
        store.write_episode(episode_write("s1"))

        async def hold_the_partition_lock(release: threading.Event) -> None:
            conn = await asyncpg.connect(pg_url)
            try:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended('pytest-qlearn ' || $1, 0))",
                        str(partition_key(PARTITION.project, PARTITION.environment)),
                    )
                    held.set()
                    while not release.is_set():
                        await asyncio.sleep(0.05)
            finally:
                await conn.close()

        held, release = threading.Event(), threading.Event()
        holder = threading.Thread(
            target=lambda: asyncio.run(hold_the_partition_lock(release)), daemon=True
        )
        holder.start()
        assert held.wait(30)
        try:
            started = time.perf_counter()
            with pytest.raises(StoreError, match=r"[Tt]ime"):
                store.write_episode(episode_write("s2"))
            assert time.perf_counter() - started < 10
        finally:
            release.set()
            holder.join(30)
    with opened(pg_url) as store:
        assert [s.session_id for s in store.recent_sessions(PARTITION)] == ["s1"]


# -- concurrent writers --------------------------------------------------------------------------
delta_rows = st.tuples(
    st.sampled_from(["a", "b"]),  # agent
    st.sampled_from(["s0", "s1", "s2"]),  # state
    st.integers(0, 2),  # action
    st.integers(-4000, 4000).map(lambda k: k / 4),  # dq: dyadic, so sums are exact
    st.integers(0, 5),  # dvisits
)


@pytest.fixture(scope="module")
def writers_url(pg_server: str) -> Iterator[str]:
    from conftest import drop_schema

    name, url = new_schema(pg_server)
    try:
        yield url
    finally:
        drop_schema(pg_server, name)


@pytest.fixture(scope="module")
def writers(writers_url: str) -> Iterator[list[PostgresStore]]:
    stores = [PostgresStore(writers_url) for _ in range(4)]
    try:
        for store in stores:
            store.open()
        yield stores
    finally:
        for store in stores:
            store.close()


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.lists(delta_rows, max_size=40), data=st.data())
def test_any_interleaving_of_concurrent_delta_writes_sums_exactly(
    writers: list[PostgresStore], rows: list[tuple[str, str, int, float, int]], data: Any
) -> None:
    """Writes go through four connections from four threads at once; which write goes to
    which connection, and in which order each connection sends its writes, is drawn."""
    partition = Partition("interleaving", f"example-{time.perf_counter_ns()}")
    n_writes = data.draw(st.integers(1, 8))
    assignment = data.draw(st.lists(st.integers(0, n_writes - 1), min_size=len(rows),
                                    max_size=len(rows)))  # fmt: skip
    batches: list[dict[str, list[QDelta]]] = [defaultdict(list) for _ in range(n_writes)]
    expected: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    for (agent, state, action, dq, dn), i in zip(rows, assignment, strict=True):
        batches[i][agent].append(QDelta(state, "", action, dq, dn))
        expected[(agent, state, action)][0] += dq
        expected[(agent, state, action)][1] += dn
    owner = data.draw(st.lists(st.integers(0, len(writers) - 1), min_size=n_writes,
                               max_size=n_writes))  # fmt: skip
    queues: list[list[EpisodeWrite]] = [[] for _ in writers]
    for i, batch in enumerate(batches):
        w = episode_write(f"{partition.environment}-{i}", partition=partition)
        w.q_deltas = dict(batch)
        queues[owner[i]].append(w)
    queues = [data.draw(st.permutations(queue)) for queue in queues]
    barrier = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def send(store: PostgresStore, queue: list[EpisodeWrite]) -> None:
        try:
            barrier.wait(timeout=30)
            for w in queue:
                assert store.write_episode(w) is True
        except BaseException as exc:  # asserted below
            errors.append(exc)

    threads = [
        threading.Thread(target=send, args=(store, queue))
        for store, queue in zip(writers, queues, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    snapshot = writers[0].load_snapshot(partition, ["a", "b"])
    got = {
        (agent, e.state, e.action): (e.q, e.visits)
        for agent, entries in snapshot.q_entries.items()
        for e in entries
    }
    assert got == {key: (q, int(n)) for key, (q, n) in expected.items()}
    assert snapshot.episodes == n_writes


def test_concurrent_learning_sessions_keep_every_verdict(pg_url: str) -> None:
    """Eight sessions learned from one snapshot and write at once: all histories add up."""
    ids = [f"tests/test_m.py::test_{i}" for i in range(12)]
    with opened(pg_url) as store:
        assert store.write_episode(episode_write("base", q=[("s", 0, 1.0, 1)]))
        snapshots = [store.load_snapshot(PARTITION, [AGENT]) for _ in range(8)]
    writes = []
    for run, snapshot in enumerate(snapshots):  # every run starts from the same stored state
        session = LearningSession(snapshot, seed=run, session_id=f"run-{run}")
        refs = [TestRef(t, "tests/test_m.py", None, i) for i, t in enumerate(ids)]
        ranking = session.rank(refs)
        results = [
            TestResult(
                ref.test_id,
                FAILED if ref.index == run else PASSED,
                0.01,
                ref.index,
                pos,
                ranking.decisions[ref.test_id].tier,
                ranking.decisions[ref.test_id].explored,
            )
            for pos, ref in enumerate(ranking.order)
        ]
        w, _ = session.finish(results, started_at=float(run), duration=1.0, exit_status=1)
        writes.append(w)
    stores = [PostgresStore(pg_url) for _ in writes]
    barrier = threading.Barrier(len(writes))
    errors: list[BaseException] = []

    def send(store: PostgresStore, w: EpisodeWrite) -> None:
        try:
            store.open()
            barrier.wait(timeout=30)
            assert store.write_episode(w)
        except BaseException as exc:  # asserted below
            errors.append(exc)
        finally:
            store.close()

    pairs = zip(stores, writes, strict=True)
    threads = [threading.Thread(target=send, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with opened(pg_url) as store:
        final = store.load_snapshot(PARTITION, [AGENT])
    assert final.episodes == 9
    for i, test_id in enumerate(ids):
        history = final.histories[test_id]
        assert history.runs == 8
        assert history.failures == (1 if i < 8 else 0)
    expected: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    expected[("s", 0)] = [1.0, 1]
    for w in writes:
        for d in w.q_deltas[AGENT]:
            expected[(d.state, d.action)][0] += d.dq
            expected[(d.state, d.action)][1] += d.dvisits
    got = {(e.state, e.action): (e.q, e.visits) for e in final.q_entries[AGENT]}
    assert set(got) == set(expected)
    for key, (q, visits) in expected.items():
        assert got[key][1] == visits
        assert got[key][0] == pytest.approx(q, rel=1e-12, abs=1e-12)


# -- checkpoints of runs in progress -----------------------------------------------------------
def checkpoint(seq: int, results: list[list[Any]], beat: float, owner: str) -> CheckpointPush:
    run = PendingRun(PARTITION, "long-run", 1, "reorder", 1_000.0, 3.0, 2, True, results, owner)
    return CheckpointPush(run, seq, beat)


def test_a_background_push_lands_and_its_heartbeat_keeps_beating(pg_url: str) -> None:
    owner = "far-away-runner:7"
    with opened(pg_url) as store:
        store.push_checkpoint_soon(
            checkpoint(1, [["t::a", PASSED, 1.0, 0, 0, 1, False]], 0.05, owner)
        ).result(30)
        [(first,)] = pg_execute(pg_url, "SELECT heartbeat FROM checkpoints")
        deadline = time.monotonic() + 60
        while pg_execute(pg_url, "SELECT heartbeat FROM checkpoints")[0][0] == first:
            assert time.monotonic() < deadline, "the heartbeat never beat"
            time.sleep(0.02)
        # the store's other calls share the connection with the heartbeat meanwhile
        for _ in range(20):
            assert store.load_snapshot(PARTITION, [AGENT]).episodes == 0
        write = EpisodeWrite(PARTITION, session_record("long-run"), [prio.agent_type()])
        assert store.write_episode(write)
    assert pg_execute(pg_url, "SELECT count(*) FROM checkpoints")[0][0] == 0
    assert pg_execute(pg_url, "SELECT count(*) FROM checkpoint_results")[0][0] == 0


def test_a_background_push_to_a_closed_store_fails_without_the_password(pg_url: str) -> None:
    store = PostgresStore(pg_url.replace("postgres@", "postgres:sekrit@", 1))
    future = store.push_checkpoint_soon(checkpoint(1, [], 60.0, "h:1"))
    with pytest.raises(StoreError, match="not open") as info:
        future.result(5)
    assert "sekrit" not in str(info.value)


def test_concurrent_claimers_get_an_orphaned_checkpoint_exactly_once(pg_url: str) -> None:
    with opened(pg_url) as store:
        for seq in (1, 2):
            result = ["t::" + str(seq), PASSED, 1.0, seq, seq, 1, False]
            store.push_checkpoint(checkpoint(seq, [result], 60.0, "gone-runner:1"), now=1_000.0)
    claimers = 8
    barrier = threading.Barrier(claimers)
    claimed: list[list[PendingRun]] = []
    errors: list[BaseException] = []

    def claim(i: int) -> None:
        try:
            with opened(pg_url) as store:
                barrier.wait(30)
                claimed.append(store.claim_checkpoints(PARTITION, f"claimer-{i}:1", now=1e9))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    winners = [runs for runs in claimed if runs]
    assert len(claimed) == claimers and len(winners) == 1
    [run] = winners[0]
    assert [r[0] for r in run.results] == ["t::1", "t::2"]
