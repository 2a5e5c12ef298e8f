"""Prioritisation metrics (definitions from shared/datasets/README.md).

Every function takes one cycle in the order it was (or would be) run: a sequence of
``failed`` flags and, where time matters, the matching durations in seconds. A cycle without
failures has no APFD; those functions return None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def apfd(failed: Sequence[bool]) -> float | None:
    """APFD = 1 − ΣTF_i/(n·m) + 1/(2n), TF_i the 1-based positions of failing tests."""
    n = len(failed)
    positions = [i + 1 for i, f in enumerate(failed) if f]
    m = len(positions)
    if n == 0 or m == 0:
        return None
    return 1.0 - sum(positions) / (n * m) + 1.0 / (2 * n)


def napfd(failed: Sequence[bool], durations: Sequence[float], budget: float) -> float | None:
    """Normalised APFD under a time budget (a fraction of the cycle's total duration).

    Tests are scheduled greedily in order while their summed duration fits; a test that does
    not fit is skipped and later ones are still tried. p = caught / m; TF counts scheduled
    tests; n is the whole cycle.
    """
    if len(failed) != len(durations):
        raise ValueError("failed and durations must have the same length")
    n = len(failed)
    m = sum(1 for f in failed if f)
    if n == 0 or m == 0:
        return None
    limit = budget * math.fsum(durations)
    # A test that exactly fills the budget must fit despite binary rounding (0.1 * 3 > 0.3).
    tolerance = 1e-9 * max(1.0, limit)
    used = 0.0
    position = 0
    caught_positions: list[int] = []
    for f, d in zip(failed, durations, strict=True):
        if used + d > limit + tolerance:
            continue
        used += d
        position += 1
        if f:
            caught_positions.append(position)
    p = len(caught_positions) / m
    return p - sum(caught_positions) / (n * m) + p / (2 * n)


def apfdc(failed: Sequence[bool], durations: Sequence[float]) -> float | None:
    """Cost-cognizant APFD (unit severities): Σ_i (Σ_{j≥TF_i} t_j − t_{TF_i}/2) / (Σt · m)."""
    if len(failed) != len(durations):
        raise ValueError("failed and durations must have the same length")
    m = sum(1 for f in failed if f)
    total = sum(durations)
    if not failed or m == 0:
        return None
    if total <= 0:
        return apfd(failed)
    remaining = total
    score = 0.0
    for f, d in zip(failed, durations, strict=True):
        if f:
            score += remaining - d / 2.0
        remaining -= d
    return score / (total * m)


def time_to_first_failure(failed: Sequence[bool], durations: Sequence[float]) -> float | None:
    """Seconds until the first failing test finishes, running in this order."""
    if len(failed) != len(durations):
        raise ValueError("failed and durations must have the same length")
    elapsed = 0.0
    for f, d in zip(failed, durations, strict=True):
        elapsed += d
        if f:
            return elapsed
    return None
