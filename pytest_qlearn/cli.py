"""The ``qlearn`` console script.

Each subcommand is one ``_add_<name>`` function that registers its parser and sets
``handler``; :func:`main` parses, dispatches, and turns every expected error into one line on
stderr and a non-zero exit status (2: bad command line, 1: the command failed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn
from rich.table import Table

from .agents import prioritizer as prio
from .engine.hyperparams import Hyperparameters, parse_overrides
from .inspector import commands as inspector
from .inspector.commands import InspectorUsageError
from .inspector.data import InspectorError
from .replay import datasets as ds
from .replay.runner import (
    DEFAULT_BUDGETS,
    DEFAULT_RANDOM_SEEDS,
    DEFAULT_SPLIT,
    LEARNER,
    DatasetResult,
    ReplayConfig,
    Summary,
    progress_total,
    replay,
)
from .store.url import redact

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command line; the message is one line."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class CommandError(Exception):
    """The command could not do its job (bad input data, ...); the message is one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises instead of printing usage and exiting, so
    :func:`main` reports it as one line and returns instead of calling ``sys.exit``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qlearn",
        description="Inspect and evaluate pytest-qlearn's learning.",
        epilog="Run 'qlearn COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument(
        "-V", "--version", action="version", version=f"qlearn (pytest-qlearn) {_version()}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    inspector.register(commands)
    _add_replay(commands)
    return parser


def _version() -> str:
    """The installed distribution's version (what pip reports), else the package's own."""
    from importlib import metadata

    try:
        return metadata.version("pytest-qlearn")
    except metadata.PackageNotFoundError:  # imported from a source tree, not installed
        from . import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    command = "qlearn"
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.command:
            command = f"qlearn {args.command}"
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            raise UsageError("qlearn", "a command is required: " + ", ".join(_commands(parser)))
        return handler(args)
    except (UsageError, InspectorUsageError) as exc:
        _error(exc.prog, str(exc))
        return EXIT_USAGE
    except (CommandError, InspectorError) as exc:
        _error(command, str(exc))
        return EXIT_FAILED
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except KeyboardInterrupt:
        _error("qlearn", "interrupted")
        return 130
    except BrokenPipeError:  # output piped into head & co., which stopped reading
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes at exit
        return EXIT_FAILED


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    return []


def _error(prog: str, message: str) -> None:
    one_line = redact(" ".join(message.split()))  # never a password, whatever quoted it
    print(f"{prog}: error: {one_line}", file=sys.stderr)


