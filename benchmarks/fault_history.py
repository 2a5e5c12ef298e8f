"""Test orderings on a real project's suite over an injected CI history of faults.

A real open-source project with a pytest suite (its sdist from the package registry, via
``pip download --no-binary :all: --no-deps``, or ``--path``) is copied into a work dir. A CI
history of ``--commits`` commits is planned from a seeded RNG: on some commits 1-3 new faults
land, each stays for 1-4 commits (a regression until someone fixes it), and commits without
an active fault are clean. A fault is a mutation of the project's own source found with
``ast`` (flip a comparison, off-by-one in an integer constant, swap ``and``/``or``, negate
an ``if``/``while`` condition, replace a return value); a candidate is kept only if the
suite fails with it alone (checked once, ``-x``, cached). Commit 0 is always clean.

The work copy is a git repository (commit 0 is the pristine source; author, committer, e-mail
and dates are fixed, so the commit ids are the same on every run): each commit's state is
committed (``git add -A``, an empty commit when nothing changed) before its runs, so a tool
that asks git what changed since its last run sees what a CI checkout of that commit shows.
Every cache, store, data file and report lives outside the work tree, and what Python writes
inside it (``__pycache__``) is git-ignored through ``.git/info/exclude``; after each commit's
runs ``git status`` must be empty, and any file a run left is reported.

Every commit then runs the suite once per ordering, each ordering with its own pytest cache
dir, qlearn store and testmon data file, in a virtualenv the script creates under ``--cache``
(pytest, pytest-ranking, pytest-testmon, the project's runtime and test dependencies, and
pytest-qlearn built from ``--plugin``); nothing is installed into the calling environment.
The orderings of a commit run in a rotated order (commit k starts with the k-th ordering, mod
their number), so a drift in the machine's load favours none. Each ordering disables the
other orderings' plugins (``-p no:qlearn``, ``-p no:ranking``, ``-p no:pytest-testmon``).
Orderings (the default is all but the ``-test`` ones):

* ``collection``: pytest's own order;
* ``ff``: ``--ff`` (failed first, pytest's cache);
* ``ranking``: pytest-ranking, ``--rank --rank-weight=1-1-1`` (faster tests, recently failed
  tests and tests related to changed files, all weighted alike; its default is ``1-0-0``);
* ``ranking-010``: pytest-ranking, ``--rank --rank-weight=0-1-0`` (recently failed only);
* ``testmon``: pytest-testmon, ``--testmon-noselect`` (every test runs; the tests affected by
  changed code and the failing ones first), its database in ``TESTMON_DATAFILE``;
* ``qlearn``: ``--qlearn`` with its default settings and its own SQLite store;
* ``qlearn-cov``: ``--qlearn --qlearn-cov`` (only if the plugin's ``pytest --help`` lists it);
* ``qlearn-budget``: ``--qlearn --qlearn-budget 25%`` (really deselects; its own store);
* ``qlearn-test``, ``qlearn-cov-test`` (only on request): ``qlearn`` and ``qlearn-cov`` with
  ``qlearn_order_scope = test`` (no fixture locality: a test moves alone, not with its module).

Every qlearn ordering gets ``--qlearn-seed`` (seed × 1000 + commit), so a rerun explores alike.

The JUnit XML of each run gives the run order, outcomes and durations. Per ordering, over the
commits whose run has failures: mean APFD (also over the commits with a fresh failure, over
those that only repeat the previous commit's failures, and over the second half of the
history, after the learners had time to learn), the median and mean 1-based run position of
the first failing test, mean time to first failure (junit durations summed in run order, so
collection and start-up are not included) and the share of failing tests that a 25 % time
budget catches (the prefix of the run order whose summed durations fit in 25 % of that run's
total; for ``qlearn-budget`` the tests that really ran, against the failures of the same
commit's full runs). Over all commits: the mean wall time of the pytest process (start-up,
collection, the plugin's own work and the tests), and its ratio to ``collection``'s. This is
a measurement, not a test: it exits 0 unless the setup fails.

    python benchmarks/fault_history.py --project boltons [--commits 30] [--seed 1] [--json]
    python benchmarks/fault_history.py --path ../some-checkout --test-deps "hypothesis"
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import itertools
import json
import math
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import venv
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from pytest_qlearn.engine.metrics import apfd, time_to_first_failure

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ORDERINGS = (
    "collection",
    "ff",
    "ranking",
    "ranking-010",
    "testmon",
    "qlearn",
    "qlearn-cov",
    "qlearn-budget",
)
ALL_ORDERINGS = (*DEFAULT_ORDERINGS, "qlearn-test", "qlearn-cov-test")
BUDGET_FRACTION = 0.25

#: The ordering plugins, by family, with the name ``-p no:NAME`` blocks each by (pytest also
#: blocks ``pytest_NAME``, so ``no:ranking`` catches pytest-ranking's ``pytest_ranking`` entry
#: point; testmon's entry point is ``pytest-testmon``, which ``no:testmon`` would not catch).
ORDERING_PLUGINS = {"qlearn": "qlearn", "ranking": "ranking", "testmon": "pytest-testmon"}


@dataclasses.dataclass(frozen=True)
class Profile:
    """How to run one known project's suite from its sdist."""

    test_paths: tuple[str, ...] = ()
    test_deps: tuple[str, ...] = ()
    pytest_args: tuple[str, ...] = ()
    #: Options written to the work copy's ``pytest.ini`` as ``addopts``: a selection the
    #: project's every run makes belongs in its config (given on every command line instead,
    #: a ``--deselect`` would make each pytest-qlearn run a narrowed, partial episode).
    ini_addopts: tuple[str, ...] = ()


