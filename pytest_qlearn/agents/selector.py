"""The ``selector`` agent: under a time budget (``--qlearn-budget``), which tests run.

Selection walks the prioritizer's ranking. The always-run tests come first (failed last time,
new, marked ``qlearn_always``); then, in priority order, every test whose estimated duration
still fits the budget is one ε-greedy decision between ``run`` and ``skip``. The greedy
choice is ``run`` unless the state's learned advantage of running (de-biased like the
prioritizer's estimates) is below ``−DECLINE_MARGIN``: an untrained selector fills the budget
in priority order; a learned one declines tests whose state says they cost more than the
failures they catch, which leaves their time to the tests after them.

State (bucketed, shared by all tests): runs since the last failure, failure rate, the test's
estimated duration relative to the median test, new test. The reward of running is
``failed − cost`` (a failure caught within the budget, minus the time used: the test's share
of the budget, charged when the selected tests overran it); the reward of skipping is
``−failed``. A test that ran knows both, so both actions learn. A deselected test's outcome
is unknown: its skip is remembered as *pending* (the store's ``pending_skips``: test id,
state key at the skip, count) and its next observed run, with or without a budget, pays it
back — a failure then penalises the skip in the state it was decided in.

Deterministic for a given snapshot and seed (its RNG is seeded from the run's seed), so
every pytest-xdist worker selects the same tests. No pytest imports.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..engine.durations import DURATION_FORMS, parse_duration
from ..engine.history import FAILED, PASSED, TestHistory
from ..engine.hyperparams import ConfigError, Hyperparameters
from ..engine.qlearner import QLearner, debiased_gap
from ..engine.rewards import RewardCalculator
from ..engine.state import Buckets, State, StateEncoder
from ..store.base import PendingSkipDelta, TrajectoryStep
from .registry import Agent, AgentType

NAME = "selector"
ACTIONS = ("run", "skip")
RUN, SKIP = 0, 1
FEATURES = ("cost", "fail_rate", "new", "since_fail", "unique")  # sorted: the encoder's order

_SINCE_FAIL = Buckets((1, 2, 3, 6, 11, 21))
_FAIL_RATE = Buckets((0.001, 0.05, 0.2, 0.5), integer=False)
#: Estimated duration relative to the median test's.
_COST = Buckets((0.25, 0.5, 1.0, 2.0, 4.0), integer=False)

# reasons a test runs or not
FAILED_LAST = "failed last time"
NEW = "new test"
MARKED = "marked qlearn_always"
CHANGED = "test file changed"
COVERS_CHANGED = "covers changed code"
FULL_RUN = "full run"
FITS = "fits the budget"
DECLINED = "selector chose skip"
OVER = "over the budget"
ALWAYS = (FAILED_LAST, NEW, CHANGED, COVERS_CHANGED, MARKED)
#: How far (in failures caught per run) running must be expected to lose before the greedy
#: choice is to decline a test that fits.
DECLINE_MARGIN = 0.05
#: With ``--qlearn-cov``: what running a test that covers lines no other test covers is worth,
#: in failures caught (coverage a budget keeps); the ``unique`` feature tells such tests apart.
UNIQUE_LINES_VALUE = 0.1
#: ``unique`` feature values: covers lines no other test does / does not / no map (no coverage).
UNIQUE, NOT_UNIQUE, UNKNOWN = "yes", "no", "?"

BUDGET_FORMS = f"{DURATION_FORMS} (more than 0) or a share like 25% (0-100%]"
_SHARE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


@dataclass(frozen=True)
class Budget:
    """A time budget: absolute ``seconds``, or a ``share`` of the suite's estimated time."""

    text: str
    seconds: float | None = None
    share: float | None = None

    def resolve(self, estimated_total: float) -> float:
        """The budget in seconds for a suite estimated to take ``estimated_total``."""
        if self.seconds is not None:
            return self.seconds
        return (self.share or 0.0) * estimated_total


def parse_budget(key: str, text: str) -> Budget:
    """A duration (``120s``, ``2.5m``, ``1h``; :mod:`..engine.durations`) or a share
    (``25%``); anything else is a :class:`ConfigError`."""
    share = _SHARE.match(text)
    if share is not None:
        number = float(share.group(1))
        if not 0 < number <= 100:
            raise ConfigError(key, text, BUDGET_FORMS)
        return Budget(text.strip(), share=number / 100.0)
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise ConfigError(key, text, BUDGET_FORMS)
    return Budget(text.strip(), seconds=seconds)


def agent_type(hyper: Hyperparameters | None = None) -> AgentType:
    return AgentType(
        name=NAME,
        description="picks the tests that fit a time budget: failures caught vs. time spent",
        actions=ACTIONS,
        features=FEATURES,
        hyper=hyper or Hyperparameters(),
    )


