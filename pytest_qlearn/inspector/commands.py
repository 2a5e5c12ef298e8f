"""The inspector's subcommands: argument parsers (with examples in ``--help``), the store
options shared with the plugin, and rendering of :mod:`.data`'s dictionaries as ``rich``
tables or JSON. Every expected failure is an :class:`InspectorError` (one line, exit 1) or an
:class:`InspectorUsageError` (bad command line, exit 2); :mod:`pytest_qlearn.cli` prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich import box
from rich.console import Console
from rich.table import Table

from ..agents.flaky_hunter import NAME as FLAKY_HUNTER
from ..agents.prioritizer import NAME as PRIORITIZER
from ..engine.durations import DURATION_FORMS, parse_duration
from ..engine.hyperparams import RANGES, ConfigError, parse_changes
from ..names import DATABASE_URL_ENV
from ..reports import text as report_text
from ..settings import DEFAULT_ENVIRONMENT, MAX_NAME_LENGTH, default_project
from ..store import Store, StoreError, open_store
from ..store.base import DEFAULT_TTL_DAYS, Q_ORDERS, Partition
from ..store.url import SQLITE_SCHEME, StoreUrl, parse_store_url
from . import data, junit_import
from .data import InspectorError
from .migrate import copy_project

#: The plugin's default store, relative to the directory the command runs in.
DEFAULT_DB = Path(".pytest_cache") / "d" / "qlearn" / "qlearn.db"
DEFAULT_LIMIT = 20
DEFAULT_TOP = 10
DEFAULT_TRAJECTORIES = 10_000


class InspectorUsageError(InspectorError):
    """A bad command line found after parsing (e.g. options that need each other)."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


Handler = Callable[[argparse.Namespace], int]


# -- argument types ----------------------------------------------------------------------------
def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def since(text: str) -> float | None:
    """A duration (``30m``, ``24h``, ``7d``, ``2w``: seconds before now, the grammar of
    :mod:`..engine.durations`, as ``--qlearn-budget``) or ``all``."""
    if text.strip().lower() == "all":
        return None
    seconds = parse_duration(text)
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not {DURATION_FORMS} or 'all'")
    return seconds


def ttl_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 3650:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days in (0, 3650]")
    return value


def name(text: str) -> str:
    value = text.strip()
    if not value or len(value) > MAX_NAME_LENGTH or any(ch in value for ch in "\n\r\0"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a non-empty single-line name of at most {MAX_NAME_LENGTH} characters"
        )
    return value


# -- the store ---------------------------------------------------------------------------------
def _store_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("store (as for the plugin)")
    group.add_argument(
        "--db",
        metavar="URL",
        help=(
            f"store URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB (default: "
            f"${DATABASE_URL_ENV}, else sqlite:///{DEFAULT_DB.as_posix()} under the current "
            "directory or the nearest one above it that has it)"
        ),
    )
    group.add_argument(
        "--project",
        type=name,
        metavar="NAME",
        help="project (default: the git remote's repository name, else the directory's name)",
    )
    group.add_argument(
        "--env",
        type=name,
        metavar="NAME",
        help=f"environment, as --qlearn-env (default: {DEFAULT_ENVIRONMENT!r})",
    )
    return common


def _project_root() -> Path:
    """The nearest directory, from the current one up, whose default store exists (pytest
    keeps it under its rootdir, so a shell in ``tests/`` finds the project's); the current
    directory when none has one."""
    here = Path.cwd()
    for directory in (here, *here.parents):
        if (directory / DEFAULT_DB).is_file():
            return directory
    return here


def _store_url(db: str | None, prog: str, key: str = "--db") -> StoreUrl:
    text, source = db, key
    if text is None or not text.strip():
        text, source = os.environ.get(DATABASE_URL_ENV), DATABASE_URL_ENV
    if text is None or not text.strip():
        root = _project_root()
        if root == Path.cwd():
            return StoreUrl(SQLITE_SCHEME, str(DEFAULT_DB), f"sqlite:///{DEFAULT_DB.as_posix()}")
        found = root / DEFAULT_DB
        return StoreUrl(SQLITE_SCHEME, str(found), f"sqlite:///{found.as_posix()}")
    try:
        return parse_store_url(text, source)
    except ConfigError as exc:
        raise InspectorUsageError(prog, str(exc)) from None


