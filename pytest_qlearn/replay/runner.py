"""Replaying a CI history through the plugin's own learning code, and scoring every order.

The learner is driven exactly as the pytest plugin drives it, once per cycle, against one
in-memory :class:`~pytest_qlearn.store.SqliteStore` that lives for the whole replay:

    load_snapshot → LearningSession(snapshot, seed, hyper) → rank(refs, scope="test")
    → score the order → finish(results) → write_episode(write)

so what the replay measures is what users run. The baselines (:mod:`.baselines`) are
computed online beside it, and every order is scored with :mod:`pytest_qlearn.engine.metrics`
against the cycle's real verdicts and durations.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..agents import prioritizer as prio
from ..engine import metrics
from ..engine.history import FAILED, PASSED
from ..engine.hyperparams import Hyperparameters
from ..session import LearningSession, Ranking, TestResult
from ..store.base import Partition
from ..store.sqlite import SqliteStore
from . import baselines
from .datasets import Cycle, Dataset

LEARNER = "learner"
#: Rows of a report, in order.
STRATEGIES = (LEARNER, *baselines.NAMES)
DEFAULT_BUDGETS = (0.1, 0.5, 0.8)
DEFAULT_SPLIT = 50
DEFAULT_RANDOM_SEEDS = 10
#: Replayed episodes start this far apart (seconds), from a fixed epoch.
_EPOCH = 1_600_000_000.0


class CycleScore(NamedTuple):
    """One order of one cycle: NAPFD per budget, APFD and APFDc (None: no failure)."""

    napfd: tuple[float | None, ...]
    apfd: float | None
    apfdc: float | None


def score(cycle: Cycle, order: Sequence[int], budgets: Sequence[float]) -> CycleScore:
    """Score running ``cycle.tests`` in ``order`` (positions into the cycle)."""
    if sorted(order) != list(range(len(cycle.tests))):
        raise ValueError("an order must name every test of the cycle exactly once")
    if not cycle.failures:
        return CycleScore(tuple(None for _ in budgets), None, None)
    tests = cycle.tests
    failed = [tests[i].failed for i in order]
    durations = [tests[i].duration for i in order]
    return CycleScore(
        tuple(metrics.napfd(failed, durations, b) for b in budgets),
        metrics.apfd(failed),
        metrics.apfdc(failed, durations),
    )


@dataclass(frozen=True)
class ReplayConfig:
    """How to replay: NAPFD budgets (fractions), the learner's seeds and hyperparameters,
    how many seeds the random baseline averages, and where "first cycles" end."""

    budgets: tuple[float, ...] = DEFAULT_BUDGETS
    seeds: int = 1
    seed: int = 0
    random_seeds: int = DEFAULT_RANDOM_SEEDS
    hyper: Hyperparameters = prio.DEFAULT_HYPER  # the prioritizer's own defaults
    split: int = DEFAULT_SPLIT

    def __post_init__(self) -> None:
        if not self.budgets:
            raise ValueError("at least one budget is needed")
        for b in self.budgets:
            if not 0.0 < b <= 1.0:
                raise ValueError(f"a budget is a fraction in (0, 1], got {b!r}")
        if self.seeds < 1 or self.random_seeds < 1:
            raise ValueError("seeds and random seeds must be at least 1")
        if self.split < 0:
            raise ValueError("split must be >= 0")

    @property
    def primary_budget(self) -> float:
        """The budget of the "first cycles vs. the rest" figures: 50 % when reported."""
        return 0.5 if 0.5 in self.budgets else self.budgets[0]


@dataclass
class Summary:
    """One strategy's figures over one replay."""

    napfd_failing: dict[float, float | None]
    napfd_all: dict[float, float | None]
    apfd: float | None
    apfdc: float | None
    first: float | None
    rest: float | None

    def flat(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for b, v in self.napfd_failing.items():
            out[f"napfd_failing@{b!r}"] = v
        for b, v in self.napfd_all.items():
            out[f"napfd_all@{b!r}"] = v
        out.update(apfd=self.apfd, apfdc=self.apfdc, first=self.first, rest=self.rest)
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, float | None], budgets: Sequence[float]) -> Summary:
        return cls(
            {b: flat[f"napfd_failing@{b!r}"] for b in budgets},
            {b: flat[f"napfd_all@{b!r}"] for b in budgets},
            flat["apfd"],
            flat["apfdc"],
            flat["first"],
            flat["rest"],
        )


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None


