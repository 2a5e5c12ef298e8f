"""Flaky tests: no reruns vs. pytest-rerunfailures ``--reruns 2`` vs. ``--qlearn-reruns 2``.

A generated suite — stable tests, seeded random flakes at several rates and failure kinds
(assertion, timeout, connection), real failures planted in some episodes, and an
order-dependent victim/polluter pair — is run for ``--episodes`` pytest sessions per
configuration, each configuration with a store of its own. Per configuration:

* false-red builds: builds that ended red although no real failure was planted (only flakes
  or the order-dependent victim failed);
* rerun seconds: the time spent in attempts after the first;
* real failures hidden: planted real failures that ended passed (must be 0).

    python benchmarks/flaky.py --episodes 50

Prints a Markdown table (the README's). Needs pytest-rerunfailures installed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STABLE = 24
#: (name, probability that an attempt fails, exception)
FLAKES = (
    ("test_flaky_assert", 0.2, "AssertionError", "value {n} != 42"),
    ("test_flaky_timeout", 0.35, "TimeoutError", "timed out after {n}ms"),
    ("test_flaky_connect", 0.25, "ConnectionResetError", "reset by peer 10.0.0.{n}"),
)
#: Episodes in which test_real_<i> fails deterministically (a real regression, later fixed).
REAL = {0: range(8, 13), 1: range(25, 29), 2: range(40, 44)}

CONFTEST = """
import json, os, pathlib

OUT = pathlib.Path(os.environ["FLAKY_BENCH_OUT"])
FINAL = {}
RERUN_SECONDS = [0.0]


def pytest_runtest_logreport(report):
    if getattr(report, "rerun", 0):
        RERUN_SECONDS[0] += report.duration
    if report.outcome == "rerun":
        return
    if report.failed:
        FINAL[report.nodeid] = "failed"
    elif report.when == "call":
        FINAL.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session):
    OUT.write_text(json.dumps({"final": FINAL, "rerun_seconds": RERUN_SECONDS[0]}))
"""


def suite() -> str:
    lines = [
        "import os, pathlib, random, time",
        "EPISODE = int(os.environ['FLAKY_BENCH_EPISODE'])",
        "COUNTS = pathlib.Path(__file__).with_name('attempts')",
        "STATE = {'polluted': False}",
        "",
        "def attempt_draw(name):",
        "    COUNTS.mkdir(exist_ok=True)",
        "    f = COUNTS / f'{EPISODE}-{name}'",
        "    n = int(f.read_text()) if f.exists() else 0",
        "    f.write_text(str(n + 1))",
        "    return random.Random(f'{EPISODE}:{name}:{n}').random(), n",
        "",
    ]
    for i in range(STABLE):
        lines += [f"def test_stable_{i:02d}():", "    time.sleep(0.01)", ""]
    # order-dependent pair: the victim fails when the polluter ran before it (collection
    # order runs the victim first); a rerun of the victim passes
    lines += [
        "def test_aa_victim():",
        "    polluted, STATE['polluted'] = STATE['polluted'], False",
        "    assert not polluted, 'global state left behind'",
        "",
        "def test_zz_polluter():",
        "    STATE['polluted'] = True",
        "",
    ]
    for name, rate, cls, message in FLAKES:
        lines += [
            f"def {name}():",
            "    time.sleep(0.05)",
            f"    draw, n = attempt_draw('{name}')",
            f"    if draw < {rate}:",
            f"        raise {cls}(f'{message}')",
            "",
        ]
    for i, episodes in REAL.items():
        lines += [
            f"def test_real_{i}():",
            "    time.sleep(0.02)",
            f"    assert EPISODE not in range({episodes.start}, {episodes.stop}), 'regression'",
            "",
        ]
    return "\n".join(lines) + "\n"


CONFIGS = {
    "no reruns": ["-p", "no:rerunfailures"],
    "pytest-rerunfailures --reruns 2": ["--reruns", "2"],
    "pytest-qlearn --qlearn-reruns 2": ["--qlearn-reruns", "2", "-p", "no:rerunfailures"],
}


def run_config(name: str, args: list[str], episodes: int, root: Path) -> dict[str, float]:
    work = root / name.split()[0]
    work.mkdir()
    (work / "conftest.py").write_text(CONFTEST)
    (work / "test_suite.py").write_text(suite())
    (work / "pytest.ini").write_text("[pytest]\nqlearn = true\n")
    false_red = hidden = red = 0
    rerun_seconds = 0.0
    for episode in range(episodes):
        out = work / "out.json"
        env = {**os.environ, "FLAKY_BENCH_EPISODE": str(episode), "FLAKY_BENCH_OUT": str(out)}
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist",
             "--qlearn-seed", str(episode), *args],
            cwd=work, env=env, capture_output=True, check=False,
        )  # fmt: skip
        data = json.loads(out.read_text())
        final: dict[str, str] = data["final"]
        rerun_seconds += data["rerun_seconds"]
        real_planted = {f"test_suite.py::test_real_{i}" for i, r in REAL.items() if episode in r}
        failed = {t for t, v in final.items() if v == "failed"}
        hidden += sum(final.get(t) == "passed" for t in real_planted)
        if failed:
            red += 1
            if not real_planted:
                false_red += 1
    return {
        "red": red,
        "false_red": false_red,
        "rerun_seconds": rerun_seconds,
        "hidden": hidden,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()
    planted = sum(1 for e in range(args.episodes) if any(e in r for r in REAL.values()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="qlearn-flaky-") as tmp:
        for name, extra in CONFIGS.items():
            rows.append((name, run_config(name, extra, args.episodes, Path(tmp))))
    print(
        f"{args.episodes} episodes; {planted} with a planted real failure; "
        f"{STABLE + len(FLAKES) + len(REAL) + 2} tests\n"
    )
    print(
        "| configuration | red builds | false-red builds | rerun seconds | real failures hidden |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['red']:.0f} | {r['false_red']:.0f} | {r['rerun_seconds']:.2f} "
            f"| {r['hidden']:.0f} |"
        )


if __name__ == "__main__":
    main()
