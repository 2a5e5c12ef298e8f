"""Resolved plugin settings, validated once, with the precedence CLI > environment > ini >
default. Pure Python (the CLI reuses it); ``options.py`` feeds it from pytest."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .agents import flaky_hunter as fh
from .agents import prioritizer as prio
from .agents.selector import Budget, parse_budget
from .engine.hyperparams import RANGES, ConfigError, Hyperparameters, parse_hyperparameter
from .engine.rewards import DEFAULT_WEIGHTS, parse_weights
from .names import DATABASE_URL_ENV, DEFAULT_ORDER_SCOPE, FALSE_WORDS, ORDER_SCOPES, TRUE_WORDS
from .store.base import DEFAULT_TTL_DAYS
from .store.url import StoreUrl, has_password, parse_store_url, redact

#: A long run saves its results so far this often, so a killed run loses nothing it saw.
DEFAULT_CHECKPOINT_SECONDS = 60.0
DEFAULT_ENVIRONMENT = "default"
MAX_NAME_LENGTH = 200
MAX_SEED = 2**63 - 1
#: Report files ``--qlearn-report=PATH`` can write, by the path's extension.
REPORT_EXTENSIONS = (".json", ".md", ".html")
#: GitHub Actions' job summary file; Markdown is appended when ini qlearn_step_summary is true.
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


@dataclass(frozen=True)
class Settings:
    enabled: bool
    store_url: StoreUrl | None  # None: the default file under pytest's cache directory
    store_url_source: str
    project: str
    environment: str
    seed: int | None  # None: a fresh random seed each run
    seed_last: bool
    observe: bool
    strict: bool
    report_terminal: bool
    report_paths: tuple[Path, ...]
    order_scope: str
    #: The hyperparameters of agents without defaults of their own (ini values applied).
    hyper: Hyperparameters
    agent_hyper: Mapping[str, Hyperparameters] = field(default_factory=dict)
    #: The ini hyperparameters that were set (field name -> value): they apply to every
    #: agent, over its own defaults.
    hyper_changes: Mapping[str, float | int] = field(default_factory=dict)
    reward_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    ttl_days: float = DEFAULT_TTL_DAYS
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    #: Warnings about the configuration itself (e.g. a password in the ini file).
    warnings: tuple[str, ...] = ()
    #: Where the Markdown report is appended ($GITHUB_STEP_SUMMARY), None when not wanted.
    step_summary: Path | None = None
    #: The time budget (``--qlearn-budget``), None: every test runs.
    budget: Budget | None = None
    #: With a budget, every N-th episode runs everything (0: never).
    full_run_every: int = 0
    #: Per-test coverage (``--qlearn-cov``).
    coverage: bool = False
    #: The most reruns the flaky-hunter may give a failure (``--qlearn-reruns``; 0: off).
    reruns: int = 0


@dataclass(frozen=True)
class RawOptions:
    """Option values as pytest hands them over: CLI values (None when not given) and ini
    values (as text, None when not set)."""

    cli_enabled: bool | None = None
    #: ini ``qlearn``: its text (validated by :func:`resolve`; None or empty: not set)
    ini_enabled: bool | str | None = False
    cli_db: str | None = None
    ini_db: str | None = None
    cli_env: str | None = None
    ini_env: str | None = None
    cli_seed: str | None = None
    observe: bool = False
    strict: bool = False
    reports: Sequence[str] | None = None
    ini_project: str | None = None
    ini_scope: str | None = None
    ini_hyper: Mapping[str, str | None] = field(default_factory=dict)
    ini_agent_hyper: Sequence[str] = ()
    ini_weights: str | None = None
    ini_ttl_days: str | None = None
    ini_checkpoint_seconds: str | None = None
    ini_step_summary: str | None = None
    cli_budget: str | None = None
    ini_budget: str | None = None
    ini_full_run_every: str | None = None
    cli_cov: bool | None = None
    ini_cov: str | None = None
    cli_reruns: str | None = None
    ini_reruns: str | None = None
    rootpath: Path = Path()
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


def resolve(raw: RawOptions) -> Settings:
    """Validate every value; the first bad one raises :class:`ConfigError`."""
    ini_enabled = raw.ini_enabled
    if not isinstance(ini_enabled, bool):
        ini_enabled = _flag("qlearn", ini_enabled)
    enabled = ini_enabled if raw.cli_enabled is None else raw.cli_enabled

    store_url: StoreUrl | None = None
    source = "default"
    for key, value in (
        ("--qlearn-db", raw.cli_db),
        (DATABASE_URL_ENV, raw.environ.get(DATABASE_URL_ENV)),
        ("qlearn_db", raw.ini_db),
    ):
        if value is not None and value.strip():
            store_url = parse_store_url(value, key)
            source = key
            break

    warnings: list[str] = []
    if raw.ini_db is not None and has_password(raw.ini_db):
        warnings.append(
            f"qlearn_db in the ini file contains a password ({redact(raw.ini_db.strip())}); "
            f"ini files are usually committed: set {DATABASE_URL_ENV} in the CI secrets "
            "instead, or use ~/.pgpass"
        )

    seed: int | None = None
    seed_last = False
    if raw.cli_seed is not None:
        text = raw.cli_seed.strip()
        if text == "last":
            seed_last = True
        else:
            try:
                seed = int(text)
            except ValueError:
                seed = -1
            if not 0 <= seed <= MAX_SEED:
                raise ConfigError("--qlearn-seed", raw.cli_seed, f"'last' or 0..{MAX_SEED}")

    scope: str = (raw.ini_scope or DEFAULT_ORDER_SCOPE).strip()
    if scope not in ORDER_SCOPES:
        raise ConfigError("qlearn_order_scope", raw.ini_scope, "one of " + ", ".join(ORDER_SCOPES))

    changes: dict[str, float | int] = {}
    for suffix, ini_text in raw.ini_hyper.items():
        if ini_text is not None and ini_text.strip():
            changes[RANGES[suffix][0]] = parse_hyperparameter(f"qlearn_{suffix}", suffix, ini_text)
    hyper = Hyperparameters(**changes)  # type: ignore[arg-type]

    agent_hyper: dict[str, Hyperparameters] = {}
    for line in raw.ini_agent_hyper:
        agent, sep, rest = line.partition(":")
        allowed = "lines 'AGENT: key=value ...' with keys " + ", ".join(RANGES)
        if not sep or not agent.strip():
            raise ConfigError("qlearn_agent_hyperparameters", line, allowed)
        pairs: dict[str, float] = {}
        for part in rest.split():
            key, eq, value = part.partition("=")
            if not eq or key not in RANGES:
                raise ConfigError("qlearn_agent_hyperparameters", line, allowed)
            pairs[key] = value  # type: ignore[assignment]  # validated by overridden()
        name = agent.strip()
        base = agent_hyper.get(name) or agent_defaults(name).changed(changes)
        agent_hyper[name] = base.overridden(**pairs)

    ttl = _ini_number(
        "qlearn_ttl_days",
        raw.ini_ttl_days,
        float(DEFAULT_TTL_DAYS),
        float,
        lambda v: 0 < v <= 3650,
        "a number of days in (0, 3650]",
    )
    checkpoint = _ini_number(
        "qlearn_checkpoint_seconds",
        raw.ini_checkpoint_seconds,
        DEFAULT_CHECKPOINT_SECONDS,
        float,
        lambda v: 0 <= v <= 86400,
        "a number of seconds in [0, 86400] (0 turns checkpoints off)",
    )

    report_terminal = False
    report_paths: list[Path] = []
    for value in raw.reports or ():
        if not value:
            report_terminal = True
            continue
        path = Path(value)
        if path.suffix.lower() not in REPORT_EXTENSIONS:
            raise ConfigError(
                "--qlearn-report", value, "a path ending in " + ", ".join(REPORT_EXTENSIONS)
            )
        report_paths.append(path if path.is_absolute() else raw.rootpath / path)

    step_summary: Path | None = None
    summary_file = raw.environ.get(STEP_SUMMARY_ENV, "").strip()
    if _flag("qlearn_step_summary", raw.ini_step_summary) and summary_file:
        step_summary = Path(summary_file)

    budget: Budget | None = None
    if raw.cli_budget is not None:
        budget = parse_budget("--qlearn-budget", raw.cli_budget)
    elif raw.ini_budget is not None and raw.ini_budget.strip():
        budget = parse_budget("qlearn_budget", raw.ini_budget)

    full_run_every = int(
        _ini_number(
            "qlearn_full_run_every",
            raw.ini_full_run_every,
            0,
            int,
            lambda v: 0 <= v <= 1_000_000,
            "a whole number of episodes 0-1000000 (0: never)",
        )
    )

    reruns_allowed = f"a whole number of reruns 0-{fh.MAX_RERUNS} (0: off)"
    reruns_text: str | None
    if raw.cli_reruns is not None:
        reruns_key, reruns_text = "--qlearn-reruns", raw.cli_reruns
    else:
        reruns_key, reruns_text = "qlearn_reruns", raw.ini_reruns
    reruns = int(
        _ini_number(
            reruns_key,
            reruns_text,
            0,
            int,
            lambda v: 0 <= v <= fh.MAX_RERUNS,
            reruns_allowed,
        )
    )
    if raw.cli_reruns is not None and not raw.cli_reruns.strip():
        raise ConfigError(reruns_key, raw.cli_reruns, reruns_allowed)

    return Settings(
        enabled=enabled,
        store_url=store_url,
        store_url_source=source,
        project=_name("qlearn_project", raw.ini_project) or default_project(raw.rootpath),
        environment=_name("--qlearn-env", raw.cli_env)
        or _name("qlearn_env", raw.ini_env)
        or DEFAULT_ENVIRONMENT,
        seed=seed,
        seed_last=seed_last,
        observe=raw.observe,
        strict=raw.strict,
        report_terminal=report_terminal,
        report_paths=tuple(report_paths),
        order_scope=scope,
        hyper=hyper,
        agent_hyper=agent_hyper,
        hyper_changes=changes,
        reward_weights=parse_weights(raw.ini_weights or ""),
        ttl_days=ttl,
        checkpoint_seconds=checkpoint,
        warnings=tuple(warnings),
        step_summary=step_summary,
        budget=budget,
        full_run_every=full_run_every,
        coverage=bool(raw.cli_cov) or _flag("qlearn_cov", raw.ini_cov),
        reruns=reruns,
    )


def agent_defaults(name: str) -> Hyperparameters:
    """An agent's hyperparameters before any ini value: the prioritizer has its own."""
    if name == fh.NAME:
        return fh.DEFAULT_HYPER
    return prio.DEFAULT_HYPER if name == prio.NAME else Hyperparameters()


