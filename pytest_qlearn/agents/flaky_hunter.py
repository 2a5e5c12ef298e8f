"""The ``flaky-hunter`` agent: how many times to rerun a failed test (0…N).

A rerun that passes confirms a flake: the build stays green instead of red for nothing (a
false red, which costs a whole CI rerun and a person's attention). A rerun of a real failure
costs its time and changes nothing. The agent learns, per state, which number of reruns pays:

* state (bucketed): the test's flake rate (runs that passed only on a rerun) and flip rate,
  the failure's kind (:mod:`~pytest_qlearn.engine.signatures`), what reruns of this failure's
  signature did before (``new``, ``seen``, ``flaky``, ``real``), whether the test failed after
  being moved by the reordering, and its share of the session's time;
* action k: rerun up to k times (stop at the first pass);
* reward of k: ``1 − j·c`` when rerun j ≤ k passed (a false red avoided, at j reruns' cost),
  ``−k·c`` when every rerun failed (a real failure: only the time is lost), 0 for k = 0;
  ``c`` = :data:`RERUN_OVERHEAD` + the test's seconds as a share of what a false red costs:
  rerunning the session, plus :data:`ATTENTION_SECONDS` of a person's time.

One run reveals the reward of more than the chosen action: a pass at rerun j tells every
k ≥ j, and failures tell every k up to the reruns made; those actions are all updated (like
the prioritizer updates every tier), the rest teach nothing. Each decision is a one-step
episode (terminal next state). An unseen state starts from a prior: the chance a rerun
passes, from the kind and the test's flake history. Decisions are ε-greedy among the allowed
actions, from the agent's own seeded RNG. Pure: no pytest.
"""

from __future__ import annotations

from typing import NamedTuple

from ..engine.history import TestHistory
from ..engine.hyperparams import Hyperparameters
from ..engine.qlearner import QLearner
from ..engine.rewards import RewardCalculator
from ..engine.signatures import (
    ASSERTION,
    CONNECTION,
    ERROR,
    IMPORT,
    OS,
    OTHER,
    TIMEOUT,
    SignatureStats,
)
from ..engine.state import Buckets, State, StateEncoder
from .registry import Agent, AgentType

NAME = "flaky-hunter"
#: The most reruns the agent can choose (``--qlearn-reruns`` is validated against it).
MAX_RERUNS = 5
ACTIONS = ("no rerun", *(f"rerun up to {k}x" for k in range(1, MAX_RERUNS + 1)))
FEATURES = ("flake_rate", "kind", "moved", "share", "signature")  # sorted, the encoder's order
#: What a rerun costs besides its own time, in units of a false red (a whole CI rerun).
RERUN_OVERHEAD = 0.02
#: What a false red costs besides rerunning the session: a person's look at a red build, in
#: seconds. Without it a rerun of a 0.05 s test in a 0.5 s suite "cost" a tenth of a false
#: red, and a first assertion failure was never rerun (benchmarks/flaky.py: 2 of its 3 false
#: reds).
ATTENTION_SECONDS = 60.0
#: Pseudo-observations the prior counts for against learned rewards.
PRIOR_WEIGHT = 1.0
#: The prior chance that a rerun of a failure of this kind passes (before anything is
#: learned): waiting and the network flake; assertions and programming errors rarely do.
KIND_PRIOR = {
    TIMEOUT: 0.5,
    CONNECTION: 0.5,
    OS: 0.3,
    OTHER: 0.2,
    ASSERTION: 0.1,
    ERROR: 0.05,
    IMPORT: 0.02,
}
_RATE = Buckets((0.01, 0.05, 0.15, 0.3), integer=False)
_SHARE = Buckets((0.01, 0.05, 0.2), integer=False)
#: The agent's defaults: it learns only from what it chose, so it explores (ε = 0.2 as the
#: design's other agents) and learns quickly (few decisions a run).
DEFAULT_HYPER = Hyperparameters(alpha=0.2, epsilon=0.2)


def agent_type(hyper: Hyperparameters | None = None) -> AgentType:
    return AgentType(
        name=NAME,
        description="reruns a failure 0..N times: a rerun that passes (a flake) pays, "
        "reruns of real failures cost their time",
        actions=ACTIONS,
        features=FEATURES,
        hyper=hyper or DEFAULT_HYPER,
    )


class Failure(NamedTuple):
    """What is known of one failed attempt when the decision is made."""

    test_id: str
    kind: str
    signature: str  # its key
    known: SignatureStats  # what the store knows of the signature
    moved: bool  # it ran elsewhere than its collection place (reordered)
    share: float  # its expected seconds / the session's expected seconds


