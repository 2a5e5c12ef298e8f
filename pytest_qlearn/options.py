"""pytest options and ini keys of the plugin, and their translation into :class:`Settings`.

Imported on every pytest start where the plugin is installed, enabled or not: it needs only
pytest and :mod:`.names`; the settings (and through them the engine) load when a run is
enabled."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .names import DATABASE_URL_ENV, DEFAULT_ORDER_SCOPE, FALSE_WORDS, ORDER_SCOPES

if TYPE_CHECKING:
    from .settings import Settings

# The ini keys of the hyperparameters (engine.hyperparams.RANGES has their ranges and the
# Hyperparameters dataclass their defaults; tests/test_options_help.py keeps these in step).
HYPER_HELP = {
    "learning_rate": "Q-learning rate α in (0, 1] (default 0.01)",
    "discount_factor": "discount γ in [0, 1] (default 0.95)",
    "exploration_rate": "initial exploration ε in [0, 1] (default 0.2)",
    "exploration_decay": "ε decay per episode in [0.9, 1] (default 0.9)",
    "min_exploration_rate": "ε floor in [0, 0.1] (default 0.0)",
    "update_frequency": (
        "new test results between store syncs: a run pushes its results so far into a shared "
        "store (PostgreSQL) once qlearn_checkpoint_seconds have passed and at least this many "
        "tests ended since the last push; also the learner's batch of Q-updates, 1-100000 "
        "(default 10)"
    ),
}


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("qlearn", "pytest-qlearn: learn the test order across runs")
    group.addoption(
        "--qlearn",
        action="store_true",
        dest="qlearn",
        default=None,
        help="enable pytest-qlearn for this run (ini: qlearn = true)",
    )
    group.addoption(
        "--no-qlearn",
        action="store_false",
        dest="qlearn",
        help="disable pytest-qlearn for this run, even if the ini enables it",
    )
    group.addoption(
        "--qlearn-db",
        metavar="URL",
        default=None,
        help=f"store URL, e.g. sqlite:///path/qlearn.db (env {DATABASE_URL_ENV}, ini qlearn_db; "
        "default: a file under pytest's cache directory)",
    )
    group.addoption(
        "--qlearn-env",
        metavar="NAME",
        default=None,
        help="environment partition, e.g. a CI matrix cell such as py311 (ini qlearn_env)",
    )
    group.addoption(
        "--qlearn-seed",
        metavar="N|last",
        default=None,
        help="seed of all exploration randomness; 'last' reuses the previous run's seed",
    )
    group.addoption(
        "--qlearn-observe",
        action="store_true",
        default=False,
        help="learn and report the order qlearn would use, without reordering",
    )
    group.addoption(
        "--qlearn-strict",
        action="store_true",
        default=False,
        help="make store errors fail the run instead of warning",
    )
    group.addoption(
        "--qlearn-report",
        metavar="PATH",
        nargs="?",
        const="",
        action="append",
        default=None,
        help="print a detailed qlearn report; with =PATH also write it as .json, .md or .html "
        "by the path's extension (repeatable)",
    )
    group.addoption(
        "--qlearn-budget",
        metavar="120s|2.5m|1h|25%",
        default=None,
        help="run only the tests that fit this time budget, picked by the selector agent "
        "(ini qlearn_budget); failed-last-time, new and qlearn_always tests always run",
    )
    group.addoption(
        "--qlearn-cov",
        action="store_true",
        dest="qlearn_cov",
        default=None,
        help="trace per-test coverage (coverage.py), re-tracing only what the coverage-tracer "
        "agent expects to have changed; tests covering changed code rank and run first "
        "(ini qlearn_cov)",
    )
    group.addoption(
        "--qlearn-reruns",
        metavar="N",
        default=None,
        help="rerun a failed test up to N times (0-5), as often as the flaky-hunter agent "
        "learned pays: a test that passes on a rerun is reported flaky and passes; one that "
        "fails every rerun stays failed (ini qlearn_reruns; 0, the default: off)",
    )
    parser.addini(
        "qlearn",
        type="string",  # validated in settings: pytest's bool type fails without naming the key
        default="",
        help="true: enable pytest-qlearn (false)",
    )
    parser.addini("qlearn_db", type="string", default="", help="store URL (see --qlearn-db)")
    parser.addini("qlearn_env", type="string", default="", help="environment partition")
    parser.addini(
        "qlearn_project",
        type="string",
        default="",
        help="project partition (default: git remote name or root directory name)",
    )
    parser.addini(
        "qlearn_order_scope",
        type="string",
        default=DEFAULT_ORDER_SCOPE,
        help=f"fixture locality kept when reordering: {'|'.join(ORDER_SCOPES)} (default "
        f"{DEFAULT_ORDER_SCOPE}: a module or class stays together only where its measured "
        "setup makes splitting it costly; pin 'module' for a non-idempotent setup_module)",
    )
    for suffix, help_text in HYPER_HELP.items():
        parser.addini(f"qlearn_{suffix}", type="string", default="", help=help_text)
    parser.addini(
        "qlearn_agent_hyperparameters",
        type="linelist",
        default=[],
        help="per-agent overrides, lines 'AGENT: learning_rate=0.2 discount_factor=0.9'",
    )
    parser.addini(
        "qlearn_reward_weights",
        type="string",
        default="",
        help="episode reward weights, e.g. 'quality=0.4 time_efficiency=0.3'",
    )
    parser.addini(
        "qlearn_ttl_days", type="string", default="", help="days before unused rows expire (30)"
    )
    parser.addini(
        "qlearn_checkpoint_seconds",
        type="string",
        default="",
        help="a long run saves its results so far every N seconds (locally, and with "
        "PostgreSQL also into the database once qlearn_update_frequency tests ended since "
        "the last push), so a killed run loses nothing it saw (60; 0 = never)",
    )
    parser.addini(
        "qlearn_step_summary",
        type="string",  # validated in settings: pytest's bool type crashes on a bad value
        default="",
        help="true: append the Markdown report to $GITHUB_STEP_SUMMARY when it is set (false)",
    )
    parser.addini(
        "qlearn_budget", type="string", default="", help="time budget (see --qlearn-budget)"
    )
    parser.addini(
        "qlearn_cov",
        type="string",  # validated in settings: pytest's bool type crashes on a bad value
        default="",
        help="true: per-test coverage as with --qlearn-cov (false)",
    )
    parser.addini(
        "qlearn_reruns",
        type="string",  # validated in settings, like the other numbers
        default="",
        help="the most reruns of a failed test (see --qlearn-reruns; 0, the default: off)",
    )
    parser.addini(
        "qlearn_full_run_every",
        type="string",  # validated in settings, like the other numbers
        default="",
        help="with a budget, run everything every N-th episode (0, the default: never)",
    )


def may_be_enabled(config: pytest.Config) -> bool:
    """False when this run certainly leaves the plugin off (no ``--qlearn``, ``qlearn`` in the
    ini unset or a false word): the settings, and the engine behind them, are then never
    imported. Anything else goes through :func:`read_settings`, which also rejects a bad
    ``qlearn`` value."""
    cli = config.getoption("qlearn")
    if cli is not None:
        return bool(cli)
    ini = str(config.getini("qlearn") or "").strip().lower()
    return ini not in ("", *FALSE_WORDS)


def read_settings(config: pytest.Config) -> Settings:
    """Resolve and validate; a bad value is a ``pytest.UsageError`` naming key, value, range."""

    def ini(name: str) -> str | None:
        value = config.getini(name)
        return str(value) if value not in ("", None) else None

    from .engine.hyperparams import ConfigError
    from .settings import RawOptions, resolve

    raw = RawOptions(
        cli_enabled=config.getoption("qlearn"),
        ini_enabled=ini("qlearn"),
        cli_db=config.getoption("qlearn_db"),
        ini_db=ini("qlearn_db"),
        cli_env=config.getoption("qlearn_env"),
        ini_env=ini("qlearn_env"),
        cli_seed=config.getoption("qlearn_seed"),
        observe=bool(config.getoption("qlearn_observe")),
        strict=bool(config.getoption("qlearn_strict")),
        reports=config.getoption("qlearn_report"),
        ini_project=ini("qlearn_project"),
        ini_scope=ini("qlearn_order_scope"),
        ini_hyper={suffix: ini(f"qlearn_{suffix}") for suffix in HYPER_HELP},
        ini_agent_hyper=list(config.getini("qlearn_agent_hyperparameters")),
        ini_weights=ini("qlearn_reward_weights"),
        ini_ttl_days=ini("qlearn_ttl_days"),
        ini_checkpoint_seconds=ini("qlearn_checkpoint_seconds"),
        ini_step_summary=ini("qlearn_step_summary"),
        cli_budget=config.getoption("qlearn_budget"),
        ini_budget=ini("qlearn_budget"),
        ini_full_run_every=ini("qlearn_full_run_every"),
        cli_cov=config.getoption("qlearn_cov"),
        ini_cov=ini("qlearn_cov"),
        cli_reruns=config.getoption("qlearn_reruns"),
        ini_reruns=ini("qlearn_reruns"),
        rootpath=config.rootpath,
    )
    try:
        return resolve(raw)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-qlearn: {exc}") from None