def _flag(key: str, value: str | None) -> bool:
    """An ini boolean (false when not set or empty); anything but a truth word is a
    ConfigError naming the key and the allowed words."""
    text = (value or "").strip().lower() or "false"
    if text not in TRUE_WORDS + FALSE_WORDS:
        raise ConfigError(key, value, "true or false (also yes/no, on/off, 1/0)")
    return text in TRUE_WORDS


def _name(key: str, value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > MAX_NAME_LENGTH or any(ch in text for ch in "\n\r\0"):
        raise ConfigError(
            key, value, f"a non-empty single-line name of at most {MAX_NAME_LENGTH} characters"
        )
    return text


def default_project(rootpath: Path) -> str:
    """The repository name from the git remote ``origin`` if there is one, else the root
    directory's name. Reads ``.git/config`` directly: no subprocess on the start-up path."""
    git_config = rootpath / ".git" / "config"
    if git_config.is_file():
        import configparser  # only here: ~1.5 ms of every enabled run's start-up otherwise

        parser = configparser.ConfigParser(strict=False, interpolation=None)
        try:
            parser.read(git_config, encoding="utf-8")
            url = parser.get('remote "origin"', "url", fallback="")
        except (configparser.Error, OSError, UnicodeDecodeError):
            url = ""
        name = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        name = name.removesuffix(".git")
        if name:
            return name[:MAX_NAME_LENGTH]
    return (rootpath.resolve().name or "project")[:MAX_NAME_LENGTH]


def _ini_number(
    key: str,
    text: str | None,
    default: float,
    convert: Callable[[str], float],
    valid: Callable[[float], bool],
    allowed: str,
) -> float:
    """A numeric ini value: the default when unset, else converted and checked; anything
    else is a :class:`ConfigError` naming the key, the value and what is allowed."""
    if text is None or not text.strip():
        return default
    try:
        value = convert(text.strip())
    except ValueError:
        raise ConfigError(key, text, allowed) from None
    if not valid(value):
        raise ConfigError(key, text, allowed)
    return value
