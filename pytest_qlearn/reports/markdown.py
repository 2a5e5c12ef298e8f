"""The Markdown report: for a pull request comment or GitHub's job summary.

Short by design (GitHub caps a step summary at 1 MiB): the run against collection order, the
failures found, the episode reward, the recent episodes and the riskiest tests; the JSON
report has everything. Every test id is an inline code span and every other text is
backslash-escaped, so nothing from a test id or a message can break a table, start a link or
slip raw HTML into the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from . import text
from .document import Document
from .text import APFD_MEANS

#: Rows shown of the order used, of the failures, and of the learning progress.
ORDER_ROWS = 10
FAILURE_ROWS = 20
PROGRESS_ROWS = 10

#: What could start emphasis, code, a link or an image, raw HTML, an entity or a new cell
#: mid-line (text never starts a line, so list and heading markers need no escape).
_SPECIAL = re.compile(r"([\\`*_\[\]()<>!|~&])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BACKTICKS = re.compile(r"`+")


def escape(value: object) -> str:
    """Plain text, inert in Markdown and in a table cell: every character that could start
    emphasis, code, a link, raw HTML, an entity or a cell break backslash-escaped, control
    characters (line breaks included) turned into spaces, bidi controls and lone surrogates
    shown as escapes (:func:`~pytest_qlearn.reports.text.visible`)."""
    return _SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", text.visible(str(value))))


def code(value: str, *, in_table: bool = True) -> str:
    """A literal inline code span (for test ids): nothing inside is interpreted. The fence
    is longer than any run of backticks inside; a pipe is escaped in a table cell, where
    GitHub splits cells before it reads code spans (and drops the backslash again). Bidi
    controls and lone surrogates show as escapes: an id cannot display as another."""
    value = _CONTROL.sub(" ", text.visible(value))
    if not value.strip():
        return escape(value) or "\u200b"
    longest = max((len(run) for run in _BACKTICKS.findall(value)), default=0)
    fence = "`" * (longest + 1)
    if value[0] in "` " or value[-1] in "` ":
        value = f" {value} "
    if in_table:
        value = value.replace("|", "\\|")
    return f"{fence}{value}{fence}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> list[str]:
    """A GitHub table; ``align`` has one letter per column: l(eft) or r(ight)."""
    align = align.ljust(len(headers), "l")
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def render_markdown(doc: Document) -> str:
    session: dict[str, Any] = doc["session"]
    learner: dict[str, Any] = doc["learner"]
    orders: dict[str, Any] = doc["orders"]
    partition: dict[str, Any] = doc["partition"]
    tests: list[dict[str, Any]] = doc["tests"]
    qlearn, collection = orders["qlearn"], orders["collection"]

    out = [
        f"## pytest-qlearn: {escape(partition['project'])} / {escape(partition['environment'])}"
        f", episode {session['episode']}",
        "",
        f"**Order used:** {escape(text.order_name(orders['used']))}. "
        f"{session['tests']} tests, {session['failures']} failed. "
        f"Seed {session['seed']}, ε {session['epsilon']:.3f} "
        f"(next run {learner['epsilon_next']:.3f}), exploration "
        f"{escape(text.percent(learner['exploration_share']))} of "
        f"{learner['decisions']} decisions.",
        "",
    ]
    out += table(
        ["", "qlearn order", "collection order"],
        [
            ["APFD", text.number(qlearn["apfd"]), text.number(collection["apfd"])],
            [
                "time to first failure",
                text.seconds(qlearn["time_to_first_failure"]),
                text.seconds(collection["time_to_first_failure"]),
            ],
            [
                "first failure at",
                escape(text.position(qlearn["first_failure_position"])),
                escape(text.position(collection["first_failure_position"])),
            ],
        ],
        "lrr",
    )
    out += ["", f"*{escape(APFD_MEANS)}.*"]
    store = doc["store"]
    out += ["", f"**Store:** {escape(text.store(store['status'], store['url']))}"]
    if doc["warnings"]:
        out.append("")
        out += [f"- warning: {escape(warning)}" for warning in doc["warnings"]]

    if "budget" in doc:
        out += ["", "### Time budget", ""]
        out += table(
            ["", "value"],
            [[escape(label), escape(value)] for label, value in text.budget_facts(doc["budget"])],
        )

    if "reruns" in doc:
        out += ["", "### Flaky", ""]
        out += table(
            ["test", "what the reruns showed"],
            [[escape(k), escape(v)] for k, v in text.flaky_facts(doc["reruns"])],
        )

    if "coverage" in doc:
        out += ["", "### Coverage", ""]
        out += table(
            ["", "value"],
            [[escape(k), escape(v)] for k, v in text.coverage_facts(doc["coverage"])],
        )

    failed = [t for t in tests if t["verdict"] == "failed"]
    out += ["", f"### Failures found: {len(failed)}"]
    if failed:
        out.append("")
        out += table(
            ["qlearn #", "collection #", "test"],
            [
                [str(t["qlearn_position"]), str(t["collection_position"]), code(t["test_id"])]
                for t in failed[:FAILURE_ROWS]
            ],
            "rrl",
        )
        if len(failed) > FAILURE_ROWS:
            out += ["", f"…and {len(failed) - FAILURE_ROWS} more (see the JSON report)."]

    out += ["", f"### What ran first, and why ({escape(text.order_name(orders['used']))})", ""]
    out += table(
        ["qlearn #", "collection #", "verdict", "why", "test"],
        [
            [
                str(t["qlearn_position"]),
                str(t["collection_position"]),
                escape(t["verdict"]),
                escape(t.get("why") or ""),
                code(t["test_id"]),
            ]
            for t in (tests if orders["used"] == "qlearn" else _by_collection(tests))[:ORDER_ROWS]
        ],
        "rrlll",
    )

    out += ["", "### Learner details"]
    reward = doc["episode_reward"]
    out += [
        "",
        f"#### Episode reward: {text.signed(reward['total'])}",
        "",
        f"Bonus {text.signed(reward['bonus'], 1)}, penalty {text.number(reward['penalty'], 1)}; "
        f"clamped to \\[{reward['range'][0]:g}, {reward['range'][1]:g}\\].",
        "",
    ]
    out += table(
        ["component", "value", "weight", "note"],
        [
            [
                escape(name),
                text.number(c["value"], 1),
                f"{c['weight']:.2f}",
                escape(c["note"] or ""),
            ]
            for name, c in reward["components"].items()
        ],
        "lrrl",
    )

    progress: list[dict[str, Any]] = doc["progress"][-PROGRESS_ROWS:]
    out += ["", f"#### Learning progress: last {len(progress)} episodes", ""]
    out += table(
        [
            "episode",
            "mode",
            "tests",
            "failed",
            "APFD",
            "collection APFD",
            "first failure saved",
            "reward",
            "ε",
            "Q-table",
        ],
        [
            [
                text.episode(p),
                escape(p["mode"]),
                str(p["tests"]),
                str(p["failures"]),
                text.number(p["apfd"]),
                text.number(p["collection_apfd"]),
                escape(text.saved(p)),
                text.signed(p["reward"]),
                f"{p['epsilon']:.3f}",
                str(p["q_table_size"]),
            ]
            for p in progress
        ],
        "llrrrrrrrr",
    )
    older = sum(text.lacks_first_failure(p) for p in progress)
    lacking = (
        f" {older} older {'run' if older == 1 else 'runs'} with failures, stored before store "
        f"schema 9, {'has' if older == 1 else 'have'} no figure (n/a)."
        if older
        else ""
    )
    means = text.TTFF_SAVED_MEANS[0].upper() + text.TTFF_SAVED_MEANS[1:]
    out += ["", f"*{escape(means + '.' + lacking)}*"]

    riskiest: list[dict[str, Any]] = doc["riskiest"]
    if riskiest:
        tiers = list(riskiest[0]["q_values"])
        out += ["", "#### Riskiest tests next run (learned)", ""]
        out += table(
            ["test", "p(fail)", "runs", "failed", *(f"Q {escape(t)}" for t in tiers), "visits"],
            [
                [
                    code(r["test_id"]),
                    text.percent(r["p_fail"]),
                    str(r["runs"]),
                    str(r["failures"]),
                    *(text.signed(r["q_values"].get(t), 3) for t in tiers),
                    str(r["visits"]),
                ]
                for r in riskiest
            ],
            "lrrr" + "r" * (len(tiers) + 1),
        )

    out.append("")
    return "\n".join(out)


def _by_collection(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(tests, key=lambda t: int(t["collection_position"]))