class RerunDecision(NamedTuple):
    test_id: str
    reruns: int
    state: State
    explored: bool
    #: A learned value (not only the prior) shaped it, for a signature already known.
    reused: bool


def rerun_cost(share: float) -> float:
    """What one rerun costs, in units of a false red."""
    return RERUN_OVERHEAD + max(0.0, share)


def reward(action: int, attempts: str, share: float) -> float | None:
    """The reward action ``action`` earns given the observed ``attempts`` (``F``/``P`` per
    attempt, the first one a failure); None when the attempts do not tell (more reruns than
    were made, none of which passed)."""
    cost = rerun_cost(share)
    passed_at = attempts.find("P")  # the rerun number that passed, or -1
    if passed_at > 0 and action >= passed_at:
        return 1.0 - passed_at * cost
    if action <= len(attempts) - 1 and (passed_at < 0 or action < passed_at):
        return -action * cost
    return None


def expected_reward(action: int, p: float, cost: float) -> float:
    """The expected reward of ``action`` when each rerun passes with probability ``p``."""
    value, still_failing = 0.0, 1.0
    for j in range(1, action + 1):
        value += still_failing * p * (1.0 - j * cost)
        still_failing *= 1.0 - p
    return value - still_failing * action * cost


class FlakyHunter(Agent):
    def __init__(self, learner: QLearner, rewards: RewardCalculator, agent: AgentType) -> None:
        super().__init__(agent, learner, rewards)
        self.encoder = StateEncoder(NAME, FEATURES)

    def state(self, history: TestHistory, failure: Failure) -> State:
        flake = "never" if history.flaky == 0 else _RATE.label(history.flaky_rate)
        return self.encoder.encode_values(
            (
                flake,
                failure.kind,
                failure.moved,
                _SHARE.label(failure.share),
                failure.known.label,
            )
        )

    @staticmethod
    def pass_chance(history: TestHistory, failure: Failure) -> float:
        """The prior chance that one rerun passes."""
        p = KIND_PRIOR.get(failure.kind, KIND_PRIOR[OTHER])
        if history.runs:
            p = max(p, history.flaky_rate, 0.5 * history.flips / history.runs)
        known = failure.known
        if known.reruns:
            p = (known.rerun_passes + p) / (known.reruns + 1.0)
        return min(1.0, p)

    def scores(self, state: State, prior_pass: float, share: float, limit: int) -> list[float]:
        """The value of each allowed action: the learned mean reward (de-biased for the zero
        start) blended with the prior as :data:`PRIOR_WEIGHT` observations."""
        cost = rerun_cost(share)
        row = self.learner.row(state.key)
        alpha = self.learner.hyper.alpha
        out = []
        for k in range(limit + 1):
            prior = expected_reward(k, prior_pass, cost)
            if row is None or row[1][k] == 0:
                out.append(prior)
                continue
            n = row[1][k]
            mean = row[0][k] / (1.0 - (1.0 - alpha) ** n)
            weight = min(float(n), 1.0 / alpha)
            out.append((mean * weight + prior * PRIOR_WEIGHT) / (weight + PRIOR_WEIGHT))
        return out

    def decide(self, history: TestHistory, failure: Failure, limit: int) -> RerunDecision:
        """ε-greedy, exploring upwards only: with probability ε, more reruns than the
        greedy choice (up to ``limit``; ties to the fewest). Reruns stop at the first pass,
        so k reruns reveal the reward of every action below k too: exploring downwards
        would teach nothing more, and only risk a false red the greedy choice avoids."""
        limit = max(0, min(limit, MAX_RERUNS))
        state = self.state(history, failure)
        scores = self.scores(state, self.pass_chance(history, failure), failure.share, limit)
        learner = self.learner
        action = learner.greedy(scores)
        explored = learner.rng.random() < learner.epsilon and action < limit
        if explored:
            action = learner.rng.randint(action + 1, limit)
        learner.count_decision(explored)
        reused = failure.known.seen > 0 and learner.knows(state.key)
        return RerunDecision(failure.test_id, action, state, explored, reused)

    def learn(self, state_key: str, action: int, attempts: str, share: float) -> float:
        """Update every action whose reward ``attempts`` reveal; returns the chosen one's."""
        chosen = 0.0
        for k in range(MAX_RERUNS + 1):
            value = reward(k, attempts, share)
            if value is None:
                continue
            self.learner.update(state_key, k, value, None)
            if k == action:
                chosen = value
        self.learner.record_reward(chosen)
        return chosen
