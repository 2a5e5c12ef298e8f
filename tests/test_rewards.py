"""Prioritizer step rewards and the multi-objective episode reward."""

from __future__ import annotations

import pytest

from pytest_qlearn.engine.hyperparams import ConfigError
from pytest_qlearn.engine.rewards import (
    BONUS,
    DEFAULT_WEIGHTS,
    REWARD_RANGE,
    SESSION_FAILURE_PENALTY,
    TIMEOUT_PENALTY,
    UNAVAILABLE_BECAUSE,
    EpisodeFacts,
    RewardCalculator,
    parse_weights,
)

CALC = RewardCalculator()

# -- prioritizer step reward --------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "failed", "reward"),
    [
        (0, True, 1.0),  # failure in the first tier pays
        (2, True, -1.0),  # failure in the last tier costs
        (0, False, -1.0),  # passing test ahead of the failures costs
        (2, False, 1.0),  # passing test at the end is right
        (1, True, 0.5),  # middle: 1 - 2 * 0.5**2
        (1, False, 0.5),
    ],
)
def test_prioritizer_reward_three_tiers(tier: int, failed: bool, reward: float) -> None:
    assert CALC.prioritizer(tier, 3, failed) == pytest.approx(reward)


def test_prioritizer_reward_depends_on_the_action() -> None:
    # the RETECS pitfall: a reward that ignores the action cannot rank
    assert len({CALC.prioritizer(t, 3, True) for t in range(3)}) == 3


def test_tier_urgency() -> None:
    assert [CALC.tier_urgency(t, 3) for t in range(3)] == [1.0, 0.5, 0.0]
    assert [CALC.tier_urgency(t, 5) for t in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert CALC.tier_urgency(0, 1) == 1.0


def test_expected_prioritizer_hand_computed() -> None:
    # p = 0.3, first tier: 0.3 * 1 + 0.7 * (-1) = -0.4
    assert CALC.expected_prioritizer(0, 3, 0.3) == pytest.approx(-0.4)
    # middle tier: 0.5 either way
    assert CALC.expected_prioritizer(1, 3, 0.3) == pytest.approx(0.5)
    # last tier: 0.3 * (-1) + 0.7 * 1 = 0.4
    assert CALC.expected_prioritizer(2, 3, 0.3) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("p", "n_tiers", "best"),
    [
        (0.0, 3, 2),
        (0.2, 3, 2),
        (0.3, 3, 1),
        (0.5, 3, 1),
        (0.7, 3, 1),
        (0.8, 3, 0),
        (1.0, 3, 0),
        (0.1, 5, 4),  # urgencies 1, .75, .5, .25, 0
        (0.2, 5, 3),
        (0.6, 5, 2),
        (0.9, 5, 0),
    ],
)
def test_expected_reward_argmax_is_the_tier_nearest_to_p(p: float, n_tiers: int, best: int) -> None:
    expected = [CALC.expected_prioritizer(t, n_tiers, p) for t in range(n_tiers)]
    assert max(range(n_tiers), key=expected.__getitem__) == best
    nearest = min(range(n_tiers), key=lambda t: abs(CALC.tier_urgency(t, n_tiers) - p))
    assert nearest == best


# -- episode reward -----------------------------------------------------------------------


def test_episode_components_hand_computed() -> None:
    facts = EpisodeFacts(
        tests=10,
        failures=2,
        apfd=0.8,
        duration=10.0,
        time_to_first_failure=2.0,
        previous_durations=(20.0, 8.0, 12.0),
        exploited=4,
        exploited_paid_off=3,
    )
    reward = CALC.episode(facts)
    # quality = 100 * APFD = 80
    # time efficiency = mean of 100 * (1 - 2/10) = 80 and 100 * min(1, median 12 / 10) = 100
    # pattern reuse = 100 * 3/4 = 75
    assert reward.components == {
        "coverage_gain": None,
        "quality": pytest.approx(80.0),
        "time_efficiency": pytest.approx(90.0),
        "pattern_reuse": pytest.approx(75.0),
        "cost_efficiency": None,
    }
    # 0.25 * 80 + 0.20 * 90 + 0.15 * 75 = 20 + 18 + 11.25 = 49.25 (unavailable count 0)
    assert reward.total == pytest.approx(49.25)
    assert reward.bonus == 0.0
    assert reward.penalty == 0.0
    assert reward.weights == DEFAULT_WEIGHTS


def test_unavailable_components_are_none_with_a_note() -> None:
    facts = EpisodeFacts(tests=3, failures=0, apfd=None, duration=1.0, time_to_first_failure=None)
    reward = CALC.episode(facts)
    assert reward.components == dict.fromkeys(DEFAULT_WEIGHTS)
    assert set(reward.notes) == set(DEFAULT_WEIGHTS)
    assert reward.notes["coverage_gain"] == UNAVAILABLE_BECAUSE["coverage_gain"]
    assert reward.notes["cost_efficiency"] == UNAVAILABLE_BECAUSE["cost_efficiency"]
    assert all(note for note in reward.notes.values())
    assert reward.total == 0.0


def test_available_components_have_no_note() -> None:
    facts = EpisodeFacts(
        tests=4,
        failures=1,
        apfd=0.5,
        duration=4.0,
        time_to_first_failure=1.0,
        exploited=1,
        exploited_paid_off=1,
        coverage_percent=50.0,
        previous_coverage_percent=50.0,
    )
    reward = CALC.episode(facts)
    assert set(reward.notes) == {"cost_efficiency"}


