"""The HTML report: one self-contained page (inline CSS, inline SVG charts, a few lines of
inline JavaScript for sortable tables; nothing is fetched).

Every test id, message and name goes through :func:`escape` (:func:`html.escape`, with bidi
controls and lone surrogates shown as escapes so an id cannot display as another), and the
page's Content
Security Policy allows no network access and no script but its own (pinned by hash), so even
a test id such as ``test_x[<script>alert(1)</script>]`` can only ever be text.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from . import text
from .document import Document
from .svg import Series, line_chart


def escape(value: str) -> str:
    """Text as HTML: markup escaped, bidi controls and lone surrogates shown as escapes."""
    return html.escape(text.visible(value))


#: At most this many tests are listed (failures always are); the JSON report has them all.
MAX_TEST_ROWS = 2000
#: Rows of "what ran first, and why" (the reasons exist for the first ten and the failures).
RAN_FIRST_ROWS = 10

SORT_SCRIPT = """\
(function () {
  function key(cell) {
    var v = cell.getAttribute("data-sort");
    return v === null ? cell.textContent : v;
  }
  function sortBy(table, th, col) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var heads = table.tHead.rows[0].cells;
    for (var i = 0; i < heads.length; i++) { heads[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var numeric = th.getAttribute("data-type") === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (numeric) {
        x = x === "" ? NaN : Number(x);
        y = y === "" ? NaN : Number(y);
        if (isNaN(x) || isNaN(y)) { return isNaN(x) - isNaN(y); }
        return ascending ? x - y : y - x;
      }
      var c = x.localeCompare(y);
      return ascending ? c : -c;
    });
    for (var r = 0; r < rows.length; r++) { body.appendChild(rows[r]); }
  }
  var tables = document.querySelectorAll("table.sortable");
  Array.prototype.forEach.call(tables, function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
    table.setAttribute("data-sortable", "ready");
  });
})();
"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode("utf-8")).digest()).decode()
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)

STYLE = """\
:root { color-scheme: light dark; --fg: #1f2328; --bg: #fff; --muted: #656d76;
  --line: #d0d7de; --head: #f6f8fa; --fail: #cf222e; --pass: #1a7f37; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117;
  --muted: #8d96a0; --line: #30363d; --head: #161b22; --fail: #f85149; --pass: #3fb950; } }
body { font: 14px/1.45 system-ui, sans-serif; color: var(--fg); background: var(--bg);
  margin: 1.5em 0; padding: 0 1.5em; }  /* the window's width: wide tables need it */
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
.muted { color: var(--muted); }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid var(--line); padding: .25em .6em; text-align: left;
  vertical-align: top; }
th { background: var(--head); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.id { font-family: ui-monospace, monospace; word-break: break-all; }
table.sortable th { cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
.failed { color: var(--fail); font-weight: 600; } .passed { color: var(--pass); }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure.chart-box { margin: 0; border: 1px solid var(--line); padding: .5em; }
svg.chart text { font-size: 11px; fill: var(--muted); }
svg.chart .grid { stroke: var(--line); stroke-width: 1; }
svg.chart .axis-line { stroke: var(--muted); stroke-width: 1; }
svg.chart .line { stroke-width: 2; }
svg.chart .hollow { fill: var(--bg); stroke-width: 1.5; }
.key { margin-left: 1em; white-space: nowrap; }
.swatch { display: inline-block; width: .8em; height: .8em; margin-right: .3em; }
.swatch.hollow { border: 1.5px solid var(--muted); border-radius: 50%; box-sizing: border-box; }
"""


NUMERIC_HEAD = ' class="num" data-type="number"'


class Cell(NamedTuple):
    """A table cell: its text (escaped when rendered), how it sorts and its CSS class."""

    text: str
    sort: float | None = None
    css: str = ""


def num(value: float | None, shown: str) -> Cell:
    return Cell(shown, float("nan") if value is None else value, "num")


