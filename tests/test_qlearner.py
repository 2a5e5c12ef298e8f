"""QLearner: Bellman updates, ε-greedy choice, ε decay, batched deltas, warm start, statistics."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from pytest_qlearn.engine.hyperparams import Hyperparameters
from pytest_qlearn.engine.qlearner import DeltaBatch, QEntry, QLearner


def learner(
    n_actions: int = 3,
    *,
    seed: int = 0,
    episodes: int = 0,
    on_flush: Callable[[DeltaBatch], None] | None = None,
    **hyper: float,
) -> QLearner:
    return QLearner(
        "test-agent",
        n_actions,
        Hyperparameters(**hyper),  # type: ignore[arg-type]
        random.Random(seed),
        episodes=episodes,
        on_flush=on_flush,
    )


# -- Bellman update -----------------------------------------------------------------------


def test_bellman_update_hand_computed() -> None:
    q = learner(2, alpha=0.5, gamma=0.9)
    q.load([QEntry("s", 0, 2.0, 3), QEntry("s'", 0, 1.0, 1), QEntry("s'", 1, 4.0, 1)])
    # target = r + γ·max Q(s') = 1 + 0.9 * 4 = 4.6; TD = 4.6 - 2.0 = 2.6
    # Q(s,0) = 2.0 + 0.5 * 2.6 = 3.3
    td = q.update("s", 0, 1.0, "s'")
    assert td == pytest.approx(2.6)
    assert q.values("s") == pytest.approx([3.3, 0.0])
    assert q.visits("s") == [4, 0]
    assert q.values("s'") == [1.0, 4.0]  # the next state is only read


def test_bellman_update_terminal_next_state() -> None:
    q = learner(2, alpha=0.5, gamma=0.9)
    q.load([QEntry("s", 1, 1.0, 1)])
    # target = r = -1; TD = -2; Q = 1 + 0.5 * -2 = 0
    assert q.update("s", 1, -1.0, None) == pytest.approx(-2.0)
    assert q.values("s") == pytest.approx([0.0, 0.0])


def test_bellman_update_unknown_next_state_bootstraps_zero() -> None:
    q = learner(2, alpha=0.25, gamma=0.9)
    # target = 2 + 0.9 * 0 = 2; Q = 0 + 0.25 * 2 = 0.5
    assert q.update("s", 0, 2.0, "never-seen") == pytest.approx(2.0)
    assert q.values("s") == pytest.approx([0.5, 0.0])
    assert not q.knows("never-seen")


def test_bellman_update_self_loop_uses_the_value_before_the_update() -> None:
    q = learner(2, alpha=0.5, gamma=0.9)
    q.load([QEntry("s", 0, 1.0, 1), QEntry("s", 1, 3.0, 1)])
    # target = 0 + 0.9 * max(1, 3) = 2.7; TD = 2.7 - 3 = -0.3; Q(s,1) = 3 - 0.15 = 2.85
    assert q.update("s", 1, 0.0, "s") == pytest.approx(-0.3)
    assert q.values("s") == pytest.approx([1.0, 2.85])


def test_repeated_updates_converge_geometrically() -> None:
    q = learner(1, alpha=0.5, gamma=0.0)
    for _ in range(4):
        q.update("s", 0, 1.0, None)
    # 1 - 0.5**4
    assert q.values("s") == pytest.approx([0.9375])
    assert q.visits("s") == [4]


def test_unknown_state_reads_as_zeros() -> None:
    q = learner(3)
    assert q.values("x") == [0.0, 0.0, 0.0]
    assert q.visits("x") == [0, 0, 0]
    assert q.max_q("x") == 0.0
    assert q.max_q(None) == 0.0
    assert not q.knows("x")


def test_values_is_a_copy() -> None:
    q = learner(2)
    q.update("s", 0, 1.0, None)
    values = q.values("s")
    values[0] = 99.0
    assert q.values("s")[0] != 99.0


def test_needs_an_action() -> None:
    with pytest.raises(ValueError):
        learner(0)


# -- update_all ---------------------------------------------------------------------------


def test_update_all_each_action_gets_its_own_reward() -> None:
    q = learner(3, alpha=0.5, gamma=0.9)
    q.load(
        [
            QEntry("s", 0, 1.0, 2),
            QEntry("s", 1, -1.0, 2),
            QEntry("s", 2, 0.5, 2),
            QEntry("n", 0, 2.0, 1),
            QEntry("n", 1, -3.0, 1),
        ]
    )
    q.update_all("s", [1.0, 0.0, -1.0], "n")
    # bootstrap = γ·max Q(n) = 0.9 * 2 = 1.8
    # Q0 = 1.0 + 0.5 * (1 + 1.8 - 1.0) = 1.9
    # Q1 = -1.0 + 0.5 * (0 + 1.8 + 1.0) = 0.4
    # Q2 = 0.5 + 0.5 * (-1 + 1.8 - 0.5) = 0.65
    assert q.values("s") == pytest.approx([1.9, 0.4, 0.65])
    assert q.visits("s") == [3, 3, 3]
    assert q.updates == 3


def test_update_all_self_loop_bootstraps_once_before_the_row_changes() -> None:
    q = learner(3, alpha=0.5, gamma=0.9)
    q.load([QEntry("s", 0, 1.0, 0), QEntry("s", 1, -1.0, 0), QEntry("s", 2, 0.5, 0)])
    q.update_all("s", [1.0, 0.0, -1.0], "s")
    # bootstrap = 0.9 * max(1, -1, 0.5) = 0.9 for every action
    # Q0 = 1 + 0.5 * (1 + 0.9 - 1) = 1.45
    # Q1 = -1 + 0.5 * (0 + 0.9 + 1) = -0.05   (0.1525 if re-read after Q0 changed)
    # Q2 = 0.5 + 0.5 * (-1 + 0.9 - 0.5) = 0.2
    assert q.values("s") == pytest.approx([1.45, -0.05, 0.2])


def test_update_all_self_loop_on_a_new_state() -> None:
    q = learner(2, alpha=0.5, gamma=0.9)
    q.update_all("s", [2.0, -2.0], "s")
    # bootstrap 0 -> Q = [1, -1]; then bootstrap 0.9 * 1 = 0.9
    # Q0 = 1 + 0.5 * (2 + 0.9 - 1) = 1.95; Q1 = -1 + 0.5 * (-2 + 0.9 + 1) = -1.05
    q.update_all("s", [2.0, -2.0], "s")
    assert q.values("s") == pytest.approx([1.95, -1.05])


def test_update_all_keeps_the_gap_between_actions_independent_of_the_bootstrap() -> None:
    low = learner(2, alpha=0.3, gamma=0.9)
    high = learner(2, alpha=0.3, gamma=0.9)
    high.load([QEntry("n", 0, 50.0, 1)])
    for q in (low, high):
        q.update_all("s", [1.0, -1.0], "n")
        q.update_all("s", [-1.0, 1.0], "n")
    gap_low = low.values("s")[0] - low.values("s")[1]
    gap_high = high.values("s")[0] - high.values("s")[1]
    # gap: 0.3 * 2 = 0.6, then 0.6 + 0.3 * (-2 - 0.6) = -0.18
    assert gap_low == pytest.approx(-0.18)
    assert gap_high == pytest.approx(-0.18)


def test_update_all_wrong_reward_count() -> None:
    q = learner(3)
    with pytest.raises(ValueError, match="expected 3 rewards, got 2"):
        q.update_all("s", [1.0, 2.0], None)


def test_update_all_records_the_chosen_reward_only() -> None:
    q = learner(3)
    q.update_all("s", [1.0, 0.0, -1.0], None, chosen=2)
    q.update_all("t", [1.0, 0.0, -1.0], None)  # nothing chosen: not a received reward
    q.update_all("u", [0.5, 0.0, -1.0], None, chosen=0)
    assert q.statistics().mean_reward == pytest.approx((-1.0 + 0.5) / 2)


# -- ε-greedy -----------------------------------------------------------------------------


def test_epsilon_zero_always_greedy() -> None:
    q = learner(3, seed=7, epsilon=0.0, epsilon_min=0.0)
    choices = [q.choose([0.1, 0.7, 0.3]) for _ in range(500)]
    assert choices == [(1, False)] * 500
    assert q.explored == 0
    assert q.decisions == 500


def test_epsilon_before_any_episode_is_the_configured_initial_rate() -> None:
    # DESIGN.md: qlearn_exploration_rate is the *initial* ε; the floor belongs to the decay
    # step "ε ← max(ε_min, ε·decay) once per episode", so it cannot apply before episode 1.
    assert Hyperparameters(epsilon=0.0).epsilon_after(0) == 0.0  # default ε_min = 0.01
    assert Hyperparameters(epsilon=0.005, epsilon_min=0.05).epsilon_after(0) == 0.005
    # exploration rate 0 means never explore
    q = QLearner("a", 3, Hyperparameters(epsilon=0.0), random.Random(1))
    assert q.epsilon == 0.0
    for _ in range(1000):
        q.choose([0.0, 1.0, 0.0])
    assert q.explored == 0


def test_the_floor_never_raises_epsilon_above_the_initial_rate() -> None:
    # ε_min bounds how far decay goes down; it must not turn "never explore" into 1 %
    # exploration after the first CI run.
    hyper = Hyperparameters(epsilon=0.0)
    assert [hyper.epsilon_after(n) for n in (1, 10, 1000)] == [0.0, 0.0, 0.0]
    hyper = Hyperparameters(epsilon=0.005, epsilon_min=0.05, epsilon_decay=1.0)
    assert hyper.epsilon_after(3) == pytest.approx(0.005)


def test_epsilon_one_always_explores() -> None:
    q = learner(3, seed=3, epsilon=1.0)
    choices = [q.choose([0.0, 10.0, 0.0]) for _ in range(300)]
    assert all(explored for _, explored in choices)
    assert {action for action, _ in choices} == {0, 1, 2}
    assert q.explored == q.decisions == 300


def test_same_seed_same_choices() -> None:
    def run(seed: int) -> list[tuple[int, bool]]:
        q = learner(4, seed=seed, epsilon=0.5)
        return [q.choose([0.0, 0.0, 1.0, 0.0]) for _ in range(200)]

    assert run(11) == run(11)
    assert run(11) != run(12)
    explored = sum(e for _, e in run(11))
    assert 0 < explored < 200


def test_greedy_tie_goes_to_the_lowest_action() -> None:
    q = learner(4, epsilon=0.0, epsilon_min=0.0)
    assert q.greedy([1.0, 3.0, 3.0, 2.0]) == 1
    assert q.greedy([5.0, 5.0, 5.0, 5.0]) == 0
    assert q.greedy([-1.0, -2.0, -1.0, -3.0]) == 0
    assert q.choose([0.0, 2.0, 2.0, 2.0]) == (1, False)


# -- ε decay ------------------------------------------------------------------------------


def test_epsilon_after_decays_per_episode_with_a_floor() -> None:
    hyper = Hyperparameters(epsilon=0.2, epsilon_decay=0.9, epsilon_min=0.05)
    assert hyper.epsilon_after(0) == pytest.approx(0.2)
    assert hyper.epsilon_after(1) == pytest.approx(0.18)
    assert hyper.epsilon_after(2) == pytest.approx(0.162)
    # 0.2 * 0.9**13 = 0.05082, 0.2 * 0.9**14 = 0.04575 -> floored at 0.05
    assert hyper.epsilon_after(13) == pytest.approx(0.2 * 0.9**13)
    assert hyper.epsilon_after(14) == 0.05
    assert hyper.epsilon_after(1000) == 0.05


def test_no_decay_keeps_epsilon() -> None:
    hyper = Hyperparameters(epsilon=0.3, epsilon_decay=1.0)
    assert hyper.epsilon_after(500) == pytest.approx(0.3)


def test_learner_epsilon_continues_from_stored_episodes() -> None:
    q = learner(2, episodes=3, epsilon=0.2, epsilon_decay=0.9, epsilon_min=0.01)
    assert q.epsilon == pytest.approx(0.2 * 0.9**3)  # 0.1458
    q.end_episode()
    assert q.episodes == 4
    assert q.epsilon == pytest.approx(0.2 * 0.9**4)  # 0.13122
    for _ in range(100):
        q.end_episode()
    assert q.epsilon == 0.01
    assert q.statistics().epsilon == 0.01
    assert q.statistics().episodes == 104


# -- batching -----------------------------------------------------------------------------


def test_deltas_are_flushed_every_update_frequency_updates() -> None:
    batches: list[DeltaBatch] = []
    q = learner(2, alpha=0.5, gamma=0.0, update_frequency=3, on_flush=batches.append)
    q.update("s", 0, 1.0, None)  # Q(s,0): 0 -> 0.5
    q.update("s", 0, 1.0, None)  # 0.5 -> 0.75
    assert batches == []
    q.update("t", 1, -2.0, None)  # Q(t,1): 0 -> -1
    assert len(batches) == 1
    assert batches[0] == {("s", 0): [pytest.approx(0.75), 2.0], ("t", 1): [-1.0, 1.0]}
    for _ in range(3):
        q.update("s", 1, 2.0, None)  # 0 -> 1 -> 1.5 -> 1.75
    assert len(batches) == 2
    assert batches[1] == {("s", 1): [pytest.approx(1.75), 3.0]}
    q.update("s", 0, 1.0, None)  # 0.75 -> 0.875: pending, not yet flushed
    assert len(batches) == 2
    q.end_episode()  # the rest goes at the end of the episode
    assert len(batches) == 3
    assert batches[2] == {("s", 0): [pytest.approx(0.125), 1.0]}
    assert q.flushes == 3
    q.end_episode()  # nothing pending: no empty batch
    assert len(batches) == 3
    # with on_flush the learner keeps nothing in its outbox
    assert q.take_deltas() == {}


def test_update_all_counts_every_action_towards_the_batch() -> None:
    batches: list[DeltaBatch] = []
    q = learner(3, update_frequency=6, on_flush=batches.append)
    q.update_all("s", [1.0, 0.0, -1.0], None)
    assert batches == []
    q.update_all("s", [1.0, 0.0, -1.0], None)
    assert len(batches) == 1
    assert {key: dn for key, (_, dn) in batches[0].items()} == {
        ("s", 0): 2.0,
        ("s", 1): 2.0,
        ("s", 2): 2.0,
    }


def test_take_deltas_sums_batches_and_empties_the_outbox() -> None:
    q = learner(1, alpha=0.5, gamma=0.0, update_frequency=2)
    for _ in range(5):
        q.update("s", 0, 1.0, None)  # 0.5, 0.75, 0.875, 0.9375, 0.96875
    assert q.flushes == 2  # after updates 2 and 4; the 5th is pending
    deltas = q.take_deltas()  # flushes the pending one too
    assert deltas == {("s", 0): [pytest.approx(0.96875), 5.0]}
    assert q.flushes == 3
    assert q.take_deltas() == {}
    q.update("s", 0, 1.0, None)  # 0.96875 -> 0.984375
    assert q.take_deltas() == {("s", 0): [pytest.approx(0.015625), 1.0]}


def test_deltas_sum_to_the_learned_values() -> None:
    q = learner(3, alpha=0.3, gamma=0.8, update_frequency=4)
    rng = random.Random(5)
    states = ["a", "b", "c"]
    for _ in range(50):
        s, n = rng.choice(states), rng.choice([*states, None])
        if rng.random() < 0.5:
            q.update(s, rng.randrange(3), rng.uniform(-1, 1), n)
        else:
            q.update_all(s, [rng.uniform(-1, 1) for _ in range(3)], n)
    deltas = q.take_deltas()
    for entry in q.entries():
        dq, dn = deltas.get((entry.state, entry.action), [0.0, 0.0])
        assert dq == pytest.approx(entry.q)
        assert dn == entry.visits


# -- warm start ---------------------------------------------------------------------------


def test_load_then_update_gives_deltas_relative_to_the_loaded_value() -> None:
    q = learner(2, alpha=0.5, gamma=0.0)
    q.load([QEntry("s", 0, 2.0, 5)])
    assert q.values("s") == [2.0, 0.0]
    assert q.visits("s") == [5, 0]
    assert q.knows("s")
    # Q = 2 + 0.5 * (1 - 2) = 1.5 -> Δq = 1.5 - 2.0 = -0.5, Δvisits = 1
    q.update("s", 0, 1.0, None)
    assert q.values("s")[0] == pytest.approx(1.5)
    assert q.visits("s") == [6, 0]
    assert q.take_deltas() == {("s", 0): [pytest.approx(-0.5), 1.0]}


def test_load_alone_produces_no_deltas() -> None:
    q = learner(2)
    q.load([QEntry("s", 0, 2.0, 5), QEntry("s", 1, -1.0, 2)])
    assert q.take_deltas() == {}
    q.end_episode()
    assert q.flushes == 0


def test_load_skips_actions_the_agent_no_longer_has() -> None:
    q = learner(2)
    q.load([QEntry("s", 5, 9.0, 1), QEntry("s", -1, 9.0, 1), QEntry("s", 1, 0.5, 1)])
    assert q.values("s") == [0.0, 0.5]
    assert q.visits("s") == [0, 1]


def test_load_takes_floats_from_numeric_strings_and_ints() -> None:
    # stores may hand back non-float numbers (e.g. Decimal from Postgres); they become floats
    from decimal import Decimal

    q = learner(2, alpha=0.5, gamma=0.0)
    q.load([QEntry("s", 0, Decimal("2.5"), 1), QEntry("s", 1, 3, 1)])  # type: ignore[arg-type]
    assert type(q.values("s")[0]) is float
    q.update("s", 0, 0.5, None)  # 2.5 + 0.5 * (0.5 - 2.5) = 1.5
    assert q.values("s") == pytest.approx([1.5, 3.0])


def test_entries_round_trip() -> None:
    q = learner(2, alpha=0.5)
    q.update("s", 1, 1.0, None)
    entries = q.entries()
    assert entries == [QEntry("s", 0, 0.0, 0), QEntry("s", 1, 0.5, 1)]
    other = learner(2)
    other.load(entries)
    assert other.values("s") == [0.0, 0.5]
    assert other.visits("s") == [0, 1]


# -- statistics ---------------------------------------------------------------------------


def test_statistics() -> None:
    q = learner(3, seed=1, episodes=2, epsilon=1.0, epsilon_decay=1.0)
    for _ in range(4):
        q.choose([0.0, 0.0, 0.0])
    q.hyper = Hyperparameters(epsilon=0.0, epsilon_min=0.0)
    for _ in range(4):
        q.choose([0.0, 0.0, 0.0])
    q.update_all("a", [1.0, 0.0, -1.0], "b", chosen=0)
    q.update_all("b", [1.0, 0.0, -1.0], None, chosen=1)
    q.update("c", 2, 3.0, None)
    stats = q.statistics()
    assert stats.agent == "test-agent"
    assert stats.episodes == 2
    assert stats.epsilon == 0.0
    assert stats.states == 3
    assert stats.q_table_size == 9  # 3 states x 3 actions
    assert stats.updates == 7
    assert stats.decisions == 8
    assert stats.explored == 4
    assert stats.exploration_share == pytest.approx(0.5)
    assert stats.mean_reward == pytest.approx(0.5)  # rewards received: 1.0 and 0.0


def test_statistics_of_a_fresh_learner() -> None:
    stats = learner(2).statistics()
    assert (stats.q_table_size, stats.states, stats.updates) == (0, 0, 0)
    assert stats.exploration_share == 0.0
    assert stats.mean_reward == 0.0
