"""TestHistory: recording verdicts, flips, the kept window, Welford durations."""

from __future__ import annotations

import statistics

import pytest

from pytest_qlearn.engine.history import FAILED, KEPT_VERDICTS, PASSED, SKIPPED, TestHistory


def replay(verdicts: str, durations: list[float] | None = None) -> TestHistory:
    history = TestHistory("m.py::test_x")
    durations = durations or [1.0] * len(verdicts)
    for episode, (verdict, duration) in enumerate(zip(verdicts, durations, strict=True), 1):
        history = history.record(verdict, duration, episode)
    return history


def test_new_history() -> None:
    history = TestHistory("t")
    assert history.is_new
    assert history.failure_rate == 0.0
    assert history.runs_since_failure() is None
    assert history.last_verdicts(3) == "---"


def test_record_counts_runs_failures_and_episodes() -> None:
    history = replay("PFPF")
    assert history.runs == 4
    assert history.failures == 2
    assert history.verdicts == "PFPF"
    assert history.first_episode == 1
    assert history.last_run_episode == 4
    assert history.last_failure_episode == 4
    assert history.failure_rate == 0.5
    assert not history.is_new


def test_record_returns_a_new_history_and_keeps_the_old_one() -> None:
    old = TestHistory("t")
    new = old.record(FAILED, 2.0, 7)
    assert old.runs == 0
    assert old.verdicts == ""
    assert new.runs == 1
    assert new.test_id == "t"
    assert new.last_failure_episode == 7


@pytest.mark.parametrize(
    ("verdicts", "flips"),
    [("", 0), ("P", 0), ("PP", 0), ("PF", 1), ("PFP", 2), ("FFPPF", 2), ("PFPFPF", 5)],
)
def test_flips_count_verdict_changes(verdicts: str, flips: int) -> None:
    assert replay(verdicts).flips == flips


def test_skipped_run_between_verdicts_does_not_hide_a_flip() -> None:
    history = replay("PSF")
    assert history.flips == 1
    assert history.verdicts == "PF"


def test_skipped_run_counts_no_verdict_but_updates_episodes() -> None:
    history = TestHistory("t").record(SKIPPED, 5.0, 3)
    assert history.runs == 0
    assert history.verdicts == ""
    assert not history.is_new  # seen in an episode, even though it only skipped
    assert history.failure_rate == 0.0
    assert history.runs_since_failure() is None
    assert history.first_episode == 3
    assert history.last_run_episode == 3
    assert history.duration_mean == 0.0
    assert history.last_duration == 0.0

    history = history.record(PASSED, 2.0, 4).record(SKIPPED, 100.0, 5)
    assert history.runs == 1
    assert history.verdicts == "P"
    assert history.first_episode == 3
    assert history.last_run_episode == 5
    assert history.duration_mean == 2.0  # the skipped run's duration is not averaged in
    assert history.last_duration == 2.0


def test_verdict_window_keeps_the_most_recent() -> None:
    verdicts = "F" + "P" * KEPT_VERDICTS  # 17 verdicts; the failure falls out of the window
    history = replay(verdicts)
    assert len(history.verdicts) == KEPT_VERDICTS
    assert history.verdicts == "P" * KEPT_VERDICTS
    # counters are not windowed
    assert history.runs == KEPT_VERDICTS + 1
    assert history.failures == 1
    assert history.flips == 1


def test_verdict_window_order_is_oldest_first() -> None:
    verdicts = "PPFPFFPPPPPPPPPPFP"  # 18 verdicts
    assert replay(verdicts).verdicts == verdicts[-KEPT_VERDICTS:]
    assert replay(verdicts).verdicts.endswith("FP")


def test_welford_mean_and_m2() -> None:
    durations = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    history = replay("P" * len(durations), durations)
    # mean = 40/8 = 5; squared deviations 9+1+1+1+0+0+4+16 = 32
    assert history.duration_mean == pytest.approx(5.0)
    assert history.duration_m2 == pytest.approx(32.0)
    assert history.duration_m2 / (history.runs - 1) == pytest.approx(statistics.variance(durations))
    assert history.last_duration == 9.0


def test_welford_first_value() -> None:
    history = TestHistory("t").record(FAILED, 0.25, 1)
    assert history.duration_mean == 0.25
    assert history.duration_m2 == 0.0


@pytest.mark.parametrize(
    ("verdicts", "since"),
    [
        ("PPP", None),  # never failed
        ("F", 0),
        ("PF", 0),
        ("FP", 1),
        ("FPP", 2),
        ("FPFPPP", 3),
        ("FPSP", 2),  # skips are not verdicts
    ],
)
def test_runs_since_failure(verdicts: str, since: int | None) -> None:
    assert replay(verdicts).runs_since_failure() == since


