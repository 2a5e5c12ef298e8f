"""Loading CI histories for replay: the RETECS/COLEMAN format and the Apache Commons format.

Both loaders return a :class:`Dataset`: the history as a list of :class:`Cycle` (CI builds or
commits, oldest first), each a list of :class:`TestRun` ``(test_id, duration, failed)`` in
the data set's row order. Formats are described in ``shared/datasets/README.md``:

* **RETECS/COLEMAN** (``;``-separated): ``Name``, ``Duration``, ``Verdict`` (1 = failed) and
  a cycle key, ``BuildId`` when the file has it, else ``Cycle``. Cycles are replayed in
  ascending key order, rows within a cycle in ``Id`` order (file order without ``Id``).
  ``LastResults`` (the test's earlier verdicts, most recent first) is kept when the file
  fills it; files whose ``LastResults`` are all empty get ``last_results=None``.
* **Commons** (``,``-separated): ``cycle_id`` (a commit, replayed in order of first
  appearance), ``test_class_name``, ``current_failures`` (> 0 = failed) and ``time``.

A test that appears more than once in one cycle (a retried CI pipeline of the same build)
becomes one run: it failed if any of its rows failed, and its duration is the sum. The
number of rows merged this way is reported as :attr:`Dataset.merged_rows`.

Every problem with the input is a :class:`DatasetError` with a one-line message.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TextIO

FORMATS = ("retecs", "commons")

RETECS_REQUIRED = ("Name", "Duration", "Verdict")
RETECS_CYCLE_KEYS = ("BuildId", "Cycle")
COMMONS_REQUIRED = ("cycle_id", "test_class_name", "current_failures", "time")

#: CSV fields can be long (52 code-metric columns); this is far above anything real.
_FIELD_LIMIT = 10_000_000


class DatasetError(ValueError):
    """The data set cannot be replayed; the message is one line and names the file."""


class TestRun(NamedTuple):
    """One test in one cycle: its id, how long it ran (seconds) and whether it failed."""

    test_id: str
    duration: float
    failed: bool


TestRun.__test__ = False  # type: ignore[attr-defined]  # not a test class for pytest


@dataclass
class Cycle:
    """One CI cycle: the tests in row order, and, when the data set has them, each test's
    earlier verdicts from the ``LastResults`` column (most recent first, True = failed)."""

    cycle_id: str
    tests: list[TestRun]
    last_results: dict[str, tuple[bool, ...]] | None = None

    @property
    def failures(self) -> int:
        return sum(1 for t in self.tests if t.failed)

    def __len__(self) -> int:
        return len(self.tests)

    def __iter__(self) -> Iterator[TestRun]:
        return iter(self.tests)


@dataclass
class Dataset:
    """A whole history, oldest cycle first."""

    name: str
    path: str
    format: str
    cycle_key: str
    cycles: list[Cycle]
    rows: int
    merged_rows: int = 0

    @property
    def has_last_results(self) -> bool:
        return any(c.last_results is not None for c in self.cycles)

    @property
    def failing_cycles(self) -> int:
        return sum(1 for c in self.cycles if c.failures)

    @property
    def tests(self) -> int:
        return len({t.test_id for c in self.cycles for t in c.tests})


# -- entry point ---------------------------------------------------------------------------
def load(path: str | os.PathLike[str], fmt: str = "auto") -> Dataset:
    """Load a data set; ``fmt`` is ``auto`` (detected from the header), ``retecs`` or
    ``commons``."""
    p = Path(path)
    if fmt not in ("auto", *FORMATS):
        raise DatasetError(f"unknown format {fmt!r}: use one of auto, {', '.join(FORMATS)}")
    if not p.exists():
        raise DatasetError(f"{p}: no such file")
    if p.is_dir():
        raise DatasetError(f"{p}: is a directory, not a data set file")
    try:
        with p.open(encoding="utf-8-sig", newline="") as handle:
            header_line = handle.readline()
            if not header_line.strip():
                raise DatasetError(f"{p}: empty file, no header and no rows")
            detected = fmt if fmt != "auto" else detect_format(header_line, p)
            handle.seek(0)
            if detected == "retecs":
                return _load_retecs(handle, p)
            return _load_commons(handle, p)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{p}: not a UTF-8 text file ({exc.reason})") from None
    except csv.Error as exc:
        raise DatasetError(f"{p}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read ({exc.strerror or exc})") from None


def detect_format(header_line: str, path: Path | str = "data set") -> str:
    """``retecs`` or ``commons`` from the header line, or a :class:`DatasetError`."""
    retecs = {c.strip() for c in header_line.strip().split(";")}
    if "Verdict" in retecs and "Name" in retecs:
        return "retecs"
    commons = {c.strip() for c in header_line.strip().split(",")}
    if "cycle_id" in commons and "test_class_name" in commons:
        return "commons"
    raise DatasetError(
        f"{path}: unknown format: expected a RETECS/COLEMAN header (';'-separated, with "
        "Name and Verdict) or a Commons header (','-separated, with cycle_id and "
        "test_class_name); use --format to force one"
    )


# -- RETECS / COLEMAN ----------------------------------------------------------------------
def _load_retecs(handle: TextIO, path: Path) -> Dataset:
    csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(handle, delimiter=";")
    header = _header(reader, path)
    _require(header, RETECS_REQUIRED, path, "RETECS/COLEMAN")
    cycle_key = next((k for k in RETECS_CYCLE_KEYS if k in header), None)
    if cycle_key is None:
        raise DatasetError(
            f"{path}: missing column BuildId or Cycle (RETECS/COLEMAN format needs one of "
            "them to group rows into cycles)"
        )
    col = {name: i for i, name in enumerate(header)}
    i_name, i_dur, i_verdict = col["Name"], col["Duration"], col["Verdict"]
    i_cycle, i_id, i_last = col[cycle_key], col.get("Id"), col.get("LastResults")
    width = len(header)

    # cycle key -> [(row order key, test_id, duration, failed, last results)]
    groups: dict[str, list[tuple[float, str, float, bool, tuple[bool, ...] | None]]] = {}
    rows = 0
    for line_no, row in enumerate(reader, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) < width:
            raise DatasetError(f"{path}: line {line_no}: {len(row)} fields, the header has {width}")
        rows += 1
        name = row[i_name].strip()
        if not name:
            raise DatasetError(f"{path}: line {line_no}: empty Name")
        key = row[i_cycle].strip()
        if not key:
            raise DatasetError(f"{path}: line {line_no}: empty {cycle_key}")
        duration = _duration(row[i_dur], "Duration", path, line_no)
        failed = _flag(row[i_verdict], "Verdict", path, line_no)
        order = float(rows)
        if i_id is not None:
            order = _number(row[i_id], "Id", path, line_no)
        last = None if i_last is None else _last_results(row[i_last], path, line_no)
        groups.setdefault(key, []).append((order, name, duration, failed, last))
    if not rows:
        raise DatasetError(f"{path}: no data rows, only a header")

    keys = list(groups)
    if all(_is_number(k) for k in keys):
        keys.sort(key=float)
    # a LastResults column whose every entry is empty carries nothing: rebuild history
    has_last = i_last is not None and any(
        last for members in groups.values() for *_, last in members
    )
    cycles: list[Cycle] = []
    merged = 0
    for key in keys:
        members = sorted(groups[key], key=lambda m: m[0])  # stable: file order on ties
        tests, dropped = _merge([(name, d, f) for _, name, d, f, _ in members])
        merged += dropped
        last_results: dict[str, tuple[bool, ...]] | None = None
        if has_last:
            last_results = {}
            for _, name, _, _, last in members:
                last_results.setdefault(name, last or ())
        cycles.append(Cycle(key, tests, last_results))
    return Dataset(path.stem, str(path), "retecs", cycle_key, cycles, rows, merged)


def _last_results(text: str, path: Path, line_no: int) -> tuple[bool, ...] | None:
    """``[1, 0, 0]`` → (True, False, False); empty text or ``[]`` → None."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    parts = [p.strip() for p in inner.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    out = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise DatasetError(
                f"{path}: line {line_no}: LastResults {text.strip()!r} is not a list of 0/1 "
                "verdicts"
            ) from None
        out.append(value > 0)
    return tuple(out)