# Suites checked to be green from the sdist and to run in seconds on a 2-CPU machine (the
# unmodified suite's pytest wall time there: boltons 26.2.0 519 tests 4.0 s, toolz 1.2.0 193
# tests 1.7 s, inflection 0.5.1 455 tests 0.7 s, more-itertools 11.2.1 759 tests 7 s).
PROFILES: dict[str, Profile] = {
    "boltons": Profile(test_paths=("tests",)),
    "toolz": Profile(test_paths=("toolz",)),
    # A heavily parametrised suite: 17 of its 22 test functions are pytest.mark.parametrize
    # over tables of word pairs, 455 tests in all.
    "inflection": Profile(test_paths=("test_inflection.py",)),
    # Small independent tests: unittest TestCase classes, one or a few per function. The
    # suite is green, but these six take 29 of its 36 s here (primes up to millions, a big
    # DFT round trip, every ordering of a list, threads racing over a shared tee), so they
    # are deselected for speed; none fails. Many of its tests loop over self.subTest: a
    # test that fails only in a subtest is failed in the JUnit XML, but pytest 9 keeps it out
    # of its lastfailed cache (pytest issue 14575) and testmon records it as passed, so ``ff``
    # and ``testmon`` do not see such a failure on the next commit.
    "more-itertools": Profile(
        test_paths=("tests",),
        ini_addopts=tuple(
            f"--deselect=tests/{test}"
            for test in (
                "test_recipes.py::PrimeFunctionTests::test_primes",
                "test_recipes.py::PrimeFunctionTests::test_nth_prime_approximate",
                "test_recipes.py::PolynomialFromRootsTests::test_large",
                "test_more.py::DiscreteFourierTransformTests::test_roundtrip",
                "test_more.py::TestConcurrentTee::test_concurrent_consumers",
                "test_more.py::ExtractTests::test_all_orderings",
            )
        ),
    ),
}


# --------------------------------------------------------------------------- mutations


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One fault: bytes [start, end) of a source file replaced by ``replacement``."""

    path: str
    start: int
    end: int
    replacement: str
    operator: str
    line: int

    @property
    def key(self) -> str:
        return f"{self.path}:{self.start}:{self.end}:{self.operator}:{self.replacement}"

    def describe(self) -> str:
        return f"{self.path}:{self.line} {self.operator} -> {self.replacement.strip()!r}"


COMPARE_FLIPS: dict[type[ast.cmpop], tuple[str, str]] = {
    ast.Lt: ("<", "<="),
    ast.LtE: ("<=", "<"),
    ast.Gt: (">", ">="),
    ast.GtE: (">=", ">"),
    ast.Eq: ("==", "!="),
    ast.NotEq: ("!=", "=="),
    ast.Is: ("is", "is not"),
    ast.IsNot: ("is not", "is"),
    ast.In: ("in", "not in"),
    ast.NotIn: ("not in", "in"),
}


def _line_starts(data: bytes) -> list[int]:
    starts = [0]
    for index, byte in enumerate(data):
        if byte == 0x0A:
            starts.append(index + 1)
    return starts


def _span(node: ast.expr, starts: Sequence[int]) -> tuple[int, int]:
    # ast offsets are UTF-8 byte columns, so the whole module is handled as bytes.
    end_line = node.end_lineno
    end_col = node.end_col_offset
    if end_line is None or end_col is None:
        raise ValueError("node without an end position")
    return starts[node.lineno - 1] + node.col_offset, starts[end_line - 1] + end_col


def _token_sub(gap: str, old: str, new: str) -> str | None:
    """``gap`` (the text between two operands) with its operator token replaced once."""
    pattern = r"\s+".join(re.escape(word) for word in old.split())
    if old[0].isalpha():
        pattern = rf"(?<![\w.]){pattern}(?![\w])"
    replaced, count = re.subn(pattern, new, gap, count=1)
    return replaced if count else None


class _SiteFinder(ast.NodeVisitor):
    """Mutation sites inside function bodies (not decorators, defaults or f-strings)."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.data = data
        self.starts = _line_starts(data)
        self.depth = 0
        self.mutants: list[Mutant] = []

    def _add(self, start: int, end: int, replacement: str, operator: str, line: int) -> None:
        self.mutants.append(Mutant(self.path, start, end, replacement, operator, line))

    def _text(self, start: int, end: int) -> str:
        return self.data[start:end].decode("utf-8")

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        for statement in node.body:
            self.visit(statement)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        return  # positions inside f-strings are unreliable before Python 3.12

    def visit_Compare(self, node: ast.Compare) -> None:
        if self.depth and len(node.ops) == 1 and type(node.ops[0]) in COMPARE_FLIPS:
            old, new = COMPARE_FLIPS[type(node.ops[0])]
            _, gap_start = _span(node.left, self.starts)
            gap_end, _ = _span(node.comparators[0], self.starts)
            swapped = _token_sub(self._text(gap_start, gap_end), old, new)
            if swapped is not None:
                self._add(gap_start, gap_end, swapped, f"compare {old} -> {new}", node.lineno)
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        if self.depth:
            old, new = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
            _, gap_start = _span(node.values[0], self.starts)
            gap_end, _ = _span(node.values[1], self.starts)
            swapped = _token_sub(self._text(gap_start, gap_end), old, new)
            if swapped is not None:
                self._add(gap_start, gap_end, swapped, f"boolean {old} -> {new}", node.lineno)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if self.depth and isinstance(value, int) and not isinstance(value, bool):
            start, end = _span(node, self.starts)
            self._add(start, end, repr(value + 1), "constant +1", node.lineno)

    def _negate(self, test: ast.expr, kind: str) -> None:
        source = ast.unparse(test)
        if "TYPE_CHECKING" in source or "__name__" in source:
            return
        start, end = _span(test, self.starts)
        self._add(start, end, f"not ({self._text(start, end)})", f"negate {kind}", test.lineno)

    def visit_If(self, node: ast.If) -> None:
        if self.depth:
            self._negate(node.test, "if")
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        if self.depth:
            self._negate(node.test, "while")
        self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> None:
        value = node.value
        if self.depth and value is not None:
            start, end = _span(value, self.starts)
            if isinstance(value, ast.Constant) and isinstance(value.value, bool):
                self._add(start, end, repr(not value.value), "return flipped", node.lineno)
            elif not (isinstance(value, ast.Constant) and value.value is None):
                self._add(start, end, "None", "return None", node.lineno)
        self.generic_visit(node)