def summarize(scores: Sequence[CycleScore], config: ReplayConfig) -> Summary:
    """Means over failing cycles, and over all cycles with failure-free ones counted as 1.0
    (the RETECS/COLEMAN convention); ``first``/``rest`` split the failing cycles at
    ``config.split`` (primary budget)."""
    budgets = config.budgets
    primary = budgets.index(config.primary_budget)
    failing: dict[float, float | None] = {}
    everything: dict[float, float | None] = {}
    for k, b in enumerate(budgets):
        failing[b] = _mean([s.napfd[k] for s in scores])
        all_values = [1.0 if s.napfd[k] is None else s.napfd[k] for s in scores]
        everything[b] = _mean(all_values) if scores else None
    return Summary(
        failing,
        everything,
        _mean([s.apfd for s in scores]),
        _mean([s.apfdc for s in scores]),
        _mean([s.napfd[primary] for s in scores[: config.split]]),
        _mean([s.napfd[primary] for s in scores[config.split :]]),
    )


@dataclass
class StrategyResult:
    """A strategy's figures: the mean over its runs (seeds), and their standard deviation
    when there was more than one run."""

    name: str
    mean: Summary
    sd: Summary | None
    runs: int
    seconds: float


def combine(
    name: str, summaries: Sequence[Summary], config: ReplayConfig, seconds: float
) -> StrategyResult:
    flats = [s.flat() for s in summaries]
    keys = list(flats[0])
    means = {k: _mean([f[k] for f in flats]) for k in keys}
    sd: Summary | None = None
    if len(flats) > 1:
        sds: dict[str, float | None] = {}
        for k in keys:
            present = [v for f in flats if (v := f[k]) is not None]
            sds[k] = statistics.stdev(present) if len(present) > 1 else None
        sd = Summary.from_flat(sds, config.budgets)
    return StrategyResult(
        name, Summary.from_flat(means, config.budgets), sd, len(summaries), seconds
    )


# -- the learner ---------------------------------------------------------------------------
CycleHook = Callable[[int, Cycle, Ranking, list[int]], None]


@dataclass
class LearnerRun:
    scores: list[CycleScore]
    seconds: float
    explored: int = 0
    decisions: int = 0


def run_learner(
    dataset: Dataset,
    *,
    seed: int,
    config: ReplayConfig,
    on_cycle: CycleHook | None = None,
    advance: Callable[[int], None] | None = None,
) -> LearnerRun:
    """Replay ``dataset`` through the plugin's learning code, online; one store for all
    cycles. ``on_cycle(i, cycle, ranking, order)`` sees each cycle's ranking before it is
    learned from; ``advance(1)`` is called after each cycle (progress bars)."""
    started = time.perf_counter()
    store = SqliteStore(":memory:")
    store.open()
    partition = Partition(project=f"replay:{dataset.name}", environment=f"seed-{seed}")
    seeds = random.Random(seed)
    scores: list[CycleScore] = []
    explored = decisions = 0
    try:
        for i, cycle in enumerate(dataset.cycles):
            snapshot = store.load_snapshot(partition, [prio.NAME])
            session = LearningSession(
                snapshot,
                seed=seeds.randrange(2**32),
                hyper=config.hyper,
                session_id=f"replay-{seed}-{i}",
            )
            tests = cycle.tests
            refs = [prio.TestRef(t.test_id, t.test_id, None, k) for k, t in enumerate(tests)]
            ranking = session.rank(refs, scope="test")
            order = [ref.index for ref in ranking.order]
            scores.append(score(cycle, order, config.budgets))
            if on_cycle is not None:
                on_cycle(i, cycle, ranking, order)
            results = []
            for position, k in enumerate(order):
                test = tests[k]
                decision = ranking.decisions[test.test_id]
                explored += decision.explored
                results.append(
                    TestResult(
                        test.test_id,
                        FAILED if test.failed else PASSED,
                        test.duration,
                        k,
                        position,
                        decision.tier,
                        decision.explored,
                    )
                )
            decisions += len(results)
            total = math.fsum(t.duration for t in tests)
            write, _ = session.finish(
                results,
                started_at=_EPOCH + 3600.0 * i,
                duration=total,
                exit_status=1 if cycle.failures else 0,
            )
            store.write_episode(write)
            if advance is not None:
                advance(1)
    finally:
        store.close()
    return LearnerRun(scores, time.perf_counter() - started, explored, decisions)


