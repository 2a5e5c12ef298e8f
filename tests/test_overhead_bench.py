"""benchmarks/overhead.py runs its arms and, with ``--phases``, says where each spends its
CPU time beside plain pytest (the figures themselves are the script's business: machines
here are too noisy for timed assertions)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "overhead.py"


def _overhead() -> ModuleType:
    spec = importlib.util.spec_from_file_location("overhead_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_phases_are_measured_in_every_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overhead = _overhead()
    overhead.measure(tmp_path, 30, 1, None, False, phases=True)
    out = capsys.readouterr().out
    assert "! pytest" not in out  # no arm failed to run
    table = out[out.index("CPU seconds per phase") :].splitlines()
    assert table[1].split() == ["phase", "plain", "sqlite"]
    rows = {line[:40].strip(): line[40:].split() for line in table[2:9]}
    assert set(rows) == {
        "1 configure (plugins, store opening)",
        "2 collection (ranking)",
        "3 running the tests",
        "4 session finish (learning, writing)",
        "5 terminal summary",
        "6 unconfigure to exit",
        "whole process",
    }
    for plain, sqlite, delta in rows.values():
        assert float(plain) >= 0.0 and float(sqlite) >= 0.0
        assert delta.startswith("(") and delta.endswith(")")
    assert "learned from 30 tests" in out  # the qlearn arm really ran the plugin
