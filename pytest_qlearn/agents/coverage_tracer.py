"""The ``coverage-tracer`` agent: per test, trace its coverage this run or reuse its stored map.

Tracing costs time (coverage.py's tracer slows a test down several times); reusing a map
costs nothing but is wrong when the test now executes different code. Some cases are not
a choice: a test without a readable map, or whose own file changed, is traced. For the rest
the agent learns, per state — how much of the code the map covers changed since it was
traced, and how many episodes ago that was — whether a trace finds new information:

* reward of ``trace``: ``1 − TRACE_COST`` when the new map differs from the stored one
  (new information), ``−TRACE_COST`` when it is the same (time spent for nothing);
* reward of ``reuse``: 0 (nothing spent, nothing learned).

So Q(s, trace) − Q(s, reuse) is the probability that a trace in state s finds a change,
minus the cost, and the greedy choice traces exactly where that pays. Each decision is a
one-step episode (terminal next state): tracing today does not change what tracing
tomorrow will find. An unseen state starts from a prior: trace when covered code changed.
Pure (no pytest, no coverage.py); deterministic for a given snapshot and seed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

from ..changes.coverage_map import CoverageMap, changed_share_label
from ..engine.hyperparams import Hyperparameters
from ..engine.qlearner import QLearner, debiased_gap
from ..engine.rewards import RewardCalculator
from ..engine.state import Buckets, State, StateEncoder
from .registry import Agent, AgentType

NAME = "coverage-tracer"
ACTIONS = ("reuse", "trace")
REUSE, TRACE = 0, 1
FEATURES = ("changed", "since_trace")  # sorted, the encoder's order
#: What one trace costs, in units of the information it may find (a changed map = 1).
TRACE_COST = 0.2
_SINCE_TRACE = Buckets((1, 2, 5, 10, 20))
#: Pseudo-observations the prior counts for against learned traces.
PRIOR_WEIGHT = 1.0

# why a test is traced or not
NO_MAP = "no stored map"
UNREADABLE = "stored map unreadable"
OWN_FILE = "test file changed"
LEARNED = "learned"
#: The ``changed`` value of a map carried across an edit of its files (see ``line_shift``).
MOVED = "moved"
FORCED = (NO_MAP, UNREADABLE, OWN_FILE)


def agent_type(hyper: Hyperparameters | None = None) -> AgentType:
    return AgentType(
        name=NAME,
        description="re-traces a test's coverage only when that is likely to find a change",
        actions=ACTIONS,
        features=FEATURES,
        hyper=hyper or Hyperparameters(),
    )


class TraceDecision(NamedTuple):
    test_id: str
    trace: bool
    reason: str
    state: State | None = None  # None for a forced trace without a map
    explored: bool = False


class TraceOutcome(NamedTuple):
    """What the traces of a run taught the agent."""

    traced: int
    reused: int
    changed_maps: int
    reward_sum: float


class CoverageTracer(Agent):
    def __init__(self, learner: QLearner, rewards: RewardCalculator, agent: AgentType) -> None:
        super().__init__(agent, learner, rewards)
        self.encoder = StateEncoder(NAME, FEATURES)

    def state(
        self, cmap: CoverageMap, stale: Collection[str], episode: int, *, moved: bool = False
    ) -> State:
        """``moved``: the map was carried across a change of its files (no covered file is
        stale any more); a state of its own, so whether carried maps stay true is learned
        apart from maps whose files did not change."""
        since = max(0, episode - cmap.traced_episode)
        changed = MOVED if moved and not stale else changed_share_label(cmap, set(stale))
        return self.encoder.encode_values((changed, _SINCE_TRACE.label(since)))

    def advantage(self, state: State, prior: float) -> float:
        """Q(s, trace) − Q(s, reuse): the mean reward of a trace in this state (reuse earns
        0), de-biased for the visits and blended with ``prior`` as one pseudo-observation, so
        a single trace that found nothing does not end tracing in that state."""
        row = self.learner.row(state.key)
        if row is None or row[1][TRACE] == 0:
            return prior
        q, visits = row
        alpha = self.learner.hyper.alpha
        n = visits[TRACE]
        mean = debiased_gap(q, n, TRACE, REUSE, alpha)
        weight = min(float(n), 1.0 / alpha)
        return (mean * weight + prior * PRIOR_WEIGHT) / (weight + PRIOR_WEIGHT)

    def decide(
        self,
        test_ids: Collection[str],
        maps: Mapping[str, CoverageMap],
        stale: Mapping[str, Collection[str]],
        *,
        own_changed: Collection[str] = (),
        unreadable: Collection[str] = (),
        carried: Collection[str] = (),
        episode: int,
    ) -> dict[str, TraceDecision]:
        """One decision per test, in sorted id order (the draws depend only on the seed and
        the set of tests). ``stale``: test id → its covered files that changed since its
        trace; ``carried``: tests whose ``maps`` entry was carried across this change (their
        prior is to reuse it, as for a map whose files did not change)."""
        decisions: dict[str, TraceDecision] = {}
        for test_id in sorted(test_ids):
            cmap = maps.get(test_id)
            if cmap is None:
                why = UNREADABLE if test_id in unreadable else NO_MAP
                decisions[test_id] = TraceDecision(test_id, True, why)
                continue
            files = stale.get(test_id, ())
            state = self.state(cmap, files, episode, moved=test_id in carried)
            if test_id in own_changed:
                decisions[test_id] = TraceDecision(test_id, True, OWN_FILE, state)
                continue
            prior = (1.0 if files else 0.0) - TRACE_COST
            action, explored = self.learner.choose((0.0, self.advantage(state, prior)))
            decisions[test_id] = TraceDecision(test_id, action == TRACE, LEARNED, state, explored)
        return decisions

    def learn(
        self,
        decisions: Mapping[str, TraceDecision],
        old_maps: Mapping[str, CoverageMap],
        new_maps: Mapping[str, CoverageMap],
    ) -> TraceOutcome:
        """Update each decided state with the reward of what was done: a trace pays when
        the map it produced differs from the stored one. Tests that did not run (or were
        traced but produced nothing) teach nothing."""
        traced = reused = changed = 0
        reward_sum = 0.0
        for test_id in sorted(decisions):
            decision = decisions[test_id]
            if decision.trace:
                new = new_maps.get(test_id)
                if new is None:
                    continue
                traced += 1
                old = old_maps.get(test_id)
                found = old is None or old.lines != new.lines
                changed += found
                reward = (1.0 if found else 0.0) - TRACE_COST
                if decision.state is not None:
                    self.learner.update(decision.state.key, TRACE, reward, None)
                    reward_sum += reward
            else:
                reused += 1
                if decision.state is not None:
                    self.learner.update(decision.state.key, REUSE, 0.0, None)
        return TraceOutcome(traced, reused, changed, reward_sum)