def test_coverage_gain_component() -> None:
    # gain 2 points: 50 + 50 * 2/10 = 60; 0.30 * 60 = 18
    facts = EpisodeFacts(
        tests=1,
        failures=0,
        apfd=None,
        duration=1.0,
        time_to_first_failure=None,
        coverage_percent=72.0,
        previous_coverage_percent=70.0,
    )
    reward = CALC.episode(facts)
    assert reward.components["coverage_gain"] == pytest.approx(60.0)
    assert reward.total == pytest.approx(18.0)


@pytest.mark.parametrize(("now", "before", "component"), [(40.0, 70.0, 0.0), (95.0, 60.0, 100.0)])
def test_coverage_gain_is_clamped(now: float, before: float, component: float) -> None:
    facts = EpisodeFacts(
        tests=1,
        failures=0,
        apfd=None,
        duration=1.0,
        time_to_first_failure=None,
        coverage_percent=now,
        previous_coverage_percent=before,
    )
    assert CALC.episode(facts).components["coverage_gain"] == pytest.approx(component)


def _quality_facts(
    apfd: float, *, session_failed: bool = False, exploited: int = 0, exploited_paid_off: int = 0
) -> EpisodeFacts:
    """Only the quality component is available (one failure, no timing, no reuse)."""
    return EpisodeFacts(
        tests=10,
        failures=1,
        apfd=apfd,
        duration=5.0,
        time_to_first_failure=None,
        session_failed=session_failed,
        exploited=exploited,
        exploited_paid_off=exploited_paid_off,
    )


@pytest.mark.parametrize(("apfd", "bonus"), [(0.89, 0.0), (0.90, BONUS), (0.95, BONUS)])
def test_quality_bonus_at_90(apfd: float, bonus: float) -> None:
    reward = CALC.episode(_quality_facts(apfd))
    assert reward.bonus == bonus
    # only quality is available: 0.25 * 100 * apfd + bonus
    assert reward.total == pytest.approx(25.0 * apfd + bonus)


def test_coverage_bonus_at_90() -> None:
    facts = EpisodeFacts(
        tests=1,
        failures=0,
        apfd=None,
        duration=1.0,
        time_to_first_failure=None,
        coverage_percent=90.0,
        previous_coverage_percent=90.0,
    )
    reward = CALC.episode(facts)
    assert reward.bonus == BONUS
    assert reward.total == pytest.approx(0.30 * 50.0 + BONUS)


def test_session_failure_penalty() -> None:
    reward = CALC.episode(_quality_facts(0.5, session_failed=True))
    assert reward.penalty == SESSION_FAILURE_PENALTY == 20.0
    assert reward.total == pytest.approx(0.25 * 50.0 - 20.0)


def test_timeout_and_session_failure_penalties_add_up() -> None:
    facts = EpisodeFacts(
        tests=0,
        failures=0,
        apfd=None,
        duration=0.0,
        time_to_first_failure=None,
        session_failed=True,
        timed_out=True,
    )
    reward = CALC.episode(facts)
    assert reward.penalty == SESSION_FAILURE_PENALTY + TIMEOUT_PENALTY
    assert reward.total == pytest.approx(-30.0)


def test_total_is_clamped_to_the_reward_range() -> None:
    calc = RewardCalculator({**DEFAULT_WEIGHTS, "quality": 2.0, "pattern_reuse": 1.0})
    facts = _quality_facts(0.95, exploited=2, exploited_paid_off=2)
    reward = calc.episode(facts)
    # 2.0 * 95 + 1.0 * 100 + bonus 10 = 300 -> clamped
    assert reward.total == REWARD_RANGE[1] == 100.0
    assert reward.bonus == BONUS


def test_custom_weights_are_used_and_reported() -> None:
    weights = {**DEFAULT_WEIGHTS, "quality": 0.5}
    reward = RewardCalculator(weights).episode(_quality_facts(0.5))
    assert reward.weights["quality"] == 0.5
    assert reward.total == pytest.approx(25.0)


def test_time_efficiency_uses_the_median_previous_session() -> None:
    facts = EpisodeFacts(
        tests=3,
        failures=0,
        apfd=None,
        duration=20.0,
        time_to_first_failure=None,
        previous_durations=(30.0, 10.0, 5.0),
    )
    # median of 5, 10, 30 is 10; 100 * min(1, 10 / 20) = 50
    assert CALC.episode(facts).components["time_efficiency"] == pytest.approx(50.0)


# -- parse_weights ------------------------------------------------------------------------


def test_parse_weights_empty_gives_the_defaults() -> None:
    assert parse_weights("") == DEFAULT_WEIGHTS
    assert parse_weights("   ") == DEFAULT_WEIGHTS


def test_parse_weights_comma_and_whitespace() -> None:
    weights = parse_weights("quality=0.5, time_efficiency=0.1\npattern_reuse=0")
    assert weights == {
        **DEFAULT_WEIGHTS,
        "quality": 0.5,
        "time_efficiency": 0.1,
        "pattern_reuse": 0,
    }
    assert DEFAULT_WEIGHTS["quality"] == 0.25  # defaults not modified


@pytest.mark.parametrize(
    "text",
    [
        "quality",
        "quality:0.5",
        "speed=1",
        "quality=abc",
        "quality=",
        "quality=-0.1",
        "quality=nan",
        "quality=inf",
        "quality=0.5 bogus=1",
    ],
)
def test_parse_weights_rejects_bad_input(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_weights(text)
    message = str(info.value)
    assert "qlearn_reward_weights" in message
    assert text in message
    for name in DEFAULT_WEIGHTS:
        assert name in message
