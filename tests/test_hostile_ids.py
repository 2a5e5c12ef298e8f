"""Test ids no store or report expected (issue 13, cases 3, 4 and 10): NUL bytes, lone
surrogates and bidi control characters, through a real pytest run into both stores and into
every report. pytest keeps them as they are with its option that disables id escaping.

- A run's outcome never changes: no INTERNALERROR, the exit status of plain pytest.
- Every id is stored and read back losslessly, in SQLite and PostgreSQL, run after run.
- In the Markdown, HTML and terminal reports a bidi control or a lone surrogate is shown
  escaped (``\\u202e``), so an id cannot display as something else; the JSON report keeps the
  id exactly (as JSON escapes).
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import pg_execute
from markdown_it import MarkdownIt

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.engine.history import FAILED, PASSED
from pytest_qlearn.engine.hyperparams import Hyperparameters
from pytest_qlearn.reports import ReportContext, build_document, write_report
from pytest_qlearn.reports.html_page import render_html
from pytest_qlearn.reports.markdown import render_markdown
from pytest_qlearn.reports.terminal import detail_lines
from pytest_qlearn.session import EpisodeSummary, LearningSession, TestResult, default_registry
from pytest_qlearn.store.base import Partition, Snapshot

BASE_ARGS = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")
#: The bidi controls that make text display in another order than it is stored.
BIDI = [
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u200e",
    "\u200f",
    "\u061c",
]
SPOOFED = "test_x.py::test_x[\u202etxt.exe\u202c]"  # displays as ...[exe.txt]
ISOLATED = "test_x.py::test_x[\u2067admin\u2069\u200f-\u061c]"
SURROGATE = "test_x.py::test_x[a\udc80b]"
NUL = "test_x.py::test_x[a\x00b]"
IDS = [SPOOFED, ISOLATED, SURROGATE, NUL, "test_x.py::test_plain"]
RAW = re.compile("[" + "".join(BIDI) + "\ud800-\udfff]")


# -- the reports, from a hand-made episode ----------------------------------------------------
def summary() -> EpisodeSummary:
    hyper = Hyperparameters(epsilon=0.0, epsilon_min=0.0)
    learning = LearningSession(
        Snapshot(Partition("shop\u202e", "py311")),
        seed=3,
        registry=default_registry(hyper),
        session_id="s1",
    )
    refs = [prio.TestRef(t, "test_x.py", None, i) for i, t in enumerate(IDS)]
    learning.rank(refs, "test")
    results = [
        TestResult(t, FAILED if t != IDS[-1] else PASSED, 0.5, i, i, 2, False)
        for i, t in enumerate(IDS)
    ]
    _, episode = learning.finish(results, started_at=1.0, duration=2.0, exit_status=1)
    return episode


def document() -> dict[str, Any]:
    context = ReportContext(
        "shop\u202e", "py311", "sqlite:///q.db", "saved", warnings=(f"slow test {SPOOFED}",)
    )
    return build_document(summary(), context)


def test_visible_escapes_bidi_controls_and_lone_surrogates_only() -> None:
    from pytest_qlearn.reports.text import visible

    for char in BIDI:
        assert visible(f"a{char}b") == f"a\\u{ord(char):04x}b"
    assert visible(SURROGATE) == "test_x.py::test_x[a\\udc80b]"
    plain = "test_ü.py::test_π[日本語-🐍-a\\u202e]"
    assert visible(plain) == plain


def test_markdown_shows_bidi_controls_and_surrogates_escaped() -> None:
    """Case 10: the ids passed raw into the Markdown, where ``\\u202e`` reverses what follows."""
    source = render_markdown(document())
    assert RAW.search(source) is None
    html = MarkdownIt("commonmark").enable("table").render(source)
    assert "test_x.py::test_x[\\u202etxt.exe\\u202c]" in html
    assert "test_x.py::test_x[\\u2067admin\\u2069\\u200f-\\u061c]" in html
    assert "test_x.py::test_x[a\\udc80b]" in html
    assert "shop\\u202e" in html  # names and messages too


def test_html_shows_bidi_controls_and_surrogates_escaped() -> None:
    page = render_html(document())
    assert RAW.search(page) is None
    assert "test_x.py::test_x[\\u202etxt.exe\\u202c]" in page
    assert "test_x.py::test_x[a\\udc80b]" in page
    assert "slow test test_x.py::test_x[\\u202etxt.exe\\u202c]" in page


def test_json_report_keeps_every_id_exactly(tmp_path: Path) -> None:
    doc = document()
    path = tmp_path / "r.json"
    write_report(path, doc)  # a lone surrogate made the write fail: it is a JSON escape now
    data = json.loads(path.read_text(encoding="utf-8"))
    assert {t["test_id"] for t in data["tests"]} == set(IDS)


@pytest.mark.parametrize("suffix", [".md", ".html"])
def test_markdown_and_html_report_files_are_written(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"r{suffix}"
    write_report(path, document())
    assert RAW.search(path.read_text(encoding="utf-8")) is None


def test_terminal_report_shows_bidi_controls_and_surrogates_escaped() -> None:
    lines = detail_lines(summary(), "saved")
    assert not any(RAW.search(line) for line in lines)
    assert any("test_x.py::test_x[\\u202etxt.exe\\u202c]" in line for line in lines)


# -- end to end ------------------------------------------------------------------------------
SUITE = textwrap.dedent(
    """
    import pytest

    IDS = ["rlo\\u202etxt.exe\\u202c", "iso\\u2067x\\u2069", "sur\\udc80", "nul\\x00", "plain"]


    @pytest.mark.parametrize("i", range(len(IDS)), ids=IDS)
    def test_p(i):
        assert IDS[i] not in ("sur\\udc80", "nul\\x00")  # the hostile ones fail


    def test_last():
        pass
    """
)
INI = (
    "[pytest]\nqlearn_exploration_rate = 0\nqlearn_min_exploration_rate = 0\n"
    "qlearn_order_scope = test\n"
    "disable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n"
)
STORED_IDS = {
    "test_x.py::test_p[rlo\u202etxt.exe\u202c]",
    "test_x.py::test_p[iso\u2067x\u2069]",
    "test_x.py::test_p[sur\udc80]",
    "test_x.py::test_p[nul\x00]",
    "test_x.py::test_p[plain]",
    "test_x.py::test_last",
}


def _project(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_x=SUITE)


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # pytest's own cache plugin cannot write a lone surrogate (plain pytest crashes in it
    # too): both runs go without it, qlearn keeps its store under .pytest_cache/d/qlearn
    return pytester.runpytest_subprocess(*BASE_ARGS, "-p", "no:cacheprovider", *args)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_hostile_ids_never_change_the_outcome_and_are_learned(
    pytester: pytest.Pytester,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
) -> None:
    """Case 4: a lone surrogate made the state hashing raise, INTERNALERROR, exit 3 and "no
    tests ran" where plain pytest exits 1; case 3: a NUL made every PostgreSQL write fail, and
    the spool replay fail after it, so nothing was ever learned."""
    # pytest prints the ids it reports as they are: a lone surrogate as \udc80 here
    monkeypatch.setenv("PYTHONIOENCODING", "utf-8:backslashreplace")
    _project(pytester)
    plain = _run(pytester)
    assert plain.ret == pytest.ExitCode.TESTS_FAILED
    plain.assert_outcomes(passed=4, failed=2)

    db = []
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
        db = ["--qlearn-db", url]
    reports = ["--qlearn-report=r.json", "--qlearn-report=r.md", "--qlearn-report=r.html"]
    for run in range(3):
        result = _run(pytester, "--qlearn", "-v", *db, *reports, "--qlearn-report")
        printed = result.stdout.str() + result.stderr.str()
        assert "INTERNALERROR" not in printed and "Traceback" not in printed
        assert result.ret == pytest.ExitCode.TESTS_FAILED, printed
        result.assert_outcomes(passed=4, failed=2)
        assert "qlearn: warning" not in printed, printed
        data = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
        assert data["session"]["episode"] == run + 1
        assert {t["test_id"] for t in data["tests"]} == STORED_IDS
        for name in ("r.md", "r.html"):
            assert RAW.search((pytester.path / name).read_text(encoding="utf-8")) is None
        # the qlearn report on the terminal shows the ids escaped
        lines = result.outlines
        start = next(i for i, line in enumerate(lines) if "qlearn report" in line)
        section = lines[
            start : start + next(i for i, x in enumerate(lines[start:]) if "store:" in x)
        ]
        # (the five riskiest of six tests: the passing hostile ones tie, either may be cut)
        shown = "\n".join(section)
        assert any(
            f"  test_x.py::test_p[{escaped}]  (0/" in shown
            for escaped in ("iso\\u2067x\\u2069", "rlo\\u202etxt.exe\\u202c")
        ), shown
        assert not any(RAW.search(line) for line in section)
    # learned from: the two hostile ids that failed every time run first now
    first = sorted(data["tests"], key=lambda t: t["qlearn_position"])[:2]
    assert {t["test_id"] for t in first} == {
        "test_x.py::test_p[sur\udc80]",
        "test_x.py::test_p[nul\x00]",
    }
    if backend == "postgresql":
        [(sessions,)] = pg_execute(url, "SELECT count(*) FROM sessions")
        assert sessions == 3
        rows = pg_execute(url, "SELECT test_id, runs FROM test_history")
        assert len(rows) == len(STORED_IDS) and {r[1] for r in rows} == {3}
    spool = pytester.path / ".pytest_cache" / "d" / "qlearn" / "spool"
    assert not list(spool.glob("*/*.json"))
