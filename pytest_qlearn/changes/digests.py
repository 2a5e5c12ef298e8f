"""Which test files changed since the last episode: content digests, compared with the ones
the store kept from the previous run of the project/environment.

Under a time budget the tests of a changed (or newly added) test file always run — the
safety contract: a test someone just edited is never skipped to save time. Pure (no pytest),
so every pytest-xdist worker computes the same answer from the same checkout and snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path


def file_digests(paths: Iterable[Path], root: Path) -> dict[str, str]:
    """SHA-256 of each readable file, keyed by its path relative to ``root`` (POSIX form,
    so a store shared by Linux and Windows runners agrees); unreadable files are left out."""
    digests: dict[str, str] = {}
    for path in sorted(set(paths)):
        try:
            digests[relative_key(path, root)] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            continue
    return digests


def relative_key(path: Path, root: Path) -> str:
    """How a file is named in the store: relative to ``root`` in POSIX form, like the path
    part of a pytest node id (absolute when outside the root)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def changed_files(current: Mapping[str, str], stored: Mapping[str, str]) -> set[str]:
    """The files whose content differs from what the store kept, or that it never saw.

    With nothing stored (the first run, or a store from before digests were kept) no change
    is known, so none is reported: otherwise every test would count as changed once.
    """
    if not stored:
        return set()
    return {path for path, digest in current.items() if stored.get(path) != digest}
