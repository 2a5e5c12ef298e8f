"""The ``prioritizer`` agent: picks a priority tier per test, which sets the run order.

Each test is one decision. Its state exists at two levels of detail, both in the agent's
Q-table:

* **per-test** — the test's identity plus its recent verdicts and runs since its last
  failure: remembers what this very test does;
* **shared** — the bucketed history features alone: what tests *like* it do, so new tests
  and rare situations still get an informed estimate.

Actions are tiers (``first``, ``middle``, ``last``). The step reward is position-aware
(:meth:`RewardCalculator.prioritizer`): a failure in an early tier pays, a passing test in an
early tier costs. After the run, the next state is the test's history *including* this run,
and every tier's Q-value gets the Bellman update with the reward that tier would have earned
(the verdict does not depend on the order, so all of them are known): no tier's value goes
stale and the bootstrap term is identical across a state's tiers.

Because the quadratic reward is a proper scoring rule, Q(s, first) − Q(s, last) is an
exponentially weighted mean of ``4·failed − 2``; de-biased by the visit count it gives the
test's failure probability.

The run order respects evidence before estimates (DESIGN.md, "What the order must always
respect"): tests are first sorted by their *evidence class* — failed in their last run,
reach changed code directly, import changed code, nothing known — and only inside a class by
the learned failure probability. The tier is the agent's action and is learned from, but it
does not move a test across classes: an exploratory (ε) decision only draws a random place
among the tests its estimate ties with, never ahead of a test with more evidence.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import partial
from hashlib import sha256
from itertools import compress, count, islice, repeat
from operator import attrgetter, eq, gt, itemgetter, methodcaller, not_, sub
from typing import NamedTuple

from ..changes.reach import CALLS_FURTHER, DIRECT, IMPORTS
from ..engine.history import FAILED, PASSED, SKIPPED, TestHistory
from ..engine.hyperparams import Hyperparameters
from ..engine.qlearner import QLearner, UpdateStep, debiased_gap
from ..engine.rewards import RewardCalculator
from ..engine.state import Buckets, State, StateEncoder
from .registry import Agent, AgentType

NAME = "prioritizer"
TIERS = ("first", "middle", "last")
SHARED_FEATURES = ("since_fail", "fail_rate", "duration", "new")
PER_TEST_FEATURES = ("test", "since_fail")
#: The third level, for tests whose covered code changed (``--qlearn-cov``).
CHANGE_FEATURES = ("covers_changed", "fail_rate")

_SINCE_FAIL = Buckets((1, 2, 3, 6, 11, 21))
#: The per-test level tells only short gaps apart (short periods), so its rows stay full.
_RECENT_FAIL = Buckets((1, 2, 3))
#: Fine failure-rate buckets for the shared level: its estimate is the pooled rate of tests
#: with about this record (4 buckets measured 0.0020 lower NAPFD on Dune debian than these).
_FAIL_RATE = Buckets(
    (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.13, 0.16, 0.2, 0.25, 0.3, 0.4, 0.5),
    integer=False,
)
#: The change level sees few updates (only runs after a change): coarse buckets keep its rows full.
_CHANGE_FAIL_RATE = Buckets((0.001, 0.05, 0.2, 0.5), integer=False)
#: Duration buckets, in seconds: three under 0.1 s, where most tests of a unit suite are.
_DURATION = Buckets((0.001, 0.01, 0.1, 0.5, 1.0, 2.0, 10.0), integer=False)

#: Pseudo-observations given to the history-based prior.
PRIOR_WEIGHT = 1.0
#: Where a test seen but never judged (it only ever skipped, or xfailed) starts: it skips
#: again far likelier than it fails, and an expected failure still runs its body, so it runs
#: after the tests with a record, not ahead of them (0.25, as before, put a project's 264
#: skipped and 17 xfailed tests ahead of every test that can fail).
SKIPPED_ONLY_PRIOR = 0.0
#: Pseudo-observations the shared level counts for, once it has been updated: enough to
#: rank a new or rarely seen test, little enough that a test's own record soon decides.
SHARED_WEIGHT = 5.0
#: The shared level learns at this fraction of α: every test in a state updates it each run,
#: so at the tests' own α it would remember only the last run or two of a rare event (a
#: never-failed test's first failure); at α/10 it remembers tens of runs.
SHARED_ALPHA_SCALE = 0.1
#: Pseudo-observations the change level counts for, once it has been updated: a code change
#: is news the test's own record cannot know, so it weighs like many runs of it.
CHANGE_WEIGHT = 20.0
#: Where a test covering changed code starts before the change level learned anything.
CHANGE_PRIOR = 0.5
#: Estimates closer than this are equal (float noise); equal ones run shortest first.
P_RESOLUTION = 1e-9
#: Among equal estimates, durations are compared by the power of two they fall in (0.5–1 s,
#: 1–2 s, ...): a factor of two is a real difference, a few per cent is timer noise, and
#: tests of one class keep their collection order. Durations under the floor are all equal:
#: half a millisecond is about what pytest itself spends on a test, so below it is noise.
DURATION_FLOOR = 5e-4
#: The floor while pytest-randomly shuffles: its shuffle of tests under 10 ms survives.
SHUFFLED_DURATION_FLOOR = 1e-2

#: Evidence classes, most urgent first (the first element of every order key).
FAILED_LAST = 0  # its last run with a verdict failed, and nothing it reaches changed since
FAILED_LAST_CHANGED = 1  # failed last run, and code it reaches changed since (a fix?)
# DIRECT, CALLS_FURTHER, IMPORTS (2-4): how it reaches changed code (changes/reach.py)
#: Failed last run, and every file it reaches is back to its version when it last passed
#: (the change it failed with was reverted): a failure with evidence of its fix
#: runs after the tests that reach other changes, still before every test with no evidence.
REVERTED = 5
NO_EVIDENCE = 6
#: The change level's "share" of a test that static analysis (not coverage) ties to a change.
STATIC_SHARES = {DIRECT: "static-direct", CALLS_FURTHER: "static-far", IMPORTS: "static-import"}

#: The prioritizer's own defaults. Every tier is updated after every run whatever was
#: chosen, so exploring teaches this agent nothing and only costs order quality: it starts
#: at ε = 0.02 (the other agents learn only from what they chose, and keep 0.2). α = 0.0075:
#: a window of ~130 runs tells failure rates of a few per cent apart.
DEFAULT_HYPER = Hyperparameters(alpha=0.0075, epsilon=0.02)


def agent_type(hyper: Hyperparameters | None = None) -> AgentType:
    return AgentType(
        name=NAME,
        description="orders tests: a priority tier per test, failures found early pay",
        actions=TIERS,
        features=tuple(sorted({*SHARED_FEATURES, *PER_TEST_FEATURES, *CHANGE_FEATURES})),
        version=2,  # 2: fifteen failure-rate buckets in the shared level (were four)
        hyper=hyper or DEFAULT_HYPER,
    )


#: Feature names in the encoders' (sorted) order, for the tuple fast path below.
_SHARED_ORDER = tuple(sorted(SHARED_FEATURES))
_PER_TEST_ORDER = tuple(sorted(PER_TEST_FEATURES))
assert _SHARED_ORDER == ("duration", "fail_rate", "new", "since_fail")
assert _PER_TEST_ORDER == ("since_fail", "test")


def shared_values(history: TestHistory, since: int | None) -> tuple[str, str, bool, str]:
    """The bucketed, shared features of a test's history, in sorted-name order."""
    return (
        "?" if history.runs == 0 else _DURATION.label(history.duration_mean),
        "0" if history.failures == 0 else _FAIL_RATE.label(history.failure_rate),
        history.first_episode < 0,  # new
        "never" if since is None else _SINCE_FAIL.label(since),
    )


