"""Hyperparameters of a Q-learning agent, with the ranges the design allows.

Pure Python: the plugin, the replay harness and the CLI validate values with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any


class ConfigError(ValueError):
    """A configuration value is outside what is allowed.

    The message always names the key, the value and the allowed range; the plugin turns it
    into a ``pytest.UsageError``.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"{key} = {value!r} is not valid: allowed is {allowed}")


@dataclass(frozen=True)
class Range:
    """A closed or half-open numeric interval used for validation and documentation."""

    low: float
    high: float
    low_open: bool = False
    integer: bool = False

    def contains(self, value: float) -> bool:
        if math.isnan(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self) -> str:
        if self.integer:
            return f"a whole number from {int(self.low)} to {int(self.high)}"
        left = "(" if self.low_open else "["
        return f"a number in {left}{self.low:g}, {self.high:g}]"


# ini key suffix -> (dataclass field, range); names and ranges are fixed by DESIGN.md.
RANGES: dict[str, tuple[str, Range]] = {
    "learning_rate": ("alpha", Range(0.0, 1.0, low_open=True)),
    "discount_factor": ("gamma", Range(0.0, 1.0)),
    "exploration_rate": ("epsilon", Range(0.0, 1.0)),
    "exploration_decay": ("epsilon_decay", Range(0.9, 1.0)),
    "min_exploration_rate": ("epsilon_min", Range(0.0, 0.1)),
    "update_frequency": ("update_frequency", Range(1, 100_000, integer=True)),
}


@dataclass(frozen=True)
class Hyperparameters:
    """α, γ, initial ε, ε decay per episode, ε floor and the store-sync batch size."""

    alpha: float = 0.01
    gamma: float = 0.95
    epsilon: float = 0.2
    epsilon_decay: float = 0.9
    epsilon_min: float = 0.0
    update_frequency: int = 10

    def epsilon_after(self, episodes: int) -> float:
        """ε after ``episodes`` completed episodes: decayed once per episode, floored.

        The floor never lifts ε above the configured starting rate: ``exploration_rate = 0``
        means no exploration at all, whatever the floor.
        """
        floor = min(self.epsilon_min, self.epsilon)
        return max(floor, self.epsilon * self.epsilon_decay**episodes)

    def changed(self, changes: Mapping[str, float | int]) -> Hyperparameters:
        """A copy with already validated values replaced, keyed by field name."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def overridden(self, **values: float) -> Hyperparameters:
        """A validated copy with some values replaced, keyed by ini suffix or field name."""
        by_field = {f.name for f in fields(self)}
        changes: dict[str, float | int] = {}
        for key, raw in values.items():
            if key in RANGES:
                field_name, _ = RANGES[key]
                changes[field_name] = parse_hyperparameter(f"qlearn_{key}", key, raw)
            elif key in by_field:
                suffix = next(k for k, (f, _) in RANGES.items() if f == key)
                changes[key] = parse_hyperparameter(f"qlearn_{suffix}", suffix, raw)
            else:
                raise ConfigError(key, raw, "one of " + ", ".join(sorted(RANGES)))
        return replace(self, **changes)  # type: ignore[arg-type]


def parse_hyperparameter(key: str, suffix: str, raw: object) -> float | int:
    """Parse one hyperparameter value (from ini text or a number) and check its range."""
    _, allowed = RANGES[suffix]
    text = str(raw).strip()
    try:
        value: float | int = int(text) if allowed.integer else float(text)
    except ValueError:
        raise ConfigError(key, raw, allowed.describe()) from None
    if not allowed.contains(float(value)):
        raise ConfigError(key, raw, allowed.describe())
    return value


def parse_changes(items: Sequence[str]) -> dict[str, float | int]:
    """``KEY=VALUE`` overrides (ini names without ``qlearn_``, as the command line's
    repeatable ``--set`` gives them), validated, as field name -> value. A bad item raises
    ``ValueError`` with a one-line message naming it and what is allowed."""
    values: dict[str, Any] = {}  # validated and converted by overridden()
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in RANGES:
            raise ValueError(
                f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(RANGES)}"
            )
        values[key.strip()] = value.strip()
    try:
        changed = Hyperparameters().overridden(**values)
    except ConfigError as exc:
        key = exc.key.removeprefix("qlearn_")
        raise ValueError(f"--set {key}={exc.value}: allowed is {exc.allowed}") from None
    return {RANGES[key][0]: getattr(changed, RANGES[key][0]) for key in values}


def parse_overrides(items: Sequence[str], base: Hyperparameters | None = None) -> Hyperparameters:
    """``base`` (the defaults when None) with ``KEY=VALUE`` overrides (see
    :func:`parse_changes`)."""
    return (base or Hyperparameters()).changed(parse_changes(items))