def find_mutants(source: str, path: str) -> list[Mutant]:
    """Every mutation site of one module whose mutant still parses and differs."""
    data = source.encode("utf-8")
    finder = _SiteFinder(path, data)
    finder.visit(ast.parse(source))
    valid = []
    for mutant in finder.mutants:
        mutated = apply_mutants(source, [mutant])
        if mutated == source:
            continue
        try:
            ast.parse(mutated)
        except SyntaxError:
            continue
        valid.append(mutant)
    return valid


def overlaps(a: Mutant, b: Mutant) -> bool:
    return a.path == b.path and a.start < b.end and b.start < a.end


def apply_mutants(source: str, mutants: Iterable[Mutant]) -> str:
    """``source`` with the given (non-overlapping) mutants of one file applied."""
    data = source.encode("utf-8")
    chosen = sorted(mutants, key=lambda m: m.start, reverse=True)
    for later, earlier in itertools.pairwise(chosen):
        if overlaps(later, earlier):
            raise ValueError(f"overlapping mutants: {earlier.describe()} / {later.describe()}")
    for mutant in chosen:
        data = data[: mutant.start] + mutant.replacement.encode("utf-8") + data[mutant.end :]
    return data.decode("utf-8")


# --------------------------------------------------------------------------- history


def plan_history(
    commits: int, rng: random.Random, fault_rate: float = 0.3
) -> list[tuple[int, ...]]:
    """The fault ids active at each commit: commit 0 is clean; on a later commit, with
    probability ``fault_rate``, 1-3 new faults land, each active for 1-4 commits."""
    if commits < 2:
        raise ValueError(f"commits must be at least 2, got {commits}")
    active: dict[int, int] = {}  # fault id -> last commit it is active in
    history: list[tuple[int, ...]] = [()]
    next_id = 0
    for commit in range(1, commits):
        if rng.random() < fault_rate:
            for _ in range(rng.choices((1, 2, 3), weights=(5, 3, 2))[0]):
                lifetime = rng.choices((1, 2, 3, 4), weights=(4, 3, 2, 1))[0]
                active[next_id] = commit + lifetime - 1
                next_id += 1
        history.append(tuple(sorted(f for f, last in active.items() if last >= commit)))
    return history


# --------------------------------------------------------------------------- metrics


@dataclasses.dataclass(frozen=True)
class Case:
    """One test case of a JUnit XML report, in run order."""

    test_id: str
    failed: bool
    duration: float


def read_junit(path: Path) -> list[Case]:
    """Test cases in run order; a case reported twice (a teardown error) folds into one."""
    cases: dict[str, Case] = {}
    for element in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{element.get('classname', '')}::{element.get('name', '')}"
        failed = any(child.tag in ("failure", "error") for child in element)
        duration = float(element.get("time", "0") or 0)
        if test_id in cases:
            old = cases[test_id]
            cases[test_id] = Case(test_id, old.failed or failed, old.duration + duration)
        else:
            cases[test_id] = Case(test_id, failed, duration)
    return list(cases.values())


def caught_within(cases: Sequence[Case], fraction: float) -> tuple[int, int]:
    """(failing tests in the order's prefix that fits ``fraction`` of its total time, all)."""
    limit = fraction * math.fsum(c.duration for c in cases)
    tolerance = 1e-9 * max(1.0, limit)
    used = 0.0
    caught = 0
    for case in cases:
        used += case.duration
        if used > limit + tolerance:
            break
        caught += case.failed
    return caught, sum(c.failed for c in cases)


def first_failure_position(failed: Sequence[bool]) -> int | None:
    """The 1-based run position of the first failing test; None when none failed."""
    return next((index for index, bad in enumerate(failed, start=1) if bad), None)


@dataclasses.dataclass
class RunScore:
    commit: int
    tests: int
    failures: int
    seconds: float  # the junit durations summed: the tests alone
    apfd: float | None
    ttff: float | None
    caught: int
    failing_ids: tuple[str, ...]
    first_failure: int | None = None  # 1-based run position of the first failing test
    wall: float = 0.0  # seconds of the pytest process, start-up and collection included


def score_run(commit: int, cases: Sequence[Case], wall: float = 0.0) -> RunScore:
    failed = [c.failed for c in cases]
    durations = [c.duration for c in cases]
    caught, failures = caught_within(cases, BUDGET_FRACTION)
    return RunScore(
        commit=commit,
        tests=len(cases),
        failures=failures,
        seconds=math.fsum(durations),
        apfd=apfd(failed),
        ttff=time_to_first_failure(failed, durations),
        caught=caught,
        failing_ids=tuple(c.test_id for c in cases if c.failed),
        first_failure=first_failure_position(failed),
        wall=wall,
    )


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def rotation(orderings: Sequence[str], commit: int) -> list[str]:
    """The orderings in the order commit ``commit`` runs them: starting with the
    ``commit mod n``-th, so each ordering runs first (and last) equally often."""
    if not orderings:
        return []
    start = commit % len(orderings)
    return [*orderings[start:], *orderings[:start]]