def features(history: TestHistory) -> dict[str, str | int | bool]:
    """The bucketed, shared features of a test's history."""
    values = shared_values(history, history.runs_since_failure())
    return dict(zip(_SHARED_ORDER, values, strict=True))


def prior_failure_probability(history: TestHistory) -> float:
    """Where an unseen state's estimate starts: a new test is a coin flip; otherwise the
    smoothed failure rate, pulled up when the last verdict was a failure."""
    if history.is_new:
        return 0.5
    if history.runs == 0:  # seen, but only ever skipped
        return SKIPPED_ONLY_PRIOR
    smoothed = (history.failures + 0.5) / (history.runs + 1.0)
    last_failed = history.verdicts.rstrip(SKIPPED)[-1:] == FAILED
    return 0.5 * smoothed + (0.5 if last_failed else 0.0)


class TestRef(NamedTuple):
    """A collected test as the engine sees it: id, fixture-locality groups, collection index.
    (A tuple of plain values: the garbage collector stops tracking the thousands a run has.)"""

    test_id: str
    module: str
    cls: str | None
    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose


TestRef.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class


class Decision(NamedTuple):
    """What the prioritizer chose for one test, and from which states."""

    test_id: str
    tier: int
    explored: bool
    p_fail: float
    per_test: State
    shared: State
    known: bool  # True when a learned value (not only the prior) shaped the estimate
    duration: float = 0.0  # expected seconds (mean of earlier runs; 0 when unknown)
    change: State | None = None  # the change level's state, when its covered code changed
    evidence: int = NO_EVIDENCE  # its evidence class (FAILED_LAST ... NO_EVIDENCE)
    #: An exploratory decision's random place among the tests it ties with, in [0, 1);
    #: -1 for a greedy one (it keeps its collection place among them).
    shuffle: float = -1.0


# decide() builds these from all their fields (tuple.__new__): keep it in step
assert len(Decision._fields) == 11 and len(State._fields) == 4
# ... and reads these fields of TestHistory by position (its columns)
assert TestHistory._fields[1:5:3] == ("runs", "verdicts") and TestHistory._fields[2] == "failures"
assert TestHistory._fields[7:9] == ("first_episode", "duration_mean")
assert TestHistory._fields[12] == "flaky"
_hexdigest = methodcaller("hexdigest")
_first = itemgetter(0)
_last = itemgetter(-1)
_negative = partial(gt, 0)  # x < 0
_VALUES = attrgetter("values")  # of a State
#: What a test's estimate depends on (decide): per-test tier gap and visits, shared values,
#: runs, failures, whether its last verdict failed.
_Context = tuple[float, int | None, tuple[str, str, bool, str], int, int, bool]


def reason(decision: Decision, history: TestHistory | None, change: str | None = None) -> str:
    """Why a test runs where it does, in a user's words (the report's "what ran first").
    ``change``: what the static change analysis found for it, in words, if anything."""
    flaky = (
        f"flaky: {history.flips} flips in {history.runs} runs"
        if history is not None and history.flaky
        else ""
    )
    if decision.evidence == REVERTED:
        return "failed last run; the change it failed with is reverted since"
    if decision.evidence in (FAILED_LAST, FAILED_LAST_CHANGED):
        if flaky:
            return f"failed last run ({flaky})"
        if decision.evidence == FAILED_LAST_CHANGED:
            return "failed last run; code it reaches changed since"
        return "failed last run"
    if decision.evidence == DIRECT and history is not None and history.is_new:
        return "new test"
    if decision.evidence in (DIRECT, CALLS_FURTHER, IMPORTS) and change:
        return change
    if decision.evidence == DIRECT:
        return "runs changed code"
    if decision.evidence == CALLS_FURTHER:
        return "calls changed code a few calls away"
    if decision.evidence == IMPORTS:
        return "imports a changed module"
    if history is None or history.runs == 0:
        return "no history yet"
    parts = [f"learned failure probability {decision.p_fail:.1%}"]
    if history.failures:
        parts.append(f"failed {history.failures} of {history.runs} runs")
    if flaky:
        parts.append(flaky)
    return "; ".join(parts)