def test_runs_since_failure_older_than_the_window() -> None:
    history = replay("F" + "P" * (KEPT_VERDICTS + 4))
    # at least the whole window passed since the failure
    assert history.runs_since_failure() == KEPT_VERDICTS


@pytest.mark.parametrize(
    ("verdicts", "k", "expected"),
    [
        ("", 3, "---"),
        ("P", 3, "--P"),
        ("FP", 3, "-FP"),
        ("PFPPF", 3, "PPF"),
        ("PFPPF", 1, "F"),
        ("PFPPF", 5, "PFPPF"),
        ("PFPPF", 7, "--PFPPF"),
        ("PSFSP", 3, "PFP"),
    ],
)
def test_last_verdicts_padding(verdicts: str, k: int, expected: str) -> None:
    assert replay(verdicts).last_verdicts(k) == expected


def test_last_zero_verdicts_is_empty() -> None:
    # "the last k verdicts" with k = 0 is nothing, not the whole window
    assert replay("PFP").last_verdicts(0) == ""


def test_fixture_time_is_a_mean_over_the_recent_runs_with_a_verdict() -> None:
    history = TestHistory("t").record(PASSED, 1.0, 1, 0.5).record(FAILED, 2.0, 2, 1.5)
    assert history.fixture_mean == 1.0
    skipped = history.record(SKIPPED, 0.0, 3, 99.0)
    assert skipped.fixture_mean == 1.0  # a skipped run leaves it, as it leaves the duration
    assert history.record(PASSED, 1.0, 3).fixture_mean == pytest.approx(2.0 / 3)  # 0 s given
    assert TestHistory("t").fixture_mean == 0.0
    # a history from before fixture times were kept: the first measurement replaces the 0
    old = TestHistory("t", runs=50, duration_mean=0.1)
    assert old.record(PASSED, 0.1, 51, 0.8).fixture_mean == 0.8
    # later runs weigh like the last ten, not like one of 50
    steady = old.record(PASSED, 0.1, 51, 0.8).record(PASSED, 0.1, 52, 1.8)
    assert steady.fixture_mean == pytest.approx(0.9)


def test_one_outlier_does_not_inflate_the_expected_duration_for_long() -> None:
    # a 0.1 s test with one 60 s timeout among 30 runs: the plain mean stays near 2 s for the
    # rest of its history; the expected duration (the budget's) is back near 0.1 s at once
    history = TestHistory("t")
    for episode in range(30):
        history = history.record(PASSED, 60.0 if episode == 10 else 0.1, episode)
    assert history.duration_mean == pytest.approx(2.09, abs=0.01)
    assert history.expected_duration == pytest.approx(0.1, abs=0.01)
    after_outlier = TestHistory("t")
    for episode in range(11):
        after_outlier = after_outlier.record(PASSED, 60.0 if episode == 10 else 0.1, episode)
    assert after_outlier.expected_duration < 0.2  # capped at 4x the recent estimate


def test_a_real_slowdown_reaches_the_expected_duration_within_a_few_runs() -> None:
    history = TestHistory("t")
    for episode in range(20):
        history = history.record(PASSED, 0.1, episode)
    for episode in range(20, 35):
        history = history.record(PASSED, 5.0, episode)
    assert history.expected_duration > 4.5  # 15 runs at 5 s: 0.1 s -> 4.55 s
    assert history.duration_mean < 3.0  # the plain mean lags far behind


def test_a_history_from_before_schema_8_starts_its_recent_duration_from_the_mean() -> None:
    old = TestHistory("t", runs=10, duration_mean=2.0, last_duration=2.0)
    assert old.expected_duration == 2.0  # not measured yet: the mean
    assert old.record(PASSED, 2.5, 11).duration_recent == pytest.approx(2.0 + 0.5 / 5)
    assert TestHistory("t").expected_duration == 0.0


@pytest.mark.parametrize(
    ("verdicts", "streak"),
    [
        ("FPPPPF", (9, 8, 7, 6)),  # the passes before the failure, back to the one before
        ("PPSPFF", (8, 6, 5)),  # a skipped run neither ends nor joins it
        ("PPPP", ()),  # not failing: no streak
        ("FFF", ()),  # never passed in the kept verdicts
    ],
)
def test_the_passing_streak_before_a_failure(verdicts: str, streak: tuple[int, ...]) -> None:
    history = TestHistory("t", runs=len(verdicts), verdicts=verdicts, last_run_episode=10)
    assert history.passing_streak() == streak
    assert history.last_passed_episode() == (streak[0] if streak else None)
