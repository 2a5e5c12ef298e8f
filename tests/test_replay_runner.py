"""The replay runner: it drives the plugin's own LearningSession against one store, online,
and the learner must exploit a planted pattern that a frequency heuristic cannot."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pytest_qlearn.engine.hyperparams import Hyperparameters
from pytest_qlearn.replay import baselines
from pytest_qlearn.replay.datasets import Cycle, Dataset, TestRun
from pytest_qlearn.replay.runner import (
    LEARNER,
    STRATEGIES,
    CycleScore,
    ReplayConfig,
    progress_total,
    replay,
    run_learner,
    score,
    summarize,
)
from pytest_qlearn.session import LearningSession, Ranking
from pytest_qlearn.store.sqlite import SqliteStore

PLANTED = "test_13"
FLAKY = "test_07"
WARM_UP = 24  # cycles


def planted_history(n_cycles: int = 90, n_tests: int = 20) -> Dataset:
    """20 tests; test_13 fails every third cycle (and only then), test_07 is flaky and
    fails 40 % of cycles at random, so it has the higher failure rate; the rest pass."""
    rng = random.Random(7)
    cycles = []
    for c in range(n_cycles):
        tests = [TestRun(f"test_{k:02d}", 1.0 + 0.1 * k, False) for k in range(n_tests)]
        tests[13] = TestRun(PLANTED, 2.3, c % 3 == 2)
        tests[7] = TestRun(FLAKY, 1.7, rng.random() < 0.4)
        cycles.append(Cycle(str(c), tests))
    return Dataset("planted", "planted.csv", "retecs", "Cycle", cycles, n_cycles * n_tests)


def first_place(
    data: Dataset, config: ReplayConfig, seed: int = 0
) -> tuple[list[bool], list[bool]]:
    """Whether the planted test ran first, on its failing and on its passing cycles after
    the warm-up."""
    on_failing: list[bool] = []
    on_passing: list[bool] = []

    def hook(i: int, cycle: Cycle, ranking: Ranking, order: list[int]) -> None:
        if i < WARM_UP:
            return
        first = cycle.tests[order[0]].test_id == PLANTED
        planted_failed = next(t.failed for t in cycle.tests if t.test_id == PLANTED)
        (on_failing if planted_failed else on_passing).append(first)

    run_learner(data, seed=seed, config=config, on_cycle=hook)
    return on_failing, on_passing


# -- the planted pattern -----------------------------------------------------------------------


def test_greedy_learner_ranks_the_planted_test_first_exactly_when_it_fails() -> None:
    data = planted_history()
    greedy = ReplayConfig(
        hyper=Hyperparameters().overridden(exploration_rate=0, min_exploration_rate=0)
    )
    on_failing, on_passing = first_place(data, greedy)
    assert len(on_failing) == 22
    assert all(on_failing)
    # it learned the period, not "recently failed" or "fails often": right after its
    # failures, and one cycle later, it is not put first
    assert sum(on_passing) <= 0.1 * len(on_passing)


def test_failure_rate_cannot_exploit_the_planted_pattern() -> None:
    # the control: the history is built so that a frequency heuristic puts the flaky test
    # first, so the learner's result above is not something any baseline would do
    data = planted_history()
    orders = list(baselines.online_orders(data, baselines.FAILURE_RATE))
    firsts = [
        data.cycles[i].tests[order[0]].test_id == PLANTED
        for i, order in enumerate(orders)
        if i >= WARM_UP and data.cycles[i].tests[13].failed
    ]
    assert sum(firsts) <= len(firsts) // 2


def test_learner_with_default_hyperparameters_beats_random_and_exploits_the_pattern() -> None:
    data = planted_history()
    result = replay(data, ReplayConfig(random_seeds=5))
    learner = result.strategies[LEARNER].mean
    rand = result.strategies[baselines.RANDOM].mean
    for b in (0.1, 0.5, 0.8):
        mine, theirs = learner.napfd_failing[b], rand.napfd_failing[b]
        assert mine is not None and theirs is not None
        assert mine > theirs + 0.3
    assert learner.apfd is not None and rand.apfd is not None
    assert learner.apfd > rand.apfd + 0.3
    # ε-greedy exploration still moves it now and then: most, not all, failing cycles
    on_failing, _ = first_place(data, ReplayConfig())
    assert sum(on_failing) >= 0.8 * len(on_failing)


# -- driving the engine ------------------------------------------------------------------------


def small_history(n_cycles: int = 12, seed: int = 3) -> Dataset:
    rng = random.Random(seed)
    cycles = [
        Cycle(
            str(i),
            [TestRun(f"t{k}", rng.uniform(0.1, 2.0), rng.random() < 0.15) for k in range(6)],
        )
        for i in range(n_cycles)
    ]
    return Dataset("small", "small.csv", "retecs", "Cycle", cycles, 6 * n_cycles)


def test_every_cycle_is_one_episode_of_the_real_session_in_one_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: dict[str, list[Any]] = {"load": [], "write": [], "finish": [], "stores": []}
    load = SqliteStore.load_snapshot
    write = SqliteStore.write_episode
    finish = LearningSession.finish

    def spy_load(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        snapshot = load(self, *args, **kwargs)
        calls["load"].append(snapshot.episodes)
        calls["stores"].append(id(self))
        return snapshot

    def spy_write(self: SqliteStore, w: Any, *args: Any, **kwargs: Any) -> bool:
        ok = write(self, w, *args, **kwargs)
        calls["write"].append((ok, len(w.q_deltas["prioritizer"]), len(w.observations)))
        return ok

    def spy_finish(self: LearningSession, results: Any, **kwargs: Any) -> Any:
        calls["finish"].append(sorted((r.position, r.test_id) for r in results))
        return finish(self, results, **kwargs)

    monkeypatch.setattr(SqliteStore, "load_snapshot", spy_load)
    monkeypatch.setattr(SqliteStore, "write_episode", spy_write)
    monkeypatch.setattr(LearningSession, "finish", spy_finish)
    data = small_history()
    orders: list[list[str]] = []

    def hook(i: int, cycle: Cycle, ranking: Ranking, order: list[int]) -> None:
        orders.append([cycle.tests[k].test_id for k in order])

    run_learner(data, seed=0, config=ReplayConfig(), on_cycle=hook)
    n = len(data.cycles)
    # one store for the whole replay, and each snapshot holds every episode before it
    assert len(set(calls["stores"])) == 1
    assert calls["load"] == list(range(n))
    assert len(calls["write"]) == n
    assert all(ok and deltas > 0 and obs == 6 for ok, deltas, obs in calls["write"])
    # the results handed to finish() carry the rank order as positions
    assert [[tid for _, tid in f] for f in calls["finish"]] == orders


def test_replay_is_deterministic_per_seed_and_online() -> None:
    data = small_history(n_cycles=16)
    config = ReplayConfig()

    def orders_of(d: Dataset, seed: int) -> list[list[int]]:
        out: list[list[int]] = []
        run_learner(d, seed=seed, config=config, on_cycle=lambda i, c, r, o: out.append(o))
        return out

    full = orders_of(data, 0)
    assert orders_of(data, 0) == full
    # (another seed may give the same orders: exploration only moves a test among ties)
    # no look-ahead: replaying only the first 10 cycles gives the same first 10 orders
    head = Dataset("small", "small.csv", "retecs", "Cycle", data.cycles[:10], 60)
    assert orders_of(head, 0) == full[:10]


def test_hyperparameters_reach_the_learner() -> None:
    data = small_history()
    never = replay(
        data,
        ReplayConfig(
            hyper=Hyperparameters().overridden(exploration_rate=0, min_exploration_rate=0)
        ),
    )
    always = replay(
        data,
        ReplayConfig(hyper=Hyperparameters().overridden(exploration_rate=1, exploration_decay=1)),
    )
    assert never.exploration_share == 0.0
    assert always.exploration_share == 1.0


def test_several_learner_seeds_give_mean_and_sd() -> None:
    data = small_history()
    one = replay(data, ReplayConfig(seeds=1, random_seeds=2))
    three = replay(data, ReplayConfig(seeds=3, random_seeds=2))
    assert one.strategies[LEARNER].runs == 1
    assert one.strategies[LEARNER].sd is None
    assert three.strategies[LEARNER].runs == 3
    assert three.strategies[LEARNER].sd is not None
    assert len(three.learner_seconds) == 3
    assert list(three.strategies) == list(STRATEGIES)


def test_progress_total_counts_every_advance() -> None:
    data = small_history()
    config = ReplayConfig(seeds=2, random_seeds=3)
    ticks: list[int] = []
    replay(data, config, advance=ticks.append)
    assert sum(ticks) == progress_total(data, config) == 2 * 12 + 3 + 4


# -- scoring -----------------------------------------------------------------------------------


def test_score_uses_the_order_and_the_cycles_real_verdicts_and_durations() -> None:
    c = Cycle("c", [TestRun("a", 1.0, False), TestRun("b", 1.0, True), TestRun("c", 2.0, False)])
    # order b, a, c: F P P -> APFD = 1 - 1/3 + 1/6 = 5/6
    s = score(c, [1, 0, 2], (0.5,))
    assert s.apfd == pytest.approx(5 / 6)
    # budget 50 % of 4 s = 2 s: b (1 s) and a (1 s) fit; p = 1, NAPFD = 1 - 1/3 + 1/6
    assert s.napfd[0] == pytest.approx(5 / 6)
    # APFDc: (4 - 1/2) / 4 = 0.875
    assert s.apfdc == pytest.approx(0.875)
    assert score(c, [0, 2, 1], (0.5,)).apfd == pytest.approx(1 - 3 / 3 + 1 / 6)
    passing = Cycle("p", [TestRun("a", 1.0, False)])
    assert score(passing, [0], (0.5,)) == CycleScore((None,), None, None)
    with pytest.raises(ValueError, match="every test"):
        score(c, [0, 0, 1], (0.5,))


def test_summarize_failing_cycles_all_cycles_and_first_vs_rest() -> None:
    scores = [
        CycleScore((0.2, 0.4), 0.5, 0.6),
        CycleScore((None, None), None, None),  # no failure
        CycleScore((0.6, 0.8), 0.7, 0.8),
        CycleScore((1.0, 0.0), 0.9, 0.1),
    ]
    s = summarize(scores, ReplayConfig(budgets=(0.1, 0.5), split=2))
    assert s.napfd_failing[0.1] == pytest.approx(0.6)
    assert s.napfd_failing[0.5] == pytest.approx(0.4)
    # all cycles: the failure-free cycle counts as 1.0
    assert s.napfd_all[0.1] == pytest.approx((0.2 + 1.0 + 0.6 + 1.0) / 4)
    assert s.napfd_all[0.5] == pytest.approx((0.4 + 1.0 + 0.8 + 0.0) / 4)
    assert s.apfd == pytest.approx(0.7)
    assert s.apfdc == pytest.approx(0.5)
    # first/rest at the 50 % budget, failing cycles only, split after cycle 2
    assert s.first == pytest.approx(0.4)
    assert s.rest == pytest.approx(0.4)
    assert summarize(scores, ReplayConfig(budgets=(0.1, 0.5), split=3)).rest == 0.0
    # a budget list without 50 % uses its first budget for first/rest
    assert ReplayConfig(budgets=(0.25, 0.75)).primary_budget == 0.25
    none_failing = summarize([CycleScore((None,), None, None)], ReplayConfig(budgets=(0.5,)))
    assert none_failing.napfd_failing[0.5] is None
    assert none_failing.napfd_all[0.5] == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{"budgets": ()}, {"budgets": (0.0,)}, {"budgets": (1.5,)}, {"seeds": 0}, {"split": -1}],
)
def test_replay_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ReplayConfig(**kwargs)
