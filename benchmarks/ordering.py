"""In-process cost of ordering many tests, and the memory of a large Q-table (no pytest).

DESIGN.md budgets:

* ordering 100,000 collected tests adds at most 0.5 s;
* a Q-table of 100,000 entries takes at most 30 MB of memory.

Ordering: a warm snapshot is built by ranking ``--tests`` synthetic tests with an empty
snapshot, finishing that episode (``LearningSession.finish``) with synthetic results (0.1 %
of the tests fail, one in every tenth module) and writing it to an in-memory
``SqliteStore(':memory:')``; the snapshot loaded back then holds a history and Q-values for
every test. ``LearningSession.rank()`` is timed on it (best and median of ``--repeat`` fresh
sessions); the warm start (building the session, which loads the Q-table) and the store's
snapshot read are printed beside it.

Memory: ``tracemalloc`` measures what a ``QLearner`` holds after loading ``--entries``
Q-entries (SHA-256 state keys as the store gives them, 3 actions per state as the
prioritizer has).

This is a measurement, not a test: it always exits 0.

    python benchmarks/ordering.py [--tests 100000] [--entries 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import hashlib
import os
import platform
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Iterator

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.engine.history import FAILED, PASSED
from pytest_qlearn.engine.hyperparams import Hyperparameters
from pytest_qlearn.engine.qlearner import QEntry, QLearner
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.store import Partition, Snapshot, SqliteStore

ORDERING_BUDGET_S = 0.5
MEMORY_BUDGET_MB = 30.0
TESTS_PER_MODULE = 100
FAIL_EVERY = 1000  # 0.1 % of the tests fail in the synthetic episode


def make_refs(tests: int) -> list[prio.TestRef]:
    """Synthetic collected tests: 100 per module, every other module's tests in a class."""
    refs = []
    for index in range(tests):
        module_no, number = divmod(index, TESTS_PER_MODULE)
        module = f"tests/pkg_{module_no // 100:02d}/test_mod_{module_no:04d}.py"
        if module_no % 2:
            cls: str | None = f"{module}::TestGroup{number // 25}"
            test_id = f"{cls}::test_case_{number:03d}"
        else:
            cls = None
            test_id = f"{module}::test_case_{number:03d}"
        refs.append(prio.TestRef(test_id, module, cls, index))
    return refs


def warm_snapshot(refs: list[prio.TestRef]) -> tuple[Snapshot, dict[str, float]]:
    """One learned episode over ``refs``, written to and read back from an in-memory store."""
    timings: dict[str, float] = {}
    store = SqliteStore(":memory:")
    store.open()
    try:
        partition = Partition("qlearn-benchmark", "default")
        empty = store.load_snapshot(partition, [prio.NAME])
        session = LearningSession(empty, seed=1)
        ranking = session.rank(refs)
        position = {ref.test_id: pos for pos, ref in enumerate(ranking.order)}
        results = []
        for ref in refs:
            decision = ranking.decisions[ref.test_id]
            verdict = FAILED if ref.index % FAIL_EVERY == 7 else PASSED
            results.append(
                TestResult(
                    ref.test_id,
                    verdict,
                    0.001 + (ref.index % 13) * 0.0005,
                    ref.index,
                    position[ref.test_id],
                    decision.tier,
                    decision.explored,
                )
            )
        start = time.perf_counter()
        write, _ = session.finish(results, started_at=time.time(), duration=60.0, exit_status=1)
        timings["finish (learn from the results)"] = time.perf_counter() - start
        deltas = sum(len(d) for d in write.q_deltas.values())
        start = time.perf_counter()
        store.write_episode(write)
        timings[f"write_episode ({deltas:,} Q deltas, {len(refs):,} histories)"] = (
            time.perf_counter() - start
        )
        start = time.perf_counter()
        snapshot = store.load_snapshot(partition, [prio.NAME])
        timings["load_snapshot (read back)"] = time.perf_counter() - start
    finally:
        store.close()
    return snapshot, timings


