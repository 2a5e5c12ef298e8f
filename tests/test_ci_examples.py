"""The CI examples users copy (examples/ci/): valid YAML, learning that really persists
between CI runs (a cache of .pytest_cache saved also when tests fail, or a team PostgreSQL
reached through a secret), and only options the plugin has."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "ci"
GITHUB = sorted(EXAMPLES.glob("github-actions-*.yml"))
GITLAB = sorted(EXAMPLES.glob("gitlab-ci-*.yml"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def pytest_commands(path: Path) -> list[list[str]]:
    doc = load(path)
    lines: list[str] = []
    if "jobs" in doc:
        for job in doc["jobs"].values():
            lines += [step["run"] for step in job["steps"] if "run" in step]
    else:
        for job in doc.values():
            if isinstance(job, dict):
                lines += job.get("script", [])
    return [shlex.split(line, comments=True) for line in lines if "-m pytest" in line]


def test_there_is_a_sqlite_and_a_postgres_example_for_each_ci() -> None:
    assert [p.name for p in GITHUB] == ["github-actions-postgres.yml", "github-actions-sqlite.yml"]
    assert [p.name for p in GITLAB] == ["gitlab-ci-postgres.yml", "gitlab-ci-sqlite.yml"]


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_github_actions_restores_and_saves_pytest_cache_even_when_tests_fail(path: Path) -> None:
    (job,) = load(path)["jobs"].values()
    steps = job["steps"]
    uses = [step.get("uses", "") for step in steps]
    restore = steps[uses.index("actions/cache/restore@v4")]
    save = steps[uses.index("actions/cache/save@v4")]
    test_step = next(i for i, s in enumerate(steps) if "-m pytest" in s.get("run", ""))
    assert uses.index("actions/cache/restore@v4") < test_step < uses.index("actions/cache/save@v4")
    assert restore["with"]["path"] == save["with"]["path"] == ".pytest_cache"
    assert save["if"] == "always()"  # a red run is saved too
    # a new entry per run (entries are immutable), restored per branch
    assert restore["with"]["key"] == save["with"]["key"]
    assert save["with"]["key"].endswith("${{ github.run_id }}")
    assert "${{ github.ref_name }}-" in restore["with"]["restore-keys"]
    assert "services" not in job  # a job-scoped database forgets everything after the job


def test_github_sqlite_example_starts_a_new_branch_from_the_default_branch() -> None:
    (job,) = load(EXAMPLES / "github-actions-sqlite.yml")["jobs"].values()
    (restore,) = [s for s in job["steps"] if s.get("uses") == "actions/cache/restore@v4"]
    assert "github.event.repository.default_branch" in restore["with"]["restore-keys"]
    assert "QLEARN_DATABASE_URL" not in str(job)


def test_github_postgres_example_takes_the_url_from_a_secret() -> None:
    (job,) = load(EXAMPLES / "github-actions-postgres.yml")["jobs"].values()
    assert job["env"]["QLEARN_DATABASE_URL"] == "${{ secrets.QLEARN_DATABASE_URL }}"


@pytest.mark.parametrize("path", GITLAB, ids=lambda p: p.name)
def test_gitlab_caches_pytest_cache_per_branch_even_when_tests_fail(path: Path) -> None:
    job = load(path)["test"]
    cache = job["cache"]
    assert cache["paths"] == [".pytest_cache/"]
    assert cache["when"] == "always"
    assert "$CI_COMMIT_REF_SLUG" in cache["key"]
    assert "services" not in job


def test_gitlab_sqlite_example_falls_back_to_the_default_branch_and_postgres_to_a_variable() -> (
    None
):
    sqlite = load(EXAMPLES / "gitlab-ci-sqlite.yml")
    assert any("$CI_DEFAULT_BRANCH" in key for key in sqlite["test"]["cache"]["fallback_keys"])
    postgres = load(EXAMPLES / "gitlab-ci-postgres.yml")
    # the URL is a masked CI/CD variable, never written into the file
    assert "QLEARN_DATABASE_URL" not in str(postgres.get("variables", {}))
    assert "QLEARN_DATABASE_URL" in (EXAMPLES / "gitlab-ci-postgres.yml").read_text()


def test_no_example_holds_a_password() -> None:
    for path in GITHUB + GITLAB:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            assert not re.search(r"postgres(ql)?://[^:/\s]+:[^@\s$]+@", line), (path, line)


def test_every_pytest_command_uses_options_the_plugin_has() -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "no:randomly", "-p", "no:benchmark"],
        # not as an xdist worker: pytest-benchmark would warn, and warnings are errors here
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    commands = [c for path in GITHUB + GITLAB for c in pytest_commands(path)]
    assert len(commands) == 4
    for command in commands:
        for arg in command:
            if arg.startswith("--qlearn"):
                assert f"{arg.split('=')[0]}" in helped, arg
