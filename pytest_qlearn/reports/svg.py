"""Learning curves as inline SVG line charts: no library, no network, every text escaped."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape
from typing import NamedTuple

WIDTH, HEIGHT = 420, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 34
COLORS = ("#2563eb", "#d97706", "#059669", "#7c3aed")


class Series(NamedTuple):
    name: str
    values: Sequence[float | None]  # one per x; None leaves a gap
    #: What each point's tooltip says of its value (one per x; ``y_format`` of it when empty).
    labels: Sequence[str] = ()


def line_chart(
    title: str,
    xs: Sequence[int],
    series: Sequence[Series],
    *,
    y_range: tuple[float, float] | None = None,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    x_label: str = "episode",
    hollow: Sequence[bool] = (),
    hollow_label: str = "partial",
    y_zero: bool = False,
) -> str:
    """An ``<svg>`` line chart of ``series`` over ``xs`` (episode numbers), with axes, grid,
    a point with a tooltip per value and a legend. ``y_range`` fixes the axis; otherwise it
    spans the data on round numbers (and a flat line gets some room). The points whose
    ``hollow`` flag is set (one per x; none when empty) are drawn unfilled, their tooltips and
    the legend saying ``hollow_label``. ``y_zero``: the axis reaches 0 (and a grid line marks
    it), for values read against zero such as a saving."""
    marked = [bool(h) for h in hollow] or [False] * len(xs)
    if len(marked) != len(xs):
        raise ValueError("hollow needs one flag per x")
    known = [v for s in series for v in s.values if v is not None and math.isfinite(v)]
    if any(s.labels and len(s.labels) != len(xs) for s in series):
        raise ValueError("labels need one per x")
    if y_zero:
        known.append(0.0)
    if y_range is not None:
        low, high = y_range
        step = (high - low) / 4
    else:
        low, high, step = nice_scale(known)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x_low, x_high = (min(xs), max(xs)) if xs else (0, 1)
    x_span = (x_high - x_low) or 1

    def px(x: float) -> float:
        if x_high == x_low:
            return LEFT + plot_w / 2
        return LEFT + (x - x_low) / x_span * plot_w

    def py(y: float) -> float:
        return TOP + (high - y) / (high - low) * plot_h

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(round((high - low) / step) + 1):  # horizontal grid lines with y labels
        tick = low + step * i
        y = py(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(y_format(tick))}</text>"
        )
    for x in _x_ticks(list(dict.fromkeys(xs))):  # an x given twice is labelled once
        parts.append(
            f'<text class="tick" x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 16}" '
            f'text-anchor="middle">{x}</text>'
        )
    parts.append(
        f'<text class="axis" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 4}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    parts.append(
        f'<line class="axis-line" x1="{LEFT}" y1="{TOP + plot_h}" '
        f'x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}"/>'
    )
    for index, s in enumerate(series):
        color = COLORS[index % len(COLORS)]
        for segment in _segments(xs, s.values):
            if len(segment) > 1:
                points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in segment)
                parts.append(
                    f'<polyline class="line" fill="none" stroke="{color}" points="{points}"/>'
                )
        labels = s.labels or [""] * len(xs)
        for x, value, unfilled, label in zip(xs, s.values, marked, labels, strict=True):
            if value is None or not math.isfinite(value):
                continue
            where = f"{x_label} {x} ({hollow_label})" if unfilled else f"{x_label} {x}"
            # unfilled: the page background (class "hollow"), white where no style applies
            paint = (
                f'class="hollow" fill="#fff" stroke="{color}"' if unfilled else f'fill="{color}"'
            )

            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(value):.1f}" r="3" {paint}>'
                f"<title>{escape(f'{s.name}, {where}: {label or y_format(value)}')}</title>"
                "</circle>"
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{COLORS[i % len(COLORS)]}">'
        f"</span>{escape(s.name)}</span>"
        for i, s in enumerate(series)
    )
    if any(marked):
        legend += (
            f'<span class="key"><span class="swatch hollow"></span>{escape(hollow_label)}</span>'
        )
    return (
        f'<figure class="chart-box">{"".join(parts)}'
        f"<figcaption><strong>{escape(title)}</strong> {legend}</figcaption></figure>"
    )


def nice_scale(values: Sequence[float], ticks: int = 4) -> tuple[float, float, float]:
    """(low, high, step) of an axis showing ``values`` with about ``ticks`` steps of 1, 2,
    2.5 or 5 times a power of ten; it starts at 0 or above when no value is negative."""
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    if high - low < 1e-12:
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
        if min(values, default=0.0) >= 0.0:
            low = max(low, 0.0)
    raw = (high - low) / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw * 0.999)
    # a hair of slack, so that binary rounding never adds an empty step
    return math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step, step


def _segments(xs: Sequence[int], values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive known values (a missing value breaks the line)."""
    segments: list[list[tuple[int, float]]] = [[]]
    for x, y in zip(xs, values, strict=True):
        if y is None or not math.isfinite(y):
            if segments[-1]:
                segments.append([])
        else:
            segments[-1].append((x, y))
    return [s for s in segments if s]


def _x_ticks(xs: Sequence[int], most: int = 8) -> list[int]:
    if len(xs) <= most:
        return list(xs)
    step = math.ceil((len(xs) - 1) / (most - 1))
    ticks = list(xs[::step])
    if ticks[-1] != xs[-1]:
        ticks[-1] = xs[-1]
    return ticks
