"""APFD, NAPFD, APFDc and time to first failure on cycles computed by hand.

Definitions (shared/datasets/README.md, section Metrics): n tests, m failing, TF_i the
1-based position of the i-th failing test.
"""

from __future__ import annotations

import pytest

from pytest_qlearn.engine.metrics import apfd, apfdc, napfd, time_to_first_failure

F, P = True, False

# -- APFD ---------------------------------------------------------------------------------


def test_apfd_hand_computed() -> None:
    # order F P P F P: n = 5, m = 2, TF = 1, 4
    # APFD = 1 - (1 + 4)/(5*2) + 1/(2*5) = 1 - 0.5 + 0.1 = 0.6
    assert apfd([F, P, P, F, P]) == pytest.approx(0.6)


def test_apfd_failure_last() -> None:
    # P P P F: n = 4, m = 1, TF = 4 -> 1 - 4/4 + 1/8 = 0.125
    assert apfd([P, P, P, F]) == pytest.approx(0.125)


def test_apfd_failure_first_is_better_than_last() -> None:
    # F P P P: 1 - 1/4 + 1/8 = 0.875
    assert apfd([F, P, P, P]) == pytest.approx(0.875)


def test_apfd_all_failing() -> None:
    # F F F: n = m = 3, TF = 1, 2, 3 -> 1 - 6/9 + 1/6 = 0.5
    assert apfd([F, F, F]) == pytest.approx(0.5)


@pytest.mark.parametrize("cycle", [[], [P], [P, P, P]])
def test_apfd_without_failures_is_undefined(cycle: list[bool]) -> None:
    assert apfd(cycle) is None


# -- NAPFD --------------------------------------------------------------------------------


def test_napfd_budget_cut_off_skips_a_test_that_does_not_fit_and_takes_a_later_one() -> None:
    failed = [P, F, P, F, F, P]
    durations = [2.0, 5.0, 1.0, 2.0, 13.0, 1.0]
    # total = 24 s, budget 25 % -> limit 6 s. Greedy in order:
    #   t1 P 2 s  -> used 2, scheduled position 1
    #   t2 F 5 s  -> 2 + 5 = 7 > 6, skipped (not caught)
    #   t3 P 1 s  -> used 3, position 2
    #   t4 F 2 s  -> used 5, position 3 (caught)
    #   t5 F 13 s -> 18 > 6, skipped
    #   t6 P 1 s  -> used 6 = limit, fits, position 4
    # n = 6 (whole cycle), m = 3, caught 1 -> p = 1/3, ΣTF = 3 (scheduled position)
    # NAPFD = 1/3 - 3/(6*3) + (1/3)/(2*6) = 12/36 - 6/36 + 1/36 = 7/36
    assert napfd(failed, durations, 0.25) == pytest.approx(7 / 36)


def test_napfd_counts_positions_among_scheduled_tests_only() -> None:
    failed = [P, P, F]
    durations = [10.0, 1.0, 1.0]
    # total 12 s, budget 1/6 -> limit 2 s: t1 skipped; t2 position 1; t3 position 2 (caught)
    # p = 1, NAPFD = 1 - 2/(3*1) + 1/(2*3) = 1 - 4/6 + 1/6 = 0.5
    assert napfd(failed, durations, 2.0 / 12.0) == pytest.approx(0.5)


def test_napfd_nothing_caught_is_zero() -> None:
    # limit = 0.1 * 10 = 1 s; the failing test needs 5 s; p = 0 -> 0 - 0 + 0
    assert napfd([P, F], [1.0, 9.0], 0.1) == pytest.approx(0.0)


def test_napfd_a_test_that_exactly_fills_the_budget_is_scheduled_with_decimal_durations() -> None:
    # ten tests of 0.1 s; 10 % of 1.0 s is exactly one test. In binary floating point
    # 0.1 * 10 summed is 0.9999999999999999, so a naive "used + d > limit" drops the test
    # that fits. Expected: t1 scheduled and caught, p = 1, TF = 1 -> 1 - 1/10 + 1/20 = 0.95
    assert napfd([F] + [P] * 9, [0.1] * 10, 0.10) == pytest.approx(0.95)
    # 30 % is exactly three tests; 0.1 + 0.1 + 0.1 = 0.30000000000000004 in floating point.
    # t3 fails: p = 1, TF = 3 -> 1 - 3/10 + 1/20 = 0.75
    assert napfd([P, P, F] + [P] * 7, [0.1] * 10, 0.30) == pytest.approx(0.75)


def test_napfd_full_budget_equals_apfd() -> None:
    failed = [F, P, P, F, P]
    durations = [3.0, 1.0, 4.0, 1.0, 5.0]
    assert napfd(failed, durations, 1.0) == pytest.approx(0.6)
    assert napfd(failed, durations, 1.0) == pytest.approx(apfd(failed))


