"""Report files without pytest runs: the document built from a hand-made episode (exact
values), the escaping of the Markdown and HTML renderings, the SVG charts and the settings
that choose the files.

The Markdown is parsed with markdown-it-py (CommonMark plus GitHub's tables, as GitHub renders
a step summary) and the HTML with the standard library's parser, so the assertions are about
what a reader gets, not about substrings.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from dataclasses import replace
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.engine.history import FAILED, PASSED, SKIPPED
from pytest_qlearn.engine.hyperparams import ConfigError, Hyperparameters
from pytest_qlearn.reports import (
    RENDERERS,
    SCHEMA_VERSION,
    ReportContext,
    append_step_summary,
    build_document,
    write_report,
    write_reports,
)
from pytest_qlearn.reports.html_page import CSP, SORT_SCRIPT, render_html
from pytest_qlearn.reports.markdown import code, escape, render_markdown
from pytest_qlearn.reports.svg import Series, line_chart, nice_scale
from pytest_qlearn.session import EpisodeSummary, LearningSession, TestResult, default_registry
from pytest_qlearn.settings import REPORT_EXTENSIONS, STEP_SUMMARY_ENV, RawOptions, resolve
from pytest_qlearn.store.base import Partition, SessionRecord, Snapshot

SCRIPT_ID = "test_x.py::test_x[<script>alert(1)</script>]"
NASTY_IDS = [
    SCRIPT_ID,
    "test_x.py::test_x[<img src=x onerror=alert(2)>]",
    "test_x.py::test_x[a|b]",
    "test_x.py::test_x[[click](https://evil.example)]",
    "test_x.py::test_x[``tick`` & *em* _u_ \\|]",
]
PLAIN_IDS = ["test_x.py::test_a", "test_x.py::test_b", "test_x.py::test_c"]
# collection order: the plain tests first, then the nasty ones; the <script> test fails
COLLECTED = PLAIN_IDS + NASTY_IDS
DURATIONS = {test_id: 0.5 + 0.25 * i for i, test_id in enumerate(COLLECTED)}
GENERATED_AT = 1_700_000_000.0

EARLIER = [  # as a snapshot holds them: newest first
    SessionRecord("s2", 200.0, 2.0, 8, 1, 7, 0.0, 40, 0.3125, 0.3125, 12.5, 1, "reorder", 2),
    SessionRecord("s1", 100.0, 3.0, 8, 0, 7, 0.0, 24, None, None, 5.0, 0, "reorder", 1),
]


def episode(*, mode: str = "reorder", earlier: list[SessionRecord] | None = None) -> Any:
    """One real episode through :class:`LearningSession` (ε = 0): the failing test ran first."""
    hyper = Hyperparameters(epsilon=0.0, epsilon_min=0.0)
    snapshot = Snapshot(
        Partition("shop", "py311"), recent_sessions=list(earlier or []), episodes=len(earlier or [])
    )
    learning = LearningSession(
        snapshot, seed=3, registry=default_registry(hyper), mode=mode, session_id="s3"
    )
    refs = [prio.TestRef(t, "test_x.py", None, i) for i, t in enumerate(COLLECTED)]
    learning.rank(refs, "test")
    run_order = [SCRIPT_ID] + [t for t in COLLECTED if t != SCRIPT_ID]
    results = [
        TestResult(
            t,
            FAILED if t == SCRIPT_ID else SKIPPED if t == PLAIN_IDS[2] else PASSED,
            DURATIONS[t],
            COLLECTED.index(t),
            run_order.index(t),
            0 if t == SCRIPT_ID else 2,
            False,
        )
        for t in COLLECTED
    ]
    _, summary = learning.finish(results, started_at=300.0, duration=4.0, exit_status=1)
    return summary


def document(summary: EpisodeSummary | None = None, **context: Any) -> dict[str, Any]:
    ctx = {
        "project": "shop",
        "environment": "py311",
        "store_url": "sqlite:///.pytest_cache/d/qlearn/qlearn.db",
        "store_status": "saved to sqlite:///.pytest_cache/d/qlearn/qlearn.db",
        "warnings": ("store <b>slow</b> & [odd](https://evil.example)",),
        "generated_at": GENERATED_AT,
    }
    ctx.update(context)
    return build_document(summary or episode(earlier=EARLIER), ReportContext(**ctx))


# -- the document --------------------------------------------------------------------------
def test_document_has_exact_values_of_the_episode() -> None:
    doc = document()
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert doc["generator"]["name"] == "pytest-qlearn"
    assert doc["generated_at"] == GENERATED_AT
    assert doc["partition"] == {"project": "shop", "environment": "py311"}
    assert doc["store"]["url"] == "sqlite:///.pytest_cache/d/qlearn/qlearn.db"

    # 7 tests ran (one skipped); the failure is first in qlearn order, 4th of the ran tests
    # in collection order (the skipped test_c does not count): APFD = 1 - TF/n + 1/(2n)
    session = doc["session"]
    assert (session["tests"], session["failures"], session["episode"]) == (8, 1, 3)
    assert session["apfd"] == pytest.approx(1 - 1 / 7 + 1 / 14)
    assert session["collection_apfd"] == pytest.approx(1 - 3 / 7 + 1 / 14)

    orders = doc["orders"]
    assert orders["used"] == "qlearn"
    assert orders["qlearn"]["apfd"] == session["apfd"]
    assert orders["collection"]["apfd"] == session["collection_apfd"]
    assert orders["qlearn"]["first_failure_position"] == 1
    assert orders["collection"]["first_failure_position"] == 4
    fail = DURATIONS[SCRIPT_ID]
    assert orders["qlearn"]["time_to_first_failure"] == pytest.approx(fail)
    assert orders["collection"]["time_to_first_failure"] == pytest.approx(
        DURATIONS[PLAIN_IDS[0]] + DURATIONS[PLAIN_IDS[1]] + fail
    )
    assert doc["time_to_first_failure"] == {
        "qlearn_order": orders["qlearn"]["time_to_first_failure"],
        "collection_order": orders["collection"]["time_to_first_failure"],
    }

    tests = doc["tests"]
    assert [t["test_id"] for t in tests] == [SCRIPT_ID] + [t for t in COLLECTED if t != SCRIPT_ID]
    assert [t["qlearn_position"] for t in tests] == list(range(1, 9))
    assert tests[0] == {
        "test_id": SCRIPT_ID,
        "verdict": "failed",
        "duration": fail,
        "collection_position": 4,
        "qlearn_position": 1,
        "tier": "first",
        "explored": False,
        "why": "no history yet",  # the episode starts from an empty store
    }
    assert all(isinstance(t["why"], str) for t in tests if t["verdict"] == "failed")
    assert {t["verdict"] for t in tests} == {"passed", "failed", "skipped"}
    assert doc["failures_first"] == [SCRIPT_ID]

    learner = doc["learner"]
    assert learner["decisions"] == 8 and learner["explored"] == 0
    assert learner["exploration_share"] == 0.0
    assert learner["episodes"] == 1  # the snapshot holds no agent state: its first episode

    reward = doc["episode_reward"]
    assert reward["range"] == [-100.0, 100.0]
    components = reward["components"]
    assert list(components) == [
        "coverage_gain",
        "quality",
        "time_efficiency",
        "pattern_reuse",
        "cost_efficiency",
    ]
    assert components["quality"]["value"] == pytest.approx(100 * session["apfd"])
    assert components["quality"]["weight"] == 0.25
    for unavailable in ("coverage_gain", "cost_efficiency"):
        assert components[unavailable]["value"] is None
        assert components[unavailable]["note"]
    assert reward["total"] == session["reward"]

    # learning progress: the stored episodes oldest first, then this one
    progress = doc["progress"]
    assert [p["episode"] for p in progress] == [1, 2, 3]
    assert [p["apfd"] for p in progress[:2]] == [None, 0.3125]
    assert [p["reward"] for p in progress[:2]] == [5.0, 12.5]
    assert [p["q_table_size"] for p in progress] == [24, 40, learner["q_table_size"]]
    assert progress[2]["session_id"] == "s3"
    assert progress[2]["epsilon"] == 0.0


def test_riskiest_tests_carry_their_learned_q_values() -> None:
    riskiest = document()["riskiest"]
    assert riskiest[0]["test_id"] == SCRIPT_ID
    assert riskiest[0]["runs"] == 1 and riskiest[0]["failures"] == 1
    assert list(riskiest[0]["q_values"]) == list(prio.TIERS)
    assert all(math.isfinite(q) for q in riskiest[0]["q_values"].values())
    assert "fail_rate=" in riskiest[0]["features"]
    assert all(r["p_fail"] <= riskiest[0]["p_fail"] for r in riskiest)


def test_observe_mode_reports_collection_order_as_used() -> None:
    doc = document(episode(mode="observe"))
    assert doc["orders"]["used"] == "collection"
    assert doc["session"]["mode"] == "observe"


def test_json_rendering_round_trips_and_is_valid_json(tmp_path: Path) -> None:
    doc = document()
    path = tmp_path / "deep" / "report.JSON"
    write_report(path, doc)
    assert json.loads(path.read_text(encoding="utf-8")) == doc
    assert not list(path.parent.glob("*.tmp"))


def test_a_renderer_for_every_allowed_extension() -> None:
    assert set(RENDERERS) == set(REPORT_EXTENSIONS) == {".json", ".md", ".html"}


def test_unwritable_report_is_a_warning_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "r.md").mkdir()  # a directory where the file should go
    warnings: list[str] = []
    write_reports(
        document(), [tmp_path / "taken" / "r.md", tmp_path / "ok.md"], None, warnings.append
    )
    assert len(warnings) == 1 and "r.md" in warnings[0]
    assert (tmp_path / "ok.md").is_file()


# -- Markdown ------------------------------------------------------------------------------
MD = MarkdownIt("commonmark").enable("table")


def md_tables(source: str) -> list[list[list[str]]]:
    """Every table as rows of cell texts (inline content rendered as plain text)."""
    tables: list[list[list[str]]] = []
    row: list[str] = []
    inside = False
    for token in MD.parse(source):
        if token.type in ("table_open", "table_close"):
            inside = token.type == "table_open"
            if inside:
                tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline" and inside:
            row.append("".join(child.content for child in token.children or []))
        elif token.type == "tr_close":
            tables[-1].append(row)
    return tables


def test_markdown_escapes_test_ids_and_messages() -> None:
    source = render_markdown(document())
    html = MD.render(source)
    assert "<script" not in html and "<img" not in html and "<b>" not in html
    assert "<a " not in html and "href" not in html
    # every nasty id is one literal code span, exactly as it is
    texts = {unescape(span) for span in re.findall(r"<code>(.*?)</code>", html)}
    for test_id in NASTY_IDS:
        assert test_id in texts, test_id
    # no table was broken: every row has as many cells as its header
    tables = md_tables(source)
    assert len(tables) == 6
    for table in tables:
        assert all(len(r) == len(table[0]) for r in table), table
    order = tables[2]  # what ran first, and why: right after the failures
    assert order[0] == ["qlearn #", "collection #", "verdict", "why", "test"]
    assert [r[4] for r in order[1:]] == [SCRIPT_ID] + [t for t in COLLECTED if t != SCRIPT_ID]
    # the warning is plain text
    assert "store &lt;b&gt;slow&lt;/b&gt; &amp; [odd](https://evil.example)" in html


def test_markdown_sections_and_figures() -> None:
    doc = document()
    source = render_markdown(doc)
    assert source.startswith("## pytest-qlearn: shop / py311, episode 3\n")
    tables = md_tables(source)
    comparison, failures, ran_first, reward, progress, riskiest = tables
    assert source.index("### What ran first, and why") < source.index("### Learner details")
    assert source.index("### Learner details") < source.index("#### Episode reward")
    assert "*APFD: the share of the run still ahead" in source
    assert ran_first[1][3] == "no history yet"
    apfd_q, apfd_c = doc["session"]["apfd"], doc["session"]["collection_apfd"]
    assert comparison[1] == ["APFD", f"{apfd_q:.3f}", f"{apfd_c:.3f}"]
    assert comparison[3] == ["first failure at", "#1", "#4"]
    assert failures[1:] == [["1", "4", SCRIPT_ID]]
    assert [r[0] for r in reward[1:]] == list(doc["episode_reward"]["components"])
    assert reward[1][1] == "n/a" and reward[5][1] == "n/a"
    assert [r[0] for r in progress[1:]] == ["1", "2", "3"]
    assert progress[1][4] == "n/a"  # episode 1 had no failure: no APFD
    assert riskiest[0][4:7] == ["Q first", "Q middle", "Q last"]
    assert riskiest[1][0] == SCRIPT_ID


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "`plain`"),
        ("a|b", "`a\\|b`"),
        ("a`b", "``a`b``"),
        ("`x", "`` `x ``"),
        ("a\nb", "`a b`"),
    ],
)
def test_code_span(value: str, expected: str) -> None:
    assert code(value) == expected


def test_escape_neutralises_markdown() -> None:
    assert escape("[a](b) <i> *c* _d_ |e| `f` & !g ~h \\") == (
        "\\[a\\]\\(b\\) \\<i\\> \\*c\\* \\_d\\_ \\|e\\| \\`f\\` \\& \\!g \\~h \\\\"
    )
    assert escape("line\nbreak") == "line break"


def test_step_summary_is_appended(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("# earlier step\n", encoding="utf-8")
    doc = document()
    append_step_summary(path, doc)
    append_step_summary(path, doc)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# earlier step\n## pytest-qlearn: shop / py311")
    assert text.count("## pytest-qlearn:") == 2


# -- HTML ----------------------------------------------------------------------------------
class Page(HTMLParser):
    """Tags, attributes and text of a page, as a browser's parser tokenises it."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(source)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def count(self, tag: str) -> int:
        return sum(t == tag for t, _ in self.tags)


