"""The baselines on hand-made cycles: each order worked out by hand, each computed online."""

from __future__ import annotations

import random
import statistics

import pytest

from pytest_qlearn.replay import baselines
from pytest_qlearn.replay.baselines import (
    History,
    failure_rate_order,
    online_orders,
    oracle_order,
    random_order,
    shortest_first_order,
    sort_order,
)
from pytest_qlearn.replay.datasets import Cycle, Dataset, TestRun
from pytest_qlearn.replay.runner import ReplayConfig, replay, run_baseline

F, P = True, False


def cycle(*tests: tuple[str, float, bool], cycle_id: str = "c") -> Cycle:
    return Cycle(cycle_id, [TestRun(*t) for t in tests])


def history_of(*cycles: Cycle) -> History:
    h = History()
    for c in cycles:
        h.record(c)
    return h


def dataset(*cycles: Cycle) -> Dataset:
    return Dataset("hand", "hand.csv", "retecs", "Cycle", list(cycles), sum(map(len, cycles)))


def named(ids: list[str], order: list[int]) -> list[str]:
    return [ids[i] for i in order]


# -- sort (RETECS Sorting) ---------------------------------------------------------------------


def test_sort_by_last_four_verdicts_most_recent_first() -> None:
    # verdicts, oldest first:   a: P P P F   b: P P F P   c: P P P P
    h = history_of(
        cycle(("a", 1, P), ("b", 1, P), ("c", 1, P)),
        cycle(("a", 1, P), ("b", 1, P), ("c", 1, P)),
        cycle(("a", 1, P), ("b", 1, F), ("c", 1, P)),
        cycle(("a", 1, F), ("b", 1, P), ("c", 1, P)),
    )
    ids = ["c", "b", "a"]
    # most recent first: a = F P P P, b = P F P P, c = P P P P
    assert named(ids, sort_order(ids, h)) == ["a", "b", "c"]


def test_sort_counts_missing_verdicts_as_failures_so_new_tests_go_first() -> None:
    # g ran once and failed: F + (F F F); h ran once and passed: P + (F F F);
    # x has four runs, the last failed: F P P P; new never ran: F F F F
    x_runs = [cycle(("x", 1, P)), cycle(("x", 1, P)), cycle(("x", 1, P)), cycle(("x", 1, F))]
    h = history_of(*x_runs, cycle(("g", 1, F), ("h", 1, P)))
    ids = ["x", "h", "g", "new"]
    assert named(ids, sort_order(ids, h)) == ["new", "g", "x", "h"]


def test_sort_ties_on_verdicts_broken_by_time_since_last_run_longest_first() -> None:
    h = history_of(
        cycle(("old", 1, P), ("recent", 1, P), ("mid", 1, P)),
        cycle(("recent", 1, P), ("mid", 1, P)),
        cycle(("recent", 1, P)),
    )
    # all three have P + padding; old last ran 3 cycles ago, mid 2, recent 1
    ids = ["recent", "mid", "old"]
    assert named(ids, sort_order(ids, h)) == ["old", "mid", "recent"]


def test_sort_looks_at_four_verdicts_only_then_row_order() -> None:
    # "early" failed five runs ago, "never" never failed: identical last four, same cycle,
    # so row order decides
    runs = [cycle(("early", 1, F), ("never", 1, P))] + [
        cycle(("early", 1, P), ("never", 1, P)) for _ in range(4)
    ]
    h = history_of(*runs)
    assert named(["never", "early"], sort_order(["never", "early"], h)) == ["never", "early"]
    assert named(["early", "never"], sort_order(["early", "never"], h)) == ["early", "never"]


def test_sort_uses_last_results_when_the_data_set_has_them() -> None:
    h = history_of(cycle(("a", 1, F), ("b", 1, P)))  # rebuilt history says a first
    last = {"a": (P, P, P, P), "b": (F, P, P, P)}
    assert named(["a", "b"], sort_order(["a", "b"], h, last)) == ["b", "a"]


# -- failure rate ------------------------------------------------------------------------------


def test_failure_rate_uses_the_full_history_and_puts_new_tests_first() -> None:
    # old: failed 5 of 10 runs, long ago (rate 0.5); fresh: failed 1 of the last 4 (0.25);
    # clean: never failed; new: never ran
    cycles = [cycle(("old", 1, F)) for _ in range(5)] + [cycle(("old", 1, P)) for _ in range(5)]
    cycles += [cycle(("fresh", 1, P), ("clean", 1, P)) for _ in range(3)]
    cycles += [cycle(("fresh", 1, F), ("clean", 1, P))]
    h = history_of(*cycles)
    ids = ["clean", "fresh", "old", "new"]
    assert named(ids, failure_rate_order(ids, h)) == ["new", "old", "fresh", "clean"]


def test_failure_rate_ties_keep_row_order() -> None:
    h = history_of(cycle(("a", 1, F), ("b", 1, F), ("c", 1, P), ("d", 1, P)))
    ids = ["d", "b", "c", "a"]
    assert named(ids, failure_rate_order(ids, h)) == ["b", "a", "d", "c"]


