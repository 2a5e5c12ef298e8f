"""Hyperparameter ranges (DESIGN.md table), ConfigError messages and Hyperparameters.overridden."""

from __future__ import annotations

import math

import pytest

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.agents import selector as sel
from pytest_qlearn.engine.hyperparams import (
    RANGES,
    ConfigError,
    Hyperparameters,
    parse_changes,
    parse_hyperparameter,
    parse_overrides,
)
from pytest_qlearn.session import default_registry
from pytest_qlearn.settings import RawOptions, resolve


def parse(suffix: str, raw: object) -> float | int:
    return parse_hyperparameter(f"qlearn_{suffix}", suffix, raw)


@pytest.mark.parametrize(
    ("suffix", "raw", "expected"),
    [
        ("learning_rate", "1", 1.0),
        ("learning_rate", "1e-9", 1e-9),
        ("learning_rate", 0.5, 0.5),
        ("discount_factor", "0", 0.0),
        ("discount_factor", "1", 1.0),
        ("exploration_rate", "0", 0.0),
        ("exploration_rate", "1.0", 1.0),
        ("exploration_decay", "0.9", 0.9),
        ("exploration_decay", "1.0", 1.0),
        ("exploration_decay", " 0.95 ", 0.95),
        ("min_exploration_rate", "0", 0.0),
        ("min_exploration_rate", "0.1", 0.1),
        ("update_frequency", "1", 1),
        ("update_frequency", "100000", 100_000),
        ("update_frequency", 42, 42),
    ],
)
def test_values_inside_the_ranges_are_accepted(suffix: str, raw: object, expected: float) -> None:
    value = parse(suffix, raw)
    assert value == expected
    if suffix == "update_frequency":
        assert type(value) is int


@pytest.mark.parametrize(
    ("suffix", "raw"),
    [
        ("learning_rate", "0"),  # (0, 1]: zero is excluded
        ("learning_rate", "0.0"),
        ("learning_rate", "1.5"),
        ("learning_rate", "-0.1"),
        ("learning_rate", "nan"),
        ("learning_rate", "inf"),
        ("discount_factor", "1.01"),
        ("discount_factor", "-0.01"),
        ("discount_factor", "NaN"),
        ("exploration_rate", "1.1"),
        ("exploration_rate", "nan"),
        ("exploration_decay", "0.89"),
        ("exploration_decay", "1.01"),
        ("exploration_decay", "nan"),
        ("min_exploration_rate", "0.11"),
        ("min_exploration_rate", "-0.01"),
        ("min_exploration_rate", "nan"),
        ("update_frequency", "0"),
        ("update_frequency", "100001"),
        ("update_frequency", "1.5"),
        ("update_frequency", "abc"),
        ("update_frequency", ""),
        ("update_frequency", "-5"),
        ("learning_rate", "abc"),
        ("learning_rate", ""),
    ],
)
def test_values_outside_the_ranges_are_rejected(suffix: str, raw: object) -> None:
    with pytest.raises(ConfigError):
        parse(suffix, raw)


def test_float_nan_object_is_rejected() -> None:
    with pytest.raises(ConfigError):
        parse("discount_factor", math.nan)


