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
* ``qlearn line``  — ``pytest --qlearn --qlearn-cov`` on a store that has every map, after a
  one-line change in one function of ``pkg/core.py``, which every test covers (each module's
  ``f{k}`` calls ``core.g{k}``): a different function each round, so about a sixth of the
  tests executes the changed line and the rest only cover the file
* ``qlearn nocov`` — ``pytest --qlearn`` without coverage, for reference

``--baseline DIR`` adds ``base later`` and ``base line``: the same two arms with
``PYTHONPATH=DIR`` (e.g. ``git archive HEAD pytest_qlearn | tar -x -C DIR``), so an older
version is measured side by side with this one. ``--path DIR`` measures a real project
instead of the generated one: a copy of DIR (a git checkout whose tests pass), ``--edit
FILE:LINE`` names the line changed before each ``line`` run (a comment appended to it,
``# edit N``; give a line inside a function body).

It prints each arm's median wall time and its ratio to plain pytest and to pytest-cov, and
its median CPU time (user + system of the pytest process and what it waited for, from
``getrusage(RUSAGE_CHILDREN)``) with its ratio to plain pytest's, all measured in the same
run: on a shared, loaded machine the CPU ratio moves less than the wall ratio.
``--only-changes`` leaves out the ``pytest-cov`` and ``qlearn first`` arms (a long real suite
traced in full every round). A measurement, not a test: it always exits 0.

    python benchmarks/coverage.py [--tests 2000] [--modules 40] [--rounds 5] [--baseline DIR]
    python benchmarks/coverage.py --path CHECKOUT --edit pkg/core.py:120 [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRACED = re.compile(r"qlearn: coverage: (\d+ of \d+) tests traced")
#: Per arm, what the last run of it traced (from its summary line).
TRACED_BY_ARM: dict[str, str] = {}
#: Per arm, the CPU seconds of each run (in the order of its wall times).
CPU_BY_ARM: dict[str, list[float]] = {}
BASE = ["-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]
FUNCTIONS = 12


def source_module(index: int, edit: int = 0) -> str:
    lines = [f'"""Generated module {index} (edit {edit})."""', "", "from pkg import core", ""]
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
            f"    return core.g{f}(total)",
            "",
        ]
    return "\n".join(lines)


def core_module(edits: dict[int, int]) -> str:
    """``g{k}``'s body has one line that ``edits[k]`` changes (the ``line`` arm's edit)."""
    lines = ['"""Shared helpers every test reaches."""', ""]
    for f in range(FUNCTIONS):
        lines += [
            f"def g{f}(value):",
            f"    if value > {f}:",
            f"        value -= {edits.get(f, 0)}",
            "    return value",
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
    (pkg / "core.py").write_text(core_module({}), encoding="utf-8")
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


def timed(
    root: Path, args: list[str], pythonpath: str | None = None, arm: str | None = None
) -> float:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *BASE, *args],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr}")
    match = TRACED.search(proc.stdout)
    if arm is not None and match is not None:
        TRACED_BY_ARM[arm] = match.group(1)
    if arm is not None:
        CPU_BY_ARM.setdefault(arm, []).append(cpu)
    return elapsed


def git_commit(root: Path, message: str) -> None:
    for args in (("add", "-A"), ("commit", "-qm", message)):
        subprocess.run(
            ["git", "-c", "user.email=b@example.com", "-c", "user.name=b", *args],
            cwd=root,
            check=True,
            capture_output=True,
        )


class LineEdit:
    """The ``line`` arm's one-line change: in the generated project a different ``g{k}``
    each round; in a real one a comment appended to ``--edit FILE:LINE`` (with ``# edit N``),
    which moves no line but changes that one."""

    def __init__(self, root: Path, edit: str | None) -> None:
        self.root = root
        self.edit = edit
        self.edits: dict[int, int] = {}

    def apply(self, round_: int) -> None:
        """Change the line of this round; the previous round's change is undone (every
        round starts from the stores warmed on the first commit: one line differs)."""
        if self.edit is None:
            self.edits = {round_ % FUNCTIONS: round_ + 1}
            (self.root / "pkg" / "core.py").write_text(core_module(self.edits), encoding="utf-8")
            return
        name, _, number = self.edit.rpartition(":")
        path = self.root / name
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        index = int(number) - 1
        body = lines[index].rstrip("\r\n").split("  # edit ")[0]
        lines[index] = f"{body}  # edit {round_ + 1}\n"
        path.write_text("".join(lines), encoding="utf-8")


def copy_store(source: Path, target: Path) -> None:
    """A fresh copy of a warmed SQLite store (with its journal files, if any)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--modules", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="PYTHONPATH of an older pytest_qlearn to compare")
    parser.add_argument("--path", type=Path, help="a real project's git checkout (copied)")
    parser.add_argument("--edit", help="FILE:LINE changed before each 'line' run (--path)")
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments (--path)")
    parser.add_argument(
        "--only-changes",
        action="store_true",
        help="leave out the pytest-cov and first-run arms",
    )
    options = parser.parse_args()
    if options.path is not None and options.edit is None:
        parser.error("--path needs --edit FILE:LINE")
    work = Path(tempfile.mkdtemp(prefix="qlearn-covbench-"))
    here = os.environ.get("PYTHONPATH")
    versions = {"qlearn": here}
    if options.baseline:
        versions["base"] = options.baseline
    try:
        root = work / "project"
        if options.path is not None:
            shutil.copytree(options.path, root, symlinks=True)
            extra = options.pytest_args.split()
        else:
            root.mkdir()
            generate(root, options.tests, options.modules)
            extra = []
        if not (root / ".git").exists():
            subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        with (root / ".gitignore").open("a", encoding="utf-8") as ignore:
            ignore.write("\n__pycache__/\n.pytest_cache/\n.coverage*\n")
        git_commit(root, "benchmark start")
        # the 'line' arms change nothing but their line: a copy of their own
        line_root = root
        if options.path is None:
            line_root = work / "line-project"
            shutil.copytree(root, line_root, symlinks=True)
        line = LineEdit(line_root, options.edit)
        later_db = {v: work / f"later-{v}.db" for v in versions}
        line_db = {v: work / f"line-{v}.db" for v in versions}
        cov = ["--qlearn", "--qlearn-cov"]
        timed(root, ["-p", "no:qlearn", *extra])  # warm the file system cache and bytecode
        # the later arms' stores: every map traced on the first commit, copied afresh for
        # each round (what the coverage-tracer learns from one round's traces would decide
        # the next round's: each round measures the first run after one change)
        warm = {}
        for version, path in versions.items():
            kinds = [("line", line_root)]
            if options.path is None:
                kinds.insert(0, ("later", root))
            for kind, where in kinds:
                warm[kind, version] = work / f"warm-{kind}-{version}.db"
                timed(where, [*cov, f"--qlearn-db=sqlite:///{warm[kind, version]}", *extra], path)
        arms = ["plain"] if options.only_changes else ["plain", "pytest-cov", "qlearn first"]
        arms += [f"{v} {kind}" for kind in ("later", "line") for v in versions]
        arms.append("qlearn nocov")
        times: dict[str, list[float]] = {k: [] for k in arms}

        def run_after_change(kind: str, where: Path, dbs: dict[str, Path]) -> None:
            """Each version's first run after this round's change, from its warm store."""
            for version, path in versions.items():
                copy_store(warm[kind, version], dbs[version])
                db = f"--qlearn-db=sqlite:///{dbs[version]}"
                arm = f"{version} {kind}"
                times[arm].append(timed(where, [*cov, db, *extra], path, arm))

        for r in range(options.rounds):
            times["plain"].append(timed(root, ["-p", "no:qlearn", *extra], arm="plain"))
            if not options.only_changes:
                if options.path is None:
                    cov_args = ["--cov=pkg", "--cov-context=test", "--cov-report="]
                else:
                    cov_args = ["--cov=.", "--cov-context=test", "--cov-report="]
                times["pytest-cov"].append(
                    timed(root, ["-p", "no:qlearn", *cov_args, *extra], arm="pytest-cov")
                )
                first_db = work / f"first-{r}.db"
                times["qlearn first"].append(
                    timed(
                        root,
                        [*cov, f"--qlearn-db=sqlite:///{first_db}", *extra],
                        arm="qlearn first",
                    )
                )
            if options.path is None:  # one module rewritten (every function)
                if r > 0:  # the previous round's module as it was on the first commit
                    previous = (r - 1) % options.modules
                    (root / "pkg" / f"mod{previous}.py").write_text(
                        source_module(previous), encoding="utf-8"
                    )
                changed = r % options.modules
                (root / "pkg" / f"mod{changed}.py").write_text(
                    source_module(changed, edit=r + 1), encoding="utf-8"
                )
                git_commit(root, f"round {r}: module {changed}")
                run_after_change("later", root, later_db)
            line.apply(r)
            git_commit(line_root, f"round {r}: one line")
            run_after_change("line", line_root, line_db)
            times["qlearn nocov"].append(
                timed(
                    root,
                    ["--qlearn", f"--qlearn-db=sqlite:///{work / 'nocov.db'}", *extra],
                    arm="qlearn nocov",
                )
            )
        times = {arm: values for arm, values in times.items() if values}
        median = {arm: statistics.median(values) for arm, values in times.items()}
        what = (
            f"{options.path} (one line of {options.edit} changed before each 'line' run)"
            if options.path is not None
            else f"{options.tests // options.modules * options.modules} tests over "
            f"{options.modules} modules; before each 'later' run one module changed, before "
            "each 'line' run one line of pkg/core.py"
        )
        print(f"{what}; {options.rounds} rounds, Python {platform.python_version()}")
        cpu = {arm: statistics.median(CPU_BY_ARM[arm]) for arm in times}
        reference = median.get("pytest-cov")
        print(
            f"{'arm':<14} {'median s':>9} {'÷ plain':>8} {'÷ pytest-cov':>13} "
            f"{'CPU s':>7} {'CPU ÷ plain':>11} {'traced (last)':>14}   all runs (s)"
        )
        for arm, values in times.items():
            versus_cov = f"{median[arm] / reference:>13.2f}" if reference else f"{'-':>13}"
            print(
                f"{arm:<14} {median[arm]:>9.2f} {median[arm] / median['plain']:>8.2f} "
                f"{versus_cov} {cpu[arm]:>7.2f} {cpu[arm] / cpu['plain']:>11.2f} "
                f"{TRACED_BY_ARM.get(arm, ''):>14}   " + " ".join(f"{v:.2f}" for v in values)
            )
        line_run, line_cpu = median["qlearn line"], cpu["qlearn line"]
        if reference:
            first = median["qlearn first"]
            print(
                f"target: first run no slower than pytest-cov -> {first / reference:.2f}x "
                f"({'met' if first <= reference else 'NOT met'})"
            )
        print(
            f"target: one-line change <= 1.2x plain pytest (issue 16): wall "
            f"{line_run / median['plain']:.2f}x, CPU {line_cpu / cpu['plain']:.2f}x "
            f"({'met' if line_cpu <= 1.2 * cpu['plain'] else 'NOT met'} on CPU)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