def test_html_escapes_every_test_id_and_message() -> None:
    page = Page(render_html(document()))
    assert page.count("script") == 1  # the page's own sorting script, nothing else
    assert page.count("img") == 0 and page.count("a") == 0 and page.count("b") == 0
    handlers = [(t, a) for t, a in page.tags for name in a if name.startswith("on")]
    assert handlers == []
    text = "".join(page.text)
    for test_id in NASTY_IDS:
        assert test_id in text
    assert "warning: store <b>slow</b> & [odd](https://evil.example)" in text


#: The HTML report's sortable tables, in page order (what a user reads first, first).
HTML_TABLES = ("comparison", "failures", "ran-first", "reward", "progress", "riskiest", "tests")


def test_html_is_self_contained_with_charts_and_sortable_tables() -> None:
    source = render_html(document())
    page = Page(source)
    assert page.count("svg") == 5  # time to first failure saved, APFD, reward, ε, Q-table
    assert page.count("polyline") >= 4
    tables = [a.get("id") for t, a in page.tags if t == "table" and a.get("class") == "sortable"]
    assert tables == list(HTML_TABLES)
    assert source.index("What ran first, and why") < source.index("<h2>Learner details</h2>")
    # nothing is fetched: no external resource of any kind, and a CSP that forbids it
    assert not [a for _, a in page.tags if "src" in a or a.get("rel") == "stylesheet"]
    assert "http://" not in source.replace("http://www.w3.org/2000/svg", "")
    assert "https://evil.example" in source  # only as text (escaped test id)
    metas = [a for t, a in page.tags if t == "meta" and a.get("http-equiv")]
    assert metas == [{"http-equiv": "Content-Security-Policy", "content": CSP}]
    digest = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in CSP and "default-src 'none'" in CSP
    assert f"<script>{SORT_SCRIPT}</script>" in source


