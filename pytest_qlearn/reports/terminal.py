"""What the plugin tells people on the terminal: the header line, the summary line and the
detailed report. Pure text building; the plugin only writes it out. (Report files are built
in :mod:`pytest_qlearn.reports`.)"""

from __future__ import annotations

from ..agents.selector import BudgetSummary
from ..engine.history import FAILED
from ..session import EpisodeSummary
from .text import APFD_MEANS, visible
from .text import seconds as seconds_text


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _seconds(value: float | None) -> str:
    return "n/a (no failure)" if value is None else seconds_text(value)


def header_line(agent: str, seed: int, epsilon: float, store: str, mode: str) -> str:
    return f"qlearn: agent {agent}, seed {seed}, ε {epsilon:.3f}, store {store} ({mode})"


def summary_line(summary: EpisodeSummary, store_status: str) -> str:
    """The one line every run ends with: where the failures showed up against collection
    order, what was learned from, where it was kept."""
    s = summary.session
    observe = s.mode == "observe"
    where = _failures_at(summary)
    # a partial run shares its number with the next full one, as progress tables show it
    episode = f"episode {s.episode}" + (" (partial)" if s.partial else "")
    if observe:
        head = f"qlearn: would reorder {s.tests} tests" + (f": {where}" if where else "")
        learned = f"learned from them, {episode}"
    else:
        head = f"qlearn: {where}" if where else "qlearn: no failures"
        learned = f"learned from {s.tests} {'test' if s.tests == 1 else 'tests'}, {episode}"
    return f"{head} · {learned}, ε {s.epsilon:.3f} · {store_status}"


def _failures_at(summary: EpisodeSummary) -> str:
    """``2 failures of 21 tests, first at test 1 (4 ms in), all by test 2; collection
    order: first at test 18 (110 ms in), all by test 21`` — or "" without failures."""
    failed = [r for r in summary.results if r.verdict == FAILED]
    if not failed:
        return ""
    n, total = len(failed), summary.session.tests
    runs = sorted(r.position + 1 for r in failed)
    collected = sorted(r.collected_at + 1 for r in failed)

    def at(positions: list[int], secs: float | None) -> str:
        text = f"test {positions[0]}" + (f" ({seconds_text(secs)} in)" if secs is not None else "")
        return text + (f", all by test {positions[-1]}" if n > 1 else "")

    label = "failure" if n == 1 else "failures"
    first = "first at " if n > 1 else "at "
    return (
        f"{n} {label} of {total} {'test' if total == 1 else 'tests'}, "
        f"{first}{at(runs, summary.run_ttff)}; "
        f"collection order: {first}{at(collected, summary.collection_ttff)}"
    )


def detail_lines(summary: EpisodeSummary, store_status: str) -> list[str]:
    """The detailed report (``--qlearn-report``): what a user cares about first (failures
    against collection order, what ran first and why), the learner's details after."""
    s = summary.session
    stats = summary.stats
    order_name = "qlearn order (not used: observe)" if s.mode == "observe" else "qlearn order"
    where = _failures_at(summary)
    lines = [
        where or f"{s.tests} tests, no failures",
        f"time to first failure: {order_name} {_seconds(summary.run_ttff)}, "
        f"collection order {_seconds(summary.collection_ttff)} (summed test durations)",
        f"APFD: {order_name} {_fmt(s.apfd)}, collection order {_fmt(s.collection_apfd)}",
        f"  ({APFD_MEANS})",
    ]
    first = [
        r for r in sorted(summary.results, key=lambda r: r.position) if r.test_id in summary.why
    ]
    if first:
        # a skip has no verdict to explain: say so when skipped tests ran ahead of these
        ahead = sum(r.position < first[0].position for r in summary.results)
        lines.append(
            f"what ran first ({ahead} skipped test(s) ahead), and why:"
            if ahead
            else "what ran first, and why:"
        )
        shown = first[:5] + [r for r in first[5:] if r.verdict == FAILED][:5]
        for r in shown:
            mark = "FAILED " if r.verdict == FAILED else ""
            lines.append(
                f"  {r.position + 1:>5}  {mark}{visible(r.test_id)}  ({summary.why[r.test_id]})"
            )
    for kept in summary.suspects:
        suspect = kept.after
        if kept.kept:
            forgotten = "" if suspect.active else f"; forgotten after {suspect.clean} clean runs"
            lines.append(
                f"kept in collection order: {visible(suspect.test_id)} (order-dependent suspect "
                f"since episode {suspect.since}{forgotten})"
            )
    lines += [
        "learner details:",
        f"  episode {s.episode} of this project/environment, session {s.session_id}",
        f"  seed {s.seed}, ε {s.epsilon:.4f} (next run {stats.epsilon:.4f}), "
        f"exploration share {stats.exploration_share:.1%} of {stats.decisions} decisions",
        f"  Q-table: {stats.q_table_size} entries ({stats.states} states), "
        f"{stats.updates} updates this run, mean step reward {stats.mean_reward:+.3f}",
        f"  episode reward {summary.reward.total:+.2f} "
        f"(bonus {summary.reward.bonus:+.1f}, penalty {-summary.reward.penalty:+.1f}):",
    ]
    for name, value in summary.reward.components.items():
        weight = summary.reward.weights[name]
        shown_value = f"{value:6.1f}" if value is not None else "   n/a"
        note = summary.reward.notes.get(name)
        lines.append(
            f"    {name:<16} {shown_value} × {weight:.2f}" + (f"  ({note})" if note else "")
        )
    if summary.riskiest:
        lines.append("  riskiest tests next run (learned failure probability):")
        for risk in summary.riskiest:
            lines.append(
                f"    {risk.p_fail:5.1%}  {visible(risk.test_id)}  "
                f"({risk.failures}/{risk.runs} failed)"
            )
    lines.append(f"store: {store_status}")
    return lines


