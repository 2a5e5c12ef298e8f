"""Options and ini keys of pytest-qlearn, end to end through ``pytester``.

A bad value must be a ``pytest.UsageError`` (exit code 4, no traceback) whose message names
the key, the value and what is allowed; store URLs follow CLI > environment > ini; and
``qlearn_project`` / ``--qlearn-env`` partition what is learned.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_plugin_e2e import load_report, run_order

# pytest-randomly off; pytest-benchmark and hypothesis are unrelated and slow runs down.
BASE_ARGS = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")
ENV = "QLEARN_DATABASE_URL"

CONFTEST = """
from pathlib import Path

FAIL = Path(__file__).parent / "fail.txt"


def pytest_runtest_call(item):
    if FAIL.exists() and item.name in FAIL.read_text(encoding="utf-8").split():
        raise AssertionError(f"{item.name} is listed in fail.txt")
"""

SUITE = {
    "test_one": """
        def test_o1():
            pass

        def test_o2():
            pass

        def test_o3():
            pass
    """,
    "test_two": """
        import pytest

        @pytest.mark.parametrize("i", [1, 2, 3])
        def test_t(i):
            pass

        def test_last():
            pass
    """,
}
LAST = "test_two.py::test_last"
COLLECTED = [
    "test_one.py::test_o1",
    "test_one.py::test_o2",
    "test_one.py::test_o3",
    "test_two.py::test_t[1]",
    "test_two.py::test_t[2]",
    "test_two.py::test_t[3]",
    LAST,
]


@pytest.fixture(autouse=True)
def _no_store_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


def write_ini(pytester: pytest.Pytester, extra: str = "") -> None:
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nqlearn = true\nqlearn_exploration_rate = 0\n"
        "qlearn_min_exploration_rate = 0\nqlearn_order_scope = test\n" + extra,
    )


def make_project(pytester: pytest.Pytester, extra_ini: str = "", fail: str = "") -> None:
    write_ini(pytester, extra_ini)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(**SUITE)
    (pytester.path / "fail.txt").write_text(fail + "\n", encoding="utf-8")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE_ARGS, *args)


# -- bad values ---------------------------------------------------------------------------
def assert_usage_error(result: pytest.RunResult, *expected: str) -> None:
    """Exit code 4, the message on stderr names every expected piece, no traceback."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    err = result.stderr.str()
    for piece in expected:
        assert piece in err, f"{piece!r} not in stderr:\n{err}"
    assert "Traceback" not in err + result.stdout.str()
    assert "INTERNALERROR" not in err + result.stdout.str()


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("qlearn_learning_rate", "1.5", "(0, 1]"),
        ("qlearn_learning_rate", "0", "(0, 1]"),
        ("qlearn_discount_factor", "-0.1", "[0, 1]"),
        ("qlearn_exploration_rate", "2", "[0, 1]"),
        ("qlearn_exploration_decay", "0.5", "[0.9, 1]"),
        ("qlearn_min_exploration_rate", "0.5", "[0, 0.1]"),
        ("qlearn_update_frequency", "0", "1 to 100000"),
        ("qlearn_update_frequency", "abc", "1 to 100000"),
        ("qlearn_order_scope", "file", "module, class, test"),
        ("qlearn_reward_weights", "bogus=1", "quality"),
        ("qlearn_ttl_days", "0", "(0, 3650]"),
        ("qlearn_checkpoint_seconds", "-1", "[0, 86400]"),
        ("qlearn_checkpoint_seconds", "soon", "[0, 86400]"),
        ("qlearn_cov", "sometimes", "true or false"),
    ],
)
def test_bad_ini_value_is_a_usage_error_naming_key_value_and_range(
    pytester: pytest.Pytester, key: str, value: str, allowed: str
) -> None:
    pytester.makefile(".ini", pytest=f"[pytest]\nqlearn = true\n{key} = {value}\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester)
    assert_usage_error(result, key, value, allowed)
    result.stdout.no_fnmatch_line("*1 passed*")


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_a_bad_qlearn_switch_names_the_key_and_the_allowed_values(
    pytester: pytest.Pytester, value: str
) -> None:
    """Issue 13, case 9: it was pytest's "invalid truth value 'maybe'", without the key."""
    pytester.makefile(".ini", pytest=f"[pytest]\nqlearn = {value}\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester)
    assert_usage_error(result, "qlearn = ", value, "true or false")
    result.stdout.no_fnmatch_line("*1 passed*")


@pytest.mark.parametrize(
    ("line", "enabled"),
    [("qlearn =", False), ("qlearn = ", False), ("qlearn = yes", True), ("qlearn = Off", False)],
)
def test_an_empty_qlearn_switch_is_unset_like_the_other_keys(
    pytester: pytest.Pytester, line: str, enabled: bool
) -> None:
    pytester.makefile(".ini", pytest=f"[pytest]\n{line}\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert ("qlearn: " in result.stdout.str()) is enabled
    # the command line still decides over the ini file
    result = run(pytester, "--qlearn")
    result.assert_outcomes(passed=1)
    assert "qlearn: " in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "key", "value", "allowed"),
    [
        (["--qlearn-seed", "abc"], "--qlearn-seed", "abc", "0.."),
        (["--qlearn-seed=-1"], "--qlearn-seed", "-1", "0.."),
        (["--qlearn-db", "mysql://x"], "--qlearn-db", "mysql://x", "sqlite:///"),
        (["--qlearn-db", "nonsense"], "--qlearn-db", "nonsense", "sqlite:///"),
        (
            ["--qlearn-db", "postgresql://u:secret@h:notaport/db"],
            "--qlearn-db",
            "postgresql://u:***@h:notaport/db",
            "postgresql://",
        ),
        (
            ["--qlearn-db", "postgresql://u:secret@h:5432/db?connect_timeout=-1"],
            "--qlearn-db",
            "postgresql://u:***@h:5432/db?connect_timeout=-1",
            "sqlite:///",
        ),
        (["--qlearn-report=out.txt"], "--qlearn-report", "out.txt", ".json"),
    ],
)
def test_bad_command_line_value_is_a_usage_error(
    pytester: pytest.Pytester, args: list[str], key: str, value: str, allowed: str
) -> None:
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester, "--qlearn", *args)
    assert_usage_error(result, key, value, allowed)
    assert "secret" not in result.stdout.str() + result.stderr.str()
    assert not (pytester.path / "out.txt").exists()