# -- Commons -------------------------------------------------------------------------------
def _load_commons(handle: TextIO, path: Path) -> Dataset:
    csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(handle, delimiter=",")
    header = _header(reader, path)
    _require(header, COMMONS_REQUIRED, path, "Commons")
    col = {name: i for i, name in enumerate(header)}
    i_cycle, i_name = col["cycle_id"], col["test_class_name"]
    i_fail, i_time = col["current_failures"], col["time"]
    needed = max(i_cycle, i_name, i_fail, i_time) + 1

    groups: dict[str, list[tuple[str, float, bool]]] = {}  # insertion order = first seen
    rows = 0
    for line_no, row in enumerate(reader, start=2):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < needed:
            raise DatasetError(
                f"{path}: line {line_no}: {len(row)} fields, the header has {len(header)}"
            )
        rows += 1
        name = row[i_name].strip()
        if not name:
            raise DatasetError(f"{path}: line {line_no}: empty test_class_name")
        key = row[i_cycle].strip()
        if not key:
            raise DatasetError(f"{path}: line {line_no}: empty cycle_id")
        duration = _duration(row[i_time], "time", path, line_no)
        failures = _number(row[i_fail], "current_failures", path, line_no)
        if failures < 0:
            raise DatasetError(
                f"{path}: line {line_no}: current_failures {row[i_fail].strip()!r} is negative"
            )
        groups.setdefault(key, []).append((name, duration, failures > 0))
    if not rows:
        raise DatasetError(f"{path}: no data rows, only a header")
    cycles: list[Cycle] = []
    merged = 0
    for key, members in groups.items():
        tests, dropped = _merge(members)
        merged += dropped
        cycles.append(Cycle(key, tests))
    return Dataset(path.stem, str(path), "commons", "cycle_id", cycles, rows, merged)