def test_napfd_all_failing() -> None:
    # full budget, F F F: p = 1, 1 - 6/9 + 1/6 = 0.5
    assert napfd([F, F, F], [1.0, 2.0, 3.0], 1.0) == pytest.approx(0.5)
    # budget 50 % of 6 s = 3 s: t1 (1 s) and t2 (3 s total) fit, t3 does not
    # p = 2/3, ΣTF = 1 + 2 = 3 -> 2/3 - 3/9 + (2/3)/6 = 2/3 - 1/3 + 1/9 = 4/9
    assert napfd([F, F, F], [1.0, 2.0, 3.0], 0.5) == pytest.approx(4 / 9)


@pytest.mark.parametrize(("failed", "durations"), [([], []), ([P, P], [1.0, 2.0])])
def test_napfd_without_failures_is_undefined(failed: list[bool], durations: list[float]) -> None:
    assert napfd(failed, durations, 0.5) is None


def test_napfd_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        napfd([F, P], [1.0], 0.5)


# -- APFDc --------------------------------------------------------------------------------


def test_apfdc_hand_computed() -> None:
    failed = [P, F, P, F]
    durations = [1.0, 2.0, 3.0, 4.0]
    # Σt = 10, m = 2
    # TF = 2: t2 + t3 + t4 - t2/2 = 9 - 1 = 8
    # TF = 4: t4 - t4/2 = 2
    # APFDc = (8 + 2) / (10 * 2) = 0.5
    assert apfdc(failed, durations) == pytest.approx(0.5)


def test_apfdc_prefers_cheap_tests_before_the_failure() -> None:
    # same failing position, different cost of what runs before it
    # P(1) F(1) P(8): TF=2: (1 + 8) - 0.5 = 8.5 -> 8.5/10 = 0.85
    # P(8) F(1) P(1): TF=2: (1 + 1) - 0.5 = 1.5 -> 1.5/10 = 0.15
    assert apfdc([P, F, P], [1.0, 1.0, 8.0]) == pytest.approx(0.85)
    assert apfdc([P, F, P], [8.0, 1.0, 1.0]) == pytest.approx(0.15)


def test_apfdc_with_equal_durations_equals_apfd() -> None:
    # F P P F P, all 1 s: TF=1: 5 - 0.5 = 4.5; TF=4: 2 - 0.5 = 1.5 -> 6/(5*2) = 0.6
    assert apfdc([F, P, P, F, P], [1.0] * 5) == pytest.approx(0.6)


def test_apfdc_all_failing() -> None:
    # F(1) F(3): TF=1: 4 - 0.5 = 3.5; TF=2: 3 - 1.5 = 1.5 -> 5/(4*2) = 0.625
    assert apfdc([F, F], [1.0, 3.0]) == pytest.approx(0.625)


def test_apfdc_zero_total_duration_falls_back_to_apfd() -> None:
    assert apfdc([P, F], [0.0, 0.0]) == pytest.approx(apfd([P, F]))
    assert apfdc([P, F], [0.0, 0.0]) == pytest.approx(0.25)  # 1 - 2/2 + 1/4


@pytest.mark.parametrize(("failed", "durations"), [([], []), ([P, P], [1.0, 2.0])])
def test_apfdc_without_failures_is_undefined(failed: list[bool], durations: list[float]) -> None:
    assert apfdc(failed, durations) is None


def test_apfdc_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        apfdc([F, P, P], [1.0, 2.0])


# -- time to first failure ----------------------------------------------------------------


def test_time_to_first_failure_includes_the_failing_test() -> None:
    # 1.5 + 2.0 + 0.5 = 4.0 s until the first failing test finishes
    assert time_to_first_failure([P, P, F, F], [1.5, 2.0, 0.5, 3.0]) == pytest.approx(4.0)


def test_time_to_first_failure_first_test() -> None:
    assert time_to_first_failure([F, P], [0.25, 10.0]) == pytest.approx(0.25)


@pytest.mark.parametrize(("failed", "durations"), [([], []), ([P, P], [1.0, 2.0])])
def test_time_to_first_failure_without_failures(failed: list[bool], durations: list[float]) -> None:
    assert time_to_first_failure(failed, durations) is None


@pytest.mark.parametrize(
    ("failed", "durations"),
    [
        ([P, F], [1.0]),  # runs out of durations before the failure
        ([F, P], [1.0]),  # failure found before the mismatch shows
        ([F], [1.0, 2.0]),
    ],
)
def test_time_to_first_failure_mismatched_lengths(
    failed: list[bool], durations: list[float]
) -> None:
    with pytest.raises(ValueError):
        time_to_first_failure(failed, durations)