@pytest.mark.parametrize("source", ["env", "ini"])
def test_password_in_a_bad_store_url_is_never_printed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    url = "postgresql://ci:hunter2secret@db.example:99999/qlearn"  # port out of range
    if source == "env":
        monkeypatch.setenv(ENV, url)
        pytester.makefile(".ini", pytest="[pytest]\nqlearn = true\n")
        key = ENV
    else:
        pytester.makefile(".ini", pytest=f"[pytest]\nqlearn = true\nqlearn_db = {url}\n")
        key = "qlearn_db"
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester, "-v")
    assert_usage_error(result, key, "ci:***@db.example:99999")
    assert "hunter2" not in result.stdout.str() + result.stderr.str()


def test_agent_hyperparameters_for_an_unknown_agent_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nqlearn = true\n"
        "qlearn_agent_hyperparameters =\n    nosuchagent: learning_rate=0.2\n",
    )
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester)
    assert_usage_error(result, "qlearn_agent_hyperparameters", "nosuchagent", "prioritizer")


def test_agent_hyperparameters_for_a_known_agent_with_a_bad_value_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makefile(
        ".ini",
        pytest="[pytest]\nqlearn = true\n"
        "qlearn_agent_hyperparameters =\n    prioritizer: learning_rate=7\n",
    )
    pytester.makepyfile("def test_x():\n    pass\n")
    result = run(pytester)
    assert_usage_error(result, "learning_rate", "7", "(0, 1]")


def test_good_values_are_accepted(pytester: pytest.Pytester) -> None:
    make_project(
        pytester,
        "qlearn_learning_rate = 1\nqlearn_discount_factor = 0\n"
        "qlearn_exploration_decay = 0.9\nqlearn_update_frequency = 100000\n"
        "qlearn_reward_weights = quality=0.5, time_efficiency=0\nqlearn_ttl_days = 3650\n"
        "qlearn_agent_hyperparameters =\n    prioritizer: learning_rate=0.5 discount_factor=0.9\n",
    )
    result = run(pytester, "--qlearn-seed", "0", "--qlearn-report", "--qlearn-report=a/b.json")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=7)
    report = load_report(pytester.path / "a" / "b.json")
    assert report["episode_reward"]["components"]["quality"]["weight"] == 0.5
    assert report["episode_reward"]["components"]["time_efficiency"]["weight"] == 0.0


