"""SQLite-specific store behaviour: the file, its journal mode, damaged or foreign files,
migrations, real multi-process writers, raw rows, and store URLs."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from builders import AGENT, PARTITION, episode_write, sqlite_schema_at
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.agents.prioritizer import TestRef
from pytest_qlearn.engine.history import FAILED, PASSED, SKIPPED, TestHistory
from pytest_qlearn.engine.hyperparams import ConfigError
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.store import (
    SchemaTooNewError,
    SqliteStore,
    StoreError,
    parse_store_url,
    redact,
)
from pytest_qlearn.store import sqlite as sqlite_store
from pytest_qlearn.store.base import (
    SCHEMA_VERSION,
    AgentProgress,
    EpisodeWrite,
    PatternDelta,
    PendingSkipDelta,
    QDelta,
    RewardEvent,
)


@contextmanager
def opened(path: str | Path, **kwargs: Any) -> Iterator[SqliteStore]:
    store = SqliteStore(path, **kwargs)
    store.open()
    try:
        yield store
    finally:
        store.close()


@contextmanager
def raw(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A plain connection in autocommit mode, closed afterwards."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "qlearn.sqlite3"


def q_table(store: SqliteStore, agent: str = AGENT) -> dict[tuple[str, int], tuple[float, int]]:
    snapshot = store.load_snapshot(PARTITION, [agent])
    return {(e.state, e.action): (e.q, e.visits) for e in snapshot.q_entries.get(agent, [])}


# -- the file ----------------------------------------------------------------------------------
def test_journal_mode_is_wal(db_path: Path) -> None:
    with opened(db_path), raw(db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with raw(db_path) as conn:  # WAL is persistent: it is a property of the file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def unusable_files(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.glob(path.name + ".*.unusable"))


def test_corrupt_file_is_moved_aside_with_a_warning(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    garbage = random.Random(0).randbytes(8192)
    db_path.write_bytes(garbage)
    warnings: list[str] = []

    with opened(db_path, on_warning=warnings.append) as store:
        (aside,) = unusable_files(db_path)
        assert len(warnings) == 1
        assert str(aside) in warnings[0]
        assert aside.read_bytes() == garbage
        assert store.schema_version() == SCHEMA_VERSION
        assert store.write_episode(episode_write("s1", q=[("s", 0, 1.0, 1)])) is True
        assert q_table(store) == {("s", 0): (1.0, 1)}

    with opened(db_path, on_warning=warnings.append) as store:  # the fresh store is kept
        assert q_table(store) == {("s", 0): (1.0, 1)}
    assert len(warnings) == 1


def test_foreign_database_is_moved_aside_and_preserved(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO customers (name) VALUES (?)", [("ada",), ("grace",)])
    original = db_path.read_bytes()
    warnings: list[str] = []

    with opened(db_path, on_warning=warnings.append) as store:
        (aside,) = unusable_files(db_path)
        assert len(warnings) == 1
        assert str(aside) in warnings[0]
        assert "not a pytest-qlearn store" in warnings[0]
        assert store.write_episode(episode_write("s1", q=[("s", 0, 1.0, 1)])) is True
        assert q_table(store) == {("s", 0): (1.0, 1)}

    assert aside.read_bytes() == original
    with raw(aside) as conn:
        assert conn.execute("SELECT name FROM customers ORDER BY id").fetchall() == [
            ("ada",),
            ("grace",),
        ]


def test_moving_aside_never_overwrites_an_earlier_unusable_file(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two damaged files found within the same second must both survive."""
    monkeypatch.setattr(time, "strftime", lambda *args: "20250101-000000")
    db_path.parent.mkdir(parents=True)
    contents = [random.Random(seed).randbytes(4096) for seed in (1, 2)]
    warnings: list[str] = []
    for garbage in contents:
        db_path.write_bytes(garbage)
        with opened(db_path, on_warning=warnings.append):
            pass
    assert len(warnings) == 2
    assert sorted(p.read_bytes() for p in unusable_files(db_path)) == sorted(contents)


