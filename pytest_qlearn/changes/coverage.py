"""Which files changed since the last coverage episode, and which stored maps went stale.

git answers cheaply (the commit recorded with the last coverage run, plus the files that
were uncommitted then and are now); without git, or when that commit is not in this
checkout (a shallow clone), every covered file is hashed and compared instead. Either way
the files git names are hashed too, so a file touched but unchanged is not a change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import git as vcs
from .coverage_map import (
    CoverageMap,
    changed_share_label,
    compress_lines,
    line_set,
    stale_files,
)
from .digests import file_digests
from .line_shift import FileShift, Hunk, analyse, changed_old_lines, hunks_from_texts


@dataclass
class ChangeFacts:
    #: Every covered file's content digest now (None: the file is gone).
    digests: dict[str, str | None] = field(default_factory=dict)
    #: Covered files whose content differs from the last coverage episode's.
    changed: set[str] = field(default_factory=set)
    #: "git" or "file digests"; and why git was not used, when it was not.
    source: str = "file digests"
    note: str = ""
    commit: str | None = None
    dirty: frozenset[str] = frozenset()
    #: For changed files git can tell it of: the lines of the last episode's version that
    #: changed, with that version's digest (maps traced from it can be compared line by line).
    changed_lines: dict[str, tuple[str, set[int]]] = field(default_factory=dict)
    #: For changed files whose edit maps can be carried across (see :mod:`.line_shift`): the
    #: last episode's digest, the digest now, and how the edit moves lines.
    shifts: dict[str, tuple[str, str, FileShift]] = field(default_factory=dict)

    def stale(self, maps: Mapping[str, CoverageMap]) -> dict[str, set[str]]:
        """Per test: its covered files that changed since its map was traced."""
        result = {}
        for test_id, cmap in maps.items():
            files = stale_files(cmap, self.digests)
            if files:
                result[test_id] = files
        return result

    def carry(self, maps: Mapping[str, CoverageMap]) -> dict[str, CoverageMap]:
        """The maps that stay true across this change once re-numbered: every covered file
        that changed since the trace changed only in lines the test did not execute, in an
        edit :attr:`shifts` can carry (from the version the map was traced on). Keyed by
        test id; the carried map keeps the episode of its trace."""
        if not self.shifts:
            return {}
        carried = {}
        for test_id, cmap in maps.items():
            files = stale_files(cmap, self.digests)
            if not files or not files <= self.shifts.keys():
                continue
            lines, digests = dict(cmap.lines), dict(cmap.digests)
            for path in files:
                old, new, shift = self.shifts[path]
                moved = shift.carry(line_set(lines[path])) if digests[path] == old else None
                if moved is None:
                    break
                lines[path], digests[path] = compress_lines(moved), new
            else:
                carried[test_id] = CoverageMap(test_id, lines, digests, cmap.traced_episode)
        return carried

    def covering_changed(self, maps: Mapping[str, CoverageMap]) -> dict[str, str]:
        """The tests whose map covers code changed since the last coverage episode, with
        how much of their covered code that is (the share of their files, bucketed).

        Where git told the changed lines, a test whose map was traced from the last
        episode's version of the file must execute one of them; otherwise (no git, a map
        older than that version, or a change no test executes — module-level code runs at
        import, outside every test) executing the file is enough."""
        if not self.changed:
            return {}
        executed: set[str] = set()  # files whose changed lines some map executes
        for cmap in maps.values():
            for path in self.changed_lines.keys() & cmap.lines.keys() - executed:
                if self._runs_changed_lines(cmap, path):
                    executed.add(path)
        result = {}
        for test_id, cmap in maps.items():
            files = self.changed & cmap.lines.keys()
            if any(
                path not in executed
                or cmap.digests.get(path) != self.changed_lines[path][0]
                or self._runs_changed_lines(cmap, path)
                for path in files
            ):
                result[test_id] = changed_share_label(cmap, self.changed)
        return result

    def _runs_changed_lines(self, cmap: CoverageMap, path: str) -> bool:
        digest, lines = self.changed_lines[path]
        if cmap.digests.get(path) != digest:
            return False
        return not lines.isdisjoint(line_set(cmap.lines[path]))


def detect(
    root: Path,
    maps: Mapping[str, CoverageMap],
    stored_digests: Mapping[str, str],
    last_commit: str | None,
    last_dirty: Collection[str],
) -> ChangeFacts:
    """The change facts of the files any of ``maps`` covers; ``stored_digests`` are the
    digests the last episode recorded (the store's ``file_hashes``)."""
    covered: set[str] = set()
    for cmap in maps.values():
        covered.update(cmap.digests)
    now = vcs.state(root)
    facts = ChangeFacts(commit=now.commit, dirty=now.dirty)
    if not covered:
        return facts
    git = vcs.changed_since(root, last_commit) if last_commit else None
    if git is not None and git.files is not None:
        candidates = git.files | set(last_dirty)
        to_hash = {p for p in covered if p in candidates or p not in stored_digests}
        facts.source = "git"
    else:
        to_hash = covered
        facts.note = git.reason if git is not None else now.reason or "no commit recorded"
    hashed = file_digests((root / p for p in to_hash), root)
    for path in covered:
        if path in to_hash:
            facts.digests[path] = hashed.get(path)
        else:
            facts.digests[path] = stored_digests[path]
    facts.changed = {
        path
        for path, digest in facts.digests.items()
        if path in stored_digests and stored_digests[path] != digest
    }
    if facts.source == "git" and last_commit and facts.changed:
        # line numbers of the last episode's version are those of its commit unless the
        # file had uncommitted changes then
        exact = sorted(p for p in facts.changed if p not in last_dirty)
        hunks = vcs.diff_hunks(root, last_commit, exact) or {}
        facts.changed_lines = {
            p: (stored_digests[p], changed_old_lines(hunks[p])) for p in exact if p in hunks
        }
        facts.shifts = _shifts(root, last_commit, facts, hunks, stored_digests)
    return facts


def _shifts(
    root: Path,
    commit: str,
    facts: ChangeFacts,
    hunks: Mapping[str, list[Hunk]],
    stored_digests: Mapping[str, str],
) -> dict[str, tuple[str, str, FileShift]]:
    """How each changed file's edit moves the maps traced on the last episode's version: the
    old text is the commit's (it must hash to the digest the maps were traced with), the new
    one the working tree's. A file whose edit cannot be carried is left out (its tests are
    traced again)."""
    paths = sorted(p for p in hunks if facts.digests.get(p) is not None)
    old_texts = vcs.old_texts(root, commit, paths)
    shifts = {}
    for path in paths:
        old = old_texts.get(path)
        new_digest = facts.digests[path]
        if old is None or hashlib.sha256(old).hexdigest() != stored_digests[path]:
            continue
        try:
            new = (root / path).read_bytes()
            old_text, new_text = old.decode("utf-8"), new.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if new_digest is None or hashlib.sha256(new).hexdigest() != new_digest:
            continue  # changed again since it was hashed
        found = hunks[path] or hunks_from_texts(old_text, new_text)
        shift = analyse(old_text, new_text, found)
        if shift is not None:
            shifts[path] = (stored_digests[path], new_digest, shift)
    return shifts
