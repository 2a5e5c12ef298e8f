"""The HTML report in a real headless browser (Debian's ``chromium``; ``.ci/run`` installs it).

A pytester project with hostile parametrised ids writes the report; Chromium loads it from
disk with the network off and ``--dump-dom`` prints the DOM after the page's script ran. The
charts and tables must be there, the sorting script must have run (under the page's own
Content Security Policy), and no markup from a test id may have become an element.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_reports import HTML_TABLES

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BROWSER = next((path for name in BROWSERS if (path := shutil.which(name))), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason="no chromium, chromium-browser or google-chrome on this machine "
    "(.ci/run installs Debian's chromium; locally: apt-get install chromium)",
)
BASE_ARGS = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")

HOSTILE = {
    "script": "<script>document.body.dataset.pwned='script'</script>",
    "img": "<img src=x onerror=document.body.dataset.pwned='img'>",
    "link": "[click](https://evil.example)",
}
SUITE = f"""
import pytest

def test_a():
    pass

def test_b():
    pass

@pytest.mark.parametrize(
    "x", [pytest.param(1, id={HOSTILE["script"]!r}), pytest.param(2, id={HOSTILE["img"]!r}),
          pytest.param(3, id={HOSTILE["link"]!r})]
)
def test_x(x):
    assert x != 1

def test_c():
    pass
"""
N = 6


class Dom(HTMLParser):
    """Elements (tag, attributes) and text of a page."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._tables: list[list[list[str]]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._stack: list[str | None] = []
        self.feed(source)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.elements.append((tag, attributes))
        if tag == "table":
            rows: list[list[str]] = []
            self._tables.append(rows)
            self.tables[attributes.get("id", f"#{len(self.tables)}")] = rows
        elif tag == "tr" and self._tables:
            self._tables[-1].append([])
        elif tag in ("td", "th") and self._tables:
            self._tables[-1][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self._tables:
            self._tables.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._tables and self._tables[-1] and self._tables[-1][-1]:
            self._tables[-1][-1][-1] += data

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for t, attrs in self.elements if t == tag]


def dump_dom(page: Path, profile: Path) -> str:
    assert BROWSER is not None
    result = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


@pytest.fixture
def report(pytester: pytest.Pytester) -> Path:
    """The HTML report of the second run of a project with hostile test ids."""
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nqlearn = true\nqlearn_exploration_rate = 0\n"
        "qlearn_min_exploration_rate = 0\nqlearn_order_scope = test\n",
    )
    pytester.makepyfile(test_hostile=SUITE)
    for _ in range(2):
        result = pytester.runpytest(*BASE_ARGS, "--qlearn-report=report.html")
        result.assert_outcomes(passed=N - 1, failed=1)
    return pytester.path / "report.html"


def test_browser_renders_charts_and_tables_and_runs_no_injected_script(
    report: Path, tmp_path: Path
) -> None:
    dom = Dom(dump_dom(report, tmp_path / "profile"))

    # the page's own script ran (the CSP lets exactly it run): every table is sortable
    sortable = [a for a in dom.all("table") if a.get("class") == "sortable"]
    assert [a["id"] for a in sortable] == list(HTML_TABLES)
    assert all(a.get("data-sortable") == "ready" for a in sortable)
    assert len(dom.tables["tests"]) == N + 1  # header and one row per test

    # five charts, each an SVG with points drawn from two episodes: first the time to first
    # failure saved per run, then the learning curves
    charts = [a for a in dom.all("svg") if a.get("class") == "chart"]
    assert len(charts) == 5
    assert charts[0]["aria-label"] == "Time to first failure saved per run"
    assert len(dom.all("circle")) >= 5 * 2
    assert len(dom.all("polyline")) >= 5

    # nothing from a test id became an element or ran
    assert len(dom.all("script")) == 1
    assert dom.all("img") == [] and dom.all("a") == []
    assert not [(t, a) for t, a in dom.elements for name in a if name.startswith("on")]
    body = dom.all("body")[0]
    assert "data-pwned" not in body
    text = "".join(dom.text)
    for hostile in HOSTILE.values():
        assert f"test_hostile.py::test_x[{hostile}]" in text
    failures = dom.tables["failures"]
    assert failures[1][3] == f"test_hostile.py::test_x[{HOSTILE['script']}]"


def test_browser_sorts_a_table_when_its_header_is_clicked(report: Path, tmp_path: Path) -> None:
    # a copy that clicks headers once loaded (the real page's CSP admits only its own script)
    html = report.read_text(encoding="utf-8")
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    clicks = """<script>
    function head(id, title) {
      var cells = document.getElementById(id).tHead.rows[0].cells;
      for (var i = 0; i < cells.length; i++) {
        if (cells[i].textContent === title) return cells[i];
      }
    }
    head("tests", "collection #").click(); head("tests", "collection #").click();
    head("progress", "episode").click();
    head("reward", "component").click();
    </script></body>"""
    page = tmp_path / "clicked.html"
    page.write_text(html.replace("</body>", clicks), encoding="utf-8")
    dom = Dom(dump_dom(page, tmp_path / "profile"))

    assert [int(row[1]) for row in dom.tables["tests"][1:]] == list(range(N, 0, -1))
    assert [row[0] for row in dom.tables["progress"][1:]] == ["1", "2"]  # was newest first
    assert [row[0] for row in dom.tables["reward"][1:]] == [
        "cost_efficiency",
        "coverage_gain",
        "pattern_reuse",
        "quality",
        "time_efficiency",
    ]
    sorted_by = [
        (a.get("data-type"), a["aria-sort"])
        for t, a in dom.elements
        if t == "th" and a.get("aria-sort")
    ]
    assert sorted_by == [(None, "ascending"), ("number", "ascending"), ("number", "descending")]