def test_html_numeric_cells_sort_by_their_value() -> None:
    page = Page(render_html(document()))
    progress_sorts = [
        a.get("data-sort") for t, a in page.tags if t == "td" and a.get("data-sort") is not None
    ]
    assert "" in progress_sorts  # n/a sorts as missing, not as text
    assert "0.3125" in progress_sorts


def test_a_partial_episode_is_marked_in_every_format() -> None:
    """A narrowed or stopped-early run (schema 6): listed, flagged, never mistaken for a full
    episode; drawn as an unfilled point."""
    earlier = [replace(EARLIER[0], partial=True), EARLIER[1]]
    doc = document(episode(earlier=earlier))
    assert [(p["episode"], p["partial"]) for p in doc["progress"]] == [
        (1, False),
        (2, True),
        (3, False),
    ]
    assert doc["session"]["partial"] is False

    progress = md_tables(render_markdown(doc))[4]
    assert [r[0] for r in progress[1:]] == ["1", "2 (partial)", "3"]

    source = render_html(doc)
    page = Page(source)
    cells = re.findall(r"<tr><td[^>]*>([^<]*)</td>", source.split('id="progress"')[1])
    assert cells[:3] == ["3", "2 (partial)", "1"]  # newest first
    hollow = [a for t, a in page.tags if t == "circle" and a.get("class") == "hollow"]
    assert len(hollow) == 5  # both APFD series, reward, ε, Q-table size
    assert all(a.get("fill") == "#fff" for a in hollow)
    assert source.count(" (partial): ") == 5  # the points' tooltips say so
    assert source.count('<span class="swatch hollow"></span>partial</span>') == 4
    # a document without partial episodes draws no unfilled point and no legend for them
    plain = render_html(document())
    assert 'class="hollow"' not in plain and "swatch hollow" not in plain