def repeat_commits(truth: dict[int, set[str]]) -> set[int]:
    """Failing commits whose failing tests all failed on the previous commit too (what
    "failed last time" predicts); the other failing commits bring a new failure."""
    return {
        commit
        for commit, failing in truth.items()
        if failing and failing <= truth.get(commit - 1, set())
    }


def summarise(
    ordering: str,
    runs: Sequence[RunScore],
    commits: int,
    truth: dict[int, set[str]],
    full_seconds: dict[int, float],
) -> dict[str, object]:
    """One table row: means over this ordering's failing commits. The budget ordering is
    scored against ``truth`` (the failing tests of each commit's full runs) and
    ``full_seconds`` (the summed test time of each commit's full run); APFD is also split
    into the commits that only repeat the previous commit's failures and the others."""
    if ordering == "qlearn-budget":
        failing = [r for r in runs if truth.get(r.commit)]
        wanted = sum(len(truth[r.commit]) for r in failing)
        caught = sum(len(truth[r.commit] & set(r.failing_ids)) for r in failing)
        spent = math.fsum(r.seconds for r in runs)
        full = math.fsum(full_seconds.get(r.commit, 0.0) for r in runs)
        return {
            "ordering": ordering,
            "failing_commits": len(failing),
            "failures": wanted,
            "caught": caught,
            "caught_pct": 100.0 * caught / wanted if wanted else None,
            "time_used_pct": 100.0 * spent / full if full else None,
            "tests_run_mean": _mean(float(r.tests) for r in runs),
            "first_failure_median": _median(r.first_failure for r in failing),
            "first_failure_mean": _mean(r.first_failure for r in failing),
            "wall_mean": _mean(r.wall for r in runs),
            "wall_ratio": None,
        }
    failing = [r for r in runs if r.failures]
    second_half = [r for r in failing if r.commit >= commits // 2]
    repeats = repeat_commits(truth)
    failures = sum(r.failures for r in failing)
    caught = sum(r.caught for r in failing)
    return {
        "ordering": ordering,
        "failing_commits": len(failing),
        "failures": failures,
        "apfd": _mean(r.apfd for r in failing),
        "apfd_second_half": _mean(r.apfd for r in second_half),
        "apfd_repeat": _mean(r.apfd for r in failing if r.commit in repeats),
        "apfd_new": _mean(r.apfd for r in failing if r.commit not in repeats),
        "ttff": _mean(r.ttff for r in failing),
        "caught": caught,
        "caught_pct": 100.0 * caught / failures if failures else None,
        "first_failure_median": _median(r.first_failure for r in failing),
        "first_failure_mean": _mean(r.first_failure for r in failing),
        "suite_seconds_mean": _mean(r.seconds for r in runs),
        "wall_mean": _mean(r.wall for r in runs),
        "wall_ratio": None,
    }


def add_wall_ratios(rows: Sequence[dict[str, object]], base: str = "collection") -> None:
    """Set each row's ``wall_ratio``: its mean wall time over ``base``'s (None without it)."""
    reference = next((row["wall_mean"] for row in rows if row["ordering"] == base), None)
    for row in rows:
        wall = row["wall_mean"]
        row["wall_ratio"] = (
            wall / reference
            if isinstance(wall, float) and isinstance(reference, float) and reference > 0
            else None
        )


# --------------------------------------------------------------------------- project


@dataclasses.dataclass
class Project:
    name: str
    version: str
    pristine: Path  # the unpacked source, never modified
    work: Path  # the copy the suite runs in, mutated per commit
    import_root: Path  # the directory on PYTHONPATH (the work copy or its src/)
    packages: list[Path]  # the project's package dirs inside work
    runtime_deps: list[str]
    profile: Profile
    touched: set[str] = dataclasses.field(default_factory=set)  # files mutated right now


def _pip(python: Path | str, *args: str) -> None:
    command = [str(python), "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"pip {' '.join(args)} failed:\n{result.stderr[-3000:]}")


def fetch_sdist(spec: str, cache: Path) -> Path:
    """The sdist of ``NAME[==VER]`` from the configured package index (cached)."""
    folder = cache / "sdists" / re.sub(r"[^\w.=-]", "_", spec)
    existing = sorted(folder.glob("*.tar.gz")) + sorted(folder.glob("*.zip"))
    if existing:
        return existing[0]
    folder.mkdir(parents=True, exist_ok=True)
    _pip(sys.executable, "download", "--no-binary", ":all:", "--no-deps", "-d", str(folder), spec)
    found = sorted(folder.glob("*.tar.gz")) + sorted(folder.glob("*.zip"))
    if not found:
        raise SystemExit(f"pip download {spec} gave no sdist in {folder}")
    return found[0]


def unpack(archive: Path, dest: Path) -> Path:
    """The single top-level directory of an sdist, unpacked under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            if hasattr(tarfile, "data_filter"):  # 3.10.12+: no links or paths out of dest
                tf.extractall(dest, filter="data")
            else:  # older 3.10 patch releases
                tf.extractall(dest)
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise SystemExit(f"{archive}: expected one top-level directory, found {len(tops)}")
    return tops[0]


def _is_test_path(relative: Path) -> bool:
    name = relative.name
    return (
        any(part in ("tests", "test", "testing") for part in relative.parts[:-1])
        or name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
    )


def find_packages(root: Path) -> tuple[Path, list[Path]]:
    """(import root, the top-level package dirs in it): ``src/`` layout or flat."""
    for import_root in (root / "src", root):
        if not import_root.is_dir():
            continue
        packages = [
            p
            for p in sorted(import_root.iterdir())
            if (p / "__init__.py").is_file()
            and p.name not in ("tests", "test", "docs", "doc", "benchmarks", "bench")
        ]
        if packages:
            return import_root, packages
    raise SystemExit(f"no Python package (a directory with __init__.py) in {root} or src/")


def source_files(project: Project) -> list[Path]:
    """The project's own modules (relative to work), test modules excluded."""
    files = []
    for package in project.packages:
        for path in sorted(package.rglob("*.py")):
            relative = path.relative_to(project.work)
            if not _is_test_path(relative.relative_to(relative.parts[0])):
                files.append(relative)
    return files


def runtime_requirements(pkg_info: Path) -> list[str]:
    """``Requires-Dist`` of an sdist's PKG-INFO without extras, markers evaluated by pip."""
    if not pkg_info.is_file():
        return []
    requirements = []
    for line in pkg_info.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("Requires-Dist:"):
            requirement = line.split(":", 1)[1].strip()
            if "extra ==" not in requirement:
                requirements.append(requirement)
    return requirements


def prepare_project(args: argparse.Namespace, cache: Path) -> Project:
    if args.path:
        source = Path(args.path).resolve()
        if not source.is_dir():
            raise SystemExit(f"--path {args.path}: not a directory")
        name, version = source.name, "local"
    else:
        archive = fetch_sdist(args.project, cache)
        match = re.match(r"(.+)-([^-]+?)(\.tar\.gz|\.zip)$", archive.name)
        name, version = (match.group(1), match.group(2)) if match else (archive.stem, "?")
        source = unpack(archive, cache / "src" / archive.name)
    canonical = re.sub(r"[-_.]+", "-", name).lower()
    profile = PROFILES.get(canonical, Profile())
    base = cache / "runs" / f"{canonical}-{version}-seed{args.seed}"
    if base.exists():
        shutil.rmtree(base)
    pristine = base / "pristine"
    shutil.copytree(source, pristine, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    if profile.ini_addopts:
        ini = pristine / "pytest.ini"
        if ini.exists():
            raise SystemExit(f"{ini} exists: the profile's ini_addopts would replace it")
        addopts = " ".join(shlex.quote(arg) for arg in profile.ini_addopts)
        ini.write_text(f"[pytest]\naddopts = {addopts}\n", encoding="utf-8")
    work = base / "work"
    shutil.copytree(pristine, work)
    import_root, packages = find_packages(work)
    return Project(
        name=canonical,
        version=version,
        pristine=pristine,
        work=work,
        import_root=import_root,
        packages=packages,
        runtime_deps=runtime_requirements(pristine / "PKG-INFO"),
        profile=profile,
    )


# --------------------------------------------------------------------------- git

#: What the runs may write inside the work tree, ignored through ``.git/info/exclude`` (not a
#: committed ``.gitignore``: the project's tree stays as its sdist has it). Caches, stores,
#: testmon data and reports are kept outside the tree; these are safety nets.
GIT_EXCLUDES = (
    "__pycache__/",
    "*.py[cod]",
    ".pytest_cache/",
    ".testmondata*",
    ".hypothesis/",
    ".coverage",
    ".coverage.*",
)
GIT_NAME = "qlearn-bench"
GIT_EMAIL = "bench@qlearn-bench.invalid"
GIT_EPOCH = 1_704_067_200  # 2024-01-01 00:00:00 UTC; commit k is k hours later


def git_env(commit: int) -> dict[str, str]:
    """The environment of git for history commit ``commit``: a fixed author and committer,
    their dates ``commit`` hours after ``GIT_EPOCH``, and no user or system config (no
    signing, hooks or templates of this machine), so commit ids are reproducible."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    date = f"{GIT_EPOCH + 3600 * commit} +0000"
    env.update(
        GIT_AUTHOR_NAME=GIT_NAME,
        GIT_AUTHOR_EMAIL=GIT_EMAIL,
        GIT_AUTHOR_DATE=date,
        GIT_COMMITTER_NAME=GIT_NAME,
        GIT_COMMITTER_EMAIL=GIT_EMAIL,
        GIT_COMMITTER_DATE=date,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
    )
    return env


def git(work: Path, commit: int, *args: str) -> str:
    """Run ``git ARGS`` in ``work`` with ``git_env(commit)``; its stdout, or SystemExit."""
    result = subprocess.run(
        ["git", *args], cwd=work, env=git_env(commit), capture_output=True, text=True
    )
    if result.returncode:
        raise SystemExit(f"git {' '.join(args)} failed in {work}:\n{result.stderr[-2000:]}")
    return result.stdout


def git_commit(work: Path, commit: int) -> str:
    """Commit the work tree as history commit ``commit`` (empty when nothing changed); the
    new commit id."""
    git(work, commit, "add", "-A")
    git(work, commit, "commit", "-q", "--allow-empty", "--no-verify", "-m", f"commit {commit}")
    return git(work, commit, "rev-parse", "HEAD").strip()


def git_init(work: Path) -> str:
    """Make ``work`` a git repository whose first commit (history commit 0) is its tree as
    it is now; the commit id."""
    git(work, 0, "init", "-q", "-b", "main")
    exclude = work / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("\n".join(GIT_EXCLUDES) + "\n", encoding="utf-8")
    return git_commit(work, 0)


def git_junk(work: Path) -> list[str]:
    """What ``git status --porcelain`` reports in ``work``: files a run left or changed."""
    output = git(work, 0, "status", "--porcelain", "--untracked-files=all")
    return [line for line in output.splitlines() if line.strip()]


# --------------------------------------------------------------------------- virtualenv


def make_venv(cache: Path, project: Project, plugin: Path, extra_deps: Sequence[str]) -> Path:
    """A virtualenv with pytest, pytest-ranking, pytest-testmon, the project's deps and
    pytest-qlearn."""
    deps = sorted(
        {"pytest", "pytest-ranking", "pytest-testmon", *project.runtime_deps, *extra_deps}
    )
    digest = hashlib.sha256(json.dumps([sys.version, deps]).encode()).hexdigest()[:12]
    env_dir = cache / "venvs" / f"{project.name}-{digest}"
    python = env_dir / "bin" / "python"
    if not (env_dir / ".complete").is_file():
        if env_dir.exists():
            shutil.rmtree(env_dir)
        print(f"creating {env_dir} with {', '.join(deps)}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(env_dir)
        _pip(python, "install", *deps)
        (env_dir / ".complete").write_text("\n".join(deps) + "\n")
    # The plugin is rebuilt every time from a copy, so no build files land in its checkout.
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "plugin"
        shutil.copytree(
            plugin,
            copy,
            ignore=shutil.ignore_patterns(
                ".git", "__pycache__", "build", "*.egg-info", ".venv", "tests", ".*cache"
            ),
        )
        _pip(python, "install", "--force-reinstall", str(copy))
    return python


# --------------------------------------------------------------------------- runs


def _clean_env(project: Project, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("QLEARN_", "PYTEST_", "COV_", "COVERAGE_", "TESTMON_", "GIT_"))
        and k != "PYTHONPATH"
    }
    env["PYTHONPATH"] = str(project.import_root)
    env["PYTHONHASHSEED"] = "0"
    env.update(extra or {})
    return env


def write_commit(project: Project, mutants: Sequence[Mutant]) -> None:
    """Make the work copy the pristine source plus ``mutants``."""
    by_file: dict[str, list[Mutant]] = {}
    for mutant in mutants:
        by_file.setdefault(mutant.path, []).append(mutant)
    touched = set(by_file) | project.touched
    for relative in touched:
        original = (project.pristine / relative).read_text(encoding="utf-8")
        text = apply_mutants(original, by_file.get(relative, []))
        (project.work / relative).write_text(text, encoding="utf-8")
    project.touched = set(by_file)
    # A mutant can keep a file's size and mtime second, so stale bytecode must go.
    for package in project.packages:
        for cache_dir in package.rglob("__pycache__"):
            shutil.rmtree(cache_dir, ignore_errors=True)


def pytest_command(python: Path, project: Project, *args: str) -> list[str]:
    return [
        str(python),
        "-m",
        "pytest",
        *project.profile.test_paths,
        *project.profile.pytest_args,
        "-p",
        "no:randomly",
        "-q",
        *args,
    ]


def run_pytest(
    command: Sequence[str],
    project: Project,
    timeout: float,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], float]:
    """The finished pytest process and its wall time in seconds."""
    started = time.perf_counter()
    try:
        result = subprocess.run(
            command,
            cwd=project.work,
            env=_clean_env(project, env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"timed out after {timeout:.0f} s: {' '.join(command)}") from exc
    return result, time.perf_counter() - started


def plugin_family(ordering: str) -> str | None:
    """Which ordering plugin ``ordering`` uses (a key of ``ORDERING_PLUGINS``), if any."""
    for family in ORDERING_PLUGINS:
        if ordering == family or ordering.startswith(f"{family}-"):
            return family
    return None


def block_args(keep: str | None = None) -> list[str]:
    """``-p no:NAME`` for every ordering plugin but ``keep``'s family."""
    return [
        arg
        for family, name in ORDERING_PLUGINS.items()
        if family != keep
        for arg in ("-p", f"no:{name}")
    ]


def kills(python: Path, project: Project, mutant: Mutant, timeout: float) -> bool:
    """Whether the suite fails (exit 1: tests failed) with ``mutant`` alone."""
    write_commit(project, [mutant])
    command = pytest_command(python, project, "-x", *block_args(), "-p", "no:cacheprovider")
    try:
        result = subprocess.run(
            command,
            cwd=project.work,
            env=_clean_env(project),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False  # a hang is not a fault CI would report per test
    # A collection error (a module that fails to import) hides the tests themselves: not the
    # history we want. Without -x it is exit 2, but -x turns it into exit 1, so look for it.
    return result.returncode == 1 and not collection_failed(result.stdout)


def collection_failed(output: str) -> bool:
    """Whether pytest's terminal output reports an error while collecting a module."""
    return re.search(r"^_+ ERROR collecting ", output, re.MULTILINE) is not None


def choose_faults(
    python: Path,
    project: Project,
    needed: int,
    rng: random.Random,
    cache: Path,
    timeout: float,
) -> list[Mutant]:
    """``needed`` killed, mutually non-overlapping mutants, in seeded random order."""
    candidates = []
    digest = hashlib.sha256()
    # The tests that run decide the verdicts too: a deselected test kills nothing.
    profile = project.profile
    # (the ini's addopts select as the same arguments on the command line would)
    selection = [*profile.pytest_args, *profile.ini_addopts]
    digest.update(json.dumps([profile.test_paths, selection]).encode())
    for relative in source_files(project):
        source = (project.pristine / relative).read_text(encoding="utf-8")
        digest.update(f"{relative}\0{source}\0".encode())
        try:
            candidates.extend(find_mutants(source, str(relative)))
        except SyntaxError:
            continue
    rng.shuffle(candidates)
    # Verdicts are cached per content of the sources and per test selection, so an edited
    # --path tree or profile is rechecked.
    # v2: since collection errors under -x (exit 1) count as no kill.
    verdict_file = cache / "kills" / f"{project.name}-v2-{digest.hexdigest()[:16]}.json"
    verdicts: dict[str, bool] = (
        json.loads(verdict_file.read_text()) if verdict_file.is_file() else {}
    )
    chosen: list[Mutant] = []
    checked = 0
    for mutant in candidates:
        if len(chosen) == needed:
            break
        if any(overlaps(mutant, other) for other in chosen):
            continue
        if mutant.key not in verdicts:
            verdicts[mutant.key] = kills(python, project, mutant, timeout)
            checked += 1
        if verdicts[mutant.key]:
            chosen.append(mutant)
    write_commit(project, [])
    verdict_file.parent.mkdir(parents=True, exist_ok=True)
    verdict_file.write_text(json.dumps(verdicts, indent=0, sort_keys=True))
    print(
        f"{len(candidates)} mutation sites; {checked} checked now "
        f"({len(verdicts)} verdicts cached); {len(chosen)} faults kept",
        file=sys.stderr,
    )
    if len(chosen) < needed:
        raise SystemExit(f"only {len(chosen)} of {needed} mutants make a test fail")
    return chosen


def ordering_args(ordering: str, series: Path, seed: int, commit: int) -> list[str]:
    """The pytest arguments of ``ordering`` (its data under ``series``), the other ordering
    plugins disabled."""
    qlearn = [
        "--qlearn",
        "--qlearn-db",
        f"sqlite:///{series / 'qlearn.db'}",
        "--qlearn-seed",
        str(seed * 1000 + commit),
    ]
    own = {
        "collection": [],
        "ff": ["--ff"],
        "ranking": ["--rank", "--rank-weight=1-1-1"],
        "ranking-010": ["--rank", "--rank-weight=0-1-0"],
        # every test runs; its database goes to TESTMON_DATAFILE (ordering_env)
        "testmon": ["--testmon-noselect"],
        "qlearn": qlearn,
        "qlearn-cov": [*qlearn, "--qlearn-cov"],
        # the same without fixture locality: tests move singly, not with their module
        "qlearn-test": [*qlearn, "-o", "qlearn_order_scope=test"],
        "qlearn-cov-test": [*qlearn, "--qlearn-cov", "-o", "qlearn_order_scope=test"],
        "qlearn-budget": [*qlearn, "--qlearn-budget", "25%"],
    }[ordering]
    return [*own, *block_args(plugin_family(ordering))]


def ordering_env(ordering: str, series: Path) -> dict[str, str]:
    """Environment variables of ``ordering``: testmon's database outside the work tree."""
    if plugin_family(ordering) == "testmon":
        return {"TESTMON_DATAFILE": str(series / "testmondata")}
    return {}


def plugin_has_cov(python: Path, project: Project) -> bool:
    # pytest-ranking hashes the tree into pytest's cache even for --help: keep it out.
    command = [str(python), "-m", "pytest", "--help", *block_args("qlearn")]
    result, _ = run_pytest([*command, "-p", "no:cacheprovider"], project, timeout=120)
    return "--qlearn-cov" in result.stdout


# --------------------------------------------------------------------------- report


def _fmt(value: object, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: Sequence[dict[str, object]]) -> str:
    lines = [
        "| ordering | failing commits | APFD | APFD fresh bugs | APFD repeats | APFD 2nd half "
        "| 1st failure at (median / mean) | time to 1st failure (s) | caught @25 % time "
        "| wall s/commit (× collection) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        caught = f"{_fmt(row['caught_pct'], '.0f')} % ({row['caught']}/{row['failures']})"
        first = (
            f"{_fmt(row['first_failure_median'], 'g')} / {_fmt(row['first_failure_mean'], '.1f')}"
        )
        wall = f"{_fmt(row['wall_mean'], '.2f')} ({_fmt(row['wall_ratio'], '.2f')})"
        if row["ordering"] == "qlearn-budget":
            caught += f", {_fmt(row['time_used_pct'], '.0f')} % of the time"
            lines.append(
                f"| {row['ordering']} (real) | {row['failing_commits']} | | | | "
                f"| {first} | | {caught} | {wall} |"
            )
        else:
            lines.append(
                f"| {row['ordering']} | {row['failing_commits']} | {_fmt(row['apfd'], '.3f')} "
                f"| {_fmt(row['apfd_new'], '.3f')} | {_fmt(row['apfd_repeat'], '.3f')} "
                f"| {_fmt(row['apfd_second_half'], '.3f')} | {first} "
                f"| {_fmt(row['ttff'], '.2f')} | {caught} | {wall} |"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--project", help="NAME[==VERSION] of a project on the package index")
    where.add_argument("--path", help="a local source tree with its tests")
    parser.add_argument("--commits", type=int, default=30, help="commits in the history")
    parser.add_argument("--seed", type=int, default=1, help="seed of faults and history")
    parser.add_argument(
        "--orderings",
        default=",".join(DEFAULT_ORDERINGS),
        help=f"comma-separated subset of {','.join(ALL_ORDERINGS)} "
        f"(default: {','.join(DEFAULT_ORDERINGS)})",
    )
    parser.add_argument("--plugin", default=str(ROOT), help="pytest-qlearn source to install")
    parser.add_argument(
        "--cache",
        default=str(Path.home() / ".cache" / "qlearn-bench"),
        help="virtualenvs, sdists and run dirs",
    )
    parser.add_argument("--test-deps", default="", help="extra space-separated test deps")
    parser.add_argument("--keep", action="store_true", help="keep the run dir (work copy, xml)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.commits < 2:
        parser.error(f"--commits must be at least 2, got {args.commits}")
    orderings = [o.strip() for o in args.orderings.split(",") if o.strip()]
    unknown = [o for o in orderings if o not in ALL_ORDERINGS]
    if unknown or not orderings:
        parser.error(
            f"--orderings: unknown {', '.join(unknown) or '(empty)'}; "
            f"allowed: {', '.join(ALL_ORDERINGS)}"
        )
    if orderings == ["qlearn-budget"]:
        parser.error("--orderings: qlearn-budget needs a full-run ordering beside it")
    args.orderings = orderings
    if not (Path(args.plugin) / "pyproject.toml").is_file():
        parser.error(f"--plugin {args.plugin}: no pyproject.toml there")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cache = Path(args.cache).expanduser().resolve()
    started = time.monotonic()
    project = prepare_project(args, cache)
    extra = [*project.profile.test_deps, *args.test_deps.split()]
    python = make_venv(cache, project, Path(args.plugin).resolve(), extra)

    baseline, baseline_wall = run_pytest(
        pytest_command(python, project, *block_args(), "-p", "no:cacheprovider"),
        project,
        timeout=600,
    )
    if baseline.returncode != 0:
        raise SystemExit(
            f"the unmodified suite of {project.name} is not green (exit {baseline.returncode}); "
            f"deselect the failing tests first:\n{baseline.stdout[-3000:]}"
        )
    timeout = max(60.0, 10 * baseline_wall)

    orderings = list(args.orderings)
    with_cov = [o for o in ("qlearn-cov", "qlearn-cov-test") if o in orderings]
    if with_cov and not plugin_has_cov(python, project):
        for ordering in with_cov:
            orderings.remove(ordering)
            print(f"skipped ordering {ordering}: the plugin has no --qlearn-cov", file=sys.stderr)

    rng = random.Random(args.seed)
    history = plan_history(args.commits, rng)
    fault_count = 1 + max((f for active in history for f in active), default=-1)
    faults = choose_faults(python, project, fault_count, rng, cache, timeout)

    # The work copy is pristine again: it becomes commit 0 of a real git history.
    heads = [git_init(project.work)]
    junk: dict[int, list[str]] = {}
    leftover = git_junk(project.work)
    if leftover:
        raise SystemExit(f"the work tree is not clean after git init: {leftover}")

    series_root = project.work.parent / "series"
    runs: dict[str, list[RunScore]] = {o: [] for o in orderings}
    for commit, active in enumerate(history):
        if commit:
            write_commit(project, [faults[f] for f in active])
            heads.append(git_commit(project.work, commit))
        for ordering in rotation(orderings, commit):
            series = series_root / ordering
            series.mkdir(parents=True, exist_ok=True)
            xml = series / f"commit-{commit:03d}.xml"
            command = pytest_command(
                python,
                project,
                "-o",
                f"cache_dir={series / 'pytest-cache'}",
                "-o",
                "junit_family=xunit1",
                f"--junitxml={xml}",
                # plain tracebacks: pytest's own rendering parses the source with ast, which
                # CPython 3.11 can fail after a mutant's deep recursion (an INTERNALERROR)
                "--tb=native",
                *ordering_args(ordering, series, args.seed, commit),
            )
            result, wall = run_pytest(command, project, timeout, ordering_env(ordering, series))
            if result.returncode not in (0, 1) or not xml.is_file():
                raise SystemExit(
                    f"commit {commit}, {ordering}: pytest exit {result.returncode}\n"
                    f"{result.stdout[-3000:]}{result.stderr[-2000:]}"
                )
            runs[ordering].append(score_run(commit, read_junit(xml), wall))
        failing = {o: runs[o][-1].failures for o in orderings}
        print(
            f"commit {commit:3d} {heads[-1][:10]}: {len(active)} fault(s) {failing}",
            file=sys.stderr,
        )
        # A run must leave nothing git would see as a change in the next commit.
        leftover = git_junk(project.work)
        if leftover:
            junk[commit] = leftover
            print(f"  the runs left in the work tree: {leftover}", file=sys.stderr)
            git(project.work, commit, "clean", "-fdq")
            git(project.work, commit, "checkout", "-q", "--", ".")

    full = [o for o in orderings if o != "qlearn-budget"]
    truth = {c: set(runs[full[0]][c].failing_ids) for c in range(args.commits)}
    full_seconds = {c: runs[full[0]][c].seconds for c in range(args.commits)}
    rows = [summarise(o, runs[o], args.commits, truth, full_seconds) for o in orderings]
    add_wall_ratios(rows)
    report = {
        "project": project.name,
        "version": project.version,
        "commits": args.commits,
        "seed": args.seed,
        "faults": [faults[f].describe() for f in range(fault_count)],
        "history": [list(active) for active in history],
        "tests": runs[full[0]][0].tests,
        "baseline_wall_seconds": round(baseline_wall, 2),
        "git_heads": heads,
        "left_in_work_tree": junk,
        "total_wall_seconds": round(time.monotonic() - started, 1),
        "rows": rows,
        "runs": {o: [dataclasses.asdict(r) for r in runs[o]] for o in orderings},
    }
    if not args.keep:
        shutil.rmtree(project.work.parent, ignore_errors=True)
    failing_commits = sum(1 for c in truth.values() if c)
    repeats = len(repeat_commits(truth))
    title = (
        f"{project.name} {project.version}: {report['tests']} tests, {args.commits} commits "
        f"({failing_commits} failing: {repeats} repeating the previous commit's failures, "
        f"{failing_commits - repeats} with a new one), {fault_count} faults, seed {args.seed}, "
        f"{report['total_wall_seconds']} s wall (the unmodified suite: {baseline_wall:.1f} s)"
    )
    if junk:
        title += f"; runs left files in the work tree on {len(junk)} commit(s), see the JSON"
    # With --json the table still goes to stderr, so one run gives both.
    print(f"{title}\n{table(rows)}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