def _check_sqlite_store(url: StoreUrl) -> None:
    """An inspector never creates a store, nor lets the store move a foreign file aside."""
    path = Path(url.path)
    if not path.is_file():
        raise InspectorError(
            f"no qlearn store at {url.display}: the file does not exist (run pytest --qlearn "
            "first, or name the store with --db)"
        )
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise InspectorError(f"{url.display} is not a pytest-qlearn store ({exc})") from None
    if "qlearn_schema" not in tables:
        raise InspectorError(f"{url.display} is not a pytest-qlearn store")


@contextlib.contextmanager
def opened(url: StoreUrl, *, must_exist: bool = True) -> Iterator[Store]:
    if must_exist and url.scheme == SQLITE_SCHEME:
        _check_sqlite_store(url)
    store = open_store(url, on_warning=lambda message: print(f"qlearn: {message}", file=sys.stderr))
    try:
        store.open()
    except StoreError as exc:
        raise InspectorError(str(exc)) from None
    try:
        yield store
    finally:
        store.close()


def _partition(args: argparse.Namespace, environment: str | None = None) -> Partition:
    return Partition(
        args.project or default_project(_project_root()),
        environment or args.env or DEFAULT_ENVIRONMENT,
    )


def _guarded(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except StoreError as exc:
            raise InspectorError(str(exc)) from None
        except sqlite3.Error as exc:  # the few SQLite maintenance calls that do not wrap them
            raise InspectorError(f"the qlearn store failed: {exc}") from None

    return run


# -- output ------------------------------------------------------------------------------------
def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        # piped: never squeeze a table into 80 columns, unless COLUMNS asks for a width
        console = Console(width=200, highlight=False)
    return console


def _print_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _table(title: str, caption: str | None = None) -> Table:
    return Table(
        title=title,
        caption=caption,
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )


def utc(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def num(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _where(doc: dict[str, Any]) -> str:
    return f"project {doc['project']}, environment {doc['environment']}; {doc['store']}"


def _state(row: dict[str, Any]) -> str:
    return str(row["state_text"] or row["state"])


# -- registration ------------------------------------------------------------------------------
def register(commands: Any) -> None:
    """Add the inspector's subcommands to the ``qlearn`` parser's subparsers."""
    common = _store_options()

    def add(name: str, help: str, description: str, examples: str, handler: Handler) -> Any:
        p = commands.add_parser(
            name,
            help=help,
            description=description,
            epilog="examples:\n" + examples,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=_guarded(handler))
        return p

    def json_flag(p: Any) -> None:
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add(
        "show-qvalues",
        "an agent's Q-values",
        "List an agent's stored Q-values: state, action, Q, visits, last update.",
        "  qlearn show-qvalues prioritizer\n"
        "  qlearn show-qvalues prioritizer --limit 50 --order visits\n"
        "  qlearn show-qvalues prioritizer --env py3.12 --json\n",
        _show_qvalues,
    )
    p.add_argument("agent", metavar="AGENT")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N entries (default: {DEFAULT_LIMIT})",
    )
    p.add_argument("--all", action="store_true", help="show every entry (overrides --limit)")
    p.add_argument(
        "--order",
        choices=Q_ORDERS,
        default="q",
        help="q: highest first (default), -q: lowest first, visits: most visited, key: by state",
    )
    json_flag(p)

    p = add(
        "progress",
        "an agent's learning curve over the recent episodes",
        "Show the episodes (pytest sessions) of a project/environment: APFD of the order used "
        "vs. collection order, episode reward, ε, Q-table size, and the agent's own steps.",
        "  qlearn progress prioritizer\n"
        "  qlearn progress prioritizer --since 24h\n"
        "  qlearn progress prioritizer --since 7d --json\n",
        _progress,
    )
    p.add_argument("agent", metavar="AGENT")
    p.add_argument(
        "--since",
        type=since,
        default=None,
        metavar="DURATION",
        help="only episodes started in the last DURATION: 90s, 30m, 24h, 7d, 2w, all "
        "(default: all)",
    )
    json_flag(p)

    p = add(
        "top-actions",
        "which actions an agent prefers, and its most practised decisions",
        "Per action: Q entries, states where it is the greedy choice (ties go to the lower "
        "action number), visits and Q; then the agent's N most visited greedy decisions with "
        "their margin over the next best action.",
        "  qlearn top-actions prioritizer\n  qlearn top-actions prioritizer --top 5 --json\n",
        _top_actions,
    )
    p.add_argument("agent", metavar="AGENT")
    p.add_argument(
        "--top",
        type=positive_int,
        default=DEFAULT_TOP,
        metavar="N",
        help=f"list the N most visited decisions (default: {DEFAULT_TOP})",
    )
    json_flag(p)

    p = add(
        "patterns",
        "an agent's learned patterns: the flaky-hunter's failure signatures",
        "List the patterns an agent keeps in the store. For the flaky-hunter (the default): "
        "each failure signature (exception type, normalised message, location) with how often "
        "it was seen failing, how often as a confirmed flake, the reruns tried, those that "
        "passed (effectiveness) and the agent's mean reward on it.",
        "  qlearn patterns\n  qlearn patterns flaky-hunter --limit 20\n"
        "  qlearn patterns prioritizer --json\n",
        _patterns,
    )
    p.add_argument("agent", metavar="AGENT", nargs="?", default="flaky-hunter")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"show at most N patterns, most seen first (default: {DEFAULT_LIMIT})",
    )
    json_flag(p)

    p = add(
        "export",
        "write everything an agent learned to a JSON file",
        "Write one JSON document: summary, agent state, every Q-value, every session with its "
        "reward components, the newest trajectory steps and the agent's patterns.",
        "  qlearn export prioritizer -o prioritizer.json\n"
        "  qlearn export prioritizer -o - --trajectories 100 | jq .summary\n",
        _export,
    )
    p.add_argument("agent", metavar="AGENT")
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the JSON file ('-': stdout)"
    )
    p.add_argument(
        "--trajectories",
        type=positive_int,
        default=DEFAULT_TRAJECTORIES,
        metavar="N",
        help=f"at most the N newest trajectory steps (default: {DEFAULT_TRAJECTORIES})",
    )

    p = add(
        "fleet-status",
        "every agent of the project: episodes, ε, Q-table size, mean step reward, last active",
        "One row per agent and environment of the project (only --env's when given).",
        "  qlearn fleet-status\n"
        "  qlearn fleet-status --project shop --db postgresql://ci@db:5432/qlearn\n"
        "  qlearn fleet-status --env py3.12 --json\n",
        _fleet_status,
    )
    json_flag(p)

    p = add(
        "compare",
        "two agents, or one agent in two environments, side by side",
        "Compare two agents' episodes, ε, rewards and Q-tables, and how far their Q-values "
        "and greedy choices agree on the states both have seen. AGENT@ENV picks another "
        "environment than --env.",
        "  qlearn compare prioritizer prioritizer@py3.12\n"
        "  qlearn compare prioritizer@py3.11 prioritizer@py3.12 --json\n",
        _compare,
    )
    p.add_argument("first", metavar="AGENT[@ENV]")
    p.add_argument("second", metavar="AGENT[@ENV]")
    json_flag(p)

    p = add(
        "cleanup",
        "delete rows of the project unused for a number of days",
        "TTL cleanup of the project's Q-values, patterns and test histories in every "
        "environment, and trajectories of old sessions (sessions and rewards are kept). The "
        "plugin also runs it automatically, at most once a day per project.",
        "  qlearn cleanup\n  qlearn cleanup --ttl-days 7 --json\n",
        _cleanup,
    )
    p.add_argument(
        "--ttl-days",
        type=ttl_days,
        default=DEFAULT_TTL_DAYS,
        metavar="DAYS",
        help=f"rows unused for DAYS expire (default: {DEFAULT_TTL_DAYS:g})",
    )
    json_flag(p)

    p = add(
        "migrate",
        "apply schema migrations; or copy a project's learning between stores",
        "Without --from/--to: open the store (--db), applying pending schema migrations, and "
        "print its schema version. With --from URL --to URL: copy every environment of the "
        "project (only --env's when given) into empty partitions of the target store, "
        "preserving Q-values, visit counts, histories, sessions, trajectories, rewards, "
        "patterns and agent counters exactly, and verify the copy.",
        "  qlearn migrate\n"
        "  qlearn migrate --db postgresql://ci@db:5432/qlearn\n"
        "  qlearn migrate --from sqlite:///.pytest_cache/d/qlearn/qlearn.db \\\n"
        "      --to postgresql://ci@db:5432/qlearn --project shop\n",
        _migrate,
    )
    p.add_argument("--from", dest="source", metavar="URL", help="copy from this store")
    p.add_argument("--to", dest="target", metavar="URL", help="copy into this store")
    p.add_argument(
        "--ttl-days",
        type=ttl_days,
        default=DEFAULT_TTL_DAYS,
        metavar="DAYS",
        help=f"expiry of the copied rows (default: {DEFAULT_TTL_DAYS:g})",
    )
    json_flag(p)

    p = add(
        "import-junit",
        "warm-start the learning from CI history in JUnit XML files",
        "Learn from existing JUnit XML reports, one file per run, oldest first (by the "
        "<testsuite> timestamp, else the file's modification time), through the same learning "
        "code as the plugin, so the first run with pytest-qlearn already orders well. Test ids "
        "are rebuilt as pytest node ids from classname and name (the module is the longest "
        "dotted prefix that is a .py file under --root, and the default project is --root's). "
        "Importing a file twice changes nothing.",
        "  qlearn import-junit reports/*.xml\n"
        "  qlearn import-junit --root . --env py3.12 history/run-*.xml --json\n",
        _import_junit,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="JUnit XML files, one per run")
    p.add_argument(
        "--root",
        type=Path,
        default=Path(),
        metavar="DIR",
        help="the project's root directory, where test modules are looked up (default: .)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter as in the project's ini file, without the qlearn_ prefix, e.g. "
        "exploration_rate=0.05 (repeatable; keys: " + ", ".join(RANGES) + ")",
    )
    json_flag(p)


