"""What git knows about the checkout: the commit now, and which files changed since a commit.

Used by ``--qlearn-cov`` to learn which files changed since the last recorded episode without
hashing every file of the project. Every failure (git missing, not a checkout, a shallow
clone that lacks the old commit) is an answer with a reason, never an exception: the caller
then falls back to comparing file digests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

from .line_shift import Hunk, changed_old_lines, parse_hunks

#: git must answer within this (seconds); a slow network filesystem must not hang a run.
GIT_TIMEOUT = 10.0


class GitChanges(NamedTuple):
    """``files``: paths relative to the root (POSIX) that differ from ``since`` in the
    working tree (committed, staged, unstaged, untracked, deleted); None when git cannot tell,
    and ``reason`` says why."""

    files: frozenset[str] | None
    reason: str = ""


class GitState(NamedTuple):
    """The commit checked out (None outside git) and the files with uncommitted changes."""

    commit: str | None
    dirty: frozenset[str]
    reason: str = ""


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    exe = shutil.which("git")
    if exe is None:
        return None
    try:
        return subprocess.run(
            [exe, *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env=_quiet_env(),
        )
    except (OSError, subprocess.SubprocessError):
        return None


def _quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_OPTIONAL_LOCKS"] = "0"  # never take the index lock: a user's git may be running
    env.pop("GIT_DIR", None)  # run in the checkout the tests come from
    env.pop("GIT_WORK_TREE", None)
    return env


def _paths(output: str) -> set[str]:
    return {path for path in output.split("\0") if path}


def state(root: Path) -> GitState:
    """The commit at ``HEAD`` (a detached HEAD is fine) and the uncommitted files under
    ``root``; commit None with the reason when ``root`` is not in a git checkout."""
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    if head is None:
        return GitState(None, frozenset(), "git is not installed")
    if head.returncode != 0:
        inside = _git(root, "rev-parse", "--is-inside-work-tree")
        if inside is None or inside.returncode != 0:
            return GitState(None, frozenset(), "not a git checkout")
        return GitState(None, frozenset(), "the git checkout has no commit yet")
    dirty = _dirty(root)
    if dirty is None:
        return GitState(None, frozenset(), "git status failed")
    return GitState(head.stdout.strip(), frozenset(dirty))


def _dirty(root: Path) -> set[str] | None:
    """Files under ``root`` that differ from HEAD: modified, staged, deleted, untracked."""
    changed = _git(root, "diff", "--name-only", "-z", "--relative", "HEAD", "--")
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z")
    if changed is None or untracked is None or changed.returncode or untracked.returncode:
        return None
    return _paths(changed.stdout) | _paths(untracked.stdout)


def changed_since(root: Path, commit: str | None) -> GitChanges:
    """Files under ``root`` whose content may differ from ``commit``: what changed in the
    commits since, plus uncommitted and untracked files."""
    if not commit:
        return GitChanges(None, "no commit is recorded for the last episode")
    now = state(root)
    if now.commit is None:
        return GitChanges(None, now.reason)
    known = _git(root, "cat-file", "-e", f"{commit}^{{commit}}")
    if known is None or known.returncode != 0:
        shallow = _git(root, "rev-parse", "--is-shallow-repository")
        why = (
            "this is a shallow clone"
            if shallow is not None and shallow.stdout.strip() == "true"
            else "it is not in this checkout"
        )
        return GitChanges(None, f"the last episode's commit {commit[:12]} is unknown ({why})")
    if now.commit == commit:
        return GitChanges(frozenset(now.dirty))
    diff = _git(root, "diff", "--name-only", "-z", "--relative", commit, "HEAD", "--")
    if diff is None or diff.returncode != 0:
        return GitChanges(None, "git diff failed")
    return GitChanges(frozenset(_paths(diff.stdout) | now.dirty))


def diff_hunks(root: Path, commit: str, paths: list[str]) -> dict[str, list[Hunk]] | None:
    """For each of ``paths`` that differs from ``commit`` in the working tree, the hunks of
    ``git diff -U0`` (see :func:`line_shift.parse_hunks`); a file new since the commit is
    absent. None when git cannot tell."""
    if not paths:
        return {}
    diff = _git(
        root,
        *("-c", "core.quotepath=off", "diff", "-U0", "--no-color", "--no-ext-diff"),
        *("--no-renames", "--relative", commit, "--", *paths),
    )
    if diff is None or diff.returncode != 0:
        return None
    return parse_hunks(diff.stdout)


def changed_lines(root: Path, commit: str, paths: list[str]) -> dict[str, set[int]] | None:
    """For each of ``paths`` that differs from ``commit`` in the working tree: the lines *of
    its version at that commit* that were changed or removed, and for a pure insertion the
    lines around it. A file new since the commit is absent (it had no lines). None when git
    cannot tell."""
    hunks = diff_hunks(root, commit, paths)
    if hunks is None:
        return None
    return {path: changed_old_lines(found) for path, found in hunks.items()}


def old_texts(root: Path, commit: str, paths: list[str]) -> dict[str, bytes]:
    """The content of each of ``paths`` (relative to ``root``) at ``commit``, read with one
    ``git cat-file --batch``; a path git does not have there is left out."""
    exe = shutil.which("git")
    if exe is None or not paths:
        return {}
    request = "".join(f"{commit}:./{path}\n" for path in paths).encode()
    try:
        proc = subprocess.run(
            [exe, "cat-file", "--batch"],
            cwd=root,
            input=request,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
            env=_quiet_env(),
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if proc.returncode != 0:
        return {}
    out, position, result = proc.stdout, 0, {}
    for path in paths:
        end = out.find(b"\n", position)
        if end < 0:
            break
        header = out[position:end].split()
        position = end + 1
        if len(header) != 3 or header[1] != b"blob":
            continue  # "<name> missing", or not a file
        size = int(header[2])
        result[path] = out[position : position + size]
        position += size + 1  # the content ends with a newline of the batch format
    return result
