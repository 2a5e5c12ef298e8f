"""benchmarks/replay_scale.py: its synthetic history is a valid RETECS file with the planted
shape, and the script runs end to end on a small size (the figure itself is a measurement)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from pytest_qlearn.replay import datasets

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "replay_scale.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("replay_scale_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_synthetic_history_has_the_planted_shape(bench: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    assert bench.write_history(path, cycles=40, tests=100, seed=3) == 4000
    data = datasets.load(path)
    assert (data.format, len(data.cycles), data.tests, data.rows) == ("retecs", 40, 100, 4000)
    runs = [run for cycle in data.cycles for run in cycle]
    flaky = [r.failed for r in runs if r.test_id in ("t0", "t50")]
    steady = [r.failed for r in runs if r.test_id not in ("t0", "t50")]
    assert 0.15 < sum(flaky) / len(flaky) < 0.45  # 30 %
    assert sum(steady) / len(steady) < 0.03  # 1 %
    assert {r.duration for r in runs} == {round(0.01 + k * 0.1, 2) for k in range(7)}


def test_the_script_runs_and_prints_the_ratio(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--cycles", "6", "--tests", "20"]) == 0
    out = capsys.readouterr().out
    assert "history: 120 rows (6 cycles x 20 tests), seed 1" in out
    assert "ratio to the 60 s limit:" in out