# -- handlers ----------------------------------------------------------------------------------
def _show_qvalues(args: argparse.Namespace) -> int:
    partition = _partition(args)
    with opened(_store_url(args.db, "qlearn show-qvalues")) as store:
        doc = data.show_qvalues(
            store, partition, args.agent, None if args.all else args.limit, args.order
        )
    if args.json:
        _print_json(doc)
        return 0
    rows = doc["q_values"]
    table = _table(
        f"Q-values of {doc['agent']} ({len(rows)} of {doc['total']}, order {doc['order']})",
        _where(doc),
    )
    for column in ("state", "action", "Q", "visits", "updated (UTC)"):
        table.add_column(column, justify="right" if column in ("Q", "visits") else "left")
    for r in rows:
        table.add_row(
            _state(r), r["action_label"], num(r["q"]), str(r["visits"]), utc(r["updated_at"])
        )
    _console().print(table)
    return 0


def _progress(args: argparse.Namespace) -> int:
    partition = _partition(args)
    start = None if args.since is None else time.time() - args.since
    with opened(_store_url(args.db, "qlearn progress")) as store:
        doc = data.progress(store, partition, args.agent, start)
    if args.json:
        _print_json(doc)
        return 0
    s = doc["summary"]
    out = _console()
    if not doc["episodes"]:
        out.print(f"no episodes since {utc(start)} UTC ({_where(doc)})")
        return 0
    # "episodes" counts every run listed; a partial one does not advance the schedule
    runs, partial = s["episodes"], s["partial_episodes"]
    listed = (
        f"{runs} runs ({runs - partial} episodes, {partial} partial)"
        if partial
        else f"{runs} episodes"
    )
    caption = (
        f"{listed}, {s['tests']} tests, {s['failures']} failures; "
        f"mean APFD {num(s['mean_apfd'])} (collection order {num(s['mean_collection_apfd'])}), "
        f"first half {num(s['first_half_apfd'])} → second half {num(s['second_half_apfd'])}; "
        f"mean episode reward {num(s['mean_episode_reward'])}; "
        + (
            ""  # another agent than the one whose ε the sessions keep: fleet-status has its ε
            if s["first_epsilon"] is None
            else f"ε {num(s['first_epsilon'])} → {num(s['last_epsilon'])}; "
        )
        + f"{_first_failure_caption(s)}{_where(doc)}"
    )
    table = _table(f"Learning progress of {doc['agent']}", caption)
    for column in (
        "episode",
        "started (UTC)",
        "tests",
        "failed",
        "APFD",
        "collection",
        "1st failure saved",
        "reward",
        "ε",
        "Q-table",
        "steps",
        "explored",
        "mean step reward",
    ):
        table.add_column(column, justify="left" if column == "started (UTC)" else "right")
    for e in doc["episodes"]:
        table.add_row(
            # a narrowed or stopped-early run does not advance the episode schedule
            f"{e['episode']} (partial)" if e["partial"] else str(e["episode"]),
            utc(e["started_at"]),
            str(e["tests"]),
            str(e["failures"]),
            num(e["apfd"]),
            num(e["collection_apfd"]),
            # "+1.25 s, +3 tests", as the reports say; "—" without the figures
            "—" if e["first_failure_saved"] is None else report_text.saved(e),
            num(e["reward"], 2),
            num(e["epsilon"]),
            "—" if e["q_table_size"] is None else str(e["q_table_size"]),
            str(e["agent_steps"]),
            str(e["agent_explored"]),
            # per decision, as the terminal and fleet-status say (the JSON has the sum)
            num(e["agent_reward"] / e["agent_steps"] if e["agent_steps"] else None),
        )
    out.print(table)
    return 0