def first_failure(ttff: float, collection_ttff: float, at: int, collected_at: int) -> Any:
    return {
        "time_to_first_failure": ttff,
        "collection_time_to_first_failure": collection_ttff,
        "first_failure_position": at,
        "collection_first_failure_position": collected_at,
    }


#: Four earlier runs, newest first: a failure 1.5 s and 3 tests earlier than collection order
#: (partial), one 0.25 s and a test later, a run without failures, and a failing run stored
#: before store schema 9 (no figures). This run (episode 5): 1.25 s and 3 tests earlier.
HISTORY_9 = [
    replace(EARLIER[0], session_id="h4", episode=4, partial=True, **first_failure(0.5, 2.0, 2, 5)),
    replace(EARLIER[0], session_id="h3", episode=3, **first_failure(1.0, 0.75, 3, 2)),
    replace(EARLIER[1], session_id="h2", episode=2),
    replace(EARLIER[0], session_id="h1", episode=1),
]


def test_the_document_history_carries_the_first_failure_figures() -> None:
    doc = document(episode(earlier=HISTORY_9))
    progress = doc["progress"]
    assert [p["episode"] for p in progress] == [1, 2, 3, 4, 5]
    assert [p["first_failure_position"] for p in progress] == [None, None, 3, 2, 1]
    assert [p["collection_first_failure_position"] for p in progress] == [None, None, 2, 5, 4]
    assert [p["time_to_first_failure"] for p in progress][:4] == [None, None, 1.0, 0.5]
    this = progress[-1]
    # this run: the failure first (1.25 s); in collection order 4th, after 0.5 + 0.75 s of tests
    assert this["time_to_first_failure"] == pytest.approx(DURATIONS[SCRIPT_ID]) == 1.25
    assert this["collection_time_to_first_failure"] == pytest.approx(2.5)
    for key in ("time_to_first_failure", "first_failure_position"):
        assert this[key] == doc["session"][key]
    assert doc["orders"]["collection"]["time_to_first_failure"] == pytest.approx(2.5)