# -- where the store is -------------------------------------------------------------------
def test_store_url_precedence_is_cli_then_environment_then_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(pytester, "qlearn_db = sqlite:///from-ini/q.db\n")
    monkeypatch.setenv(ENV, "sqlite:///from-env/q.db")
    files = {name: pytester.path / name / "q.db" for name in ("from-cli", "from-env", "from-ini")}
    default = pytester.path / ".pytest_cache" / "d" / "qlearn" / "qlearn.db"

    def created() -> set[str]:
        return {name for name, path in files.items() if path.exists()}

    result = run(pytester, "--qlearn-db", "sqlite:///from-cli/q.db")
    assert result.ret == pytest.ExitCode.OK
    assert created() == {"from-cli"}
    assert "store sqlite:///from-cli/q.db" in result.stdout.str()

    result = run(pytester)
    assert created() == {"from-cli", "from-env"}
    assert "store sqlite:///from-env/q.db" in result.stdout.str()

    monkeypatch.delenv(ENV)
    result = run(pytester)
    assert created() == {"from-cli", "from-env", "from-ini"}
    assert "store sqlite:///from-ini/q.db" in result.stdout.str()
    assert not default.exists()


def test_absolute_store_url(pytester: pytest.Pytester, tmp_path: Path) -> None:
    make_project(pytester)
    target = tmp_path / "elsewhere" / "abs.db"
    result = run(pytester, "--qlearn-db", f"sqlite:///{target}", "--qlearn-report=r.json")
    assert result.ret == pytest.ExitCode.OK
    assert target.is_file()
    assert load_report(pytester.path / "r.json")["store"]["url"] == f"sqlite:///{target}"


def test_seed_last_reuses_the_previous_runs_seed(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    assert "seed 987654321," in run(pytester, "--qlearn-seed", "987654321").stdout.str()
    result = run(pytester, "--qlearn-seed", "last", "--qlearn-report=r.json")
    assert "seed 987654321," in result.stdout.str()
    assert load_report(pytester.path / "r.json")["session"]["seed"] == 987654321


# -- partitions ---------------------------------------------------------------------------
def test_environments_do_not_share_what_they_learned(pytester: pytest.Pytester) -> None:
    make_project(pytester, fail="test_last")
    run(pytester, "--qlearn-env", "py311").assert_outcomes(passed=6, failed=1)

    other = run(pytester, "-v", "--qlearn-env", "py312", "--qlearn-report=r.json")
    assert run_order(other) == COLLECTED  # py311's failure does not reorder py312
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 1
    default = run(pytester, "-v", "--qlearn-report=r.json")
    assert run_order(default) == COLLECTED
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 1

    same = run(pytester, "-v", "--qlearn-env", "py311", "--qlearn-report=r.json")
    assert run_order(same)[0] == LAST
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 2

    # ini qlearn_env names the partition too; the command line wins over it
    write_ini(pytester, "qlearn_env = py311\n")
    assert run_order(run(pytester, "-v"))[0] == LAST
    assert run_order(run(pytester, "-v", "--qlearn-env", "py313")) == COLLECTED


def test_projects_do_not_share_what_they_learned(pytester: pytest.Pytester) -> None:
    make_project(pytester, "qlearn_project = service-a\n", fail="test_last")
    run(pytester).assert_outcomes(passed=6, failed=1)

    write_ini(pytester, "qlearn_project = service-b\n")
    other = run(pytester, "-v", "--qlearn-report=r.json")
    assert run_order(other) == COLLECTED
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 1

    write_ini(pytester, "qlearn_project = service-a\n")
    same = run(pytester, "-v", "--qlearn-report=r.json")
    assert run_order(same)[0] == LAST
    assert load_report(pytester.path / "r.json")["session"]["episode"] == 2