def _first_failure_caption(summary: dict[str, Any]) -> str:
    """The progress caption's part on the first failure saved (nothing when no run has the
    figures and none lacks them)."""
    runs, older = summary["first_failure_runs"], summary["first_failure_runs_without_figures"]
    if not runs and not older:
        return ""
    text = "first failure saved: "
    if runs:
        text += (
            f"mean {report_text.signed_seconds(summary['mean_first_failure_saved_seconds'])}, "
            f"{summary['mean_first_failure_saved_tests']:+.1f} tests over {runs} "
            f"run{'' if runs == 1 else 's'}"
        )
    else:
        text += "no figures"
    if older:
        text += f" ({older} older run{'' if older == 1 else 's'} without the figures)"
    return text + "; "


def _top_actions(args: argparse.Namespace) -> int:
    partition = _partition(args)
    with opened(_store_url(args.db, "qlearn top-actions")) as store:
        doc = data.top_actions(store, partition, args.agent, args.top)
    if args.json:
        _print_json(doc)
        return 0
    out = _console()
    table = _table(f"Actions of {doc['agent']} over {doc['states']} states", _where(doc))
    for column in ("action", "greedy in", "entries", "visits", "visit share", "mean Q", "max Q"):
        table.add_column(column, justify="left" if column == "action" else "right")
    for a in doc["actions"]:
        table.add_row(
            a["action_label"],
            str(a["greedy_states"]),
            str(a["entries"]),
            str(a["visits"]),
            f"{a['visit_share']:.1%}",
            num(a["q_mean"]),
            num(a["q_max"]),
        )
    out.print(table)
    if doc["agent"] == PRIORITIZER:
        out.print(
            "The prioritizer's actions are priority tiers: a state's greedy tier is the one its "
            "failure estimate earns the most in (last for a test unlikely to fail, first for "
            "one likely to); the run order sorts by evidence (failed last run, reaches changed "
            "code) first and by that estimate within it."
        )
    decisions = _table(f"Top {len(doc['top'])} decisions by visits")
    for column in ("state", "best action", "Q", "visits", "margin"):
        decisions.add_column(
            column, justify="left" if column in ("state", "best action") else "right"
        )
    for d in doc["top"]:
        decisions.add_row(
            _state(d), d["action_label"], num(d["q"]), str(d["visits"]), num(d["margin"])
        )
    out.print(decisions)
    return 0