def table(
    table_id: str, headers: Sequence[tuple[str, bool]], rows: Sequence[Sequence[Cell]]
) -> str:
    """A sortable table; each header is (title, numeric)."""
    head = "".join(
        f'<th scope="col"{NUMERIC_HEAD if numeric else ""}>{escape(title)}</th>'
        for title, numeric in headers
    )
    body = []
    for row in rows:
        cells = []
        for cell in row:
            attrs = f' class="{cell.css}"' if cell.css else ""
            if cell.sort is not None:  # NaN (no value) sorts last
                attrs += f' data-sort="{"" if math.isnan(cell.sort) else repr(cell.sort)}"'
            cells.append(f"<td{attrs}>{escape(cell.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable" id="{escape(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def render_html(doc: Document) -> str:
    session: dict[str, Any] = doc["session"]
    learner: dict[str, Any] = doc["learner"]
    orders: dict[str, Any] = doc["orders"]
    partition: dict[str, Any] = doc["partition"]
    tests: list[dict[str, Any]] = doc["tests"]
    title = (
        f"pytest-qlearn report: {partition['project']} / {partition['environment']}, "
        f"episode {session['episode']}"
    )
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(doc["generated_at"]))
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="muted">{escape(doc["generator"]["name"])} '
        f"{escape(doc['generator']['version'])}, report schema {doc['schema_version']}, "
        f"generated {escape(generated)}</p>",
    ]
    out += _this_run(doc, session, learner, orders)
    if "budget" in doc:
        out += _facts("Time budget", text.budget_facts(doc["budget"]))
    if "coverage" in doc:
        out += _facts("Coverage", text.coverage_facts(doc["coverage"]))
    if "reruns" in doc:
        out += _facts("Flaky", text.flaky_facts(doc["reruns"]))
    out += _failures(tests)
    out += _ran_first(tests, orders["used"])
    out += _early(doc["progress"])
    out += ["<h2>Learner details</h2>"]
    out += _learner_facts(session, learner)
    out += _reward(doc["episode_reward"])
    out += _progress(doc["progress"])
    out += _riskiest(doc["riskiest"])
    out += _tests(tests, orders["used"])
    out.append(f"<script>{SORT_SCRIPT}</script></body></html>\n")
    return "\n".join(out)


def _this_run(
    doc: Document, session: dict[str, Any], learner: dict[str, Any], orders: dict[str, Any]
) -> list[str]:
    qlearn, collection = orders["qlearn"], orders["collection"]
    store = doc["store"]
    facts = [
        ("order used", text.order_name(orders["used"])),
        ("tests", f"{session['tests']} ({session['failures']} failed)"),
        ("store", text.store(store["status"], store["url"])),
    ]
    out = ["<h2>This run</h2>", "<table><tbody>"]
    out += [f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in facts]
    out.append("</tbody></table>")
    out.append(
        table(
            "comparison",
            [("", False), ("qlearn order", True), ("collection order", True)],
            [
                [
                    Cell("APFD"),
                    num(qlearn["apfd"], text.number(qlearn["apfd"])),
                    num(collection["apfd"], text.number(collection["apfd"])),
                ],
                [
                    Cell("time to first failure"),
                    num(
                        qlearn["time_to_first_failure"],
                        text.seconds(qlearn["time_to_first_failure"]),
                    ),
                    num(
                        collection["time_to_first_failure"],
                        text.seconds(collection["time_to_first_failure"]),
                    ),
                ],
                [
                    Cell("first failure at"),
                    num(
                        qlearn["first_failure_position"],
                        text.position(qlearn["first_failure_position"]),
                    ),
                    num(
                        collection["first_failure_position"],
                        text.position(collection["first_failure_position"]),
                    ),
                ],
            ],
        )
    )
    out.append(f'<p class="muted">{escape(text.APFD_MEANS)}.</p>')
    if doc["warnings"]:
        out.append("<ul>")
        out += [f"<li>warning: {escape(w)}</li>" for w in doc["warnings"]]
        out.append("</ul>")
    return out


def _learner_facts(session: dict[str, Any], learner: dict[str, Any]) -> list[str]:
    facts = [
        ("seed", str(session["seed"])),
        ("ε", f"{session['epsilon']:.4f} (next run {learner['epsilon_next']:.4f})"),
        (
            "exploration",
            f"{text.percent(learner['exploration_share'])} of {learner['decisions']} decisions",
        ),
        (
            "Q-table",
            f"{learner['q_table_size']} entries ({learner['states']} states), "
            f"{learner['updates']} updates this run",
        ),
    ]
    out = ["<table><tbody>"]
    out += [f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in facts]
    out.append("</tbody></table>")
    return out


def _ran_first(tests: list[dict[str, Any]], used: str) -> list[str]:
    """The first tests of the order and why each ran there (the prioritizer's evidence)."""
    shown = [t for t in tests if t.get("why")][:RAN_FIRST_ROWS]
    if not shown:
        return []
    used_text = "ran" if used == "qlearn" else "would have run (observe mode)"
    return [
        f"<h2>What {escape(used_text)} first, and why</h2>",
        table(
            "ran-first",
            [
                ("qlearn #", True),
                ("collection #", True),
                ("verdict", False),
                ("why", False),
                ("test", False),
            ],
            [
                [
                    num(t["qlearn_position"], str(t["qlearn_position"])),
                    num(t["collection_position"], str(t["collection_position"])),
                    Cell(t["verdict"], css=t["verdict"]),
                    Cell(t["why"]),
                    Cell(t["test_id"], css="id"),
                ]
                for t in shown
            ],
        ),
    ]