@pytest.mark.parametrize(
    ("suffix", "raw", "allowed"),
    [
        ("learning_rate", "1.5", "(0, 1]"),
        ("learning_rate", "0", "(0, 1]"),
        ("discount_factor", "2", "[0, 1]"),
        ("exploration_rate", "-1", "[0, 1]"),
        ("exploration_decay", "0.89", "[0.9, 1]"),
        ("min_exploration_rate", "0.11", "[0, 0.1]"),
        ("update_frequency", "100001", "1 to 100000"),
        ("update_frequency", "abc", "1 to 100000"),
        ("update_frequency", "1.5", "1 to 100000"),
    ],
)
def test_config_error_names_key_value_and_range(suffix: str, raw: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(suffix, raw)
    message = str(info.value)
    assert f"qlearn_{suffix}" in message
    assert raw in message
    assert allowed in message
    assert info.value.key == f"qlearn_{suffix}"
    assert info.value.value == raw
    assert allowed in info.value.allowed


def test_config_error_is_a_value_error() -> None:
    # The plugin turns ValueErrors of configuration into pytest.UsageError.
    assert issubclass(ConfigError, ValueError)


def test_ranges_table_matches_the_design() -> None:
    table = {suffix: field for suffix, (field, _) in RANGES.items()}
    assert table == {
        "learning_rate": "alpha",
        "discount_factor": "gamma",
        "exploration_rate": "epsilon",
        "exploration_decay": "epsilon_decay",
        "min_exploration_rate": "epsilon_min",
        "update_frequency": "update_frequency",
    }


def test_defaults_are_the_replay_winners() -> None:
    # α, ε decay and ε floor differ from DESIGN.md's table: they won on every replayed
    # data set (README, "How it learns"); γ, ε₀ and the sync batch are the design's
    hyper = Hyperparameters()
    assert (
        hyper.alpha,
        hyper.gamma,
        hyper.epsilon,
        hyper.epsilon_decay,
        hyper.epsilon_min,
        hyper.update_frequency,
    ) == (0.01, 0.95, 0.2, 0.9, 0.0, 10)


def test_the_prioritizer_has_defaults_of_its_own() -> None:
    # every tier is updated after every run, so exploring teaches the prioritizer nothing:
    # it starts at ε = 0.02; α = 0.0075 won the replays. The other agents keep the table's.
    assert Hyperparameters(alpha=0.0075, epsilon=0.02) == prio.DEFAULT_HYPER
    registry = default_registry()
    assert registry.get(prio.NAME).hyper == prio.DEFAULT_HYPER
    assert registry.get(sel.NAME).hyper == Hyperparameters()


def test_ini_values_apply_to_every_agent_over_its_own_defaults() -> None:
    settings = resolve(
        RawOptions(
            ini_hyper={"learning_rate": "0.2", "exploration_rate": None},
            ini_agent_hyper=[
                "prioritizer: discount_factor=0.5",
                "selector: min_exploration_rate=0.05",
            ],
            environ={},
        )
    )
    assert settings.hyper_changes == {"alpha": 0.2}
    registry = default_registry(changes=settings.hyper_changes)
    # the ini α reaches both; the prioritizer keeps its own ε, the selector the table's
    assert registry.get(prio.NAME).hyper == Hyperparameters(alpha=0.2, epsilon=0.02)
    assert registry.get(sel.NAME).hyper == Hyperparameters(alpha=0.2)
    # per-agent lines start from that agent's defaults with the ini values applied
    assert settings.agent_hyper[prio.NAME] == Hyperparameters(alpha=0.2, epsilon=0.02, gamma=0.5)
    assert settings.agent_hyper[sel.NAME] == Hyperparameters(alpha=0.2, epsilon_min=0.05)


def test_a_full_set_of_hyperparameters_applies_to_every_agent() -> None:
    hyper = Hyperparameters(alpha=0.3)
    registry = default_registry(hyper)
    assert {t.name: t.hyper for t in registry.types()} == {t.name: hyper for t in registry.types()}


def test_parse_changes_keeps_only_what_was_set_by_field_name() -> None:
    assert parse_changes(["learning_rate=0.2", "update_frequency=5"]) == {
        "alpha": 0.2,
        "update_frequency": 5,
    }
    assert parse_changes([]) == {}
    assert parse_overrides(["exploration_rate=0.1"], prio.DEFAULT_HYPER) == Hyperparameters(
        alpha=0.0075, epsilon=0.1
    )
    with pytest.raises(ValueError, match=r"--set learning_rate=2: allowed is a number in \(0, 1\]"):
        parse_changes(["learning_rate=2"])


# -- overridden ---------------------------------------------------------------------------


def test_overridden_by_ini_suffix_parses_text() -> None:
    base = Hyperparameters()
    hyper = base.overridden(learning_rate="0.5", update_frequency="25", exploration_decay="0.9")
    assert hyper.alpha == 0.5
    assert hyper.update_frequency == 25
    assert type(hyper.update_frequency) is int
    assert hyper.epsilon_decay == 0.9
    # untouched values are kept, and the original is not modified
    assert hyper.gamma == base.gamma
    assert base.alpha == 0.01
    assert base.update_frequency == 10


def test_overridden_by_field_name() -> None:
    hyper = Hyperparameters().overridden(alpha=0.3, epsilon_min="0.05", gamma=0)
    assert (hyper.alpha, hyper.epsilon_min, hyper.gamma) == (0.3, 0.05, 0.0)


def test_overridden_by_field_name_validates_and_names_the_ini_key() -> None:
    with pytest.raises(ConfigError) as info:
        Hyperparameters().overridden(alpha=0)
    assert info.value.key == "qlearn_learning_rate"
    assert "(0, 1]" in str(info.value)


@pytest.mark.parametrize(
    ("key", "raw", "ini_key"),
    [
        ("exploration_decay", "0.8", "qlearn_exploration_decay"),
        ("update_frequency", "0", "qlearn_update_frequency"),
        ("min_exploration_rate", "0.2", "qlearn_min_exploration_rate"),
        ("epsilon", "1.2", "qlearn_exploration_rate"),
    ],
)
def test_overridden_rejects_out_of_range(key: str, raw: str, ini_key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Hyperparameters().overridden(**{key: raw})
    assert info.value.key == ini_key
    assert raw in str(info.value)


def test_overridden_rejects_unknown_keys_and_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        Hyperparameters().overridden(learningrate="0.5")
    message = str(info.value)
    assert "learningrate" in message
    for suffix in RANGES:
        assert suffix in message


def test_overridden_with_nothing_is_an_equal_copy() -> None:
    hyper = Hyperparameters(alpha=0.7)
    assert hyper.overridden() == hyper