def _patterns(args: argparse.Namespace) -> int:
    partition = _partition(args)
    with opened(_store_url(args.db, "qlearn patterns")) as store:
        rows = [p for p in store.patterns(partition) if p.agent == args.agent]
        where = store.display_url
    rows.sort(key=lambda p: (-p.occurrences, p.pattern))
    rows = rows[: args.limit]
    doc = {
        "project": partition.project,
        "environment": partition.environment,
        "agent": args.agent,
        "store": where,
        "patterns": [
            {
                **p._asdict(),
                "effectiveness": p.rerun_passes / p.reruns if p.reruns else None,
                "mean_reward": p.reward_sum / p.occurrences if p.occurrences else None,
            }
            for p in rows
        ],
    }
    if args.json:
        _print_json(doc)
        return 0
    table = _table(f"Patterns of {args.agent}: {len(rows)}", _where(doc))
    # a pattern's hits are confirmed flakes for the flaky-hunter, failures for the other
    # agents (the prioritizer's shared states), which rerun nothing
    reruns = args.agent == FLAKY_HUNTER
    columns = (
        ("pattern", "seen", "flaky", "reruns", "passed", "effectiveness", "mean reward")
        if reruns
        else ("pattern", "seen", "failed", "failure rate")
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "pattern" else "right")
    for p in doc["patterns"]:
        seen = [p["description"] or p["pattern"], str(p["occurrences"]), str(p["hits"])]
        if reruns:
            table.add_row(
                *seen,
                str(p["reruns"]),
                str(p["rerun_passes"]),
                "n/a" if p["effectiveness"] is None else f"{p['effectiveness']:.0%}",
                num(p["mean_reward"]),
            )
        else:
            rate = p["hits"] / p["occurrences"] if p["occurrences"] else None
            table.add_row(*seen, "n/a" if rate is None else f"{rate:.1%}")
    _console().print(table)
    return 0