# -- replay --------------------------------------------------------------------------------
def _add_replay(commands: Any) -> None:
    p = commands.add_parser(
        "replay",
        help="replay a CI history through the learner and compare it with baselines",
        description=(
            "Replay recorded CI histories cycle by cycle, online, through the same learning "
            "code the plugin runs (in an in-memory store), and compare the learner's orders "
            "with random, sort, failure rate, shortest first and the oracle."
        ),
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET", help="CSV file(s) to replay")
    p.add_argument(
        "--format",
        choices=("auto", "retecs", "commons"),
        default="auto",
        help="data set format (default: detected from the header)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--seeds",
        type=inspector.positive_int,
        default=1,
        metavar="N",
        help="replay the learner with N seeds and report mean ± sd (default: 1)",
    )
    p.add_argument(
        "--seed",
        type=inspector.non_negative_int,
        default=0,
        metavar="N",
        help="first seed (default: 0)",
    )
    p.add_argument(
        "--random-seeds",
        type=inspector.positive_int,
        default=DEFAULT_RANDOM_SEEDS,
        metavar="N",
        help=f"seeds the random baseline averages over (default: {DEFAULT_RANDOM_SEEDS})",
    )
    p.add_argument(
        "--budget",
        type=_budgets,
        default=None,
        metavar="LIST",
        help=(
            "NAPFD time budgets, comma-separated, as percentages or fractions of each "
            "cycle's duration: '10,50,80' (default), '25%%', '0.5'"
        ),
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=(
            "override a hyperparameter, e.g. learning_rate=0.2 (repeatable; keys: "
            "learning_rate, discount_factor, exploration_rate, exploration_decay, "
            "min_exploration_rate, update_frequency)"
        ),
    )
    p.add_argument(
        "--split",
        type=inspector.non_negative_int,
        default=DEFAULT_SPLIT,
        metavar="N",
        help=f"report the first N cycles against the rest (default: {DEFAULT_SPLIT})",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_replay)


def _budgets(text: str) -> tuple[float, ...]:
    """'10,50,80', '10%,50%' or '0.1,0.5' → (0.1, 0.5, ...): values above 1 and values with
    '%' are percentages."""
    out: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        percent = part.endswith("%")
        try:
            value = float(part.rstrip("%"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number") from None
        if percent or value > 1.0:
            value /= 100.0
        if not 0.0 < value <= 1.0:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a budget: use a percentage in (0, 100] or a fraction in (0, 1]"
            )
        if value not in out:
            out.append(value)
    return tuple(out)


def _hyper(overrides: Sequence[str]) -> Hyperparameters:
    try:
        return parse_overrides(overrides, prio.DEFAULT_HYPER)  # replay runs the prioritizer
    except ValueError as exc:
        raise UsageError("qlearn replay", str(exc)) from None


def _replay(args: argparse.Namespace) -> int:
    hyper = _hyper(args.overrides)
    config = ReplayConfig(
        budgets=args.budget or DEFAULT_BUDGETS,
        seeds=args.seeds,
        seed=args.seed,
        random_seeds=args.random_seeds,
        hyper=hyper,
        split=args.split,
    )
    loaded = []
    for path in args.datasets:  # load everything first: fail fast, before long replays
        try:
            loaded.append(ds.load(path, args.format))
        except ds.DatasetError as exc:
            raise CommandError(str(exc)) from None

    err = Console(stderr=True)
    out = _stdout_console()
    results = []
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=args.no_progress or not err.is_terminal,
    ) as progress:
        for dataset in loaded:
            task = progress.add_task(dataset.name, total=progress_total(dataset, config))

            def advance(n: int, task: TaskID = task) -> None:
                progress.advance(task, n)

            result = replay(dataset, config, advance=advance)
            progress.remove_task(task)
            results.append(result)
            if not args.json:
                _print_table(out, result, args.overrides)
    if args.json:
        document = {
            "qlearn_replay": 1,
            "settings": {
                "budgets": [round(b * 100, 6) for b in config.budgets],
                "seeds": config.seeds,
                "seed": config.seed,
                "random_seeds": config.random_seeds,
                "split": config.split,
                "primary_budget": round(config.primary_budget * 100, 6),
                "hyperparameters": {
                    "alpha": hyper.alpha,
                    "gamma": hyper.gamma,
                    "epsilon": hyper.epsilon,
                    "epsilon_decay": hyper.epsilon_decay,
                    "epsilon_min": hyper.epsilon_min,
                    "update_frequency": hyper.update_frequency,
                },
            },
            "datasets": [r.to_json() for r in results],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    return EXIT_OK


def _stdout_console() -> Console:
    console = Console()
    if not console.is_terminal:
        # piped or redirected: never squeeze the table into 80 columns
        console = Console(width=200)
    return console


def _print_table(out: Console, result: DatasetResult, overrides: Sequence[str]) -> None:
    """One table per data set: a row per figure, a column per strategy (narrow enough for
    an 80-column terminal)."""
    config = result.config

    def pct(b: float) -> str:
        return f"{b * 100:g}%"

    history = "LastResults" if result.has_last_results else "rebuilt from earlier cycles"
    title = (
        f"{result.name}: {result.cycles} cycles ({result.failing_cycles} failing), "
        f"{result.tests} tests, {result.rows} rows"
    )
    notes = [
        f"{result.format} format, cycles by {result.cycle_key}, history {history}",
        f"learner: {config.seeds} seed(s) from {config.seed}"
        + (", mean ± sd" if config.seeds > 1 else ""),
        f"random: mean of {config.random_seeds} seeds",
        "failing: mean over cycles with a failure; all: failure-free cycles count as 1.0",
        f"first/rest: NAPFD@{pct(config.primary_budget)} over failing cycles before/after "
        f"cycle {config.split}",
        f"{result.seconds:.1f} s in all",
    ]
    if result.merged_rows:
        notes.insert(1, f"{result.merged_rows} repeated rows merged")
    if overrides:
        notes.insert(1, "--set " + " ".join(overrides))
    table = Table(
        title=title,
        caption="; ".join(notes),
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("", no_wrap=True)
    strategies = list(result.strategies.values())
    for strategy in strategies:
        table.add_column(strategy.name.replace(" ", "\n"), justify="right", no_wrap=True)

    def figure(label: str, get: Callable[[Summary], float | None]) -> None:
        cells = [label]
        for strategy in strategies:
            value = get(strategy.mean)
            sd = get(strategy.sd) if strategy.sd is not None and strategy.name == LEARNER else None
            if value is None:
                cells.append("—")
            elif sd is None:
                cells.append(f"{value:.3f}")
            else:
                cells.append(f"{value:.3f}±{sd:.3f}")
        table.add_row(*cells)

    def failing(b: float) -> Callable[[Summary], float | None]:
        return lambda s: s.napfd_failing[b]

    def everything(b: float) -> Callable[[Summary], float | None]:
        return lambda s: s.napfd_all[b]

    for b in config.budgets:
        figure(f"NAPFD@{pct(b)} failing", failing(b))
    for b in config.budgets:
        figure(f"NAPFD@{pct(b)} all", everything(b))
    figure("APFD failing", lambda s: s.apfd)
    figure("APFDc failing", lambda s: s.apfdc)
    figure(f"first {config.split} cycles", lambda s: s.first)
    figure("rest", lambda s: s.rest)
    table.add_row("seconds", *(f"{s.seconds:.2f}" for s in strategies), end_section=False)
    out.print(table)
    out.print()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
