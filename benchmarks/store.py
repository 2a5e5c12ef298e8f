"""Store benchmarks: bulk delta merges, warm-start loads, and ``pytest --qlearn`` overhead with
the PostgreSQL store.

DESIGN.md budgets: 100,000 Q-value deltas merged in at most 1 s into PostgreSQL and into
SQLite; on 5,000 trivial tests ``pytest --qlearn`` takes at most 1.05x the wall time of plain
pytest with PostgreSQL (same machine, same run, median of several).

1. **Merge**: one episode write carrying 100,000 Q deltas, into an empty table (all inserts)
   and again into the full one (all conflicts: ``q = q + Δ``, ``visits = visits + n``).
2. **Warm start**: ``load_snapshot`` of a partition holding those 100,000 entries.
3. **Overhead**: interleaved pairs of subprocess runs, plain pytest vs ``pytest --qlearn
   --qlearn-db postgresql://...`` (the project generator and runner of ``overhead.py``).

The PostgreSQL server is ``--db URL``, else ``$QLEARN_TEST_DATABASE_URL``, else a throwaway
server from the ``pgserver`` package; everything goes into a fresh schema that is dropped at
the end. A measurement, not a test: it always exits 0.

    python benchmarks/store.py [--deltas 100000] [--repeat 3] [--pairs 7] [--tests 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # the project generator and runner are shared

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.store import SqliteStore, Store
from pytest_qlearn.store.base import (
    AgentProgress,
    EpisodeWrite,
    Partition,
    QDelta,
    SessionRecord,
)
from pytest_qlearn.store.postgres import PostgresStore

MERGE_TARGET = 1.0  # seconds, both stores
PG_OVERHEAD_TARGET = 1.05
PARTITION = Partition("benchmark", "py3")


@contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    url = url or os.environ.get("QLEARN_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    with tempfile.TemporaryDirectory(prefix="qlearn-bench-pg-") as directory:
        server = pgserver.get_server(directory, cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def fresh_schema(server_url: str) -> contextlib.AbstractContextManager[str]:
    return overhead.fresh_schema(server_url, prefix="qlearn_bench")


def delta_write(session_id: str, n: int, seed: int) -> EpisodeWrite:
    # realistic keys: SHA-256 state hashes with a readable form, three actions per state
    deltas = [
        QDelta(
            hashlib.sha256(f"state {i // 3}".encode()).hexdigest(),
            f"recent=PPF since_fail=1 rate=low duration=fast id={i // 3}",
            i % 3,
            0.001 * (i % 97) - 0.02,
            1 + i % 2,
        )
        for i in range(n)
    ]
    return EpisodeWrite(
        partition=PARTITION,
        session=SessionRecord(
            session_id, time.time(), 1.0, n, 0, seed, 0.2, n, None, None, 0.0, 0, "reorder", 1
        ),
        agent_types=[prio.agent_type()],
        q_deltas={prio.NAME: deltas},
        agents=[AgentProgress(prio.NAME, 1, 0.2, 0.0, 1)],
    )


def bench_store(name: str, make: Callable[[], Store], deltas: int, repeat: int) -> list[str]:
    """Fresh storage per repetition: (insert all, merge all, load all) timings."""
    inserts, merges, loads = [], [], []
    entries = 0
    for r in range(repeat):
        store = make()
        store.open()
        try:
            # Build the writes first: only the store's own work is timed.
            first, second = delta_write(f"i{r}", deltas, 1), delta_write(f"m{r}", deltas, 1)
            start = time.perf_counter()
            store.write_episode(first)
            inserts.append(time.perf_counter() - start)
            start = time.perf_counter()
            store.write_episode(second)
            merges.append(time.perf_counter() - start)
            start = time.perf_counter()
            snapshot = store.load_snapshot(PARTITION, [prio.NAME])
            loads.append(time.perf_counter() - start)
            entries = len(snapshot.q_entries[prio.NAME])
        finally:
            store.close()
    lines = []
    for label, times, target in (
        (f"merge {deltas:,} deltas into an empty table", inserts, MERGE_TARGET),
        (f"merge {deltas:,} deltas, every one a conflict (q = q + Δ)", merges, MERGE_TARGET),
        (f"warm-start load of {entries:,} entries", loads, None),
    ):
        median = statistics.median(times)
        verdict = "" if target is None else (" MET" if median <= target else " NOT MET")
        target_text = "" if target is None else f" (target <= {target:.1f}s){verdict}"
        spread = ", ".join(f"{t:.3f}" for t in times)
        lines.append(f"{name:10} {label}: median {median:.3f}s [{spread}]{target_text}")
    return lines


def bench_overhead(url: str, tests: int, pairs: int) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="qlearn-store-overhead-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        failing = overhead.generate_project(project, tests)
        env = overhead.clean_env()
        plain = ["-p", "no:qlearn"]
        qlearn = ["--qlearn", "--qlearn-db", url]
        lines = [f"project: {tests} tests in {min(overhead.MODULES, tests)} modules, "
                 f"{failing} failing"]  # fmt: skip
        overhead.run(plain, project, env)  # warm-up of each arm; the qlearn one fills the store
        _, said = overhead.run(qlearn, project, env)
        messages = set(said.splitlines())
        ratios, cpu_ratios, plain_times, qlearn_times = [], [], [], []
        for pair in range(1, pairs + 1):
            p, p_cpu, _ = overhead.run_timed(plain, project, env)
            q, q_cpu, said = overhead.run_timed(qlearn, project, env)
            messages.update(said.splitlines())
            plain_times.append(p)
            qlearn_times.append(q)
            ratios.append(q / p)
            cpu_ratios.append(q_cpu / p_cpu)
            lines.append(
                f"  pair {pair}: plain {p:.3f}s, qlearn {q:.3f}s, ratio {q / p:.3f} "
                f"(CPU {p_cpu:.2f}s vs {q_cpu:.2f}s, ratio {q_cpu / p_cpu:.3f})"
            )
        ratio = statistics.median(ratios)
        verdict = "MET" if ratio <= PG_OVERHEAD_TARGET else "NOT MET"
        lines.append(
            f"median plain {statistics.median(plain_times):.3f}s, median qlearn "
            f"{statistics.median(qlearn_times):.3f}s; median per-pair ratio {ratio:.3f} "
            f"(target <= {PG_OVERHEAD_TARGET:.2f} with PostgreSQL): {verdict}"
        )
        # the pytest process's own CPU time (the server's work is not in it): far steadier
        # than wall time on a shared machine
        lines.append(f"median per-pair ratio of CPU time {statistics.median(cpu_ratios):.3f}")
        lines += [f"  qlearn printed: {m}" for m in sorted(messages) if "warning" in m]
        return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--db", help="PostgreSQL server URL (default: see above)")
    parser.add_argument("--deltas", type=int, default=100_000, help="Q deltas (100000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of merge/load (3)")
    parser.add_argument("--pairs", type=int, default=7, help="timed plain/qlearn pairs (7)")
    parser.add_argument("--tests", type=int, default=5000, help="generated tests (5000)")
    parser.add_argument("--skip-overhead", action="store_true", help="only merge and load")
    options = parser.parse_args(argv)
    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.platform()}"
    )
    deltas, repeat = max(1, options.deltas), max(1, options.repeat)
    with tempfile.TemporaryDirectory(prefix="qlearn-bench-sqlite-") as tmp:
        counter = iter(range(1_000_000))
        for line in bench_store(
            "sqlite", lambda: SqliteStore(Path(tmp) / f"q{next(counter)}.db"), deltas, repeat
        ):
            print(line, flush=True)
    with postgres_server(options.db) as server:
        from pytest_qlearn.store.url import redact

        print(f"postgresql server: {redact(server)}")
        with ExitStack() as schemas:  # one fresh schema per repetition, all dropped at the end

            def make_pg() -> Store:
                return PostgresStore(schemas.enter_context(fresh_schema(server)))

            for line in bench_store("postgresql", make_pg, deltas, repeat):
                print(line, flush=True)
        if not options.skip_overhead:
            with fresh_schema(server) as url:
                print(f"pytest --qlearn overhead with {redact(url)}:")
                for line in bench_overhead(url, max(1, options.tests), max(1, options.pairs)):
                    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