def _export(args: argparse.Namespace) -> int:
    partition = _partition(args)
    with opened(_store_url(args.db, "qlearn export")) as store:
        doc = data.export(store, partition, args.agent, args.trajectories)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise InspectorError(f"cannot write {path}: {exc.strerror or exc}") from None
    s = doc["summary"]
    print(
        f"exported {s['q_table']['entries']} Q-values, {s['sessions']} sessions and "
        f"{s['trajectory_steps']} trajectory steps of {doc['agent']} to {path}"
    )
    return 0


def _fleet_status(args: argparse.Namespace) -> int:
    project = _partition(args).project
    with opened(_store_url(args.db, "qlearn fleet-status")) as store:
        doc = data.fleet_status(store, project, args.env)
    if args.json:
        _print_json(doc)
        return 0
    table = _table(f"Agents of project {doc['project']}", doc["store"])
    for column in (
        "environment",
        "agent",
        "episodes",
        "ε",
        "Q-table",
        "states",
        "mean step reward",
        "last active (UTC)",
    ):
        table.add_column(column, justify="left" if column in ("environment", "agent") else "right")
    for a in doc["agents"]:
        table.add_row(
            a["environment"],
            a["agent"],
            str(a["episodes"]),
            num(a["epsilon"]),
            str(a["q_table_size"]),
            str(a["states"]),
            num(a["mean_step_reward"]),
            utc(a["last_active"]),
        )
    _console().print(table)
    return 0