@pytest.mark.parametrize("where", ["under-a-file", "deep-under-a-file", "is-a-directory"])
def test_unwritable_location_raises_store_error(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file, not a directory")
    path = {
        "under-a-file": blocker / "qlearn.sqlite3",
        "deep-under-a-file": blocker / "sub" / "qlearn.sqlite3",
        "is-a-directory": tmp_path,
    }[where]
    store = SqliteStore(path)

    with pytest.raises(StoreError) as info:
        store.open()

    message = str(info.value)
    assert "cannot open the qlearn store" in message
    assert str(path) in message
    assert blocker.read_text() == "a regular file, not a directory"
    with pytest.raises(StoreError, match="not open"):
        store.schema_version()
    store.close()


def file_state(path: Path) -> tuple[bytes, list[tuple[str, ...]]]:
    with raw(path) as conn:
        tables = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    return path.read_bytes(), tables


def test_newer_schema_is_refused_and_nothing_is_written(db_path: Path) -> None:
    with opened(db_path) as store:
        store.write_episode(episode_write("s1", q=[("s", 0, 1.0, 1)]))
    with raw(db_path) as conn:
        conn.execute(
            "INSERT INTO qlearn_schema (version, applied_at) VALUES (?, 0)", (SCHEMA_VERSION + 1,)
        )
    before = file_state(db_path)

    store = SqliteStore(db_path)
    with pytest.raises(SchemaTooNewError) as info:
        store.open()

    assert (info.value.found, info.value.known) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
    assert "upgrade pytest-qlearn" in str(info.value)
    assert str(db_path) in str(info.value)
    assert isinstance(info.value, StoreError)
    with pytest.raises(StoreError, match="not open"):
        store.write_episode(episode_write("s2", q=[("s", 0, 1.0, 1)]))
    store.close()
    assert file_state(db_path) == before


def test_store_of_a_future_version_gets_no_tables_of_ours(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE qlearn_schema (version INTEGER PRIMARY KEY, applied_at REAL)")
        conn.execute("CREATE TABLE q_values_v9 (anything TEXT)")
        conn.execute("INSERT INTO qlearn_schema VALUES (?, 0)", (SCHEMA_VERSION + 8,))
    before = file_state(db_path)

    with pytest.raises(SchemaTooNewError):
        SqliteStore(db_path).open()

    assert file_state(db_path) == before
    assert unusable_files(db_path) == []  # refused, not moved aside


def test_migrations_are_idempotent(db_path: Path) -> None:
    with opened(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        store.open()  # a second open of an open store is a no-op
        store.write_episode(episode_write("s1", q=[("s", 0, 1.0, 1)]))
    for _ in range(2):
        with opened(db_path) as store:
            assert store.schema_version() == SCHEMA_VERSION
            assert q_table(store) == {("s", 0): (1.0, 1)}
    with raw(db_path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM qlearn_schema ORDER BY 1")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


# -- concurrency -------------------------------------------------------------------------------
WORKERS = 4
WRITES_PER_WORKER = 15
STATES = ("s0", "s1", "s2")


def worker_deltas(worker: int, n: int) -> list[tuple[str, int, float, int]]:
    """Integer-valued (exactly summable) deltas, different for every worker and write."""
    return [
        (state, action, float((worker + 1) * (n + 1) * (action - 1) + i), 1 + (n + i) % 3)
        for i, state in enumerate(STATES)
        for action in range(3)
    ]


def write_from_process(path: str, worker: int, barrier: Any) -> None:
    store = SqliteStore(path, timeout=60.0)
    store.open()
    try:
        barrier.wait(timeout=60)
        for n in range(WRITES_PER_WORKER):
            written = store.write_episode(
                episode_write(
                    f"w{worker}-{n}",
                    q=worker_deltas(worker, n),
                    observations=[("t::shared", FAILED if n % 2 else PASSED, 1.0)],
                    patterns=[PatternDelta(AGENT, "pattern", "desc", 2, n % 2)],
                    agents=[AgentProgress(AGENT, 1, 0.2, 0.0, 1)],
                )
            )
            assert written
    finally:
        store.close()


def test_concurrent_processes_lose_nothing(db_path: Path) -> None:
    with opened(db_path):
        pass  # created and migrated up front; the processes race on the writes only
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    processes = [
        ctx.Process(target=write_from_process, args=(str(db_path), worker, barrier))
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=300)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    assert [p.exitcode for p in processes] == [0] * WORKERS

    expected: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    for worker in range(WORKERS):
        for n in range(WRITES_PER_WORKER):
            for state, action, dq, dn in worker_deltas(worker, n):
                expected[(state, action)][0] += dq
                expected[(state, action)][1] += dn
    total = WORKERS * WRITES_PER_WORKER
    with opened(db_path) as store:
        assert q_table(store) == {key: (q, int(n)) for key, (q, n) in expected.items()}
        snapshot = store.load_snapshot(PARTITION, [AGENT])
        assert snapshot.episodes == total
        assert snapshot.agent_states[AGENT].episodes == total
        history = snapshot.histories["t::shared"]
        assert (history.runs, history.failures) == (total, WORKERS * (WRITES_PER_WORKER // 2))
        assert store.conn.execute("SELECT occurrences, hits FROM patterns").fetchall() == [
            (2 * total, WORKERS * (WRITES_PER_WORKER // 2))
        ]


def test_snapshot_is_one_consistent_read_even_while_another_run_writes(db_path: Path) -> None:
    """A run's snapshot must be one consistent read: its session count must belong to its
    histories. Another run (its own connection) commits in the middle of ``load_snapshot``
    here: the trace callback fires as each statement starts. The run then writes with
    ``base_episodes`` taken from that snapshot, and no verdict may be lost."""
    test_id = "t::shared"
    with opened(db_path) as store, opened(db_path) as other:
        assert store.write_episode(episode_write("s0", observations=[(test_id, PASSED, 1.0)]))
        errors: list[BaseException] = []
        committed: list[str] = []

        def commit_meanwhile(statement: str) -> None:
            if "FROM sessions" in statement and not committed:
                committed.append(statement)
                try:
                    other.write_episode(
                        episode_write("other-run", observations=[(test_id, FAILED, 1.0)])
                    )
                except BaseException as exc:  # reported below; sqlite swallows it otherwise
                    errors.append(exc)

        store.conn.set_trace_callback(commit_meanwhile)
        try:
            snapshot = store.load_snapshot(PARTITION, [AGENT])
        finally:
            store.conn.set_trace_callback(None)
        assert errors == []
        assert len(committed) == 1
        assert [s.session_id for s in other.recent_sessions(PARTITION)] == ["other-run", "s0"]

        w = episode_write("this-run", observations=[(test_id, PASSED, 1.0)])
        w.base_episodes = snapshot.episodes
        w.next_histories = [snapshot.histories[test_id].record(PASSED, 1.0, w.session.episode)]
        assert store.write_episode(w)
        history = store.load_snapshot(PARTITION, [AGENT]).histories[test_id]

    assert (history.runs, history.failures) == (3, 1)


# When a property fails, hypothesis imports libcst to suggest a patch, and libcst warns on
# import; with warnings as errors that would turn a plain failure into an INTERNALERROR.
hypothesis_failure_report = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

delta_rows = st.tuples(
    st.sampled_from(["a", "b"]),  # agent
    st.sampled_from(["s0", "s1", "s2"]),  # state
    st.integers(0, 2),  # action
    st.integers(-4000, 4000).map(lambda k: k / 4),  # dq: dyadic, so sums are exact
    st.integers(0, 5),  # dvisits
)


@hypothesis_failure_report
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(delta_rows, max_size=30),
    writers=st.integers(1, 5),
    data=st.data(),
)
def test_any_partition_of_deltas_into_writes_sums_exactly(
    rows: list[tuple[str, str, int, float, int]], writers: int, data: st.DataObject
) -> None:
    assignment = data.draw(
        st.lists(st.integers(0, writers - 1), min_size=len(rows), max_size=len(rows))
    )
    batches: list[dict[str, list[QDelta]]] = [defaultdict(list) for _ in range(writers)]
    expected: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0.0, 0])
    for (agent, state, action, dq, dn), writer in zip(rows, assignment, strict=False):
        batches[writer][agent].append(QDelta(state, "", action, dq, dn))
        expected[(agent, state, action)][0] += dq
        expected[(agent, state, action)][1] += dn

    with tempfile.TemporaryDirectory() as directory, opened(Path(directory) / "q.db") as store:
        for i, batch in enumerate(batches):
            w = episode_write(f"session-{i}")
            w.q_deltas = dict(batch)
            assert store.write_episode(w) is True
        snapshot = store.load_snapshot(PARTITION, ["a", "b"])

    got = {
        (agent, e.state, e.action): (e.q, e.visits)
        for agent, entries in snapshot.q_entries.items()
        for e in entries
    }
    assert got == {key: (q, int(n)) for key, (q, n) in expected.items()}


@hypothesis_failure_report
@settings(max_examples=40, deadline=None)
@given(
    verdicts=st.lists(st.sampled_from([PASSED, FAILED, SKIPPED]), max_size=20),
    data=st.data(),
)
def test_any_partition_of_verdicts_into_writes_keeps_them_all(
    verdicts: list[str], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(verdicts)), max_size=4)))
    bounds = [0, *cuts, len(verdicts)]
    with tempfile.TemporaryDirectory() as directory, opened(Path(directory) / "q.db") as store:
        for i, (lo, hi) in enumerate(pairwise(bounds)):
            observations = [("t::x", v, 1.0) for v in verdicts[lo:hi]]
            assert store.write_episode(episode_write(f"s{i}", observations=observations))
        histories = store.load_snapshot(PARTITION, [AGENT]).histories

    counts = Counter(verdicts)
    if not verdicts:
        assert histories == {}
        return
    history = histories["t::x"]
    assert history.runs == counts[PASSED] + counts[FAILED]
    assert history.failures == counts[FAILED]
    assert history.verdicts == "".join(v for v in verdicts if v != SKIPPED)[-16:]


# -- raw rows ----------------------------------------------------------------------------------
WEIRD_IDS = [
    "tests/test_x.py::test_newline[first line\nsecond line\n]",
    "tests/test_x.py::test_crlf[a\r\nb\rc]",
    "tests/test_x.py::test_long[" + "-".join(f"param{i}" for i in range(2_000)) + "]",
]


def realistic_write(
    store: SqliteStore, session_id: str, test_ids: list[str], failing: str
) -> EpisodeWrite:
    snapshot = store.load_snapshot(PARTITION, [AGENT])
    session = LearningSession(snapshot, seed=7, session_id=session_id)
    refs = [TestRef(t, "tests/test_x.py", None, i) for i, t in enumerate(test_ids)]
    ranking = session.rank(refs)
    results = [
        TestResult(
            ref.test_id,
            FAILED if ref.test_id == failing else PASSED,
            0.25,
            ref.index,
            position,
            ranking.decisions[ref.test_id].tier,
            ranking.decisions[ref.test_id].explored,
        )
        for position, ref in enumerate(ranking.order)
    ]
    w, _ = session.finish(results, started_at=1_000.0, duration=1.0, exit_status=1)
    return w


def test_newline_and_long_parametrised_ids_round_trip(db_path: Path) -> None:
    with opened(db_path) as store:
        w = realistic_write(store, "s1", WEIRD_IDS, failing=WEIRD_IDS[0])
        assert store.write_episode(w) is True
        snapshot = store.load_snapshot(PARTITION, [AGENT])
        stored_ids = [t for (t,) in store.conn.execute("SELECT test_id FROM trajectories")]
    assert set(snapshot.histories) == set(WEIRD_IDS)
    assert {h.test_id for h in snapshot.histories.values()} == set(WEIRD_IDS)
    assert snapshot.histories[WEIRD_IDS[0]].failures == 1
    assert sorted(stored_ids) == sorted(WEIRD_IDS)


def test_trajectories_rewards_and_patterns_are_written(db_path: Path) -> None:
    ids = [f"tests/test_x.py::test_{i}" for i in range(4)]
    with opened(db_path) as store:
        first = realistic_write(store, "s1", ids, failing=ids[1])
        assert first.trajectories and first.patterns and first.rewards  # the test needs them
        assert store.write_episode(first) is True
        second = realistic_write(store, "s2", ids, failing=ids[2])
        assert store.write_episode(second) is True
        conn = store.conn
        trajectories = conn.execute(
            "SELECT agent, step, test_id, state_hash, action, explored, reward, "
            "next_state_hash FROM trajectories WHERE session_id = ? ORDER BY agent, step",
            ("s1",),
        ).fetchall()
        rewards = conn.execute(
            "SELECT component, value, weight FROM rewards WHERE session_id = ? ORDER BY 1",
            ("s2",),
        ).fetchall()
        patterns = conn.execute(
            "SELECT project, environment, agent, pattern_hash, description, occurrences, hits "
            "FROM patterns"
        ).fetchall()

    assert trajectories == [
        (
            t.agent,
            t.step,
            t.test_id,
            t.state,
            t.action,
            int(t.explored),
            t.reward,
            t.next_state,
        )
        for t in sorted(first.trajectories, key=lambda t: (t.agent, t.step))
    ]
    assert rewards == sorted((r.component, r.value, r.weight) for r in second.rewards)
    assert any(value is None for _, value, _ in rewards)  # "unavailable" stays NULL

    expected: dict[tuple[str, str], list[object]] = {}
    for p in [*first.patterns, *second.patterns]:
        held = expected.setdefault((p.agent, p.pattern), [p.description, 0, 0])
        held[1] += p.occurrences  # type: ignore[operator]
        held[2] += p.hits  # type: ignore[operator]
    assert sorted(patterns) == sorted(
        (PARTITION.project, PARTITION.environment, agent, pattern, *values)
        for (agent, pattern), values in expected.items()
    )
    assert sum(row[6] for row in patterns) == 2  # one failure per run, both counted


def test_pattern_counts_add_up_across_writes(db_path: Path) -> None:
    with opened(db_path) as store:
        store.write_episode(
            episode_write("s1", patterns=[PatternDelta(AGENT, "p", "new=True", 3, 1)])
        )
        store.write_episode(
            episode_write(
                "s2",
                patterns=[
                    PatternDelta(AGENT, "p", "new=True", 4, 2),
                    PatternDelta(AGENT, "q", "new=False", 1, 0),
                ],
            )
        )
        assert not store.write_episode(
            episode_write("s2", patterns=[PatternDelta(AGENT, "p", "new=True", 100, 100)])
        )
        rows = store.conn.execute(
            "SELECT pattern_hash, description, occurrences, hits FROM patterns ORDER BY 1"
        ).fetchall()
    assert rows == [("p", "new=True", 7, 3), ("q", "new=False", 1, 0)]


# -- URLs --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///rel.db", "rel.db"),
        ("sqlite:///.pytest_cache/qlearn/q.sqlite3", ".pytest_cache/qlearn/q.sqlite3"),
        ("sqlite:////abs/path.db", "/abs/path.db"),
        ("  SQLite:////abs/path.db  ", "/abs/path.db"),
    ],
)
def test_parse_store_url_accepts_sqlite_paths(url: str, path: str) -> None:
    parsed = parse_store_url(url)
    assert (parsed.scheme, parsed.path) == ("sqlite", path)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://x",
        "mysql://user:secret@host/db",
        "nonsense",
        "",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/x.db",
        "postgresql://u:secret@h:notaport/db",
        "postgresql://u:secret@h:99999/db",
        "postgresql://u:secret@[::1/db",
        "postgresql://u:secret@h/db?command_timeout=0",
        "postgresql://u:secret@h/db?connect_timeout=soon",
    ],
)
def test_parse_store_url_rejects_other_urls_without_leaking_passwords(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_store_url(url)
    message = str(info.value)
    assert "--qlearn-db" in message
    assert "sqlite:///" in message
    assert "sqlite:////" in message
    for shown in (message, repr(info.value), repr(info.value.args), repr(info.value.value)):
        assert "secret" not in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        (
            "postgres://u:secret@h:5432/db?sslmode=require",
            "postgres://u:***@h:5432/db?sslmode=require",
        ),
        ("postgresql://u@h/db?password=secret", "postgresql://u@h/db?password=***"),
        ("postgresql://u@127.0.0.1:5432/test", "postgresql://u@127.0.0.1:5432/test"),
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
        (
            "postgresql://u:secret@[::1]:5432/db?connect_timeout=2.5&command_timeout=30",
            "postgresql://u:***@[::1]:5432/db?connect_timeout=2.5&command_timeout=30",
        ),
    ],
)
def test_parse_store_url_accepts_postgresql_urls_and_shows_no_password(
    url: str, shown: str
) -> None:
    parsed = parse_store_url(url)
    assert parsed.scheme == "postgresql"
    assert parsed.raw == url
    assert parsed.display == shown
    assert "secret" not in repr(parsed.display)


