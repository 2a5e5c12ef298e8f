"""``qlearn replay``: tables, JSON, options, and one-line errors with non-zero exits."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from pytest_qlearn.cli import main

RETECS_HEADER = "Id;Name;BuildId;Duration;CalcPrio;LastRun;Verdict;Cycle;LastResults"


def retecs_file(tmp_path: Path, name: str = "hist.csv", cycles: int = 30) -> Path:
    rng = random.Random(11)
    lines = [RETECS_HEADER]
    row = 0
    for build in range(1, cycles + 1):
        for k in range(8):
            row += 1
            failed = int((k == 3 and build % 3 == 0) or rng.random() < 0.05)
            lines.append(f"{row};t{k};{build};{0.5 + k};0;2020-01-01;{failed};{build};[]")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def commons_file(tmp_path: Path) -> Path:
    lines = ["test_class_name,cycle_id,current_failures,time,AvgLine"]
    for c in range(12):
        for k in range(5):
            lines.append(f"org/T{k}Test.java,commit{c:02d},{int(k == c % 5)},{0.1 * (k + 1)},3")
    path = tmp_path / "Commons_demo.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("qlearn")
    assert "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


# -- success -----------------------------------------------------------------------------------


def test_table_for_each_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["replay", str(retecs_file(tmp_path)), str(commons_file(tmp_path)), "--random-seeds", "2"],
        capsys,
    )
    assert code == 0, err
    assert err == ""
    assert "hist: 30 cycles" in out
    assert "Commons_demo: 12 cycles (12 failing), 5 tests, 60 rows" in out
    tables = out.split("Commons_demo:")
    assert len(tables) == 2
    for table in tables:
        header = next(line for line in table.splitlines() if "learner" in line).split()
        assert header == ["learner", "random", "sort", "rate", "first", "oracle"]
        labels = [line.split("  ")[0].strip() for line in table.splitlines()]
        for label in (
            "NAPFD@10% failing",
            "NAPFD@50% failing",
            "NAPFD@80% failing",
            "NAPFD@10% all",
            "NAPFD@50% all",
            "NAPFD@80% all",
            "APFD failing",
            "APFDc failing",
            "first 50 cycles",
            "rest",
        ):
            assert label in labels, label
    # one figure per strategy in each row, three decimals; the Commons history is shorter
    # than 50 cycles, so "rest" has no value
    napfd = next(line for line in tables[1].splitlines() if "NAPFD@50% failing" in line)
    assert len(re.findall(r"\b[01]\.\d{3}\b", napfd)) == 6
    rest = next(line for line in tables[1].splitlines() if line.strip().startswith("rest"))
    assert rest.split()[1:] == ["—"] * 6


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["replay", str(retecs_file(tmp_path)), "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["settings"]["budgets"] == [10, 50, 80]
    assert doc["settings"]["hyperparameters"]["alpha"] == 0.0075  # the prioritizer's default
    (data,) = doc["datasets"]
    assert data["name"] == "hist"
    assert data["format"] == "retecs"
    assert data["cycle_key"] == "BuildId"
    assert data["cycles"] == 30
    assert list(data["strategies"]) == [
        "learner",
        "random",
        "sort",
        "failure rate",
        "shortest first",
        "oracle",
    ]
    learner = data["strategies"]["learner"]
    assert learner["runs"] == 1
    assert learner["sd"] is None
    assert set(learner["mean"]["napfd_failing"]) == {"10", "50", "80"}
    assert set(learner["mean"]["napfd_all"]) == {"10", "50", "80"}
    for key in ("apfd", "apfdc", "first"):
        assert 0.0 <= learner["mean"][key] <= 1.0
    assert learner["mean"]["rest"] is None  # 30 cycles: nothing after the first 50
    oracle = data["strategies"]["oracle"]["mean"]
    rand = data["strategies"]["random"]
    assert rand["runs"] == 10
    assert oracle["napfd_failing"]["50"] >= rand["mean"]["napfd_failing"]["50"]


def test_json_with_seeds_budgets_and_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        [
            "replay",
            str(retecs_file(tmp_path)),
            "--json",
            "--seeds",
            "3",
            "--random-seeds",
            "2",
            "--budget",
            "25%,0.75",
            "--set",
            "learning_rate=0.2",
            "--set",
            "exploration_rate=0",
            "--set",
            "min_exploration_rate=0",
            "--split",
            "10",
        ],
        capsys,
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["settings"]["budgets"] == [25, 75]
    assert doc["settings"]["split"] == 10
    assert doc["settings"]["hyperparameters"]["alpha"] == 0.2
    assert doc["settings"]["hyperparameters"]["epsilon"] == 0.0
    data = doc["datasets"][0]
    learner = data["strategies"]["learner"]
    assert learner["runs"] == 3
    assert set(learner["sd"]["napfd_failing"]) == {"25", "75"}
    assert data["learner_exploration_share"] == 0.0
    assert len(data["learner_seconds"]) == 3
    assert data["strategies"]["random"]["runs"] == 2


@pytest.mark.parametrize("spelling", ["10,50", "10%,50%", "0.1,0.5", "10, 0.5,50"])
def test_budget_spellings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spelling: str
) -> None:
    path = retecs_file(tmp_path, cycles=3)
    code, out, _ = run(["replay", str(path), "--json", "--budget", spelling], capsys)
    assert code == 0
    assert json.loads(out)["settings"]["budgets"] == [10, 50]


def test_table_shows_mean_and_sd_for_several_learner_seeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = retecs_file(tmp_path)
    code, out, _ = run(["replay", str(path), "--seeds", "2", "--random-seeds", "1"], capsys)
    assert code == 0
    row = next(line for line in out.splitlines() if "APFD failing" in line)
    learner, *others = row.split()[2:]
    assert re.fullmatch(r"\d\.\d{3}±\d\.\d{3}", learner)
    assert len(others) == 5 and not any("±" in cell for cell in others)
    code, out, _ = run(["replay", str(path), "--random-seeds", "1"], capsys)
    assert "±" not in out.split("learner:")[0]


def test_forced_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = commons_file(tmp_path)
    code, out, _ = run(["replay", str(path), "--format", "commons", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["datasets"][0]["format"] == "commons"


def test_console_script_is_installed() -> None:
    (script,) = entry_points(group="console_scripts", name="qlearn")
    assert script.value == "pytest_qlearn.cli:main"


def test_subprocess_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "pytest_qlearn.cli", "replay", str(commons_file(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "Commons_demo" in ok.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "pytest_qlearn.cli", "replay", str(tmp_path / "gone.csv")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert_one_line_error(missing.stderr, "gone.csv", "no such file")
    assert missing.stdout == ""


# -- errors ------------------------------------------------------------------------------------


def bad_file(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("", ("empty file",)),
        (RETECS_HEADER + "\n", ("no data rows",)),
        ("when,who\n1,2\n", ("unknown format", "--format")),
        ("Id;Name;BuildId;Verdict\n1;a;1;0\n", ("missing column Duration",)),
        ("Id;Name;Duration;Verdict\n1;a;1;0\n", ("missing column BuildId or Cycle",)),
        ("test_class_name,cycle_id,time\nT,c,1\n", ("missing column current_failures",)),
        (RETECS_HEADER + "\n1;a;1;x;0;d;0;1;[]\n", ("line 2", "Duration 'x'")),
    ],
)
def test_bad_data_is_one_line_and_exit_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    fragments: tuple[str, ...],
) -> None:
    path = bad_file(tmp_path, content)
    code, out, err = run(["replay", str(path)], capsys)
    assert code == 1
    assert out == ""
    assert_one_line_error(err, "qlearn replay: error:", str(path), *fragments)


def test_missing_file_exit_1_before_any_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the good file comes first, but nothing is replayed when any file is bad
    code, out, err = run(
        ["replay", str(retecs_file(tmp_path)), str(tmp_path / "missing.csv")], capsys
    )
    assert code == 1
    assert out == ""
    assert_one_line_error(err, "missing.csv", "no such file")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["replay", "{f}", "--format", "parquet"], ("invalid choice", "parquet")),
        (["replay", "{f}", "--set", "learning_rate=2"], ("learning_rate", "(0, 1]")),
        (["replay", "{f}", "--set", "exploration_decay=0.5"], ("exploration_decay", "[0.9, 1]")),
        (["replay", "{f}", "--set", "warp_speed=9"], ("warp_speed", "learning_rate")),
        (["replay", "{f}", "--set", "learning_rate"], ("KEY=VALUE",)),
        (["replay", "{f}", "--set", "update_frequency=0.5"], ("update_frequency",)),
        (["replay", "{f}", "--budget", "0"], ("budget",)),
        (["replay", "{f}", "--budget", "150"], ("budget",)),
        (["replay", "{f}", "--budget", "ten"], ("'ten' is not a number",)),
        (["replay", "{f}", "--seeds", "0"], ("--seeds",)),
        (["replay", "{f}", "--random-seeds", "x"], ("--random-seeds",)),
        (["replay"], ("DATASET",)),
        ([], ("a command is required", "replay")),
        (["frobnicate"], ("invalid choice",)),
    ],
)
def test_bad_command_line_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    fragments: tuple[str, ...],
) -> None:
    path = retecs_file(tmp_path, cycles=2)
    code, out, err = run([a.replace("{f}", str(path)) for a in argv], capsys)
    assert code == 2
    assert out == ""
    assert_one_line_error(err, *fragments)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["replay", "--help"], capsys)
    assert code == 0
    for option in ("--format", "--json", "--seeds", "--budget", "--set"):
        assert option in out


def test_main_reads_sys_argv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["qlearn", "replay", str(commons_file(tmp_path)), "--json"])
    code = main()
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == 0
    assert doc["datasets"][0]["name"] == "Commons_demo"
