"""The wheel users install: the licence file and metadata a package index and a compliance
scan read (an SPDX expression, the supported Python versions), and the pytest11 entry point."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_carries_the_licence_an_spdx_expression_and_the_entry_point(
    tmp_path: Path,
) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("pytest_qlearn-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        licence = archive.read(f"{info}/licenses/LICENSE").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert licence.startswith("MIT License") and licence == (ROOT / "LICENSE").read_text()
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    classifiers = metadata.get_all("Classifier")
    assert any(c.startswith("Development Status ::") for c in classifiers)
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert metadata["Requires-Python"] == ">=3.10"
    assert "qlearn = pytest_qlearn.plugin" in entry_points
    assert "qlearn = pytest_qlearn.cli:main" in entry_points
