"""The wheel users install: the licence file and metadata a package index and a compliance
scan read (an SPDX expression, the supported Python versions), and the pytest11 entry point."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(target)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = target.glob("pytest_qlearn-*.whl")
    return built


def test_the_wheel_carries_the_licence_an_spdx_expression_and_the_entry_point(
    wheel: Path,
) -> None:
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


LOADERS = """
import json, sys
import pytest
code = pytest.main(sys.argv[2:])
ours = [m for m in sys.modules if m.split(".")[0] == "pytest_qlearn"]
with open(sys.argv[1], "w") as fh:
    json.dump({
        "code": int(code),
        "loaders": {m: type(getattr(sys.modules[m], "__loader__", None)).__name__ for m in ours},
        "file": sys.modules["pytest_qlearn"].__file__,
    }, fh)
"""


def test_installed_the_plugin_loads_as_plain_modules_not_through_assertion_rewriting(
    wheel: Path, tmp_path: Path
) -> None:
    """pytest marks every module of a pytest11 plugin's distribution for assertion
    rewriting, which compiles each from source and, where byte code is not written
    (PYTHONDONTWRITEBYTECODE, common in CI images), does so in every run: ≈ 0.3 s of CPU.
    Installed from the wheel, only the package's __init__ (which unmarks the rest) goes
    through the rewriting hook. (The editable install of the checkout is not marked at all:
    its distribution lists no modules.)"""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_one.py").write_text("def test_one():\n    assert True\n")
    out = tmp_path / "loaders.json"
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(
        [
            sys.executable,
            "-c",
            LOADERS,
            str(out),
            "-q",
            "-p",
            "no:cov",
            "-p",
            "no:randomly",
            "--qlearn",
        ],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    found = json.loads(out.read_text())
    assert found["code"] == 0
    assert Path(found["file"]).is_relative_to(site)  # the wheel's copy, not the checkout
    loaders = found["loaders"]
    assert loaders["pytest_qlearn"] == "AssertionRewritingHook"
    assert {m for m, name in loaders.items() if name == "AssertionRewritingHook"} == {
        "pytest_qlearn"
    }
    assert loaders["pytest_qlearn.lifecycle"] == "SourceFileLoader"


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout to copy from")
def test_the_sdist_carries_what_its_own_test_suite_reads(tmp_path: Path) -> None:
    # The sdist's tests run the benchmark scripts, read the CI examples and the demo project;
    # without them `pytest` from an unpacked sdist failed with FileNotFoundError.
    # Built from a fresh copy of the checkout's files: setuptools reuses an existing
    # *.egg-info/SOURCES.txt, which would hide a missing MANIFEST.in rule.
    checkout = tmp_path / "checkout"
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, checkout / name)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out), str(checkout)],
        check=True,
        capture_output=True,
        text=True,
    )
    (sdist,) = out.glob("pytest_qlearn-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    shipped_tests = {name for name in names if name.startswith("tests/")}
    in_checkout = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert in_checkout <= shipped_tests
    for needed in (
        "LICENSE",
        "CHANGELOG.md",
        "benchmarks/fault_history.py",
        "benchmarks/replay_scale.py",
        "examples/ci/github-actions-sqlite.yml",
        "examples/ci/gitlab-ci-postgres.yml",
        "examples/demo/pytest.ini",
    ):
        assert needed in names, needed
    assert not any(".pytest_cache" in name or name.endswith((".db", ".pyc")) for name in names)
