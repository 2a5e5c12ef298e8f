"""Rewards: per-agent step rewards and the multi-objective episode reward."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from .hyperparams import ConfigError

#: Component weights from the design; configurable with ini ``qlearn_reward_weights``.
DEFAULT_WEIGHTS: dict[str, float] = {
    "coverage_gain": 0.30,
    "quality": 0.25,
    "time_efficiency": 0.20,
    "pattern_reuse": 0.15,
    "cost_efficiency": 0.10,
}

#: Why a component can be unavailable in this version (shown in reports, never faked).
UNAVAILABLE_BECAUSE: dict[str, str] = {
    "coverage_gain": "needs --qlearn-cov on this run and on an earlier one",
    "cost_efficiency": "needs a budget (--qlearn-budget) or reruns (--qlearn-reruns)",
}

COVERAGE_BONUS_AT = 90.0  # total line coverage, percent
QUALITY_BONUS_AT = 90.0  # quality component, 0-100
BONUS = 10.0
SESSION_FAILURE_PENALTY = 20.0  # internal error, interrupted run, usage error
TIMEOUT_PENALTY = 10.0
#: The episode reward is clamped to this closed range.
REWARD_RANGE = (-100.0, 100.0)


def parse_weights(text: str) -> dict[str, float]:
    """Parse ``name=weight`` pairs (comma or whitespace separated) over the defaults."""
    weights = dict(DEFAULT_WEIGHTS)
    names = ", ".join(DEFAULT_WEIGHTS)
    allowed = f"name=weight pairs with names {names} and finite weights >= 0"
    for part in text.replace(",", " ").split():
        name, sep, raw = part.partition("=")
        if not sep or name not in DEFAULT_WEIGHTS:
            raise ConfigError("qlearn_reward_weights", text, allowed)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError("qlearn_reward_weights", text, allowed) from None
        if not (math.isfinite(value) and value >= 0.0):
            raise ConfigError("qlearn_reward_weights", text, allowed)
        weights[name] = value
    return weights


@dataclass(frozen=True)
class EpisodeFacts:
    """What one session measured, as inputs to the episode reward."""

    tests: int
    failures: int
    apfd: float | None
    duration: float
    time_to_first_failure: float | None
    previous_durations: tuple[float, ...] = ()
    exploited: int = 0
    exploited_paid_off: int = 0
    coverage_percent: float | None = None
    previous_coverage_percent: float | None = None
    session_failed: bool = False
    timed_out: bool = False
    #: With ``--qlearn-budget``: the budget given and the seconds the selected tests used.
    budget_seconds: float | None = None
    budget_used: float | None = None
    #: With reruns: the seconds they took, and the seconds the flakes they confirmed saved
    #: (a false red avoided saves rerunning the whole session).
    rerun_seconds: float | None = None
    rerun_saved: float | None = None


@dataclass(frozen=True)
class EpisodeReward:
    """The weighted components (each 0-100, None when unavailable) and the clamped total."""

    components: dict[str, float | None]
    weights: dict[str, float]
    bonus: float
    penalty: float
    total: float
    notes: dict[str, str] = field(default_factory=dict)


class RewardCalculator:
    """Step rewards for each agent and the episode reward for the whole session."""

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)

    # -- step rewards -------------------------------------------------------------------
    @staticmethod
    def tier_urgency(tier: int, n_tiers: int) -> float:
        """1.0 for the first tier (runs first) down to 0.0 for the last one."""
        return 1.0 - tier / (n_tiers - 1) if n_tiers > 1 else 1.0

    def prioritizer(self, tier: int, n_tiers: int, failed: bool) -> float:
        """Position-aware reward in [-1, 1]: ``1 − 2·(urgency − outcome)²``.

        A failure placed in the first tier pays +1 and in the last tier costs −1; a passing
        test placed in the first tier (ahead of the failures) costs −1. Because the penalty
        is quadratic, the tier with the best expected reward is the one whose urgency is
        nearest to the test's failure probability, so the Q-values stay calibrated.
        """
        urgency = self.tier_urgency(tier, n_tiers)
        outcome = 1.0 if failed else 0.0
        return 1.0 - 2.0 * (urgency - outcome) ** 2

    def expected_prioritizer(self, tier: int, n_tiers: int, p_fail: float) -> float:
        """Expected step reward of a tier for a test failing with probability ``p_fail``."""
        return p_fail * self.prioritizer(tier, n_tiers, True) + (1.0 - p_fail) * self.prioritizer(
            tier, n_tiers, False
        )

    # -- episode reward -----------------------------------------------------------------
    def episode(self, facts: EpisodeFacts) -> EpisodeReward:
        notes: dict[str, str] = {}
        components: dict[str, float | None] = {}

        if facts.coverage_percent is not None and facts.previous_coverage_percent is not None:
            gain = facts.coverage_percent - facts.previous_coverage_percent
            components["coverage_gain"] = _clamp(50.0 + 50.0 * gain / 10.0, 0.0, 100.0)
        else:
            components["coverage_gain"] = None
            notes["coverage_gain"] = UNAVAILABLE_BECAUSE["coverage_gain"]

        if facts.failures and facts.apfd is not None:
            components["quality"] = 100.0 * facts.apfd
        else:
            components["quality"] = None
            notes["quality"] = "no failures this run: nothing to find early"

        parts: list[float] = []
        if facts.time_to_first_failure is not None and facts.duration > 0:
            parts.append(100.0 * (1.0 - min(1.0, facts.time_to_first_failure / facts.duration)))
        if facts.previous_durations and facts.duration > 0:
            typical = sorted(facts.previous_durations)[len(facts.previous_durations) // 2]
            parts.append(100.0 * min(1.0, typical / facts.duration))
        if parts:
            components["time_efficiency"] = sum(parts) / len(parts)
        else:
            components["time_efficiency"] = None
            notes["time_efficiency"] = "first episode and no failure: nothing to compare"

        if facts.exploited:
            components["pattern_reuse"] = 100.0 * facts.exploited_paid_off / facts.exploited
        else:
            components["pattern_reuse"] = None
            notes["pattern_reuse"] = "no decision reused a learned value"

        costs: list[float] = []
        if facts.budget_seconds is not None and facts.budget_used is not None:
            # within the budget: 100; an overrun scales it down by budget / time used
            used = facts.budget_used
            ratio = 1.0 if used <= facts.budget_seconds else facts.budget_seconds / used
            costs.append(100.0 * ratio)
        if facts.rerun_seconds is not None and facts.rerun_saved is not None:
            # rerun time against the time the avoided false reds saved
            spent = facts.rerun_seconds + facts.rerun_saved
            costs.append(100.0 * facts.rerun_saved / spent if spent > 0 else 100.0)
        if costs:
            components["cost_efficiency"] = sum(costs) / len(costs)
        else:
            components["cost_efficiency"] = None
            notes["cost_efficiency"] = UNAVAILABLE_BECAUSE["cost_efficiency"]

        weighted = sum(self.weights[name] * (value or 0.0) for name, value in components.items())
        bonus = 0.0
        if facts.coverage_percent is not None and facts.coverage_percent >= COVERAGE_BONUS_AT:
            bonus += BONUS
        quality = components["quality"]
        if quality is not None and quality >= QUALITY_BONUS_AT:
            bonus += BONUS
        penalty = (SESSION_FAILURE_PENALTY if facts.session_failed else 0.0) + (
            TIMEOUT_PENALTY if facts.timed_out else 0.0
        )
        total = _clamp(weighted + bonus - penalty, *REWARD_RANGE)
        return EpisodeReward(components, dict(self.weights), bonus, penalty, total, notes)


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))