def test_html_first_chart_is_the_time_to_first_failure_saved_per_run() -> None:
    source = render_html(document(episode(earlier=HISTORY_9)))
    page = Page(source)
    first_svg = source.index("<svg")
    chart = source[first_svg : source.index("</figure>", first_svg)]
    assert 'aria-label="Time to first failure saved per run"' in chart
    assert source.index("<h2>Failures found early, run by run</h2>") < first_svg
    # the runs with figures only: episodes 3, 4 (partial, unfilled) and 5
    tips = [unescape(t) for t in re.findall(r"<circle[^>]*><title>([^<]*)</title>", chart)]
    assert tips == [
        "seconds earlier than collection order, episode 3: -250 ms, -1 test",
        "seconds earlier than collection order, episode 4 (partial): +1.50 s, +3 tests",
        "seconds earlier than collection order, episode 5: +1.25 s, +3 tests",
    ]
    circles = re.findall(r'<circle cx="[^"]+" cy="([^"]+)"', chart)
    assert len(circles) == 3 and chart.count("<polyline") == 1
    # the axis reaches below 0 (episode 3 was later) and above 1.5 s
    ticks = [float(t[:-2]) for t in re.findall(r'text-anchor="end">([^<]*)<', chart)]
    assert min(ticks) < -0.25 and max(ticks) >= 1.5 and 0.0 in ticks
    x_ticks = re.findall(r'text-anchor="middle">(\d+)<', chart)
    assert x_ticks == ["3", "4", "5"]
    note = "".join(page.text)
    assert (
        "3 of the last 5 runs had a failure to compare; 1 run without failures; 1 older run "
        "with failures, stored before store schema 9, lacks the figures." in note
    )
    # the progress table has the figure too, sorting by the seconds (newest first)
    rows = re.findall(r"<tr>(.*?)</tr>", source.split('id="progress"')[1].split("</table>")[0])
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in rows]
    saved_cells = [row[6] for row in cells if row]
    assert saved_cells == [
        "+1.25 s, +3 tests",
        "+1.50 s, +3 tests",
        "-250 ms, -1 test",
        "n/a",
        "n/a",
    ]
    assert 'data-sort="-0.25"' in source