def _facts(title: str, facts: list[tuple[str, str]]) -> list[str]:
    out = [f"<h2>{escape(title)}</h2>", "<table><tbody>"]
    out += [f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in facts]
    out.append("</tbody></table>")
    return out


def _failures(tests: list[dict[str, Any]]) -> list[str]:
    failed = [t for t in tests if t["verdict"] == "failed"]
    out = [f"<h2>Failures found: {len(failed)}</h2>"]
    if failed:
        out.append(
            table(
                "failures",
                [("qlearn #", True), ("collection #", True), ("duration", True), ("test", False)],
                [
                    [
                        num(t["qlearn_position"], str(t["qlearn_position"])),
                        num(t["collection_position"], str(t["collection_position"])),
                        num(t["duration"], text.seconds(t["duration"])),
                        Cell(t["test_id"], css="id"),
                    ]
                    for t in failed
                ],
            )
        )
    return out


def _reward(reward: dict[str, Any]) -> list[str]:
    low, high = reward["range"]
    return [
        f"<h2>Episode reward: {escape(text.signed(reward['total']))}</h2>",
        f"<p>Bonus {escape(text.signed(reward['bonus'], 1))}, penalty "
        f"{escape(text.number(reward['penalty'], 1))}; the total is the weighted sum of the "
        f"components plus bonus minus penalty, clamped to [{low:g}, {high:g}].</p>",
        table(
            "reward",
            [("component", False), ("value", True), ("weight", True), ("note", False)],
            [
                [
                    Cell(name),
                    num(c["value"], text.number(c["value"], 1)),
                    num(c["weight"], f"{c['weight']:.2f}"),
                    Cell(c["note"] or ""),
                ]
                for name, c in reward["components"].items()
            ],
        ),
    ]


def _early(progress: list[dict[str, Any]]) -> list[str]:
    """What users look for first: run by run, how early failures showed up in qlearn's order
    against collection order — first the time to first failure saved, then APFD."""
    xs = [int(p["episode"]) for p in progress]
    hollow = [bool(p.get("partial")) for p in progress]
    saved, saved_note = _first_failure_saved(progress)
    chart = line_chart(
        "APFD",
        xs,
        [
            Series("qlearn order", [p["apfd"] for p in progress]),
            Series("collection order", [p["collection_apfd"] for p in progress]),
        ],
        y_range=(0.0, 1.0),
        y_format=lambda v: f"{v:.2f}",
        hollow=hollow,
    )
    return [
        "<h2>Failures found early, run by run</h2>",
        f'<p class="muted">{escape(saved_note)}</p>',
        f'<p class="muted">{escape(text.APFD_MEANS)}; runs without failures have none.</p>',
        f'<div class="charts">{saved}{chart}</div>',
    ]


#: The title of the first chart of the page.
TTFF_SAVED_TITLE = "Time to first failure saved per run"


def _first_failure_saved(progress: list[dict[str, Any]]) -> tuple[str, str]:
    """The chart of the seconds by which the first failure showed up earlier in qlearn's order
    than in collection order, over the runs that have the figures (the tooltips add the tests
    saved); and the sentence under the heading, which counts the runs without them. No chart
    when no run has them."""
    shown = [(p, figures) for p in progress if (figures := text.first_failure_saved(p))]
    older = sum(text.lacks_first_failure(p) for p in progress)
    passing = sum(p["failures"] == 0 for p in progress)
    note = [text.TTFF_SAVED_MEANS[0].upper() + text.TTFF_SAVED_MEANS[1:]]
    note.append(
        f"{len(shown)} of the last {len(progress)} runs had a failure to compare"
        if shown
        else f"none of the last {len(progress)} runs had a failure to compare yet"
    )
    if passing:
        note.append(f"{passing} {'run' if passing == 1 else 'runs'} without failures")
    if older:
        note.append(
            f"{older} older {'run' if older == 1 else 'runs'} with failures, stored before "
            f"store schema 9, {'lacks' if older == 1 else 'lack'} the figures"
        )
    sentence = "; ".join(note) + "."
    if not shown:
        return "", sentence
    chart = line_chart(
        TTFF_SAVED_TITLE,
        [int(p["episode"]) for p, _ in shown],
        [
            Series(
                "seconds earlier than collection order",
                [seconds for _, (seconds, _) in shown],
                [text.saved(p) for p, _ in shown],
            )
        ],
        y_format=lambda v: f"{v:g} s",
        hollow=[bool(p.get("partial")) for p, _ in shown],
        y_zero=True,
    )
    return chart, sentence