def test_parse_store_url_names_the_key_it_was_given() -> None:
    with pytest.raises(ConfigError, match="QLEARN_DATABASE_URL"):
        parse_store_url("nonsense", key="QLEARN_DATABASE_URL")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u:secret@h:5432/db?sslmode=require",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("postgresql://u:p%40ss:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:secret@h/db", "postgresql://:***@h/db"),
        ("postgresql://u:secret@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////abs/path.db", "sqlite:////abs/path.db"),
    ],
)
def test_redact_hides_passwords_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/db?password=secret",
        "postgresql://u@h/db?sslmode=require&password=secret",
        "postgresql://u:secret@h:notaport/db",
        "postgresql://u:secret@[::1/db",
    ],
)
def test_redact_never_shows_a_password(url: str) -> None:
    assert "secret" not in redact(url)


def test_every_stored_q_row_carries_its_readable_state(db_path: Path) -> None:
    """Readable texts are built only for states new to the Q-table; every row still has one,
    and a per-test state's text names its test."""
    tests = ["t.py::test_a", "t.py::test_b[x;y=\\n]", "t.py::test_ü"]
    refs = [TestRef(test_id, "t.py", None, i) for i, test_id in enumerate(tests)]
    with opened(db_path) as store:
        for run in range(3):
            session = LearningSession(store.load_snapshot(PARTITION, [prio.NAME]), seed=run)
            ranking = session.rank(refs)
            results = [
                TestResult(
                    ref.test_id,
                    FAILED if (ref.index + run) % 2 else PASSED,
                    0.01,
                    ref.index,
                    position,
                    ranking.decisions[ref.test_id].tier,
                    ranking.decisions[ref.test_id].explored,
                )
                for position, ref in enumerate(ranking.order)
            ]
            write, _ = session.finish(results, started_at=1000.0 + run, duration=1.0, exit_status=1)
            assert store.write_episode(write)
    with raw(db_path) as conn:
        rows = conn.execute("SELECT state_hash, state_text FROM q_values").fetchall()
    assert len(rows) > 3 * len(tests)  # per-test states of several runs, plus shared ones
    assert all(text for _, text in rows)
    texts = {text for _, text in rows}
    for test_id in tests:
        assert any(f"test={test_id}" in text for text in texts)