def test_html_without_any_failure_figures_says_so_instead_of_a_chart() -> None:
    doc = document(episode(earlier=[HISTORY_9[3]]))
    for p in doc["progress"]:
        for key in first_failure(0, 0, 0, 0):
            p[key] = None
    source = render_html(doc)
    assert "Time to first failure saved per run" not in source
    assert source.count('<svg class="chart"') == 4
    assert (
        "none of the last 2 runs had a failure to compare yet; 2 older runs with failures, "
        "stored before store schema 9, lack the figures." in "".join(Page(source).text)
    )


def test_markdown_history_shows_the_first_failure_saved() -> None:
    source = render_markdown(document(episode(earlier=HISTORY_9)))
    (progress,) = [t for t in md_tables(source) if "first failure saved" in t[0]]
    column = progress[0].index("first failure saved")
    assert [r[column] for r in progress[1:]] == [
        "n/a",
        "n/a",
        "-250 ms, -1 test",
        "+1.50 s, +3 tests",
        "+1.25 s, +3 tests",
    ]
    assert "1 older run with failures, stored before store schema 9, has no figure" in (
        source.replace("\\", "")
    )


# -- SVG charts ----------------------------------------------------------------------------
def test_chart_draws_hollow_points_unfilled_and_labels_a_repeated_x_once() -> None:
    svg = line_chart(
        "reward",
        [1, 2, 2, 3],
        [Series("<r>", [1.0, 2.0, 3.0, None])],
        hollow=[False, True, False, True],
        hollow_label="<partial>",
    )
    page = Page(svg)
    circles = [a for t, a in page.tags if t == "circle"]
    assert [a.get("class") for a in circles] == [None, "hollow", None]  # the None value: none
    assert "&lt;r&gt;, episode 2 (&lt;partial&gt;): 2" in svg
    assert "<partial>" not in svg and "&lt;partial&gt;</span>" in svg
    ticks = re.findall(r'class="tick" x="[^"]+" y="[^"]+" text-anchor="middle">(\d+)<', svg)
    assert ticks == ["1", "2", "3"]
    with pytest.raises(ValueError, match="one flag per x"):
        line_chart("r", [1, 2], [Series("r", [1.0, 2.0])], hollow=[True])


def test_chart_point_labels_and_an_axis_from_zero() -> None:
    svg = line_chart("saved", [1, 2], [Series("s", [2.0, 3.0], ["<two>", "three"])], y_zero=True)
    assert "s, episode 1: &lt;two&gt;</title>" in svg and "s, episode 2: three</title>" in svg
    ticks = re.findall(r'text-anchor="end">([^<]*)<', svg)
    assert ticks[0] == "0" and ticks[-1] == "3"
    with pytest.raises(ValueError, match="one per x"):
        line_chart("s", [1, 2], [Series("s", [1.0, 2.0], ["one"])])