def order_key(
    decision: Decision,
    duration_floor: float = DURATION_FLOOR,
    *,
    runs_change: bool = False,
    proximity: int = 0,
) -> tuple[int, bool, int, int, int]:
    """Where a decided test runs: evidence class by class; inside a class the facts first —
    its coverage map runs the changed lines (``runs_change``, ``--qlearn-cov``), then how
    close the static analysis finds it to the change (``proximity``, smaller is closer) —
    reversed among the known failures whose code changed since (the nearer the change, the
    likelier it is their fix: the farthest first) — then the likeliest failure, and among equal
    estimates the shorter duration class (it costs the least of a time budget and delays
    the others least)."""
    maybe_fixed = decision.evidence == FAILED_LAST_CHANGED
    return (
        decision.evidence,
        runs_change if maybe_fixed else not runs_change,
        -proximity if maybe_fixed else proximity,
        -int(decision.p_fail / P_RESOLUTION + 0.5),  # p >= 0: rounds half up, cheaply
        math.floor(math.log2(max(decision.duration, duration_floor))),
    )


def evidence_class(
    history: TestHistory, impact: int | None = None, covers_changed: bool = False
) -> int:
    """How much the facts (not the estimates) say about this test failing now: a failure in
    its last run beats a change it reaches, which beats nothing known. ``impact``: what the
    static change analysis found (DIRECT, CALLS_FURTHER, IMPORTS or None);
    ``covers_changed``: its coverage map executes changed code (``--qlearn-cov``)."""
    if history.verdicts.rstrip(SKIPPED)[-1:] == FAILED:
        # nothing it reaches changed: it will most likely fail again; if something did, the
        # change may be its fix (--ff cannot tell these apart). A known-flaky test's failure
        # (it passed on a rerun before) is weaker evidence than a stable test's: it runs
        # after those, still before every test without failure evidence.
        if history.flaky:
            return FAILED_LAST_CHANGED
        return FAILED_LAST if impact is None and not covers_changed else FAILED_LAST_CHANGED

    # a new test counts through its code (new code is changed code), not through being
    # unseen: in the replayed CI histories, where no code is known, ordering unseen tests by
    # the learned estimate for new tests scored higher (Dune debian 0.95524 vs 0.95515)
    # coverage alone (no static finding) counts as direct; where the static analysis has a
    # finding, it already holds what coverage adds (change_awareness.refine_with_coverage)
    if impact == DIRECT or (impact is None and covers_changed):
        return DIRECT
    if impact in (CALLS_FURTHER, IMPORTS):
        return impact
    return NO_EVIDENCE


def _demote_reverted(decisions: list[Decision], reverted: Collection[str]) -> list[Decision]:
    """The known failures in ``reverted`` move to class REVERTED (a test that did not fail
    last run is not a failure to demote)."""
    failed_last = (FAILED_LAST, FAILED_LAST_CHANGED)
    return [
        d._replace(evidence=REVERTED) if d.evidence in failed_last and d.test_id in reverted else d
        for d in decisions
    ]