def time_ranking(
    snapshot: Snapshot, refs: list[prio.TestRef], repeat: int
) -> tuple[list[float], list[float], list[prio.TestRef]]:
    """Seconds to build a session (warm start) and to rank, per repetition."""
    build_times: list[float] = []
    rank_times: list[float] = []
    order: list[prio.TestRef] = []
    q_entries = dict(snapshot.q_entries)
    for attempt in range(repeat):
        # LearningSession takes the Q-table out of the snapshot it is given (it sets
        # ``snapshot.q_entries = {}``), so every repetition gets its own warm copy
        warm = dataclasses.replace(snapshot, q_entries=dict(q_entries))
        start = time.perf_counter()
        session = LearningSession(warm, seed=1000 + attempt)
        build_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        order = session.rank(refs).order
        rank_times.append(time.perf_counter() - start)
        if session.learner.statistics().q_table_size < sum(map(len, q_entries.values())):
            print("  ! the session did not start from the whole warm Q-table")
        del session
    return build_times, rank_times, order


def q_entries(count: int, n_actions: int) -> Iterator[QEntry]:
    """``count`` Q-entries over ``ceil(count / n_actions)`` states, with fresh key strings."""
    rng = random.Random(7)
    for number in range(count):
        state_no, action = divmod(number, n_actions)
        key = hashlib.sha256(f"prioritizer:test;state={state_no}".encode()).hexdigest()
        yield QEntry(key, action, rng.uniform(-1.0, 1.0), rng.randrange(1, 50))


def learner_memory(entries: int) -> tuple[float, float, int]:
    """(MB held after load, MB peak during load, Q-table size) of a loaded QLearner."""
    n_actions = len(prio.TIERS)
    gc.collect()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        learner = QLearner(prio.NAME, n_actions, Hyperparameters(), random.Random(0))
        learner.load(q_entries(entries, n_actions))
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        size = learner.statistics().q_table_size
        del learner
    finally:
        tracemalloc.stop()
    return (current - baseline) / 1e6, (peak - baseline) / 1e6, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tests", type=int, default=100_000, help="tests to rank (100000)")
    parser.add_argument(
        "--entries", type=int, default=100_000, help="Q-table entries for memory (100000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed rankings (3)")
    options = parser.parse_args(argv)
    tests = max(1, options.tests)
    repeat = max(1, options.repeat)

    print(
        f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.platform()}"
    )

    refs = make_refs(tests)
    start = time.perf_counter()
    snapshot, timings = warm_snapshot(refs)
    print(f"warm snapshot built in {time.perf_counter() - start:.2f}s:")
    for what, seconds in timings.items():
        print(f"  {what}: {seconds:.3f}s")
    q_count = sum(len(entries) for entries in snapshot.q_entries.values())
    print(
        f"snapshot: {len(snapshot.histories):,} histories, {q_count:,} Q entries, "
        f"episodes={snapshot.episodes}"
    )

    build_times, rank_times, order = time_ranking(snapshot, refs, repeat)
    if len(order) != tests or {r.test_id for r in order} != {r.test_id for r in refs}:
        print("  ! rank() did not return every test exactly once")
    failing = sum(ref.index % FAIL_EVERY == 7 for ref in refs)
    failing_first = sum(ref.index % FAIL_EVERY == 7 for ref in order[: tests // 10])
    print(
        f"warm start (LearningSession(snapshot), loads {q_count:,} Q entries): "
        f"median {statistics.median(build_times):.3f}s"
    )
    best, median = min(rank_times), statistics.median(rank_times)
    verdict = "MET" if median <= ORDERING_BUDGET_S else "NOT MET"
    print(
        f"rank() of {tests:,} tests: best {best:.3f}s, median {median:.3f}s of {repeat} "
        f"({', '.join(f'{t:.3f}' for t in rank_times)}); budget <= {ORDERING_BUDGET_S}s: "
        f"{verdict}"
    )
    print(
        f"  sanity: {failing_first:,} of the {failing:,} previously failing tests "
        f"are in the first 10% of the order"
    )

    for entries in dict.fromkeys((max(1, options.entries), q_count)):
        held, peak, size = learner_memory(entries)
        line = f"QLearner with {size:,} Q entries: {held:.1f} MB held (peak {peak:.1f} MB)"
        if entries == options.entries:
            verdict = "MET" if held <= MEMORY_BUDGET_MB else "NOT MET"
            line += f"; budget <= {MEMORY_BUDGET_MB:g} MB (for 100,000 entries): {verdict}"
        else:
            line += " (the warm snapshot's table size, for reference)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