def old_store(path: Path, version: int, q_rows: list[tuple[str, str, int, float, int]]) -> None:
    """A store as a pytest-qlearn of schema ``version`` left it (its migrations, applied as
    it applied them), holding ``q_rows`` (agent, state, action, q, visits) in ``PARTITION``
    — in the q_values of before version 10, keyed by project, environment and agent."""
    now = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    with raw(path) as conn:
        sqlite_schema_at(conn, version)
        conn.executemany(
            "INSERT INTO q_values (project, environment, agent, state_hash, action, "
            "state_text, q, visits, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    PARTITION.project,
                    PARTITION.environment,
                    agent,
                    state,
                    action,
                    f"text of {state}",
                    q,
                    visits,
                    now,
                    now + 86_400,
                )
                for agent, state, action, q, visits in q_rows
            ],
        )


def test_a_version_1_store_is_migrated_forward_keeping_what_it_learned(db_path: Path) -> None:
    old_store(db_path, 1, [(AGENT, "state", 0, 0.5, 2)])
    with opened(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 12
        assert q_table(store) == {("state", 0): (0.5, 2)}
        write = replace(episode_write("s2"), file_hashes=[("tests/test_a.py", "a1")])
        assert store.write_episode(write)
        assert store.load_snapshot(PARTITION, [AGENT]).file_hashes == {"tests/test_a.py": "a1"}


def test_a_version_2_store_loses_the_selectors_pending_rows_and_keeps_its_q_table(
    db_path: Path,
) -> None:
    pending_row = "selector:pending:k1:t.py::test_b"
    q = [("k1", 0, 0.5, 2), ("k1", 1, -0.25, 1), (pending_row, 1, 1.0, 1)]
    old_store(db_path, 2, [("selector", *row) for row in q])
    with opened(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 12
        assert q_table(store, "selector") == {("k1", 0): (0.5, 2), ("k1", 1): (-0.25, 1)}
        write = replace(episode_write("s2"), pending_skips=[PendingSkipDelta("t", "k", 1.0)])
        assert store.write_episode(write)
        assert store.load_snapshot(PARTITION, [AGENT]).pending_skips == {"t": {"k": 1.0}}


def test_a_version_9_store_keeps_every_q_value_and_history_exactly_under_integer_keys(
    db_path: Path,
) -> None:
    """Version 10 re-keys q_values by an integer scope per project, environment and agent,
    version 11 test_history by an integer partition: every row comes across bit for bit, with
    its text and times, and the migrated tables take deltas, reads, summaries and cleanup
    like new ones."""
    values = [0.1, -0.0, 1e-300, 2.0**52 + 0.5, -123.456789012345678, 1 / 3]
    rows = [
        (agent, f"s{i}", action, value * (action + 1), i + action)
        for agent in (AGENT, "selector")
        for i, value in enumerate(values)
        for action in range(2)
    ]
    old_store(db_path, 9, rows)
    history = TestHistory("t.py::test_ü", 7, 2, 3, "PFPPF", 5, 7, 1, 0.125, 1e-9, 0.5, 0.25, 1, 0.2)
    with raw(db_path) as conn:
        before = conn.execute(
            "SELECT agent, state_hash, action, state_text, q, visits, updated_at, expires_at "
            "FROM q_values ORDER BY agent, state_hash, action"
        ).fetchall()
        conn.execute(
            f"INSERT INTO test_history (project, environment, {', '.join(history._fields)}, "
            f"updated_at, expires_at) VALUES ({', '.join('?' * (len(history) + 4))})",
            (PARTITION.project, PARTITION.environment, *history, time.time(), time.time() + 1e6),
        )
    with opened(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.load_snapshot(PARTITION, [AGENT]).histories == {history.test_id: history}
        for agent in (AGENT, "selector"):
            assert q_table(store, agent) == {
                (state, action): (q, visits) for a, state, action, q, visits in rows if a == agent
            }
        records = [
            (r.agent, r.state, r.action, r.state_text, r.q, r.visits, r.updated_at, r.expires_at)
            for agent in sorted((AGENT, "selector"))
            for r in store.q_values(PARTITION, agent, order="key")
        ]
        assert records == before
        assert store.partitions() == [PARTITION]
        summaries = store.q_table_summaries(PARTITION)
        assert {a: (s.entries, s.states) for a, s in summaries.items()} == {
            AGENT: (12, 6),
            "selector": (12, 6),
        }
        assert store.write_episode(episode_write("s10", q=[("s0", 0, 0.25, 1), ("new", 2, 1.0, 1)]))
        assert q_table(store)[("s0", 0)] == (0.1 + 0.25, 0 + 1)
        assert q_table(store)[("new", 2)] == (1.0, 1)
        assert q_table(store, "selector")[("s0", 0)] == (0.1, 0)  # another agent's: untouched
        assert store.cleanup(PARTITION.project, ttl_days=30, now=time.time() + 400 * 86_400) > 0
        assert q_table(store) == {} and q_table(store, "selector") == {}


def test_a_staged_write_keeps_the_texts_of_known_states_and_takes_those_of_new_ones(
    tmp_path: Path,
) -> None:
    """A session sends a state's text only when the state is new to its Q-table; the staged
    merge binds the rows without a text apart from those with one: every row is added once,
    a stored text stays, a new state's text comes in."""
    n = sqlite_store.STAGE_THRESHOLD + 11
    first = [QDelta(f"s{i:05d}", f"old {i}", i % 3, 0.5 + i, 1) for i in range(n)]
    # known states (no text) interleaved in key order with new ones (a text)
    second = [
        QDelta(f"s{i:05d}", "" if i < n else f"new {i}", i % 3, 0.25, 2)
        for i in range(n // 2, n + n // 2)
    ]
    with opened(tmp_path / "q.db") as store:
        for session_id, deltas in (("one", first), ("two", second)):
            write = replace(episode_write(session_id), q_deltas={AGENT: deltas})
            assert store.write_episode(write) is True
        records = {(r.state, r.action): r for r in store.q_values(PARTITION, AGENT)}
    assert len(records) == n + n // 2
    for i in range(n + n // 2):
        record = records[(f"s{i:05d}", i % 3)]
        if i < n // 2:
            assert (record.state_text, record.q, record.visits) == (f"old {i}", 0.5 + i, 1)
        elif i < n:
            assert (record.state_text, record.q, record.visits) == (f"old {i}", 0.5 + i + 0.25, 3)
        else:
            assert (record.state_text, record.q, record.visits) == (f"new {i}", 0.25, 2)


def test_a_large_q_write_is_staged_added_and_rolled_back_whole(tmp_path: Path) -> None:
    """From ``STAGE_THRESHOLD`` deltas on, the Q deltas go through the temporary staging
    table: stored rows get their deltas added, new rows come in; a write that fails after
    staging leaves the Q-table as it was and the next write stages afresh."""
    from pytest_qlearn.store import sqlite as sqlite_store

    n = sqlite_store.STAGE_THRESHOLD + 7
    first = [(f"s{i:05d}", i % 3, 0.5 + i, 1) for i in range(n)]
    # half of them again, and as many new ones
    second = [(f"s{i:05d}", i % 3, 0.25, 2) for i in range(n // 2, n + n // 2)]
    with opened(tmp_path / "q.db") as store:
        assert store.write_episode(episode_write("one", first)) is True
        failing = episode_write("two", second)
        failing.rewards = [RewardEvent("total", 1.0, 1.0), RewardEvent("total", 2.0, 1.0)]
        with pytest.raises(StoreError):  # the second "total" breaks the rewards' key
            store.write_episode(failing)
        assert store.write_episode(episode_write("two", second)) is True
        entries = store.load_snapshot(PARTITION, [AGENT]).q_entries[AGENT]
    expected: dict[tuple[str, int], tuple[float, int]] = {
        (s, a): (dq, dn) for s, a, dq, dn in first
    }
    for s, a, dq, dn in second:
        q, visits = expected.get((s, a), (0.0, 0))
        expected[(s, a)] = (q + dq, visits + dn)
    assert {(e.state, e.action): (e.q, e.visits) for e in entries} == expected