def _compare(args: argparse.Namespace) -> int:
    sides = []
    for spec in (args.first, args.second):
        agent, _, env = spec.partition("@")
        if not agent:
            raise InspectorUsageError("qlearn compare", f"{spec!r}: expected AGENT or AGENT@ENV")
        sides.append((_partition(args, env or None), agent))
    with opened(_store_url(args.db, "qlearn compare")) as store:
        doc = data.compare(store, sides)
    if args.json:
        _print_json(doc)
        return 0
    a, b = doc["sides"]
    table = _table(
        f"{a['agent']}@{a['environment']} vs {b['agent']}@{b['environment']}",
        f"project {doc['project']}; {doc['store']}",
    )
    table.add_column("")
    table.add_column(f"{a['agent']}@{a['environment']}", justify="right")
    table.add_column(f"{b['agent']}@{b['environment']}", justify="right")

    def state(side: dict[str, Any], key: str, digits: int | None = 4) -> str:
        s = side["agent_state"]
        value = s[key] if s else None
        if key == "last_active":
            return utc(value)
        if digits is None:
            return "—" if value is None else str(value)
        return num(value, digits)

    table.add_row("episodes", state(a, "episodes", None), state(b, "episodes", None))
    table.add_row("ε", state(a, "epsilon"), state(b, "epsilon"))
    table.add_row("mean step reward", state(a, "mean_step_reward"), state(b, "mean_step_reward"))
    for label, key in (("Q entries", "entries"), ("states", "states"), ("visits", "visits")):
        table.add_row(label, str(a["q_table"][key]), str(b["q_table"][key]))
    table.add_row("mean Q", num(a["q_table"]["q_mean"]), num(b["q_table"]["q_mean"]))
    table.add_row("last active (UTC)", state(a, "last_active"), state(b, "last_active"))
    shared = doc["shared"]
    share = shared["greedy_agreement_share"]
    _console().print(table)
    _console().print(
        f"shared: {shared['states']} states, {shared['entries']} entries; same greedy action "
        f"in {shared['greedy_agreement']} of {shared['states']} states"
        + (f" ({share:.1%})" if share is not None else "")
        + f"; mean |ΔQ| {num(shared['mean_abs_q_difference'])}, "
        f"max |ΔQ| {num(shared['max_abs_q_difference'])}"
    )
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    project = _partition(args).project
    with opened(_store_url(args.db, "qlearn cleanup")) as store:
        removed = store.cleanup(project, args.ttl_days)
        where = store.display_url
    if args.json:
        _print_json(
            {"store": where, "project": project, "ttl_days": args.ttl_days, "removed": removed}
        )
    else:
        print(
            f"removed {removed} rows of project {project} unused for {args.ttl_days:g} days "
            f"from {where}"
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    prog = "qlearn migrate"
    if (args.source is None) != (args.target is None):
        raise InspectorUsageError(prog, "--from and --to go together")
    if args.source is None:
        with opened(_store_url(args.db, prog), must_exist=False) as store:
            version, where = store.schema_version(), store.display_url
        if args.json:
            _print_json({"store": where, "schema_version": version})
        else:
            print(f"{where}: schema version {version} (up to date)")
        return 0
    if args.db is not None:
        raise InspectorUsageError(prog, "--db does not go with --from/--to")
    project = _partition(args).project
    if not args.source.strip() or not args.target.strip():
        raise InspectorUsageError(prog, "--from and --to need a store URL each")
    source_url = _store_url(args.source, prog, "--from")
    target_url = _store_url(args.target, prog, "--to")
    if source_url.raw == target_url.raw:
        raise InspectorUsageError(prog, "--from and --to name the same store")
    with opened(source_url) as source, opened(target_url, must_exist=False) as target:
        copied = copy_project(source, target, project, args.env, args.ttl_days)
        source_name, target_name = source.display_url, target.display_url
    if args.json:
        _print_json(
            {"from": source_name, "to": target_name, "copied": [c.to_json() for c in copied]}
        )
        return 0
    table = _table(f"Copied project {project} from {source_name} to {target_name}")
    for column in (
        "environment",
        "sessions",
        "Q-values",
        "histories",
        "trajectory steps",
        "patterns",
        "agents",
    ):
        table.add_column(column, justify="left" if column == "environment" else "right")
    for c in copied:
        table.add_row(
            c.partition.environment,
            *(
                str(v)
                for v in (c.sessions, c.q_values, c.histories, c.trajectories, c.patterns, c.agents)
            ),
        )
    _console().print(table)
    return 0


def _import_junit(args: argparse.Namespace) -> int:
    if not args.root.is_dir():
        raise InspectorUsageError("qlearn import-junit", f"--root {args.root}: not a directory")
    # the project is named after --root, as the plugin names it after pytest's rootdir
    partition = Partition(args.project or default_project(args.root), _partition(args).environment)
    changes = _hyperparameters(args.overrides, "qlearn import-junit")
    runs = [junit_import.parse(Path(f), args.root) for f in args.files]  # all, before writing
    with opened(_store_url(args.db, "qlearn import-junit"), must_exist=False) as store:
        imported = junit_import.learn(store, partition, runs, changes)
        where = store.display_url
    if args.json:
        _print_json(
            {
                "store": where,
                "project": partition.project,
                "environment": partition.environment,
                "runs": imported,
            }
        )
        return 0
    table = _table(
        f"Imported into project {partition.project}, environment {partition.environment}",
        where,
    )
    for column in ("file", "started (UTC)", "tests", "failed", "APFD (learned order)", "status"):
        table.add_column(column, justify="right" if column in ("tests", "failed") else "left")
    for r in imported:
        table.add_row(
            r["file"],
            utc(r["started_at"]),
            str(r["tests"]),
            str(r["failures"]),
            num(r["apfd"]),
            "imported" if r["imported"] else "already imported",
        )
    _console().print(table)
    return 0


def _hyperparameters(overrides: list[str], prog: str) -> dict[str, float | int]:
    """The ``--set`` values (field name -> value): each agent keeps its own defaults."""
    try:
        return parse_changes(overrides)
    except ValueError as exc:
        raise InspectorUsageError(prog, str(exc)) from None
