"""What pytest-qlearn adds to a pytest start, installed but not enabled and enabled.

Issue 15's target: installed but off, the plugin adds at most 10 ms and at most 5 modules to
``pytest --co -q`` on a one-test suite. The script writes that suite into a temporary
directory and times ``--rounds`` interleaved rounds of three subprocess runs of
``python -m pytest --co -q -p no:cacheprovider``:

- ``plain``: ``-p no:qlearn`` (pytest never imports the plugin);
- ``off``: the plugin installed, not enabled (what every project that has it installed but
  not switched on pays);
- ``on``: ``--qlearn`` with its default SQLite store (collection only: the cost of loading
  the engine and the store).

Once with the bytecode cache and once with ``PYTHONDONTWRITEBYTECODE=1`` (common in
containers: nothing is cached, so every start recompiles what it imports). Each row prints
the median wall time, its difference to ``plain`` and the ratio, and the modules (all, and
pytest_qlearn's own) each arm imports beyond ``plain``; then the plugin's own import time by
``python -X importtime`` (least of five), which a loaded machine disturbs far less than the
difference of two whole pytest starts. A measurement, not a test: it always
exits 0.

``--wheel`` runs the arms against the wheel of this checkout (built with ``pip wheel`` and
unpacked onto ``PYTHONPATH``) instead of the editable install: pytest treats an installed
plugin's modules differently (it marks every module of a ``pytest11`` distribution for
assertion rewriting; the editable install's distribution lists no modules), so this is what
a user who ran ``pip install pytest-qlearn`` starts.

    python benchmarks/startup.py [--rounds 21] [--wheel]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

TARGET_MS = 10.0
TARGET_MODULES = 5
ARMS = {
    "plain": ["-p", "no:qlearn"],
    "off": [],
    "on": ["--qlearn"],
}
COMMON = ["-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]

# Imports a run leaves in sys.modules, written by a conftest at the end of the session.
CONFTEST = """
import json, os, sys

def pytest_unconfigure(config):
    path = os.environ.get("QLEARN_STARTUP_MODULES")
    if path:
        with open(path, "w") as fh:
            json.dump(sorted(sys.modules), fh)
"""


def run(suite: Path, arm: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, *COMMON, *ARMS[arm]],
        cwd=suite,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def modules(suite: Path, arm: str, env: dict[str, str]) -> set[str]:
    out = suite / f"modules-{arm}.json"
    run(suite, arm, {**env, "QLEARN_STARTUP_MODULES": str(out)})
    return set(json.loads(out.read_text()))


def import_ms(suite: Path, arm: str, env: dict[str, str], tries: int = 5) -> float:
    """The plugin's own import time (``python -X importtime``: the self time of every
    pytest_qlearn module, summed), the least of ``tries`` runs: steadier than a wall-time
    difference of two whole pytest starts on a loaded machine."""
    best = float("inf")
    for _ in range(tries):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *COMMON, *ARMS[arm]],
            cwd=suite,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        total = 0
        for line in done.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[2].strip().startswith("pytest_qlearn"):
                total += int(parts[0].split(":")[1])
        best = min(best, total / 1000.0)
    return best


def unpacked_wheel(tmp: Path) -> Path:
    """The wheel of this checkout, unpacked into ``tmp/site`` (a directory Python imports
    it from, with its ``.dist-info``: entry points and the list of its files) and compiled
    to byte code, as ``pip install`` leaves it."""
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(root), "-w", str(tmp)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp.glob("pytest_qlearn-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    compileall.compile_dir(site, quiet=1)  # as pip does on install
    return site


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds per mode")
    parser.add_argument(
        "--wheel", action="store_true", help="measure the wheel of this checkout, as installed"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qlearn-startup-") as tmp:
        suite = Path(tmp) / "suite"
        suite.mkdir()
        (suite / "test_one.py").write_text("def test_one():\n    assert True\n")
        (suite / "conftest.py").write_text(CONFTEST)
        path_env = {}
        if args.wheel:
            site = unpacked_wheel(Path(tmp))
            path_env = {
                "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
            }
            print(f"plugin: the wheel of this checkout, unpacked in {site}")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.rounds} rounds")
        print(f"target: installed but off adds <= {TARGET_MS:g} ms and <= {TARGET_MODULES} modules")
        print()
        print("| bytecode | arm | median ms | vs plain ms | ratio | modules added | of them ours |")
        print("|---|---|---|---|---|---|---|")
        cache = suite / "pycache"  # the cached mode's byte code, kept out of the checkout
        modes = (
            ("cached", {"PYTHONPYCACHEPREFIX": str(cache)}),
            ("none", {"PYTHONDONTWRITEBYTECODE": "1"}),
        )
        for label, extra in modes:
            env = {**os.environ, **path_env, **extra}
            if label == "cached":  # this machine's shell sets it: then nothing is ever cached
                env.pop("PYTHONDONTWRITEBYTECODE", None)
            env.pop("QLEARN_DATABASE_URL", None)  # "on" measures the default SQLite store
            base = modules(suite, "plain", env)
            added = {arm: modules(suite, arm, env) - base for arm in ("off", "on")}
            times: dict[str, list[float]] = {arm: [] for arm in ARMS}
            for arm in ARMS:  # warm-up: the store, the bytecode cache, the OS page cache
                run(suite, arm, env)
            for round_no in range(args.rounds):
                order = list(ARMS)
                shift = round_no % len(order)
                for arm in order[shift:] + order[:shift]:  # rotate: load drifts favour none
                    times[arm].append(run(suite, arm, env))
            plain = statistics.median(times["plain"]) * 1000
            for arm in ARMS:
                ms = statistics.median(times[arm]) * 1000
                extra_mods = added.get(arm, set())
                ours = sorted(m for m in extra_mods if m.split(".")[0] == "pytest_qlearn")
                mods = str(len(extra_mods)) if arm != "plain" else ""
                print(
                    f"| {label} | {arm} | {ms:.1f} | {ms - plain:+.1f} | {ms / plain:.3f} | "
                    f"{mods} | {len(ours) if arm != 'plain' else ''} |"
                )
            off = added["off"]
            print(f"| {label} | off imports | {', '.join(sorted(off))} | | | | |")
            for arm in ("off", "on"):
                print(
                    f"| {label} | {arm}: import of pytest_qlearn modules | "
                    f"{import_ms(suite, arm, env):.1f} (-X importtime, least of 5) | | | | |"
                )
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