def test_failure_rate_from_last_results() -> None:
    h = History()
    last = {"a": (F, P, P, P), "b": (F, F, P, P), "c": ()}
    assert named(["a", "b", "c"], failure_rate_order(["a", "b", "c"], h, last)) == [
        "c",
        "b",
        "a",
    ]


# -- shortest first ----------------------------------------------------------------------------


def test_shortest_first_by_mean_earlier_duration_new_tests_first() -> None:
    h = history_of(
        cycle(("a", 1.0, P), ("b", 4.0, P), ("c", 2.0, P)),
        cycle(("a", 5.0, P), ("b", 4.0, P), ("c", 2.0, P)),
    )
    # means: a 3.0, b 4.0, c 2.0; new unknown -> first
    ids = ["a", "b", "new", "c"]
    assert named(ids, shortest_first_order(ids, h)) == ["new", "c", "a", "b"]


def test_shortest_first_does_not_see_this_cycles_durations() -> None:
    earlier = cycle(("slow", 10.0, P), ("fast", 1.0, P))
    now = cycle(("slow", 0.1, P), ("fast", 50.0, P))  # durations flip in this cycle
    orders = list(online_orders(dataset(earlier, now), baselines.SHORTEST_FIRST))
    assert named(["slow", "fast"], orders[1]) == ["fast", "slow"]


# -- oracle ------------------------------------------------------------------------------------


def test_oracle_failures_first_then_shortest_then_row_order() -> None:
    c = cycle(("p_long", 9, P), ("f_long", 5, F), ("p_short", 1, P), ("f_short", 2, F))
    c2 = cycle(("x", 1, P), ("y", 1, P))
    assert named([t.test_id for t in c.tests], oracle_order(c)) == [
        "f_short",
        "f_long",
        "p_short",
        "p_long",
    ]
    assert oracle_order(c2) == [0, 1]


# -- random ------------------------------------------------------------------------------------


def test_random_order_is_a_seeded_permutation() -> None:
    a = random_order(30, random.Random(1))
    assert sorted(a) == list(range(30))
    assert a == random_order(30, random.Random(1))
    assert a != random_order(30, random.Random(2))


def test_random_baseline_is_the_mean_over_its_seeds() -> None:
    cycles = [
        cycle(*((f"t{k}", 1.0 + k, k == (i % 7)) for k in range(8)), cycle_id=str(i))
        for i in range(12)
    ]
    data = dataset(*cycles)
    config = ReplayConfig(random_seeds=4, seed=3)
    result = replay(data, config)
    per_seed = [run_baseline(data, baselines.RANDOM, config, seed=3 + s) for s in range(4)]
    rand = result.strategies[baselines.RANDOM]
    assert rand.runs == 4
    for b in config.budgets:
        expected = statistics.mean(s.napfd_failing[b] or 0.0 for s in per_seed)
        assert rand.mean.napfd_failing[b] == pytest.approx(expected)
    assert rand.mean.apfd == pytest.approx(statistics.mean(s.apfd or 0.0 for s in per_seed))
    # four different shuffles really were averaged, not one seed four times
    assert len({s.apfd for s in per_seed}) > 1
    assert rand.sd is not None


# -- online, no look-ahead ---------------------------------------------------------------------


def history_cycles() -> list[Cycle]:
    rng = random.Random(5)
    return [
        cycle(
            *((f"t{k}", rng.uniform(0.1, 3.0), rng.random() < 0.2) for k in range(10)),
            cycle_id=str(i),
        )
        for i in range(8)
    ]


@pytest.mark.parametrize("name", [n for n in baselines.NAMES if n != baselines.ORACLE])
def test_baselines_never_look_ahead(name: str) -> None:
    cycles = history_cycles()
    full = list(online_orders(dataset(*cycles), name, seed=1))
    # the order of cycle 4 is the same whether or not later cycles exist, and whatever
    # cycle 4's own verdicts and durations are
    prefix = list(online_orders(dataset(*cycles[:5]), name, seed=1))
    assert prefix == full[:5]
    changed = [
        *cycles[:4],
        cycle(*((t.test_id, 7.0 - t.duration, not t.failed) for t in cycles[4])),
    ]
    assert list(online_orders(dataset(*changed), name, seed=1))[4] == full[4]


def test_history_baselines_learn_from_earlier_cycles() -> None:
    # the control for the test above: earlier verdicts do change the order
    a = cycle(("x", 1, P), ("y", 1, P))
    b = cycle(("x", 1, P), ("y", 1, F))
    for name in (baselines.SORT, baselines.FAILURE_RATE):
        assert list(online_orders(dataset(a, a), name))[1] == [0, 1]
        assert list(online_orders(dataset(b, a), name))[1] == [1, 0]


def test_unknown_baseline() -> None:
    with pytest.raises(ValueError, match="unknown baseline"):
        list(online_orders(dataset(cycle(("x", 1, P))), "alphabetical"))
