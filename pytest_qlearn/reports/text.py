"""How numbers and text read in the Markdown, HTML and terminal reports (one place, so all
say the same)."""

from __future__ import annotations

import re
from typing import Any

NA = "n/a"
#: Characters that make text display as something it is not: the bidi controls (embeddings,
#: overrides, isolates, marks: ``\u202e`` shows what follows reversed) and lone surrogates
#: (not text at all; no UTF-8 file can hold one).
_INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\ud800-\udfff]")


#: One sentence on APFD wherever the report shows it.
APFD_MEANS = (
    "APFD: the share of the run still ahead when each failure showed up, averaged; "
    "1 = every failure first, 0.5 = spread evenly"
)


def visible(text: str) -> str:
    """``text`` with every bidi control and lone surrogate shown as its escape (``\\u202e``),
    so a test id reads as what it is; everything else as it is."""
    if _INVISIBLE.search(text) is None:
        return text
    return _INVISIBLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def number(value: float | None, digits: int = 3) -> str:
    return NA if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 2) -> str:
    return NA if value is None else f"{value:+.{digits}f}"


def seconds(value: float | None) -> str:
    """A duration as a person reads it: under a second in ms (``0.00 s`` said nothing about a
    4 ms test), else in seconds."""
    if value is None:
        return NA
    if value < 1.0:
        ms = value * 1000.0
        return f"{ms:.0f} ms" if ms >= 10.0 or ms == 0.0 else f"{ms:.1f} ms"
    return f"{value:.2f} s"


def signed_seconds(value: float | None) -> str:
    """A difference of durations, signed, read as :func:`seconds` reads a duration."""
    if value is None:
        return NA
    return ("-" if value < 0 else "+") + seconds(abs(value))


#: One sentence on the time to first failure saved, wherever the report shows it.
TTFF_SAVED_MEANS = (
    "first failure saved: how much earlier the first failure finished in qlearn's order than "
    "in collection order, in seconds of test time and in tests (negative: later)"
)


def first_failure_saved(progress: dict[str, Any]) -> tuple[float, int] | None:
    """How many seconds (of test time) and tests earlier the first failure of a run showed up
    in qlearn's order than in collection order; None for a run without failures and for runs
    stored before store schema 9 (see :func:`lacks_first_failure`)."""
    qlearn = progress.get("time_to_first_failure")
    collection = progress.get("collection_time_to_first_failure")
    at = progress.get("first_failure_position")
    collected_at = progress.get("collection_first_failure_position")
    if qlearn is None or collection is None or at is None or collected_at is None:
        return None
    return collection - qlearn, collected_at - at


def lacks_first_failure(progress: dict[str, Any]) -> bool:
    """A run that had failures but no first-failure figures: stored before store schema 9."""
    return progress["failures"] > 0 and first_failure_saved(progress) is None


def saved(progress: dict[str, Any]) -> str:
    """``+1.25 s, +3 tests`` (the first failure that much earlier in qlearn's order), or n/a."""
    figures = first_failure_saved(progress)
    if figures is None:
        return NA
    seconds_saved, tests_saved = figures
    tests = "test" if abs(tests_saved) == 1 else "tests"
    return f"{signed_seconds(seconds_saved)}, {tests_saved:+d} {tests}"


def percent(value: float | None) -> str:
    return NA if value is None else f"{value:.1%}"


def position(value: int | None) -> str:
    return NA if value is None else f"#{value}"


def order_name(used: str) -> str:
    return "qlearn order" if used == "qlearn" else "collection order (observe: qlearn only watched)"


def episode(progress: dict[str, Any]) -> str:
    """A progress row's episode number; a partial one (a narrowed or stopped-early run, which
    does not advance the episode schedule) says so."""
    return (
        f"{progress['episode']} (partial)" if progress.get("partial") else str(progress["episode"])
    )


def store(status: str, url: str) -> str:
    """The store's status, naming the store unless the status already does."""
    return status if url in status else f"{status} ({url})"


