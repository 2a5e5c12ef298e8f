"""What the plugin costs a pytest start: installed but not enabled, five modules of ours and
none of the engine, the stores or coverage.py; enabled with SQLite, no asyncpg, no
coverage.py and no Markdown/HTML renderer unless the run asks for them. (Timings are
benchmarks/startup.py's job: machines here are too noisy for timed assertions.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_qlearn.engine.hyperparams import RANGES, Hyperparameters
from pytest_qlearn.options import HYPER_HELP

# Run in a fresh interpreter so that nothing this test session imported counts.
PROBE = """
import json, sys
import pytest
code = pytest.main(sys.argv[2:])
ours = sorted(m for m in sys.modules if m.split(".")[0] == "pytest_qlearn")
tops = sorted({m.split(".")[0] for m in sys.modules})
with open(sys.argv[1], "w") as fh:
    json.dump({"code": int(code), "ours": ours, "tops": tops}, fh)
"""


def probe(tmp_path: Path, *args: str) -> dict[str, object]:
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    out = tmp_path / "modules.json"
    # -p no:cov: pytest-cov (in our test extra) imports coverage.py itself.
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out), "-q", "-p", "no:cov", "-p", "no:randomly", *args],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, object] = json.loads(out.read_text())
    return result


def test_installed_but_not_enabled_imports_five_modules_of_ours_and_nothing_heavy(
    tmp_path: Path,
) -> None:
    found = probe(tmp_path, "--co")
    assert found["code"] == 0
    assert found["ours"] == [
        "pytest_qlearn",
        "pytest_qlearn.hookspecs",
        "pytest_qlearn.names",
        "pytest_qlearn.options",
        "pytest_qlearn.plugin",
    ]
    tops = found["tops"]
    assert isinstance(tops, list)
    assert not {"sqlite3", "asyncpg", "coverage", "rich", "configparser"} & set(tops)


def test_an_ini_file_that_says_false_loads_no_more(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nqlearn = off\n")
    assert len(probe(tmp_path, "--co")["ours"]) == 5  # type: ignore[arg-type]


def test_enabled_with_sqlite_loads_neither_asyncpg_nor_coverage_nor_the_renderers(
    tmp_path: Path,
) -> None:
    found = probe(tmp_path, "--qlearn")
    assert found["code"] == 0
    tops = found["tops"]
    assert isinstance(tops, list)
    assert "sqlite3" in tops
    assert not {"asyncpg", "coverage"} & set(tops)
    ours = found["ours"]
    assert isinstance(ours, list)
    assert "pytest_qlearn.lifecycle" in ours
    assert not {
        "pytest_qlearn.coverage_plugin",
        "pytest_qlearn.changes.line_tracer",
        "pytest_qlearn.store.postgres",
        "pytest_qlearn.reports.html_page",
        "pytest_qlearn.reports.markdown",
    } & set(ours)


def test_a_bad_qlearn_switch_is_still_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nqlearn = maybe\n")
    pytester.makepyfile("def test_one():\n    pass\n")
    result = pytester.runpytest("-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*qlearn*maybe*true or false*"])


def test_the_help_of_each_hyperparameter_states_the_engines_default_and_range() -> None:
    # options.py may not import the engine (start-up cost), so its help text spells them out
    defaults = Hyperparameters()
    assert list(HYPER_HELP) == list(RANGES)
    for suffix, (field_name, valid) in RANGES.items():
        text = HYPER_HELP[suffix]
        assert text.endswith(f"(default {getattr(defaults, field_name)})"), suffix
        if valid.integer:
            interval = f"{valid.low:g}-{valid.high:g}"
        else:
            interval = f"{'(' if valid.low_open else '['}{valid.low:g}, {valid.high:g}]"
        assert interval in text, (suffix, interval)