def test_chart_breaks_the_line_where_a_value_is_missing() -> None:
    svg = line_chart("APFD", [1, 2, 3, 4, 5], [Series("q", [0.5, 0.6, None, 0.7, 0.8])])
    assert svg.count("<polyline") == 2
    assert svg.count("<circle") == 4
    one = line_chart("reward", [7], [Series("r", [3.0])])
    assert one.count("<polyline") == 0 and one.count("<circle") == 1


def test_chart_escapes_names() -> None:
    svg = line_chart("<t>", [1, 2], [Series("<script>x</script>", [1.0, 2.0])])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert Page(svg).count("script") == 0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([22.4, 64.6], (20.0, 80.0, 20.0)),
        ([21.0, 39.0], (20.0, 40.0, 5.0)),
        ([0.0, 0.0], (0.0, 1.0, 0.25)),
        ([], (0.0, 1.0, 0.25)),
        ([-30.0, 10.0], (-30.0, 10.0, 10.0)),
    ],
)
def test_nice_scale(values: list[float], expected: tuple[float, float, float]) -> None:
    assert nice_scale(values) == pytest.approx(expected)


# -- settings ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["out.txt", "report", "r.htm", "r.json.gz"])
def test_unknown_report_extension_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(RawOptions(reports=[value]))
    message = str(info.value)
    assert "--qlearn-report" in message and repr(value) in message
    assert ".json, .md, .html" in message


def test_report_paths_by_extension_any_case(tmp_path: Path) -> None:
    settings = resolve(RawOptions(reports=["", "a.json", "b.MD", "/abs/c.html"], rootpath=tmp_path))
    assert settings.report_terminal
    assert settings.report_paths == (tmp_path / "a.json", tmp_path / "b.MD", Path("/abs/c.html"))


@pytest.mark.parametrize(
    ("ini", "environ", "expected"),
    [
        ("true", {STEP_SUMMARY_ENV: "/tmp/s.md"}, Path("/tmp/s.md")),
        ("Yes", {STEP_SUMMARY_ENV: "/tmp/s.md"}, Path("/tmp/s.md")),
        ("true", {}, None),
        ("true", {STEP_SUMMARY_ENV: "  "}, None),
        ("false", {STEP_SUMMARY_ENV: "/tmp/s.md"}, None),
        (None, {STEP_SUMMARY_ENV: "/tmp/s.md"}, None),
    ],
)
def test_step_summary_needs_the_ini_key_and_the_variable(
    ini: str | None, environ: dict[str, str], expected: Path | None
) -> None:
    settings = resolve(RawOptions(ini_step_summary=ini, environ=environ))
    assert settings.step_summary == expected


def test_step_summary_ini_value_is_validated() -> None:
    with pytest.raises(ConfigError) as info:
        resolve(RawOptions(ini_step_summary="maybe", environ={}))
    assert "qlearn_step_summary" in str(info.value) and "'maybe'" in str(info.value)
    assert "true or false" in str(info.value)


# -- durations a person reads ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "n/a"),
        (0.0, "0 ms"),
        (0.0004, "0.4 ms"),
        (0.0042, "4.2 ms"),
        (0.25, "250 ms"),
        (0.9994, "999 ms"),
        (1.0, "1.00 s"),
        (12.345, "12.35 s"),
    ],
)
def test_durations_under_a_second_are_shown_in_ms(value: float | None, shown: str) -> None:
    from pytest_qlearn.reports.text import NA, seconds

    assert seconds(value) == (NA if value is None else shown)


def test_the_html_page_uses_the_windows_width_and_shows_fast_tests_in_ms() -> None:
    source = render_html(document())
    assert "max-width" not in source
    assert "0.00 s" not in source
    assert re.search(r">\d+(\.\d)? ms<", source), "a sub-second duration in ms"
