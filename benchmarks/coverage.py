"""What per-test coverage costs: plain pytest, pytest-cov with ``--cov-context=test``, and
``pytest --qlearn --qlearn-cov`` on a first run (everything traced) and on a later run after
one source file changed (only the tests covering it traced).

DESIGN.md budget: ``--qlearn-cov`` no slower than pytest-cov with per-test contexts on the
same suite, and much cheaper on later runs by re-tracing only what changed.

The script generates a throw-away project: ``--modules`` source modules of branching
functions under ``pkg/``, and ``--tests`` tests that each call a few functions of one module
in a loop (so tracing has real work, as in a real suite). Arms, interleaved ``--rounds``
times, each a fresh subprocess:

* ``plain``        — ``pytest -p no:qlearn``
* ``pytest-cov``   — ``pytest -p no:qlearn --cov=pkg --cov-context=test --cov-report=``
* ``qlearn first`` — ``pytest --qlearn --qlearn-cov`` on an empty store
* ``qlearn later`` — ``pytest --qlearn --qlearn-cov`` on a store that has every map, after
  one module changed (a different edit each round, so there is always a change)
* ``qlearn nocov`` — ``pytest --qlearn`` without coverage, for reference

It prints each arm's median wall time and its ratio to plain pytest and to pytest-cov, all
measured in the same run. A measurement, not a test: it always exits 0.

    python benchmarks/coverage.py [--tests 2000] [--modules 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = ["-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
FUNCTIONS = 12


def source_module(index: int, edit: int = 0) -> str:
    lines = [f'"""Generated module {index} (edit {edit})."""', ""]
    for f in range(FUNCTIONS):
        lines += [
            f"def f{f}(x):",
            f"    if x % {f + 2} == 0:",
            f"        y = x // {f + 2}",
            "    else:",
            f"        y = x * {f + 1} + {edit}",
            "    total = 0",
            "    for i in range(3):",
            "        total += (y + i) % 7",
            "    return total",
            "",
        ]
    return "\n".join(lines)


def generate(root: Path, tests: int, modules: int) -> None:
    (root / "pytest.ini").write_text(
        "[pytest]\ntestpaths = tests\npythonpath = .\nqlearn_exploration_rate = 0\n",
        encoding="utf-8",
    )
    pkg = root / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    for m in range(modules):
        (pkg / f"mod{m}.py").write_text(source_module(m), encoding="utf-8")
    test_dir = root / "tests"
    test_dir.mkdir()
    per_file = max(1, tests // modules)
    for m in range(modules):
        body = [f"from pkg import mod{m}", ""]
        for t in range(per_file):
            a, b = t % FUNCTIONS, (t * 5 + 3) % FUNCTIONS
            body += [
                f"def test_{m}_{t}():",
                f"    assert sum(mod{m}.f{a}(x) + mod{m}.f{b}(x) for x in range(20)) >= 0",
                "",
            ]
        (test_dir / f"test_mod{m}.py").write_text("\n".join(body), encoding="utf-8")


def timed(root: Path, args: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *BASE, *args], cwd=root, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--modules", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qlearn-covbench-"))
    try:
        root = work / "project"
        root.mkdir()
        generate(root, options.tests, options.modules)
        later_db = work / "later.db"
        warm = ["--qlearn", "--qlearn-cov", f"--qlearn-db=sqlite:///{later_db}"]
        timed(root, ["-p", "no:qlearn"])  # warm the file system cache and bytecode
        timed(root, warm)  # the later arm's store: every map traced once
        times: dict[str, list[float]] = {
            k: [] for k in ("plain", "pytest-cov", "qlearn first", "qlearn later", "qlearn nocov")
        }
        for r in range(options.rounds):
            times["plain"].append(timed(root, ["-p", "no:qlearn"]))
            times["pytest-cov"].append(
                timed(root, ["-p", "no:qlearn", "--cov=pkg", "--cov-context=test", "--cov-report="])
            )
            first_db = work / f"first-{r}.db"
            times["qlearn first"].append(
                timed(root, ["--qlearn", "--qlearn-cov", f"--qlearn-db=sqlite:///{first_db}"])
            )
            changed = r % options.modules
            (root / "pkg" / f"mod{changed}.py").write_text(
                source_module(changed, edit=r + 1), encoding="utf-8"
            )
            times["qlearn later"].append(timed(root, warm))
            times["qlearn nocov"].append(
                timed(root, ["--qlearn", f"--qlearn-db=sqlite:///{work / 'nocov.db'}"])
            )
        median = {arm: statistics.median(values) for arm, values in times.items()}
        print(
            f"{options.tests // options.modules * options.modules} tests over "
            f"{options.modules} modules, {options.rounds} rounds, Python "
            f"{platform.python_version()}; one module changed before each 'later' run"
        )
        print(f"{'arm':<14} {'median s':>9} {'÷ plain':>8} {'÷ pytest-cov':>13}   all runs (s)")
        for arm, values in times.items():
            print(
                f"{arm:<14} {median[arm]:>9.2f} {median[arm] / median['plain']:>8.2f} "
                f"{median[arm] / median['pytest-cov']:>13.2f}   "
                + " ".join(f"{v:.2f}" for v in values)
            )
        first, later = median["qlearn first"], median["qlearn later"]
        print(
            f"target: first run no slower than pytest-cov -> {first / median['pytest-cov']:.2f}x "
            f"({'met' if first <= median['pytest-cov'] else 'NOT met'}); later run "
            f"{later / median['plain']:.2f}x plain pytest"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
