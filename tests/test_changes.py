"""Which test files changed since the last episode (content digests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pytest_qlearn.changes.digests import changed_files, file_digests, relative_key


def test_digests_are_sha256_keyed_like_node_id_paths(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    a = tmp_path / "tests" / "test_a.py"
    a.write_bytes(b"def test_x():\n    pass\n")
    missing = tmp_path / "tests" / "test_gone.py"
    outside = tmp_path.parent / f"{tmp_path.name}-outside.py"
    outside.write_text("x = 1\n", encoding="utf-8")
    digests = file_digests([a, a, missing, outside], tmp_path)
    assert digests == {
        "tests/test_a.py": hashlib.sha256(a.read_bytes()).hexdigest(),
        outside.as_posix(): hashlib.sha256(b"x = 1\n").hexdigest(),
    }
    assert relative_key(a, tmp_path) == "tests/test_a.py"


def test_changed_and_new_files_are_reported_unchanged_and_removed_ones_are_not() -> None:
    stored = {"a.py": "1", "b.py": "2", "gone.py": "3"}
    current = {"a.py": "1", "b.py": "22", "new.py": "4"}
    assert changed_files(current, stored) == {"b.py", "new.py"}


def test_nothing_counts_as_changed_when_nothing_was_stored() -> None:
    assert changed_files({"a.py": "1"}, {}) == set()
