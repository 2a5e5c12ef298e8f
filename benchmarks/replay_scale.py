"""How long ``qlearn replay`` takes on a 100,000-row CI history (issue: well under a minute).

A synthetic history in the RETECS format is written to a temporary file from a seed:
``--cycles`` builds of ``--tests`` tests, 1 % of the runs failing, every 50th test flaky at
30 %, durations 0.01–0.61 s. It is then replayed twice, as ``qlearn replay`` does: the
learner alone (one seed, the plugin's LearningSession and an in-memory SQLite store), and the
whole replay (the learner and every baseline). The ratio is the replay's time against the
minute the issue allows.

This is a measurement, not a test: it always exits 0.

    python benchmarks/replay_scale.py [--cycles 500] [--tests 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from pytest_qlearn.replay import datasets
from pytest_qlearn.replay.runner import ReplayConfig, replay, run_learner

LIMIT_SECONDS = 60.0


def write_history(path: Path, cycles: int, tests: int, seed: int) -> int:
    """The synthetic history as a RETECS ``;`` file; returns its number of rows."""
    rng = random.Random(seed)
    rows = 0
    with path.open("w", encoding="utf-8") as out:
        out.write("Id;Name;BuildId;Duration;CalcPrio;LastRun;Verdict;Cycle;LastResults\n")
        for build in range(1, cycles + 1):
            for test in range(tests):
                rows += 1
                flaky = test % 50 == 0
                failed = rng.random() < (0.3 if flaky else 0.01)
                duration = 0.01 + (test % 7) * 0.1
                out.write(
                    f"{rows};t{test};{build};{duration:.2f};0;2020-01-01 00:00:00;"
                    f"{int(failed)};{build};[]\n"
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.csv"
        rows = write_history(path, args.cycles, args.tests, args.seed)
        started = time.perf_counter()
        dataset = datasets.load(path)
        loaded = time.perf_counter() - started
        config = ReplayConfig()
        learner = run_learner(dataset, seed=0, config=config).seconds
        started = time.perf_counter()
        whole = replay(dataset, config).seconds
        whole_wall = time.perf_counter() - started

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()} on {platform.machine()}, load {load:.2f}")
    print(f"history: {rows:,} rows ({args.cycles} cycles x {args.tests} tests), seed {args.seed}")
    print(f"load the file:                 {loaded:6.2f} s")
    print(f"learner alone, one seed:       {learner:6.2f} s")
    print(f"replay (learner + baselines):  {whole:6.2f} s  ({whole_wall:.2f} s wall)")
    print(f"ratio to the {LIMIT_SECONDS:.0f} s limit:      {whole / LIMIT_SECONDS:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
