"""Report files from real pytest sessions (``pytester``): ``--qlearn-report=PATH`` as JSON,
Markdown and HTML, GitHub's step summary, JUnit XML properties, and the option errors.

The suite has seven tests in one module, three of them with hostile parametrised ids; the
one listed in ``fail.txt`` fails. With ε = 0 the first run keeps collection order (nothing is
known) and later runs put the failing test first, so APFD and positions are exact:
APFD = 1 − TF/n + 1/(2n) with TF the failing test's position among the n tests that ran.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

BASE_ARGS = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")

CONFTEST = """
from pathlib import Path

FAIL = Path(__file__).parent / "fail.txt"


def pytest_runtest_call(item):
    if FAIL.exists() and item.name in FAIL.read_text(encoding="utf-8").split():
        raise AssertionError(f"{item.name} <is> listed in fail.txt")
"""

SUITE = """
import pytest

def test_a():
    pass

def test_b():
    pass

def test_c():
    pass

@pytest.mark.parametrize(
    "x", ["<script>alert(1)</script>", "a|b", "[click](https://evil.example)"]
)
def test_x(x):
    pass

def test_d():
    pass
"""

SCRIPT = "test_x[<script>alert(1)</script>]"
SCRIPT_ID = f"test_shop.py::{SCRIPT}"
COLLECTED = [
    "test_shop.py::test_a",
    "test_shop.py::test_b",
    "test_shop.py::test_c",
    SCRIPT_ID,
    "test_shop.py::test_x[a|b]",
    "test_shop.py::test_x[[click](https://evil.example)]",
    "test_shop.py::test_d",
]
N = len(COLLECTED)


def apfd(position: int, n: int = N) -> float:
    return 1 - position / n + 1 / (2 * n)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QLEARN_DATABASE_URL", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def make_project(pytester: pytest.Pytester, ini: str = "", fail: str = SCRIPT) -> None:
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nqlearn = true\nqlearn_exploration_rate = 0\n"
        "qlearn_min_exploration_rate = 0\nqlearn_order_scope = test\nqlearn_project = shop\n" + ini,
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_shop=SUITE)
    (pytester.path / "fail.txt").write_text(fail + "\n", encoding="utf-8")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE_ARGS, *args)


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# -- JSON, Markdown and HTML from one run --------------------------------------------------
def test_three_runs_write_json_markdown_and_html_with_exact_values(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester)
    docs = []
    for n in (1, 2, 3):
        result = run(
            pytester,
            f"--qlearn-report=out/run{n}.json",
            "--qlearn-report=out/run.md",
            "--qlearn-report=out/run.html",
        )
        result.assert_outcomes(passed=6, failed=1)
        assert not [line for line in result.outlines if "qlearn: warning" in line]
        docs.append(load(pytester.path / "out" / f"run{n}.json"))

    for n, doc in enumerate(docs, 1):
        assert doc["schema_version"] == 1
        assert doc["session"]["episode"] == n
        assert doc["session"]["tests"] == N and doc["session"]["failures"] == 1
        assert doc["partition"]["environment"] == "default"
        assert doc["store"]["status"].startswith("saved to sqlite:///")
        assert doc["orders"]["used"] == "qlearn"
        assert doc["orders"]["collection"]["first_failure_position"] == 4
        assert doc["session"]["collection_apfd"] == pytest.approx(apfd(4))
        assert doc["learner"]["decisions"] == N and doc["learner"]["exploration_share"] == 0.0
        assert sorted(t["test_id"] for t in doc["tests"]) == sorted(COLLECTED)
        assert [t["qlearn_position"] for t in doc["tests"]] == list(range(1, N + 1))
        by_id = {t["test_id"]: t for t in doc["tests"]}
        assert [by_id[t]["collection_position"] for t in COLLECTED] == list(range(1, N + 1))
        assert doc["failures_first"] == [SCRIPT_ID]
        components = doc["episode_reward"]["components"]
        assert components["coverage_gain"]["value"] is None
        assert components["cost_efficiency"]["value"] is None
        assert components["quality"]["value"] == pytest.approx(100 * doc["session"]["apfd"])

    # run 1: collection order; runs 2 and 3: the failing test first
    first, second, third = docs
    assert [t["test_id"] for t in first["tests"]] == COLLECTED
    assert first["session"]["apfd"] == pytest.approx(apfd(4))
    assert first["orders"]["qlearn"]["time_to_first_failure"] == pytest.approx(
        sum(t["duration"] for t in first["tests"][:4])
    )
    for doc in (second, third):
        assert doc["tests"][0]["test_id"] == SCRIPT_ID
        assert doc["tests"][0]["tier"] == "first"
        assert doc["tests"][0]["verdict"] == "failed"
        assert doc["orders"]["qlearn"]["first_failure_position"] == 1
        assert doc["session"]["apfd"] == pytest.approx(apfd(1))
        assert doc["orders"]["qlearn"]["time_to_first_failure"] == pytest.approx(
            doc["tests"][0]["duration"]
        )
        assert doc["orders"]["collection"]["time_to_first_failure"] == pytest.approx(
            sum(t["duration"] for t in doc["tests"] if t["collection_position"] <= 4)
        )

    # learning progress of run 3 is the three sessions, as each run reported itself
    progress = third["progress"]
    assert [p["episode"] for p in progress] == [1, 2, 3]
    for p, doc in zip(progress, docs, strict=True):
        assert p["session_id"] == doc["session"]["session_id"]
        assert p["apfd"] == pytest.approx(doc["session"]["apfd"])
        assert p["collection_apfd"] == pytest.approx(doc["session"]["collection_apfd"])
        assert p["reward"] == pytest.approx(doc["episode_reward"]["total"])
        assert p["q_table_size"] == doc["learner"]["q_table_size"]
        assert p["epsilon"] == 0.0

    risk = third["riskiest"][0]
    assert risk["test_id"] == SCRIPT_ID
    assert (risk["runs"], risk["failures"]) == (3, 3)
    assert risk["visits"] >= 1  # how the engine shapes states is its own business
    q = risk["q_values"]
    assert list(q) == ["first", "middle", "last"]
    assert q["first"] > q["last"]  # a test that always fails belongs first

    # the Markdown and HTML files are of the last run and say the same
    md = (pytester.path / "out" / "run.md").read_text(encoding="utf-8")
    assert md.startswith("## pytest-qlearn: shop / default, episode 3\n")
    rendered = re.sub(r' style="[^"]*"', "", MarkdownIt("commonmark").enable("table").render(md))
    assert "<script" not in rendered and "<a " not in rendered
    assert f"<td>APFD</td>\n<td>{apfd(1):.3f}</td>\n<td>{apfd(4):.3f}</td>" in rendered
    codes = [unescape(c) for c in re.findall(r"<code>(.*?)</code>", rendered)]
    assert codes.count(SCRIPT_ID) == 3  # failures, riskiest, order
    html = (pytester.path / "out" / "run.html").read_text(encoding="utf-8")
    assert html.count("<script") == 1
    assert html.count('<svg class="chart"') == 5
    # first among them: the time to first failure saved, over the three runs
    first = html[html.index("<svg") : html.index("</svg>")]
    assert 'aria-label="Time to first failure saved per run"' in first
    assert first.count("<circle") == 3
    saved = [
        d["orders"]["collection"]["time_to_first_failure"]
        - d["orders"]["qlearn"]["time_to_first_failure"]
        for d in docs
    ]
    tips = re.findall(r"episode (\d): ([^<]*)</title>", first)
    assert [int(e) for e, _ in tips] == [1, 2, 3]
    assert [t.endswith(("+0 tests", "+3 tests")) for _, t in tips] == [True] * 3
    assert tips[0][1].endswith("+0 tests") and tips[1][1].endswith("+3 tests")
    assert saved[0] == pytest.approx(0.0) and saved[1] > 0
    assert "test_x[&lt;script&gt;alert(1)&lt;/script&gt;]" in html
    assert "episode 3</title>" in html


def test_each_session_stores_how_early_the_first_failure_showed_up_in_both_orders(
    pytester: pytest.Pytester,
) -> None:
    """Schema 9: the time to first failure and its position, in qlearn's order and in
    collection order, are stored with each session (and so in the reports' history)."""
    from pytest_qlearn.store import SqliteStore
    from pytest_qlearn.store.base import Partition

    make_project(pytester)
    docs = []
    for n in (1, 2):
        run(pytester, f"--qlearn-report=r{n}.json").assert_outcomes(passed=6, failed=1)
        docs.append(load(pytester.path / f"r{n}.json"))
    (pytester.path / "fail.txt").write_text("nothing\n", encoding="utf-8")
    run(pytester, "--qlearn-report=r3.json").assert_outcomes(passed=7)
    docs.append(load(pytester.path / "r3.json"))

    store = SqliteStore(pytester.path / ".pytest_cache" / "d" / "qlearn" / "qlearn.db")
    store.open()
    try:
        stored = store.sessions(Partition("shop", "default"))
    finally:
        store.close()
    assert [s.session_id for s in stored] == [d["session"]["session_id"] for d in docs]
    # run 1 kept collection order (the failure 4th in both); run 2 put it first
    for session, doc, qlearn_at in zip(stored[:2], docs, (4, 1), strict=False):
        durations = {t["collection_position"]: t["duration"] for t in doc["tests"]}
        by_qlearn = [t["duration"] for t in doc["tests"]]  # the tests are in qlearn order
        assert session.first_failure_position == qlearn_at
        assert session.collection_first_failure_position == 4
        assert session.time_to_first_failure == pytest.approx(sum(by_qlearn[:qlearn_at]))
        assert session.collection_time_to_first_failure == pytest.approx(
            sum(durations[i] for i in range(1, 5))
        )
        assert session.time_to_first_failure > 0
        # the report says the same, as this run and in the history
        assert doc["session"]["time_to_first_failure"] == session.time_to_first_failure
        assert doc["orders"]["qlearn"]["first_failure_position"] == qlearn_at
        assert doc["orders"]["collection"]["time_to_first_failure"] == (
            session.collection_time_to_first_failure
        )
    assert stored[1].time_to_first_failure < stored[1].collection_time_to_first_failure
    # a run without a failure has none of the figures
    last = stored[2]
    assert (
        last.time_to_first_failure,
        last.collection_time_to_first_failure,
        last.first_failure_position,
        last.collection_first_failure_position,
    ) == (None, None, None, None)
    history = docs[2]["progress"]
    assert [p["first_failure_position"] for p in history] == [4, 1, None]
    assert [p["collection_first_failure_position"] for p in history] == [4, 4, None]
    assert history[1]["collection_time_to_first_failure"] == pytest.approx(
        stored[1].collection_time_to_first_failure
    )


def test_observe_mode_report_says_collection_order_was_used(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    run(pytester).assert_outcomes(passed=6, failed=1)
    run(pytester, "--qlearn-observe", "--qlearn-report=r.json").assert_outcomes(passed=6, failed=1)
    doc = load(pytester.path / "r.json")
    assert doc["orders"]["used"] == "collection"
    assert doc["orders"]["qlearn"]["first_failure_position"] == 1  # would have been
    assert doc["orders"]["collection"]["first_failure_position"] == 4
    assert doc["session"]["apfd"] == pytest.approx(apfd(1))


def test_report_that_cannot_be_written_is_a_warning(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    (pytester.path / "r.html").mkdir()
    result = run(pytester, "--qlearn-report=r.html", "--qlearn-report=ok.md")
    result.assert_outcomes(passed=6, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    warnings = [line for line in result.outlines if line.startswith("qlearn: warning")]
    assert len(warnings) == 1 and "r.html" in warnings[0]
    assert (pytester.path / "ok.md").is_file()


# -- GitHub step summary -------------------------------------------------------------------
def test_markdown_is_appended_to_the_step_summary_when_asked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(pytester, ini="qlearn_step_summary = true\n")
    summary = pytester.path / "step_summary.md"
    summary.write_text("## Earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run(pytester).assert_outcomes(passed=6, failed=1)
    run(pytester, "--qlearn-report=r.md").assert_outcomes(passed=6, failed=1)
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## Earlier step\n## pytest-qlearn:")
    assert text.count("## pytest-qlearn:") == 2
    assert ", episode 1\n" in text and ", episode 2\n" in text
    # the file the run wrote is the same Markdown as its step summary entry
    own = (pytester.path / "r.md").read_text(encoding="utf-8")
    assert text.endswith(own + "\n")
    assert f"`{SCRIPT_ID}`" in own


@pytest.mark.parametrize(("ini", "env"), [("", True), ("qlearn_step_summary = false\n", True)])
def test_no_step_summary_unless_the_ini_key_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ini: str, env: bool
) -> None:
    make_project(pytester, ini=ini)
    summary = pytester.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run(pytester).assert_outcomes(passed=6, failed=1)
    assert not summary.exists()


def test_step_summary_key_without_the_variable_does_nothing(pytester: pytest.Pytester) -> None:
    make_project(pytester, ini="qlearn_step_summary = true\n")
    result = run(pytester)
    result.assert_outcomes(passed=6, failed=1)
    assert not [line for line in result.outlines if "qlearn: warning" in line]


# -- option errors -------------------------------------------------------------------------
def assert_usage_error(result: pytest.RunResult, *pieces: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    for piece in pieces:
        assert piece in err, err
    assert "Traceback" not in err + result.stdout.str()


@pytest.mark.parametrize("value", ["report.txt", "report", "out/r.htm"])
def test_unknown_report_extension_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    make_project(pytester)
    result = run(pytester, f"--qlearn-report={value}")
    assert_usage_error(result, "--qlearn-report", repr(value), ".json, .md, .html")
    assert not list(pytester.path.glob(".pytest_cache/d/qlearn/*.db"))  # nothing ran


def test_bad_step_summary_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    make_project(pytester, ini="qlearn_step_summary = sometimes\n")
    assert_usage_error(run(pytester), "qlearn_step_summary", "'sometimes'", "true or false")


# -- JUnit XML -----------------------------------------------------------------------------
def junit_properties(path: Path) -> dict[str, dict[str, str]]:
    """Test id → its qlearn properties, from a JUnit XML file."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        props = {
            p.get("name", ""): p.get("value", "")
            for p in case.iter("property")
            if p.get("name", "").startswith("qlearn_")
        }
        out[test_id] = props
    return out


def test_junit_xml_carries_tier_and_positions(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    run(pytester).assert_outcomes(passed=6, failed=1)
    run(pytester, "--junitxml=junit.xml", "--qlearn-report=r.json").assert_outcomes(
        passed=6, failed=1
    )
    props = junit_properties(pytester.path / "junit.xml")
    assert sorted(props) == sorted(COLLECTED)
    assert props[SCRIPT_ID] == {
        "qlearn_tier": "first",
        "qlearn_collection_position": "4",
        "qlearn_run_position": "1",
    }
    doc = load(pytester.path / "r.json")
    for test in doc["tests"]:
        assert props[test["test_id"]] == {
            "qlearn_tier": test["tier"],
            "qlearn_collection_position": str(test["collection_position"]),
            "qlearn_run_position": str(test["qlearn_position"]),
        }


def test_junit_xml_properties_under_xdist(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    run(pytester).assert_outcomes(passed=6, failed=1)
    run(pytester, "-n", "2", "--junitxml=junit.xml").assert_outcomes(passed=6, failed=1)
    props = junit_properties(pytester.path / "junit.xml")
    assert sorted(props) == sorted(COLLECTED)
    assert props[SCRIPT_ID]["qlearn_run_position"] == "1"
    assert sorted(int(p["qlearn_run_position"]) for p in props.values()) == list(range(1, N + 1))


def test_no_properties_without_junitxml(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    pytester.makeconftest(
        CONFTEST
        + """

def pytest_runtest_logreport(report):
    if report.when == "call" and report.user_properties:
        raise RuntimeError(f"unexpected properties {report.user_properties}")
"""
    )
    result = run(pytester)
    result.assert_outcomes(passed=6, failed=1)
    assert "unexpected properties" not in result.stdout.str()


def test_a_run_stopped_early_gives_no_collection_order_time(pytester: pytest.Pytester) -> None:
    """With -x the known failure runs first and stops the run: collection order would have
    reached it after three tests that never ran, whose seconds are unknown — its position
    is stated, not a time made of the one test that ran."""
    make_project(pytester)
    run(pytester)
    result = run(pytester, "-x", "--qlearn-report=x.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "qlearn: partial run (stopped early by -x, --maxfail or a plugin): *",
            "qlearn: 1 failure of 1 test, at test 1 (* in); collection order: at test 4 · "
            "learned from 1 test, episode * (partial), *",
        ]
    )
    session = load(pytester.path / "x.json")["session"]
    assert session["time_to_first_failure"] is not None
    assert session["collection_time_to_first_failure"] is None
    assert session["collection_first_failure_position"] == 4