def run_baseline(dataset: Dataset, name: str, config: ReplayConfig, seed: int = 0) -> Summary:
    orders = baselines.online_orders(dataset, name, seed)
    scores = [
        score(cycle, order, config.budgets)
        for cycle, order in zip(dataset.cycles, orders, strict=True)
    ]
    return summarize(scores, config)


# -- one data set --------------------------------------------------------------------------
@dataclass
class DatasetResult:
    name: str
    path: str
    format: str
    cycle_key: str
    rows: int
    cycles: int
    failing_cycles: int
    tests: int
    merged_rows: int
    has_last_results: bool
    config: ReplayConfig
    strategies: dict[str, StrategyResult]
    seconds: float
    learner_seconds: list[float]
    exploration_share: float

    def to_json(self) -> dict[str, Any]:
        def pct(b: float) -> str:
            return f"{b * 100:g}"

        def summary_json(s: Summary) -> dict[str, Any]:
            return {
                "napfd_failing": {pct(b): v for b, v in s.napfd_failing.items()},
                "napfd_all": {pct(b): v for b, v in s.napfd_all.items()},
                "apfd": s.apfd,
                "apfdc": s.apfdc,
                "first": s.first,
                "rest": s.rest,
            }

        return {
            "name": self.name,
            "path": self.path,
            "format": self.format,
            "cycle_key": self.cycle_key,
            "rows": self.rows,
            "cycles": self.cycles,
            "failing_cycles": self.failing_cycles,
            "tests": self.tests,
            "merged_rows": self.merged_rows,
            "history": "LastResults column" if self.has_last_results else "earlier cycles",
            "seconds": round(self.seconds, 3),
            "learner_seconds": [round(s, 3) for s in self.learner_seconds],
            "learner_exploration_share": self.exploration_share,
            "strategies": {
                name: {
                    "runs": r.runs,
                    "mean": summary_json(r.mean),
                    "sd": None if r.sd is None else summary_json(r.sd),
                }
                for name, r in self.strategies.items()
            },
        }


def replay(
    dataset: Dataset,
    config: ReplayConfig | None = None,
    *,
    advance: Callable[[int], None] | None = None,
) -> DatasetResult:
    """The learner over ``config.seeds`` seeds and every baseline, on one data set.

    ``advance`` is called with 1 per learner cycle replayed and once per baseline run, so a
    progress bar's total is :func:`progress_total`."""
    config = config or ReplayConfig()
    started = time.perf_counter()
    strategies: dict[str, StrategyResult] = {}

    learner_runs = [
        run_learner(dataset, seed=config.seed + k, config=config, advance=advance)
        for k in range(config.seeds)
    ]
    strategies[LEARNER] = combine(
        LEARNER,
        [summarize(run.scores, config) for run in learner_runs],
        config,
        sum(run.seconds for run in learner_runs),
    )
    for name in baselines.NAMES:
        t0 = time.perf_counter()
        seeds = range(config.random_seeds) if name == baselines.RANDOM else range(1)
        summaries = []
        for s in seeds:
            summaries.append(run_baseline(dataset, name, config, seed=config.seed + s))
            if advance is not None:
                advance(1)
        strategies[name] = combine(name, summaries, config, time.perf_counter() - t0)

    decisions = sum(run.decisions for run in learner_runs)
    return DatasetResult(
        name=dataset.name,
        path=dataset.path,
        format=dataset.format,
        cycle_key=dataset.cycle_key,
        rows=dataset.rows,
        cycles=len(dataset.cycles),
        failing_cycles=dataset.failing_cycles,
        tests=dataset.tests,
        merged_rows=dataset.merged_rows,
        has_last_results=dataset.has_last_results,
        config=config,
        strategies=strategies,
        seconds=time.perf_counter() - started,
        learner_seconds=[run.seconds for run in learner_runs],
        exploration_share=(
            sum(run.explored for run in learner_runs) / decisions if decisions else 0.0
        ),
    )


def progress_total(dataset: Dataset, config: ReplayConfig) -> int:
    """How many times :func:`replay` calls ``advance`` for this data set."""
    return len(dataset.cycles) * config.seeds + config.random_seeds + len(baselines.NAMES) - 1
