"""Durations as users write them, one grammar for every option that takes one
(``--qlearn-budget``, ``qlearn progress --since``): a number and a unit, ``s``, ``m``, ``h``,
``d`` or ``w`` (``90s``, ``2.5m``, ``.5h``, ``7d``, ``2w``), case and spaces ignored."""

from __future__ import annotations

import math
import re

UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3_600.0, "d": 86_400.0, "w": 604_800.0}
DURATION_FORMS = "a duration like 90s, 2.5m, 1h, 7d or 2w"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float | None:
    """Seconds, or None when ``text`` is not a finite duration of that grammar."""
    match = _DURATION.match(text)
    if match is None:
        return None
    seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2).lower()]
    return seconds if math.isfinite(seconds) else None