def estimate_durations(
    test_ids: Iterable[str], histories: Mapping[str, TestHistory]
) -> tuple[dict[str, float], float]:
    """Each test's expected seconds (its recent duration, outliers capped:
    ``TestHistory.expected_duration``; the median known one when it never ran), and that
    median (0 when no test has a known duration)."""
    known: dict[str, float] = {}
    unknown: list[str] = []
    for test_id in test_ids:
        history = histories.get(test_id)
        if history is not None and history.runs > 0:
            known[test_id] = max(0.0, history.expected_duration)
        else:
            unknown.append(test_id)
    median = statistics.median(known.values()) if known else 0.0
    for test_id in unknown:
        known[test_id] = median
    return known, median


class Choice(NamedTuple):
    """Whether one test runs under the budget, why, and what it was expected to cost."""

    test_id: str
    run: bool
    reason: str
    estimate: float
    explored: bool = False
    unique: str = UNKNOWN  # the ``unique`` feature when it was decided


@dataclass
class Selection:
    """The tests chosen for this run, in priority order, with the budget's arithmetic."""

    budget: Budget
    budget_seconds: float
    estimated_total: float
    median: float
    choices: list[Choice] = field(default_factory=list)
    full_run: bool = False

    @property
    def selected(self) -> list[Choice]:
        return [c for c in self.choices if c.run]

    @property
    def deselected(self) -> list[Choice]:
        return [c for c in self.choices if not c.run]

    @property
    def estimated_selected(self) -> float:
        return sum(c.estimate for c in self.choices if c.run)

    @property
    def always_estimate(self) -> float:
        return sum(c.estimate for c in self.choices if c.reason in ALWAYS)

    @property
    def always_over_budget(self) -> bool:
        """The always-run tests alone are expected to take longer than the budget."""
        return not self.full_run and self.always_estimate > self.budget_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": [self.budget.text, self.budget.seconds, self.budget.share],
            "budget_seconds": self.budget_seconds,
            "estimated_total": self.estimated_total,
            "median": self.median,
            "full_run": self.full_run,
            "choices": [list(c) for c in self.choices],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Selection:
        text, seconds, share = data["budget"]
        return cls(
            Budget(text, seconds, share),
            float(data["budget_seconds"]),
            float(data["estimated_total"]),
            float(data["median"]),
            [
                Choice(str(t), bool(r), str(w), float(e), bool(x), str(u))
                for t, r, w, e, x, u in data["choices"]
            ],
            bool(data["full_run"]),
        )


@dataclass(frozen=True)
class BudgetSummary:
    """What the budget did this run, for reports (``observe``: what it would have done)."""

    budget: str
    budget_seconds: float
    mode: str  # "select", "observe" or "full run"
    selected: int
    deselected: int
    estimated_total: float
    estimated_selected: float
    actual_time: float  # seconds the selected tests took
    failures: int  # failures among all tests that ran
    caught: int  # failures among the selected tests
    always_over_budget: bool
    missed: tuple[str, ...] = ()  # observe: failing tests the budget would have deselected
    saved: float = 0.0  # observe: seconds the deselected tests took
    #: How many tests ran because they always run, per reason (failed last time, new...).
    always_run: tuple[tuple[str, int], ...] = ()
    #: This run's wall seconds (from the plugin's start: collection, fixtures, plugins and
    #: the tests) and the seconds its tests took (setup, call and teardown).
    wall_time: float = 0.0
    tests_time: float = 0.0

    @property
    def wall_saved(self) -> float:
        """Seconds the budget saved (select: the deselected tests' estimate; observe: what
        the deselected tests took)."""
        if self.mode == "observe":
            return self.saved
        if self.mode == "full run":
            return 0.0
        return max(0.0, self.estimated_total - self.estimated_selected)

    @property
    def full_wall(self) -> float:
        """The wall seconds of the full run this one stands for (observing, everything ran)."""
        return self.wall_time if self.mode == "observe" else self.wall_time + self.wall_saved

    @property
    def outside_tests(self) -> float:
        """Wall seconds no budget can save: collection, session fixtures, plugins."""
        return max(0.0, self.wall_time - self.tests_time)

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "budget_seconds": self.budget_seconds,
            "mode": self.mode,
            "selected": self.selected,
            "deselected": self.deselected,
            "estimated_total": self.estimated_total,
            "estimated_selected": self.estimated_selected,
            "actual_time": self.actual_time,
            "failures": self.failures,
            "caught": self.caught,
            "always_over_budget": self.always_over_budget,
            "missed": list(self.missed),
            "saved": self.saved,
            "always_run": dict(self.always_run),
            "wall_time": self.wall_time,
            "tests_time": self.tests_time,
            "wall_saved": self.wall_saved,
            "full_wall": self.full_wall,
            "outside_tests": self.outside_tests,
        }