def _progress(progress: list[dict[str, Any]]) -> list[str]:
    xs = [int(p["episode"]) for p in progress]
    # partial episodes (narrowed or stopped-early runs) are drawn as unfilled points
    hollow = [bool(p.get("partial")) for p in progress]
    charts = [
        line_chart(
            "Episode reward",
            xs,
            [Series("reward", [p["reward"] for p in progress])],
            hollow=hollow,
        ),
        line_chart(
            "Exploration rate ε",
            xs,
            [Series("ε", [p["epsilon"] for p in progress])],
            y_format=lambda v: f"{v:.3f}",
            hollow=hollow,
        ),
        line_chart(
            "Q-table size",
            xs,
            [Series("entries", [float(p["q_table_size"]) for p in progress])],
            y_format=lambda v: f"{v:,.0f}",
            hollow=hollow,
        ),
    ]
    rows = [
        [
            num(p["episode"], text.episode(p)),
            Cell(p["mode"]),
            num(p["tests"], str(p["tests"])),
            num(p["failures"], str(p["failures"])),
            num(p["apfd"], text.number(p["apfd"])),
            num(p["collection_apfd"], text.number(p["collection_apfd"])),
            _saved_cell(p),
            num(p["reward"], text.signed(p["reward"])),
            num(p["epsilon"], f"{p['epsilon']:.4f}"),
            num(p["q_table_size"], str(p["q_table_size"])),
            num(p["duration"], text.seconds(p["duration"])),
        ]
        for p in reversed(progress)
    ]
    return [
        f"<h2>Learning progress: last {len(progress)} episodes</h2>",
        f'<div class="charts">{"".join(charts)}</div>',
        table(
            "progress",
            [
                ("episode", True),
                ("mode", False),
                ("tests", True),
                ("failed", True),
                ("APFD", True),
                ("collection APFD", True),
                ("first failure saved", True),
                ("reward", True),
                ("ε", True),
                ("Q-table", True),
                ("duration", True),
            ],
            rows,
        ),
    ]


def _saved_cell(progress: dict[str, Any]) -> Cell:
    """The time to first failure saved (sorting by its seconds), with the tests saved."""
    figures = text.first_failure_saved(progress)
    return num(None if figures is None else figures[0], text.saved(progress))


def _riskiest(riskiest: list[dict[str, Any]]) -> list[str]:
    if not riskiest:
        return []
    tiers = list(riskiest[0]["q_values"])
    return [
        "<h2>Riskiest tests</h2>",
        '<p class="muted">The learned failure probability for the next run, the Q-values of '
        "each test's own state per priority tier, and how often that state was updated.</p>",
        table(
            "riskiest",
            [
                ("test", False),
                ("p(fail)", True),
                ("runs", True),
                ("failed", True),
                *((f"Q {tier}", True) for tier in tiers),
                ("visits", True),
                ("features", False),
            ],
            [
                [
                    Cell(r["test_id"], css="id"),
                    num(r["p_fail"], text.percent(r["p_fail"])),
                    num(r["runs"], str(r["runs"])),
                    num(r["failures"], str(r["failures"])),
                    *(
                        num(r["q_values"].get(t), text.signed(r["q_values"].get(t), 3))
                        for t in tiers
                    ),
                    num(r["visits"], str(r["visits"])),
                    Cell(r["features"]),
                ]
                for r in riskiest
            ],
        ),
    ]


def _tests(tests: list[dict[str, Any]], used: str) -> list[str]:
    shown = tests if len(tests) <= MAX_TEST_ROWS else _capped(tests)
    rows = [
        [
            num(t["qlearn_position"], str(t["qlearn_position"])),
            num(t["collection_position"], str(t["collection_position"])),
            num(
                t["collection_position"] - t["qlearn_position"],
                f"{t['collection_position'] - t['qlearn_position']:+d}",
            ),
            Cell(t["tier"] or text.NA),
            Cell("yes" if t["explored"] else "no"),
            Cell(t.get("why") or ""),
            Cell(t["verdict"], css=t["verdict"]),
            num(t["duration"], text.seconds(t["duration"])),
            Cell(t["test_id"], css="id"),
        ]
        for t in shown
    ]
    note = (
        f"All {len(tests)} tests"
        if len(shown) == len(tests)
        else f"{len(shown)} of {len(tests)} tests (the first {MAX_TEST_ROWS} and every failure; "
        "the JSON report lists all)"
    )
    used_text = "the order used" if used == "qlearn" else "the order qlearn would have used"
    return [
        "<h2>Order: qlearn vs. collection</h2>",
        f'<p class="muted">{escape(note)}, in {escape(used_text)}; "moved" is how many places '
        "earlier than in collection order a test ran. Click a column to sort.</p>",
        table(
            "tests",
            [
                ("qlearn #", True),
                ("collection #", True),
                ("moved", True),
                ("tier", False),
                ("explored", False),
                ("why", False),
                ("verdict", False),
                ("duration", True),
                ("test", False),
            ],
            rows,
        ),
    ]


def _capped(tests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    head = tests[:MAX_TEST_ROWS]
    return head + [t for t in tests[MAX_TEST_ROWS:] if t["verdict"] == "failed"]