def budget_header(
    budget: str, off: str | None, observe: bool = False, project_markexpr: str | None = None
) -> str:
    """The header note on ``--qlearn-budget``; ``off`` says why it selects nothing;
    ``project_markexpr`` is the ini file's ``-m``, which the budget works within."""
    if off is not None:
        return f"qlearn: budget {budget} not applied: {off}, selection is off"
    within = (
        f" among the tests -m {project_markexpr!r} (ini addopts) leaves" if project_markexpr else ""
    )
    if observe:
        return (
            f"qlearn: budget {budget} observed{within}: every test runs, "
            "the summary tells what it saves"
        )
    return f"qlearn: budget {budget}, tests chosen by the selector agent{within}"


def budget_line(b: BudgetSummary) -> str:
    """One line on what the budget did (or, observing, would have done)."""
    head = f"qlearn: budget {b.budget} ({b.budget_seconds:.2f}s)"
    if b.mode == "full run":
        return f"{head}: full run (qlearn_full_run_every), all {b.selected} tests ran"
    if b.mode == "observe":
        missed = ", ".join(map(visible, b.missed)) if b.missed else "none"
        return (
            f"{head}, observed: would run {b.selected} and deselect {b.deselected} tests, "
            f"saving {b.saved:.2f}s; failures it would miss: {missed}"
        )
    note = "; the always-run tests alone exceed it, ran only those" if b.always_over_budget else ""
    return (
        f"{head}: ran {b.selected} tests, deselected {b.deselected}; "
        f"{b.caught} of {b.failures} failures caught within the budget{note}; {wall_share(b)}"
    )


def wall_share(b: BudgetSummary) -> str:
    """What share of the wall time the budget saved: the deselected tests' estimate against
    the full run this one would have been (collection, session fixtures and plugins count)."""
    full = b.full_wall
    if full <= 0:
        return "no wall time measured"
    return (
        f"saved ≈{b.wall_saved:.1f}s of a full run's ≈{full:.1f}s wall time "
        f"({b.wall_saved / full:.0%}; {b.outside_tests:.1f}s of this run were collection, "
        "session fixtures and plugins, which no budget saves)"
    )


def budget_lines(b: BudgetSummary | None) -> list[str]:
    """The budget section of the detailed report (nothing without a budget)."""
    if b is None:
        return []
    lines = [
        budget_line(b).removeprefix("qlearn: "),
        f"  estimated: {b.estimated_selected:.2f}s selected of {b.estimated_total:.2f}s "
        f"for all tests; actual time of the selected tests {b.actual_time:.2f}s",
    ]
    if b.always_run:
        lines.append("  always run: " + ", ".join(f"{n} {why}" for why, n in b.always_run))
    if b.always_over_budget:
        lines.append("  the always-run tests alone are estimated over the budget: ran only those")
    return lines
