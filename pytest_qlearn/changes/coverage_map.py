"""Per-test coverage maps: which lines of which project files a test executed, compactly.

A map is stored with the content digest each covered file had when the test was traced, so
a later run knows whether the map is still true (no covered file changed) without tracing
again, and which tests exercise code that just changed. Pure: no pytest, no coverage.py.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from ..engine.state import Buckets

#: How much of a test's covered code changed: share of its covered files that changed.
CHANGED_SHARE = Buckets((0.001, 0.25, 0.5), integer=False)


class CorruptMapError(ValueError):
    """A stored coverage map that cannot be read (it is then traced again)."""


class CoverageMap(NamedTuple):
    """One test's coverage: ``lines`` maps a file (relative POSIX path) to its executed lines
    as compact ranges (``"1-4,7"``); ``digests`` holds each file's content digest at the
    trace; ``traced_episode`` is the episode that traced it."""

    test_id: str
    lines: dict[str, str]
    digests: dict[str, str]
    traced_episode: int

    def to_json(self) -> str:
        return json.dumps({"l": self.lines, "d": self.digests}, sort_keys=True)

    @classmethod
    def from_json(cls, test_id: str, text: str, traced_episode: int) -> CoverageMap:
        """Raises :class:`CorruptMapError` when ``text`` is not a map this code wrote."""
        try:
            data = json.loads(text)
            lines, digests = data["l"], data["d"]
            if not (isinstance(lines, dict) and isinstance(digests, dict)):
                raise TypeError("not objects")
            for path, ranges in lines.items():
                line_set(ranges)  # validates
                if not isinstance(digests.get(path), str):
                    raise TypeError(f"no digest for {path!r}")
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptMapError(f"corrupt coverage map of {test_id!r}: {exc}") from None
        return cls(test_id, dict(lines), dict(digests), int(traced_episode))

    def line_count(self) -> int:
        return sum(len(line_set(ranges)) for ranges in self.lines.values())

    def files(self) -> set[str]:
        return set(self.lines)


def compress_lines(lines: Iterable[int]) -> str:
    """Sorted line numbers as ranges: ``[1, 2, 3, 7]`` → ``"1-3,7"``."""
    parts: list[str] = []
    start = previous = None
    for line in sorted(set(lines)):
        if previous is not None and line == previous + 1:
            previous = line
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = line
    if start is not None:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(parts)


def expand_lines(text: str) -> set[int]:
    """The inverse of :func:`compress_lines`; raises ValueError on anything else."""
    if not isinstance(text, str):
        raise ValueError(f"line ranges must be text, got {type(text).__name__}")
    lines: set[int] = set()
    if not text:
        return lines
    for part in text.split(","):
        low, sep, high = part.partition("-")
        first = int(low)
        last = int(high) if sep else first
        if first < 0 or last < first:
            raise ValueError(f"bad line range {part!r}")
        lines.update(range(first, last + 1))
    return lines


@lru_cache(maxsize=65536)
def line_set(text: str) -> frozenset[int]:
    """:func:`expand_lines`, kept: the maps of a suite repeat the same ranges (tests running
    the same code), and a run reads each map several times (validation, change facts, unique
    lines, carrying). Raises ValueError like it (an error is not kept)."""
    return frozenset(expand_lines(text))


def stale_files(cmap: CoverageMap, current: Mapping[str, str | None]) -> set[str]:
    """The files of ``cmap`` whose content differs from when it was traced (``current``:
    path → digest now, None for a file that is gone; paths not in ``current`` are taken as
    unchanged — the caller hashes every file any map covers)."""
    return {
        path for path, digest in cmap.digests.items() if path in current and current[path] != digest
    }


def changed_share_label(cmap: CoverageMap | None, changed: set[str]) -> str:
    """How much of a test's covered code changed, bucketed (``?`` when it has no map)."""
    if cmap is None or not cmap.lines:
        return "?"
    share = len(changed & cmap.files()) / len(cmap.lines)
    return "0" if share == 0 else CHANGED_SHARE.label(share)


def union_lines(maps: Iterable[CoverageMap]) -> dict[str, set[int]]:
    """Every line any of ``maps`` covers, per file."""
    covered: dict[str, set[int]] = {}
    for cmap in maps:
        for path, ranges in cmap.lines.items():
            covered.setdefault(path, set()).update(line_set(ranges))
    return covered


def unique_line_counts(maps: Iterable[CoverageMap]) -> dict[str, int]:
    """Per test: how many lines only it covers (its contribution no other test makes)."""
    maps = list(maps)
    counts = {cmap.test_id: 0 for cmap in maps}
    # per file, the tests of each distinct range text: tests running the same lines of a
    # file share one text, and a line is unique only to a text held by one test
    per_file: dict[str, dict[str, list[str]]] = {}
    for cmap in maps:
        for path, ranges in cmap.lines.items():
            per_file.setdefault(path, {}).setdefault(ranges, []).append(cmap.test_id)
    for texts in per_file.values():
        runs: Counter[int] = Counter()
        for text, owners in texts.items():
            for line in line_set(text):
                runs[line] += len(owners)
        for text, owners in texts.items():
            if len(owners) == 1:
                counts[owners[0]] += sum(1 for line in line_set(text) if runs[line] == 1)
    return counts


def coverage_percent(
    covered: Mapping[str, set[int]], statements: Mapping[str, set[int]]
) -> float | None:
    """Covered statements as a percentage of the statements of the files measured (None when
    no statement is known)."""
    total = sum(len(lines) for lines in statements.values())
    if total == 0:
        return None
    hit = sum(len(covered.get(path, set()) & lines) for path, lines in statements.items())
    return 100.0 * hit / total


@dataclass(frozen=True)
class CoverageSummary:
    """What ``--qlearn-cov`` did this run, for the reports."""

    mode: str  # "trace", "pytest-cov" or "off"
    why: str
    tests: int
    traced: int
    new_information: int  # traces whose map differed from the stored one
    percent: float | None
    previous_percent: float | None
    change_source: str  # "git" or "file digests", with the reason git was not used
    changed_files: tuple[str, ...]
    covering_changed: int
    #: The tests covering the most lines no other test covers: (test id, lines), best first.
    unique_lines: tuple[tuple[str, int], ...] = ()
    #: Maps carried across a change of their files (re-numbered) instead of traced again.
    carried: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "why": self.why,
            "tests": self.tests,
            "traced": self.traced,
            "new_information": self.new_information,
            "percent": self.percent,
            "previous_percent": self.previous_percent,
            "change_source": self.change_source,
            "changed_files": list(self.changed_files),
            "covering_changed": self.covering_changed,
            "unique_lines": [{"test_id": t, "lines": n} for t, n in self.unique_lines],
            "carried": self.carried,
        }