def budget_facts(budget: dict[str, Any]) -> list[tuple[str, str]]:
    """The budget section's rows (label, value), from the report document's ``budget``."""
    facts = [
        ("budget", f"{budget['budget']} ({budget['budget_seconds']:.2f}s)"),
        ("mode", str(budget["mode"])),
        ("tests run", str(budget["selected"])),
        ("deselected", str(budget["deselected"])),
        (
            "estimated time",
            f"{budget['estimated_selected']:.2f}s of {budget['estimated_total']:.2f}s",
        ),
        ("actual time", f"{budget['actual_time']:.2f}s"),
        *_wall_facts(budget),
        ("failures caught", f"{budget['caught']} of {budget['failures']}"),
    ]
    always = budget.get("always_run") or {}
    if always:
        facts.append(("always run", ", ".join(f"{n} {why}" for why, n in always.items())))
    if budget["always_over_budget"]:
        facts.append(("note", "the always-run tests alone exceed the budget; ran only those"))
    if budget["mode"] == "observe":
        facts.append(("would save", f"{budget['saved']:.2f}s"))
        facts.append(("would miss", ", ".join(budget["missed"]) or "no failure"))
    return facts


def _wall_facts(budget: dict[str, Any]) -> list[tuple[str, str]]:
    wall, saved = budget.get("wall_time") or 0.0, budget.get("wall_saved") or 0.0
    full, outside = budget.get("full_wall") or 0.0, budget.get("outside_tests") or 0.0
    if wall <= 0 or full <= 0:
        return []
    return [
        ("wall time", f"{wall:.2f}s ({outside:.2f}s outside the tests: collection, plugins)"),
        ("wall time saved", f"≈{saved:.2f}s of a full run's ≈{full:.2f}s ({saved / full:.0%})"),
    ]


def coverage_facts(coverage: dict[str, Any]) -> list[tuple[str, str]]:
    """The coverage section's rows (label, value), from the report document's ``coverage``."""
    facts = [("mode", f"{coverage['mode']} ({coverage['why']})")]
    if coverage["mode"] == "off":
        return facts
    facts.append(("tests traced", f"{coverage['traced']} of {coverage['tests']}"))
    facts.append(("new information", f"{coverage['new_information']} map(s) changed"))
    if coverage.get("carried"):
        facts.append(("maps carried", f"{coverage['carried']} across the change, not traced"))
    percent, previous = coverage["percent"], coverage["previous_percent"]
    if percent is not None:
        was = "" if previous is None else f" (previous run {previous:.1f}%)"
        facts.append(("line coverage", f"{percent:.1f}% of the covered files{was}"))
    changed = coverage["changed_files"]
    shown = ", ".join(changed[:10]) + (
        f" and {len(changed) - 10} more" if len(changed) > 10 else ""
    )
    facts.append(
        (
            "changed files",
            f"{len(changed)} ({coverage['change_source']}){': ' if changed else ''}" + shown,
        )
    )
    facts.append(("tests covering them", str(coverage["covering_changed"])))
    if coverage["unique_lines"]:
        facts.append(
            (
                "most lines only they cover",
                ", ".join(f"{u['test_id']} ({u['lines']})" for u in coverage["unique_lines"]),
            )
        )
    return facts


def flaky_facts(reruns: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The Flaky section: one row per rerun test — flaky (passed on a rerun), an
    order-dependence suspect, or failed every attempt — with its signature."""
    rows = []
    for r in reruns:
        if r["order_dependent_suspect"]:
            before = ", ".join(r["ran_before"]) or "nothing"
            what = f"order-dependent? failed after being moved (ran after {before}), passed alone"
        elif r["flaky"]:
            what = f"flaky: passed on rerun {r['reruns']}"
        else:
            what = f"failed all {r['reruns'] + 1} attempts"
        what += f" ({r['decided_by']}, reruns {r['rerun_seconds']:.2f}s)"
        if r["signature_text"]:
            what += f"; {r['signature_text']}"
        rows.append((r["test_id"], what))
    return rows
