"""The reference orders the learner is measured against, computed online.

Every baseline except the oracle sees, for the cycle it orders, only the test ids (and the
``LastResults`` column when the data set has one): verdicts and durations of that cycle are
not passed to it. What it knows about earlier cycles comes from :class:`History`, which
:func:`online_orders` updates only *after* a cycle has been ordered, so no baseline can look
ahead. The oracle is the exception by definition: it orders with this cycle's verdicts and
durations, as the upper bound.

An order is a list of positions into the cycle's tests (``cycle.tests[order[0]]`` runs first).
Ties always keep the data set's row order.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .datasets import Cycle, Dataset

#: RETECS Sorting looks at this many recent verdicts.
SORT_VERDICTS = 4

RANDOM = "random"
SORT = "sort"
FAILURE_RATE = "failure rate"
SHORTEST_FIRST = "shortest first"
ORACLE = "oracle"
#: Baselines in the order reports list them.
NAMES = (RANDOM, SORT, FAILURE_RATE, SHORTEST_FIRST, ORACLE)


@dataclass
class TestRecord:
    """What earlier cycles showed about one test."""

    __test__ = False  # not a pytest test class, despite the name

    runs: int = 0
    failures: int = 0
    duration_sum: float = 0.0
    last_cycle: int = -1
    recent: deque[bool] = field(default_factory=lambda: deque(maxlen=SORT_VERDICTS))

    @property
    def mean_duration(self) -> float:
        return self.duration_sum / self.runs if self.runs else 0.0


class History:
    """Per-test facts from the cycles replayed so far (and only those)."""

    def __init__(self) -> None:
        self.tests: dict[str, TestRecord] = {}
        self.cycles = 0

    def get(self, test_id: str) -> TestRecord | None:
        return self.tests.get(test_id)

    def record(self, cycle: Cycle) -> None:
        """Learn a cycle's outcome; call only after every order for it was computed."""
        index = self.cycles
        for test in cycle.tests:
            rec = self.tests.get(test.test_id)
            if rec is None:
                rec = self.tests[test.test_id] = TestRecord()
            rec.runs += 1
            rec.failures += test.failed
            rec.duration_sum += test.duration
            rec.last_cycle = index
            rec.recent.append(test.failed)
        self.cycles += 1


LastResults = Mapping[str, tuple[bool, ...]]


def _recent_verdicts(
    test_id: str, history: History, last_results: LastResults | None
) -> tuple[bool, ...]:
    """Earlier verdicts, most recent first (True = failed)."""
    if last_results is not None:
        return last_results.get(test_id, ())
    rec = history.get(test_id)
    return tuple(reversed(rec.recent)) if rec is not None else ()


# -- the baselines ---------------------------------------------------------------------------
def sort_order(
    test_ids: Sequence[str], history: History, last_results: LastResults | None = None
) -> list[int]:
    """RETECS Sorting: by the last four verdicts (most recent first, a failure before a pass;
    verdicts a test does not have yet count as failures, as in RETECS), then by the cycles
    since the test last ran (longest first; never ran = longest)."""

    def key(i: int) -> tuple[float, ...]:
        test_id = test_ids[i]
        verdicts = _recent_verdicts(test_id, history, last_results)[:SORT_VERDICTS]
        padded = (*verdicts, *(True,) * (SORT_VERDICTS - len(verdicts)))
        rec = history.get(test_id)
        since = math.inf if rec is None else float(history.cycles - rec.last_cycle)
        return (*(-float(v) for v in padded), -since)

    return sorted(range(len(test_ids)), key=key)


def failure_rate_order(
    test_ids: Sequence[str], history: History, last_results: LastResults | None = None
) -> list[int]:
    """Full-history failure rate, highest first; tests never run before go first."""

    def key(i: int) -> tuple[int, float]:
        test_id = test_ids[i]
        if last_results is not None:
            verdicts = last_results.get(test_id, ())
            runs, failures = len(verdicts), sum(verdicts)
        else:
            rec = history.get(test_id)
            runs, failures = (0, 0) if rec is None else (rec.runs, rec.failures)
        if runs == 0:
            return (0, 0.0)
        return (1, -failures / runs)

    return sorted(range(len(test_ids)), key=key)


def shortest_first_order(
    test_ids: Sequence[str], history: History, last_results: LastResults | None = None
) -> list[int]:
    """Shortest mean duration in earlier cycles first; tests never run before (unknown
    duration) go first."""

    def key(i: int) -> tuple[int, float]:
        rec = history.get(test_ids[i])
        if rec is None or rec.runs == 0:
            return (0, 0.0)
        return (1, rec.mean_duration)

    return sorted(range(len(test_ids)), key=key)


def oracle_order(cycle: Cycle) -> list[int]:
    """The upper bound, with look-ahead by definition: failures first, then shortest first
    (this cycle's durations)."""
    tests = cycle.tests
    return sorted(range(len(tests)), key=lambda i: (not tests[i].failed, tests[i].duration))


def random_order(n: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    rng.shuffle(order)
    return order


OnlineOrder = Callable[[Sequence[str], History, LastResults | None], list[int]]

#: The baselines that only see history (the oracle and random are special-cased).
HISTORY_BASELINES: dict[str, OnlineOrder] = {
    SORT: sort_order,
    FAILURE_RATE: failure_rate_order,
    SHORTEST_FIRST: shortest_first_order,
}


def online_orders(dataset: Dataset, name: str, seed: int = 0) -> Iterator[list[int]]:
    """The order baseline ``name`` gives each cycle, oldest first, online: cycle *i* is
    ordered from cycles *< i* only, then recorded. ``seed`` only matters for ``random``."""
    if name not in NAMES:
        raise ValueError(f"unknown baseline {name!r}: one of {', '.join(NAMES)}")
    rng = random.Random(seed)
    history = History()
    for cycle in dataset.cycles:
        if name == ORACLE:
            yield oracle_order(cycle)
        elif name == RANDOM:
            yield random_order(len(cycle.tests), rng)
        else:
            test_ids = [t.test_id for t in cycle.tests]
            yield HISTORY_BASELINES[name](test_ids, history, cycle.last_results)
        history.record(cycle)