# -- helpers -------------------------------------------------------------------------------
def _header(reader: Iterator[list[str]], path: Path) -> list[str]:
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise DatasetError(f"{path}: empty file, no header and no rows")
    return [h.strip() for h in header]


def _require(header: Sequence[str], required: Sequence[str], path: Path, fmt: str) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise DatasetError(
            f"{path}: missing column{plural} {', '.join(missing)} ({fmt} format needs "
            f"{', '.join(required)})"
        )


def _merge(members: Sequence[tuple[str, float, bool]]) -> tuple[list[TestRun], int]:
    """One run per test: a repeated test failed if any row failed; durations add up."""
    merged: dict[str, TestRun] = {}
    dropped = 0
    for name, duration, failed in members:
        seen = merged.get(name)
        if seen is None:
            merged[name] = TestRun(name, duration, failed)
        else:
            merged[name] = TestRun(name, seen.duration + duration, seen.failed or failed)
            dropped += 1
    return list(merged.values()), dropped


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _number(text: str, column: str, path: Path, line_no: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetError(f"{path}: line {line_no}: {column} {text.strip()!r} is not a number")
    return value


def _duration(text: str, column: str, path: Path, line_no: int) -> float:
    value = _number(text, column, path, line_no)
    if value < 0:
        raise DatasetError(f"{path}: line {line_no}: {column} {text.strip()!r} is negative")
    return value


def _flag(text: str, column: str, path: Path, line_no: int) -> bool:
    value = _number(text, column, path, line_no)
    if value not in (0.0, 1.0):
        raise DatasetError(
            f"{path}: line {line_no}: {column} {text.strip()!r} is not 0 (passed) or 1 (failed)"
        )
    return value == 1.0