class SelectorLearning(NamedTuple):
    """What the selector learned in one episode, beside its learner's own deltas."""

    trajectories: list[TrajectoryStep]
    pending: list[PendingSkipDelta]  # skips set pending (deselected now), paid back (ran now)
    readable: dict[str, str]


class Selector(Agent):
    def __init__(
        self,
        learner: QLearner,
        rewards: RewardCalculator,
        agent: AgentType,
        pending: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__(agent, learner, rewards)
        self.encoder = StateEncoder(NAME, FEATURES)
        #: test id → {state key of an unresolved skip: count}
        self.pending = {t: dict(rows) for t, rows in (pending or {}).items()}

    # -- states ------------------------------------------------------------------------
    def state(self, history: TestHistory, median: float, unique: str = UNKNOWN) -> State:
        """``unique``: whether the test covers lines no other test does (``--qlearn-cov``)."""
        since = history.runs_since_failure()
        if history.runs == 0 or median <= 0:
            cost = "?"
        else:
            cost = _COST.label(history.expected_duration / median)
        return self.encoder.encode_values(
            (
                cost,
                "0" if history.failures == 0 else _FAIL_RATE.label(history.failure_rate),
                history.is_new,
                "never" if since is None else _SINCE_FAIL.label(since),
                unique,
            )
        )

    @staticmethod
    def always_reason(
        history: TestHistory | None,
        marked: bool,
        changed: bool = False,
        covers_changed: bool = False,
    ) -> str | None:
        if history is None or history.is_new:
            return NEW
        if history.verdicts.rstrip("S")[-1:] == FAILED:
            return FAILED_LAST
        if changed:
            return CHANGED
        if covers_changed:
            return COVERS_CHANGED
        if marked:
            return MARKED
        return None

    # -- deciding ----------------------------------------------------------------------
    def select(
        self,
        order: Sequence[str],
        histories: Mapping[str, TestHistory],
        budget: Budget,
        *,
        marked: Collection[str] = (),
        changed: Collection[str] = (),
        covering_changed: Collection[str] = (),
        unique: Mapping[str, str] | None = None,
        full_run: bool = False,
    ) -> Selection:
        """The tests that run, walking ``order`` (the prioritizer's ranking). ``marked``,
        ``changed`` (tests whose file changed since the last episode) and
        ``covering_changed`` (tests that execute changed code, ``--qlearn-cov``) always run.
        ``unique``: test id → the ``unique`` feature (``--qlearn-cov``; else unknown)."""
        unique = unique or {}
        estimates, median = estimate_durations(order, histories)
        total = sum(estimates.values())
        selection = Selection(budget, budget.resolve(total), total, median, full_run=full_run)
        if full_run:
            selection.choices = [Choice(t, True, FULL_RUN, estimates[t]) for t in order]
            return selection
        reasons = {
            t: self.always_reason(
                histories.get(t), t in marked, t in changed, t in covering_changed
            )
            for t in order
        }
        used = sum(estimates[t] for t, reason in reasons.items() if reason is not None)
        for test_id in order:
            estimate = estimates[test_id]
            reason = reasons[test_id]
            covers = unique.get(test_id, UNKNOWN)
            if reason is not None:
                selection.choices.append(Choice(test_id, True, reason, estimate, False, covers))
                continue
            if used + estimate > selection.budget_seconds:
                selection.choices.append(Choice(test_id, False, OVER, estimate, False, covers))
                continue
            state = self.state(histories[test_id], median, covers)
            action, explored = self.learner.choose((self.advantage(state.key) + DECLINE_MARGIN, 0))
            if action == RUN:
                used += estimate
                selection.choices.append(Choice(test_id, True, FITS, estimate, explored, covers))
            else:
                selection.choices.append(
                    Choice(test_id, False, DECLINED, estimate, explored, covers)
                )
        return selection

    def advantage(self, state_key: str) -> float:
        """Q(s, run) − Q(s, skip), de-biased for the visits (both actions are updated
        together, so the bootstrap terms cancel): the mean of the reward differences."""
        row = self.learner.row(state_key)
        if row is None or row[1][RUN] == 0:
            return 0.0
        q, visits = row
        return debiased_gap(q, visits[RUN], RUN, SKIP, self.learner.hyper.alpha)

    # -- learning ----------------------------------------------------------------------
    def run_rewards(
        self, failed: bool, duration: float, budget_seconds: float, unique: str = UNKNOWN
    ) -> list[float]:
        """[reward of run, reward of skip] for a test whose outcome is known; the time
        used costs its share of ``budget_seconds`` (0: free); covering lines no other test
        covers is worth ``UNIQUE_LINES_VALUE`` to running it."""
        cost = duration / budget_seconds if budget_seconds > 0 else 0.0
        kept = UNIQUE_LINES_VALUE if unique == UNIQUE else 0.0
        return [float(failed) + kept - min(cost, 1.0), -1.0 if failed else 0.0]

    def learn(
        self,
        selection: Selection | None,
        histories: Mapping[str, TestHistory],
        verdicts: Mapping[str, tuple[str, float, TestHistory]],
        *,
        deselect: bool = True,
    ) -> SelectorLearning:
        """Learn from this run. ``verdicts``: test id → (verdict, duration, history after
        this run) of every test that ran; ``deselect`` False in observe mode (nothing was
        left out, so no skip stays pending). Without a ``selection`` (a run without a
        budget) only earlier runs' pending skips are paid back."""
        steps: list[TrajectoryStep] = []
        pending: list[PendingSkipDelta] = []
        readable: dict[str, str] = {}
        if selection is None:
            median = estimate_durations(verdicts, histories)[1]
            budget_seconds = 0.0
            chosen: dict[str, Choice] = {}
        else:
            median = selection.median
            chosen = {c.test_id: c for c in selection.choices}
            used = sum(
                verdicts[c.test_id][1] for c in selection.choices if c.run and c.test_id in verdicts
            )
            # time is charged when the selected tests overran the budget (else it was affordable)
            overran = used > selection.budget_seconds and not selection.full_run
            budget_seconds = selection.budget_seconds if overran else 0.0
        for test_id in sorted(verdicts):
            verdict, duration, after = verdicts[test_id]
            if verdict not in (PASSED, FAILED):
                continue
            if selection is None and test_id not in self.pending:
                continue
            failed = verdict == FAILED
            before = histories.get(test_id) or TestHistory(test_id)
            choice = chosen.get(test_id)
            covers = UNKNOWN if choice is None else choice.unique
            state = self.state(before, median, covers)
            next_state = self.state(after, median, covers)
            rewards = self.run_rewards(failed, duration, budget_seconds, covers)
            action = RUN if choice is None or choice.run else SKIP
            if selection is not None:
                if not self.learner.knows(state.key):
                    readable[state.key] = state.readable
                self.learner.update_all(state.key, rewards, next_state.key, action)
                steps.append(
                    TrajectoryStep(
                        NAME,
                        len(steps),
                        test_id,
                        state.key,
                        action,
                        bool(choice and choice.explored),
                        rewards[action],
                        next_state.key,
                    )
                )
            # the skips of earlier runs are paid back by this, the test's next outcome
            for skip_key, count in sorted(self.pending.pop(test_id, {}).items()):
                if count != 0:  # back to zero (below 0 after a concurrent run also cleared it)
                    pending.append(PendingSkipDelta(test_id, skip_key, -count))
                if count <= 0.5:
                    continue
                self.learner.update(skip_key, SKIP, rewards[SKIP], next_state.key)
                self.learner.record_reward(rewards[SKIP])
                steps.append(
                    TrajectoryStep(
                        NAME,
                        len(steps),
                        test_id,
                        skip_key,
                        SKIP,
                        False,
                        rewards[SKIP],
                        next_state.key,
                    )
                )
        if deselect and selection is not None:
            for choice in selection.deselected:
                if choice.test_id in verdicts:
                    continue
                history = histories.get(choice.test_id) or TestHistory(choice.test_id)
                state = self.state(history, median, choice.unique)
                pending.append(PendingSkipDelta(choice.test_id, state.key, 1.0))
        return SelectorLearning(steps, pending, readable)


def summarise(
    selection: Selection,
    verdicts: Mapping[str, tuple[str, float]],
    mode: str,
    wall_time: float = 0.0,
) -> BudgetSummary:
    """The budget section of the reports. ``verdicts``: test id → (verdict, duration);
    ``wall_time``: the run's wall seconds."""
    observe = mode == "observe"
    picked = {c.test_id for c in selection.selected}
    failing = {t for t, (v, _) in verdicts.items() if v == FAILED}
    left_out = [c.test_id for c in selection.deselected]
    always = Counter(c.reason for c in selection.selected if c.reason in ALWAYS)
    return BudgetSummary(
        budget=selection.budget.text,
        budget_seconds=selection.budget_seconds,
        mode="full run" if selection.full_run else ("observe" if observe else "select"),
        selected=len(picked),
        deselected=len(left_out),
        estimated_total=selection.estimated_total,
        estimated_selected=selection.estimated_selected,
        actual_time=sum(d for t, (_, d) in verdicts.items() if t in picked),
        failures=len(failing),
        caught=len(failing & picked),
        always_over_budget=selection.always_over_budget,
        missed=tuple(t for t in left_out if t in failing) if observe else (),
        saved=sum(verdicts[t][1] for t in left_out if t in verdicts) if observe else 0.0,
        always_run=tuple(sorted(always.items())),
        wall_time=wall_time,
        tests_time=sum(d for _, d in verdicts.values()),
    )