class Prioritizer(Agent):
    def __init__(self, learner: QLearner, rewards: RewardCalculator, agent: AgentType) -> None:
        super().__init__(agent, learner, rewards)
        self.per_test_encoder = StateEncoder(NAME + ":test", PER_TEST_FEATURES, memoise=False)
        self.shared_encoder = StateEncoder(NAME + ":shared", SHARED_FEATURES)
        self.change_encoder = StateEncoder(NAME + ":change", CHANGE_FEATURES)
        # the per-test state's canonical text up to the test id's length, by since_fail label
        self._per_test_prefixes: dict[str, str] = {}
        #: This run's per-test states by test id (ranking computes them; learning and any
        #: later estimate reuse them when the since_fail label is still the same).
        self._per_test_states: dict[str, State] = {}
        #: (test ids, their states) not yet in ``_per_test_states``, oldest first: added
        #: when a state is first looked up there (ranking hashes every test's state, and a
        #: run that learns by columns may never look one up).
        self._per_test_pending: list[tuple[Sequence[str], Sequence[State]]] = []
        self.n_tiers = agent.n_actions
        # the reward of every tier, for a failing and for a passing test
        self._tier_rewards = {
            failed: [self.rewards.prioritizer(t, self.n_tiers, failed) for t in range(self.n_tiers)]
            for failed in (True, False)
        }
        self._tier_gap = self._tier_rewards[True][0] - self._tier_rewards[True][-1]
        # expected reward of tier t for failure probability p: passing + p·(failing − passing)
        self._expected_terms = [
            (passing, failing - passing)
            for failing, passing in zip(
                self._tier_rewards[True], self._tier_rewards[False], strict=True
            )
        ]

    # -- states ------------------------------------------------------------------------
    def states(self, history: TestHistory, previous: State | None = None) -> tuple[State, State]:
        """The (per-test, shared) states of a history. ``previous``: the test's per-test state
        before this run, reused (no hashing) when the run left its features unchanged."""
        since = history.runs_since_failure()
        label = "never" if since is None else _RECENT_FAIL.label(since)
        if previous is not None and previous.values == (label, history.test_id):
            per_test = previous
        else:
            per_test = self._per_test_state(label, history.test_id)
        return per_test, self.shared_encoder.encode_values(shared_values(history, since))

    def _per_test_state(self, label: str, test_id: str) -> State:
        """The per-test state (``label``: the since_fail bucket): this run's, if already
        built, else hashed — the same key as ``per_test_encoder`` gives, from the canonical
        text's prefix kept per label."""
        states = self._per_test_states
        if self._per_test_pending:
            for ids, pending in self._per_test_pending:
                states.update(zip(ids, pending, strict=True))
            self._per_test_pending.clear()
        cached = states.get(test_id)
        if cached is not None and cached.values[0] == label:
            return cached
        state = states[test_id] = self._hashed_per_test_state(label, test_id)
        return state

    def _hashed_per_test_state(self, label: str, test_id: str) -> State:
        """The per-test state, hashed (no look-up in this run's states)."""
        if test_id.__class__ is not str:
            return self.per_test_encoder.encode_values((label, test_id))
        text = f"{self._per_test_prefix(label)}{len(test_id)}:{test_id}"
        key = sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return State(key, "", _PER_TEST_ORDER, (label, test_id))

    def _per_test_prefix(self, label: str) -> str:
        """The per-test state's canonical text up to the test id's length."""
        prefix = self._per_test_prefixes.get(label)
        if prefix is None:
            # the encoder's canonical text: agent, then ";name=length:value" by name
            prefix = self._per_test_prefixes[label] = (
                f"{self.per_test_encoder.agent};since_fail={len(label)}:{label};test="
            )
        return prefix

    def change_state(self, history: TestHistory, share: str) -> State:
        """The change level's state of a test whose covered code changed (``share``: how
        much of it, bucketed): what a change that size does to tests with this record."""
        rate = "0" if history.failures == 0 else _CHANGE_FAIL_RATE.label(history.failure_rate)
        return self.change_encoder.encode_values((share, rate))

    def estimate(self, history: TestHistory, states: tuple[State, State]) -> float:
        """The failure probability of a test in these (per-test, shared) states.

        A pseudo-count blend of three sources: the per-test level's learned estimate
        counts as its visits (up to 1/α), the shared level's as ``SHARED_WEIGHT``
        observations once it has been updated, the history prior as ``PRIOR_WEIGHT``. A
        test seen often is judged by its own record; a new or rarely seen one by what
        tests like it do."""
        return self._blend(history, states)[0]

    def _blend(
        self, history: TestHistory, states: tuple[State, State], change: State | None = None
    ) -> tuple[float, bool]:
        """(the estimate, whether a learned Q-row shaped it). With a ``change`` state (the
        test's covered code changed) the change level joins the blend: learned, it weighs
        ``CHANGE_WEIGHT``; unlearned, the prior is at least ``CHANGE_PRIOR``."""
        row = self.learner.row
        test_row, shared_row = row(states[0].key), row(states[1].key)
        p_test, w_test = self._row_estimate(test_row)
        p_shared, w_shared = self._row_estimate(shared_row, self._shared_alpha)
        if w_shared > 0:
            w_shared = SHARED_WEIGHT
        elif w_test > 0:
            # a shared state no test was seen in yet (its duration moved to another bucket)
            # tells nothing beyond the test's own record: without this, its estimate would
            # jump for one run and a green suite would reshuffle on timer noise
            p_shared, w_shared = p_test, SHARED_WEIGHT
        prior = prior_failure_probability(history)
        p_change = w_change = 0.0
        if change is not None:
            p_change, w_change = self._row_estimate(row(change.key))
            if w_change > 0:
                w_change = CHANGE_WEIGHT
            else:
                prior = max(prior, CHANGE_PRIOR)
        total = w_test + w_shared + w_change + PRIOR_WEIGHT
        p = (
            p_test * w_test + p_shared * w_shared + p_change * w_change + prior * PRIOR_WEIGHT
        ) / total
        return p, test_row is not None or shared_row is not None

    def _estimate(self, state: State) -> tuple[float, float]:
        """(failure probability, weight) from the Q-row of a per-test or change state (they
        learn at the agent's α); weight 0 if never updated."""
        return self._row_estimate(self.learner.row(state.key))

    @property
    def _shared_alpha(self) -> float:
        return self.learner.hyper.alpha * SHARED_ALPHA_SCALE

    def _row_estimate(
        self, row: tuple[array[float], array[int]] | None, alpha: float | None = None
    ) -> tuple[float, float]:
        """(failure probability, weight) from a Q-row learned at ``alpha`` (the agent's
        own by default); weight 0 if never updated."""
        if row is None:
            return 0.0, 0.0
        q, visit_counts = row
        visits = visit_counts[0]
        if visits == 0:
            return 0.0, 0.0
        if alpha is None:
            alpha = self.learner.hyper.alpha
        mean_gap = debiased_gap(q, visits, 0, -1, alpha)
        # gap per observation is +tier_gap for a failure and -tier_gap for a pass
        p = (mean_gap / self._tier_gap + 1.0) / 2.0
        return min(1.0, max(0.0, p)), min(float(visits), 1.0 / alpha)

    def estimator(self) -> Callable[[TestHistory, str, str], tuple[float, bool]]:
        """:meth:`_blend` without a change state, as a function of (history, per-test key,
        shared key) for estimating many tests while the Q-table stays as it is: the same
        arithmetic, with the shared rows' estimates and the de-biasing divisors kept
        between calls. Make a new one after the table changed."""
        q_rows, visit_rows = self.learner.q_rows, self.learner.visit_rows
        alpha = self.learner.hyper.alpha
        shared_alpha = self._shared_alpha
        tier_gap = self._tier_gap
        # visits -> (1 − (1 − α)^visits, min(visits, 1/α)): the divisor debiased_gap uses
        test_terms: dict[int, tuple[float, float]] = {}
        shared_estimates: dict[str, tuple[float, float, bool]] = {}

        def shared_estimate(key: str) -> tuple[float, float, bool]:
            row = q_rows.get(key)
            if row is None:
                found = (0.0, 0.0, False)
            else:
                p, w = self._row_estimate((row, visit_rows[key]), shared_alpha)
                found = (p, w, True)
            shared_estimates[key] = found
            return found

        def estimate(history: TestHistory, test_key: str, shared_key: str) -> tuple[float, bool]:
            test_row = q_rows.get(test_key)
            p_test = w_test = 0.0
            if test_row is not None:
                visits = visit_rows[test_key][0]
                if visits != 0:
                    terms = test_terms.get(visits)
                    if terms is None:
                        terms = test_terms[visits] = (
                            1.0 - (1.0 - alpha) ** visits,
                            min(float(visits), 1.0 / alpha),
                        )
                    # _row_estimate: the de-biased gap per observation, clamped to [0, 1]
                    p_test = ((test_row[0] - test_row[-1]) / terms[0] / tier_gap + 1.0) / 2.0
                    p_test = p_test if p_test > 0.0 else 0.0
                    p_test = p_test if p_test < 1.0 else 1.0
                    w_test = terms[1]
            found = shared_estimates.get(shared_key)
            if found is None:
                found = shared_estimate(shared_key)
            p_shared, w_shared, shared_known = found
            if w_shared > 0:
                w_shared = SHARED_WEIGHT
            elif w_test > 0:
                p_shared, w_shared = p_test, SHARED_WEIGHT
            # prior_failure_probability
            if history.first_episode < 0:
                prior = 0.5
            elif history.runs == 0:
                prior = SKIPPED_ONLY_PRIOR
            else:
                smoothed = (history.failures + 0.5) / (history.runs + 1.0)
                last_failed = history.verdicts.rstrip(SKIPPED)[-1:] == FAILED
                prior = 0.5 * smoothed + (0.5 if last_failed else 0.0)
            # _blend's sums, term for term (the change level's terms are 0.0)
            total = w_test + w_shared + 0.0 + PRIOR_WEIGHT
            p = (p_test * w_test + p_shared * w_shared + 0.0 * 0.0 + prior * PRIOR_WEIGHT) / total
            return p, test_row is not None or shared_known

        return estimate

    def failure_probabilities(self, items: Iterable[tuple[TestHistory, str, str]]) -> list[float]:
        """:meth:`estimator`'s estimate of each (history, per-test key, shared key): the
        report's riskiest tests estimate every test of the run again."""
        estimate = self.estimator()
        return [
            estimate(history, test_key, shared_key)[0] for history, test_key, shared_key in items
        ]

    def failure_probability_columns(
        self,
        histories: Sequence[TestHistory],
        test_keys: Sequence[str],
        shared_keys: Sequence[str],
    ) -> list[float]:
        """:meth:`failure_probabilities` of ``histories[i]``, ``test_keys[i]``,
        ``shared_keys[i]``, over whole columns: the look-ups are mapped in C, and the
        estimate — :meth:`estimator`'s arithmetic, term for term — is computed once per
        distinct context (per-test tier gap and visits, shared key, the prior's inputs),
        which the tests of a green suite mostly share."""
        q_rows, visit_rows = self.learner.q_rows, self.learner.visit_rows
        alpha = self.learner.hyper.alpha
        shared_alpha = self._shared_alpha
        tier_gap = self._tier_gap
        no_row = (0.0,) * self.n_tiers
        q_of = list(map(q_rows.get, test_keys, repeat(no_row)))
        runs_c, failures_c, verdicts_c, first_c = (
            list(map(itemgetter(field), histories)) for field in (1, 2, 4, 7)
        )
        contexts = list(
            zip(
                map(sub, map(_first, q_of), map(_last, q_of)),
                # None: no per-test row (the learner makes a Q-row and its visits together)
                map(_first, map(visit_rows.get, test_keys, repeat((None,)))),
                shared_keys,
                map(_negative, first_c),  # new: prior 0.5
                runs_c,
                failures_c,
                # verdicts.rstrip(SKIPPED)[-1:] == FAILED, in C
                map(str.endswith, map(str.rstrip, verdicts_c, repeat(SKIPPED)), repeat(FAILED)),
                strict=True,
            )
        )
        del q_of
        shared_estimates: dict[str, tuple[float, float]] = {}
        for key in set(shared_keys):
            row = q_rows.get(key)
            shared_estimates[key] = (
                (0.0, 0.0)
                if row is None
                else self._row_estimate((row, visit_rows[key]), shared_alpha)
            )
        estimate_of: dict[tuple[float, int | None, str, bool, int, int, bool], float] = {}
        for context in set(contexts):
            gap, visits, shared_key, new, runs, failures, last_failed = context
            p_test = w_test = 0.0
            if visits is not None and visits != 0:
                p_test = (gap / (1.0 - (1.0 - alpha) ** visits) / tier_gap + 1.0) / 2.0
                p_test = p_test if p_test > 0.0 else 0.0
                p_test = p_test if p_test < 1.0 else 1.0
                w_test = min(float(visits), 1.0 / alpha)
            p_shared, w_shared = shared_estimates[shared_key]
            if w_shared > 0:
                w_shared = SHARED_WEIGHT
            elif w_test > 0:
                p_shared, w_shared = p_test, SHARED_WEIGHT
            if new:
                prior = 0.5
            elif runs == 0:
                prior = SKIPPED_ONLY_PRIOR
            else:
                smoothed = (failures + 0.5) / (runs + 1.0)
                prior = 0.5 * smoothed + (0.5 if last_failed else 0.0)
            total = w_test + w_shared + 0.0 + PRIOR_WEIGHT
            estimate_of[context] = (
                p_test * w_test + p_shared * w_shared + 0.0 * 0.0 + prior * PRIOR_WEIGHT
            ) / total
        return list(map(estimate_of.__getitem__, contexts))

    def failure_probability(self, history: TestHistory) -> tuple[float, bool, State, State]:
        """(failure probability, whether learned values shaped it, per-test, shared state)."""
        per_test, shared = self.states(history)
        p, known = self._blend(history, (per_test, shared))
        return p, known, per_test, shared

    # -- deciding ----------------------------------------------------------------------
    def decide(
        self,
        histories: Mapping[str, TestHistory],
        test_ids: Sequence[str],
        covering_changed: Mapping[str, str] | None = None,
        impacts: Mapping[str, int] | None = None,
        reverted: Collection[str] = (),
    ) -> list[Decision]:
        """One ε-greedy tier per test. Tests are visited in sorted id order so the random
        draws, and so the order, depend only on the seed and the set of tests.
        ``covering_changed``: test id → how much of its covered code changed (the bucketed
        share of its files), for the tests whose covered code changed (``--qlearn-cov``).
        ``impacts``: test id → DIRECT or IMPORTS, for the tests the static change analysis
        ties to a change since the last episode. ``reverted``: tests that failed last run and
        whose code is again what it was when they last passed (class REVERTED)."""
        # Column by column (issue 16): this runs for every collected test on every run, and
        # one Python loop doing everything per test cost ≈ 6 µs a test. Here the look-ups,
        # the hashing and the tuples are mapped in C over whole columns; only the estimate
        # is a Python loop. The arithmetic, the states and the random draws (their order:
        # per test in sorted id order, the ε draw, then an exploration's tier and place)
        # are the one-loop version's, term for term.
        covering_changed = covering_changed or {}
        impacts = impacts or {}
        learner = self.learner
        rng = learner.rng
        draw = rng.random
        epsilon = learner.epsilon  # the episode count does not move while deciding
        n_tiers = learner.n_actions
        expected_terms = self._expected_terms
        new_tuple = tuple.__new__  # a named tuple from all its fields, without its __new__
        ids = sorted(test_ids)
        n = len(ids)
        learner.decisions += n
        if n == 0:
            return []
        everything = range(n)
        found_histories = list(map(histories.get, ids))
        if None in found_histories:
            found_histories = [
                TestHistory(test_id) if history is None else history
                for history, test_id in zip(found_histories, ids, strict=True)
            ]
        hists: list[TestHistory] = found_histories  # type: ignore[assignment]
        # the history fields used, as columns (TestHistory's field order)
        runs_c, failures_c, verdicts_c, first_c, mean_c, flaky_c = (
            list(map(itemgetter(field), hists)) for field in (1, 2, 4, 7, 8, 12)
        )
        # the tests that ever failed (a minority): only they have a since_fail bucket
        failing = list(compress(everything, failures_c))
        labels = ["never"] * n  # the per-test level's since_fail label
        since_labels = ["never"] * n  # the shared level's
        rate_labels = ["0"] * n
        recent_edges, recent_labels = _RECENT_FAIL.edges, _RECENT_FAIL.labels
        since_edges, since_labels_of = _SINCE_FAIL.edges, _SINCE_FAIL.labels
        rate_edges, rate_labels_of = _FAIL_RATE.edges, _FAIL_RATE.labels
        for i in failing:
            verdicts = verdicts_c[i]
            index = verdicts.rfind(FAILED)
            since = verdicts[index + 1 :].count(PASSED) if index >= 0 else len(verdicts)
            labels[i] = recent_labels[bisect_right(recent_edges, since)]
            since_labels[i] = since_labels_of[bisect_right(since_edges, since)]
            runs = runs_c[i]
            rate_labels[i] = rate_labels_of[
                bisect_right(rate_edges, failures_c[i] / runs if runs else 0.0)
            ]
        # verdicts.rstrip(SKIPPED)[-1:] == FAILED, in C
        last_failed = list(
            map(str.endswith, map(str.rstrip, verdicts_c, repeat(SKIPPED)), repeat(FAILED))
        )
        # the per-test states: _per_test_state's key, hashed in C from the canonical texts
        per_test_state = self._per_test_state
        plain_ids = set(map(type, ids)) == {str}
        if plain_ids:
            never = self._per_test_prefix("never")
            texts = [f"{never}{len(test_id)}:{test_id}" for test_id in ids]
            for i in failing:
                test_id = ids[i]
                texts[i] = f"{self._per_test_prefix(labels[i])}{len(test_id)}:{test_id}"
            keys = list(
                map(
                    _hexdigest,
                    map(sha256, map(str.encode, texts, repeat("utf-8"), repeat("surrogatepass"))),
                )
            )
            del texts
            per_tests: list[State] = list(
                map(
                    partial(new_tuple, State),
                    zip(keys, repeat(""), repeat(_PER_TEST_ORDER), zip(labels, ids, strict=True)),
                )
            )
        else:
            per_tests = list(map(per_test_state, labels, ids))
            keys = [state.key for state in per_tests]
        self._per_test_pending.append((ids, per_tests))  # (neither list changes below)
        # the shared states: a few hundred distinct feature values per run
        duration_edges, duration_labels = _DURATION.edges, _DURATION.labels
        news = list(map(_negative, first_c))
        duration_labels_c = list(
            map(duration_labels.__getitem__, map(bisect_right, repeat(duration_edges), mean_c))
        )
        for i in compress(everything, map(not_, runs_c)):
            duration_labels_c[i] = "?"  # runs == 0: no duration measured
        shared_values_c = list(
            zip(
                duration_labels_c,
                rate_labels,
                news,
                since_labels,
                strict=True,
            )
        )
        q_rows, visit_rows = learner.q_rows, learner.visit_rows
        shared_alpha, row_estimate = self._shared_alpha, self._row_estimate
        shared_by_values: dict[tuple[str, str, bool, str], tuple[State, float, float, bool]] = {}
        shared_state = self.shared_encoder.encode_values
        for values in set(shared_values_c):
            shared = shared_state(values)
            row = q_rows.get(shared.key)
            if row is None:
                shared_by_values[values] = (shared, 0.0, 0.0, False)
            else:
                p_row, w_row = row_estimate((row, visit_rows[shared.key]), shared_alpha)
                shared_by_values[values] = (shared, p_row, w_row, True)
        shared_found = list(map(shared_by_values.__getitem__, shared_values_c))
        # estimator()(history, per_test.key, shared.key), term for term: a function of the
        # per-test row's tier gap and visits, the shared values (they hold "new") and the
        # prior's inputs. Tests with the same record share these (a green suite's tests have
        # equal rows), so the estimate is computed once per distinct context; the contexts
        # are built in C. A test without a per-test row gets visits None (the learner makes a
        # state's Q-row and visit counts together).
        alpha, tier_gap = learner.hyper.alpha, self._tier_gap
        no_row = (0.0,) * n_tiers
        q_of = list(map(q_rows.get, keys, repeat(no_row)))
        contexts = list(
            zip(
                map(sub, map(_first, q_of), map(_last, q_of)),
                map(_first, map(visit_rows.get, keys, repeat((None,)))),
                shared_values_c,
                runs_c,
                failures_c,
                last_failed,
                strict=True,
            )
        )
        del q_of
        estimate_of: dict[_Context, float] = {}
        known_of: dict[_Context, bool] = {}
        for context in set(contexts):
            gap, visits, values, runs, failures, failed = context
            _, p_shared, w_shared, shared_known = shared_by_values[values]
            p_test = w_test = 0.0
            if visits is not None and visits != 0:  # a per-test row, updated at least once
                p_test = (gap / (1.0 - (1.0 - alpha) ** visits) / tier_gap + 1.0) / 2.0
                p_test = p_test if p_test > 0.0 else 0.0
                p_test = p_test if p_test < 1.0 else 1.0
                w_test = min(float(visits), 1.0 / alpha)
            if w_shared > 0:
                w_shared = SHARED_WEIGHT
            elif w_test > 0:
                p_shared, w_shared = p_test, SHARED_WEIGHT
            if values[2]:  # new
                prior = 0.5
            elif runs == 0:
                prior = SKIPPED_ONLY_PRIOR
            else:
                smoothed = (failures + 0.5) / (runs + 1.0)
                prior = 0.5 * smoothed + (0.5 if failed else 0.0)
            total = w_test + w_shared + 0.0 + PRIOR_WEIGHT
            estimate_of[context] = (
                p_test * w_test + p_shared * w_shared + 0.0 * 0.0 + prior * PRIOR_WEIGHT
            ) / total
            known_of[context] = visits is not None or shared_known
        estimates = list(map(estimate_of.__getitem__, contexts))
        knowns = list(map(known_of.__getitem__, contexts))
        del contexts
        #: each test's estimate from its record alone (no change level): what the promotion
        #: of earlier failures compares, so a change does not pass for failure evidence (by
        #: position: a test id collected twice has the same estimate at both)
        recorded = estimates.copy()
        # evidence_class(history), inline: a failure in the last run, else nothing known
        evidences = [NO_EVIDENCE] * n
        for i in compress(everything, last_failed):
            evidences[i] = FAILED_LAST_CHANGED if flaky_c[i] else FAILED_LAST
        changes: list[State | None] = [None] * n
        # the tests a change reaches (change awareness, --qlearn-cov): the change level
        # joins their blend
        if impacts or covering_changed:
            estimate = self.estimator()
            for i, test_id in enumerate(ids):
                impact = impacts.get(test_id)
                if impact is None and test_id not in covering_changed:
                    continue
                history = hists[i]
                # the change level learns per kind of finding: the static one when there is one
                share = STATIC_SHARES.get(impact) if impact is not None else None
                if share is None:
                    share = covering_changed.get(test_id)
                if share is not None:
                    per_test, shared = per_tests[i], shared_found[i][0]
                    change = changes[i] = self.change_state(history, share)
                    estimates[i], knowns[i] = self._blend(history, (per_test, shared), change)
                    recorded[i] = estimate(history, per_test.key, shared.key)[0]
                evidences[i] = evidence_class(history, impact, test_id in covering_changed)
        # learner.choose(expected): ε-greedy, ties to the lowest tier; the greedy tier is a
        # function of the estimate alone, and most tests share a few estimates
        tier_of: dict[float, int] = {}
        three = n_tiers == 3 and len(expected_terms) == 3
        if three:
            (pass0, gap0), (pass1, gap1), (pass2, gap2) = expected_terms
        for p in set(estimates):
            if three:
                tier, best = 0, pass0 + p * gap0
                expected = pass1 + p * gap1
                if expected > best:
                    tier, best = 1, expected
                if pass2 + p * gap2 > best:
                    tier = 2
            else:
                expected_all = [passing + p * gap for passing, gap in expected_terms]
                tier = 0
                for action in range(1, n_tiers):
                    if expected_all[action] > expected_all[tier]:
                        tier = action
            tier_of[p] = tier
        tiers = list(map(tier_of.__getitem__, estimates))
        # the draws, in the one-loop order: per test the ε draw; an exploration then draws
        # its tier and, when something was learned, its random place among its ties (else it
        # keeps its collection place)
        explored = [False] * n
        shuffles = [-1.0] * n
        explored_count = 0
        # the ε draws made in C, lazily: the iterator draws test by test (draw() < ε) and
        # stops at each exploration, whose own draws come before the next test's; islice
        # stops after the n-th test's draw without making another
        explorations = compress(count(), islice(map(gt, repeat(epsilon), iter(draw, None)), n))
        for i in explorations:
            explored_count += 1
            tiers[i], explored[i] = rng.randrange(n_tiers), True
            if knowns[i]:
                shuffles[i] = draw()
        learner.explored += explored_count
        # the mean of earlier runs, 0 when there were none
        durations = mean_c.copy()
        for i in compress(everything, map(not_, runs_c)):
            durations[i] = 0.0
        decisions: list[Decision] = list(
            map(
                partial(new_tuple, Decision),  # every field, in order
                zip(
                    ids,
                    tiers,
                    explored,
                    estimates,
                    per_tests,
                    map(_first, shared_found),
                    knowns,
                    durations,
                    changes,
                    evidences,
                    shuffles,
                    strict=True,
                ),
            )
        )
        if reverted:
            decisions = _demote_reverted(decisions, reverted)
            evidences = [d.evidence for d in decisions]
        # Tests that failed before (not in their last run) but that the learner finds at
        # least as likely to fail as a test that did join the failed-last-run class: the
        # rule is only that no test *without* failure evidence runs ahead of a known
        # failure, and among tests with evidence the estimate knows better (a test failing
        # every other run beats a one-off). Only the tests that ever failed can join.
        failed_last = (FAILED_LAST, FAILED_LAST_CHANGED)
        floor = min(
            (recorded[i] for i in compress(everything, map(failed_last.__contains__, evidences))),
            default=None,
        )
        if floor is not None:
            for i in failing:
                evidence = evidences[i]
                test_id = ids[i]
                if (
                    evidence not in failed_last
                    and evidence != REVERTED
                    and recorded[i] >= floor
                    and failures_c[i] > 0
                    and histories.get(test_id) is not None
                ):
                    # like a known failure: with a change it reaches, one that may be its fix
                    decision = decisions[i]
                    decisions[i] = decision._replace(
                        evidence=FAILED_LAST if decision.change is None else FAILED_LAST_CHANGED
                    )
        return decisions

    # -- learning ----------------------------------------------------------------------
    def learn(self, decision: Decision, verdict: str, next_states: tuple[State, State]) -> float:
        """Bellman-update both state levels with every tier's reward, towards the states of
        the test's history after this run; returns the reward of the tier actually chosen.
        Skipped tests (no verdict) teach nothing."""
        steps: list[UpdateStep] = []
        reward = self.learn_later(decision, verdict, next_states, steps)
        self.learner.update_all_many(steps)
        return reward

    def learning_terms(self) -> tuple[list[float], list[float], float]:
        """(every tier's reward for a failing test, for a passing one, the shared level's
        α): what :meth:`learn_later` updates with, for callers that batch the updates of
        many tests themselves (the per-test rows with ``QLearner.update_all_rows``)."""
        return self._tier_rewards[True], self._tier_rewards[False], self._shared_alpha

    def next_states(
        self, history: TestHistory, previous: State, memo: dict[tuple[object, ...], State]
    ) -> tuple[State, State]:
        """:meth:`states` with ``previous`` reused when its since_fail label is unchanged
        and the shared state looked up in ``memo`` (shared feature values -> state; keep one
        for the whole run) before the encoder."""
        failures, verdicts = history.failures, history.verdicts
        if failures == 0:
            since: int | None = None
            label = since_label = "never"
        else:
            index = verdicts.rfind(FAILED)
            since = verdicts[index + 1 :].count(PASSED) if index >= 0 else len(verdicts)
            label = _RECENT_FAIL.label(since)
            since_label = _SINCE_FAIL.label(since)
        values = previous.values
        if len(values) == 2 and values[0] == label and values[1] == history.test_id:
            per_test = previous
        else:
            per_test = self._per_test_state(label, history.test_id)
        runs = history.runs
        key = (
            "?" if runs == 0 else _DURATION.label(history.duration_mean),
            "0" if failures == 0 else _FAIL_RATE.label(failures / runs if runs else 0.0),
            history.first_episode < 0,
            since_label,
        )
        shared = memo.get(key)
        if shared is None:
            shared = memo[key] = self.shared_encoder.encode_values(key)
        return per_test, shared

    def next_state_columns(
        self,
        histories: Sequence[TestHistory],
        previous: Sequence[State],
        memo: dict[tuple[object, ...], State],
    ) -> tuple[list[State], list[State]]:
        """:meth:`next_states` of each ``histories[i]`` with ``previous[i]``, over whole
        columns: the labels and the shared feature values are built in C (the bucketing of
        :meth:`next_states`, value for value), a per-test state is hashed only where its
        since_fail label changed, and each distinct shared value is encoded once."""
        n = len(histories)
        ids, runs_c, failures_c, verdicts_c, first_c, mean_c = (
            list(map(itemgetter(field), histories)) for field in (0, 1, 2, 4, 7, 8)
        )
        labels = ["never"] * n
        since_labels = ["never"] * n
        rate_labels = ["0"] * n
        recent_edges, recent_labels = _RECENT_FAIL.edges, _RECENT_FAIL.labels
        since_edges, since_labels_of = _SINCE_FAIL.edges, _SINCE_FAIL.labels
        rate_edges, rate_labels_of = _FAIL_RATE.edges, _FAIL_RATE.labels
        for i in compress(range(n), failures_c):
            verdicts = verdicts_c[i]
            index = verdicts.rfind(FAILED)
            since = verdicts[index + 1 :].count(PASSED) if index >= 0 else len(verdicts)
            labels[i] = recent_labels[bisect_right(recent_edges, since)]
            since_labels[i] = since_labels_of[bisect_right(since_edges, since)]
            runs = runs_c[i]
            rate_labels[i] = rate_labels_of[
                bisect_right(rate_edges, failures_c[i] / runs if runs else 0.0)
            ]
        # previous.values == (label, test_id): the previous state still holds
        same = list(map(eq, map(_VALUES, previous), zip(labels, ids, strict=True)))
        per_tests = list(previous)
        # the changed ones hashed (a state of this run kept for the test has a key equal to
        # the hash, in value), and kept as this run's states of their tests
        changed = list(compress(range(n), map(not_, same)))
        hashed = self._hashed_per_test_state
        for i in changed:
            per_tests[i] = hashed(labels[i], ids[i])
        if changed:
            self._per_test_pending.append(
                ([ids[i] for i in changed], [per_tests[i] for i in changed])
            )
        duration_edges, duration_labels = _DURATION.edges, _DURATION.labels
        duration_labels_c = list(
            map(duration_labels.__getitem__, map(bisect_right, repeat(duration_edges), mean_c))
        )
        for i in compress(range(n), map(not_, runs_c)):
            duration_labels_c[i] = "?"  # runs == 0: no duration measured
        values = list(
            zip(duration_labels_c, rate_labels, map(_negative, first_c), since_labels, strict=True)
        )
        encode = self.shared_encoder.encode_values
        for key in set(values):
            if key not in memo:
                memo[key] = encode(key)
        return per_tests, list(map(memo.__getitem__, values))

    def learn_later(
        self,
        decision: Decision,
        verdict: str,
        next_states: tuple[State, State],
        steps: list[UpdateStep],
    ) -> float:
        """:meth:`learn`, with the updates appended to ``steps`` for
        ``learner.update_all_many`` (in this order, before the Q-table is read again);
        returns the reward of the tier actually chosen."""
        if verdict not in (PASSED, FAILED):
            return 0.0
        rewards = self._tier_rewards[verdict == FAILED]
        steps.append((decision.per_test.key, rewards, next_states[0].key, decision.tier, None))
        steps.append((decision.shared.key, rewards, next_states[1].key, None, self._shared_alpha))
        if decision.change is not None:
            steps.append((decision.change.key, rewards, next_states[1].key, None, None))
        return rewards[decision.tier]
