"""One duration grammar for every option that takes a duration: ``--qlearn-budget`` (also
``qlearn_budget``) and ``qlearn progress --since`` accept the same texts and mean the same
seconds."""

from __future__ import annotations

import argparse

import pytest

from pytest_qlearn.agents.selector import parse_budget
from pytest_qlearn.engine.durations import DURATION_FORMS, parse_duration
from pytest_qlearn.engine.hyperparams import ConfigError
from pytest_qlearn.inspector.commands import since

SAME = [
    ("90s", 90.0),
    ("2.5m", 150.0),
    ("2.5M", 150.0),
    (".5h", 1800.0),
    ("1H", 3600.0),
    (" 7d ", 604_800.0),
    ("2w", 1_209_600.0),
    ("3.m", 180.0),
]


@pytest.mark.parametrize(("text", "seconds"), SAME)
def test_budget_and_since_read_a_duration_alike(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_budget("--qlearn-budget", text).seconds == seconds
    assert since(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "-5s", "5 min", "1e3s", "nan s", "%"])
def test_what_is_no_duration_is_refused_by_both_naming_the_forms(text: str) -> None:
    assert parse_duration(text) is None
    with pytest.raises(ConfigError) as budget_error:
        parse_budget("--qlearn-budget", text)
    assert DURATION_FORMS in str(budget_error.value)
    with pytest.raises(argparse.ArgumentTypeError) as since_error:
        since(text)
    assert DURATION_FORMS in str(since_error.value)


def test_only_the_budget_takes_a_share_and_only_since_takes_all() -> None:
    assert parse_budget("--qlearn-budget", "25%").share == 0.25
    assert since("all") is None
    with pytest.raises(argparse.ArgumentTypeError):
        since("25%")
    with pytest.raises(ConfigError):
        parse_budget("--qlearn-budget", "all")


def test_a_zero_budget_is_refused_but_a_zero_window_is_a_window() -> None:
    with pytest.raises(ConfigError):
        parse_budget("--qlearn-budget", "0s")
    assert since("0s") == 0.0
