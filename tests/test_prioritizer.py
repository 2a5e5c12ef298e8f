"""The prioritizer agent: features, prior, the estimate read from Q-rows, and learning to
rank over episodes through LearningSession and an in-memory SQLite store."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping

import pytest

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.changes.impact import IMPORT_DISTANCE, proximity
from pytest_qlearn.engine.history import FAILED, KEPT_VERDICTS, PASSED, TestHistory
from pytest_qlearn.engine.hyperparams import Hyperparameters
from pytest_qlearn.engine.qlearner import QEntry, QLearner
from pytest_qlearn.engine.rewards import RewardCalculator
from pytest_qlearn.engine.state import State
from pytest_qlearn.session import LearningSession, Ranking, TestResult
from pytest_qlearn.store.base import Partition
from pytest_qlearn.store.sqlite import SqliteStore

GREEDY = Hyperparameters(epsilon=0.0, epsilon_min=0.0)


def make_prioritizer(hyper: Hyperparameters = GREEDY, seed: int = 0) -> prio.Prioritizer:
    learner = QLearner(prio.NAME, len(prio.TIERS), hyper, random.Random(seed))
    return prio.Prioritizer(learner, RewardCalculator(), prio.agent_type(hyper))


def history(test_id: str, verdicts: str, duration: float = 0.5) -> TestHistory:
    h = TestHistory(test_id)
    for episode, verdict in enumerate(verdicts, 1):
        h = h.record(verdict, duration, episode)
    return h


# -- features and prior -------------------------------------------------------------------


def test_agent_type() -> None:
    agent = prio.agent_type()
    assert agent.name == "prioritizer"
    assert agent.actions == ("first", "middle", "last")
    assert agent.n_actions == 3
    assert set(agent.features) == {
        *prio.SHARED_FEATURES,
        *prio.PER_TEST_FEATURES,
        *prio.CHANGE_FEATURES,
    }


def test_features_of_a_new_test() -> None:
    assert prio.features(TestHistory("t")) == {
        "since_fail": "never",
        "fail_rate": "0",
        "duration": "?",
        "new": True,
    }


def test_features_of_a_known_test() -> None:
    # P F P P: two passes since the failure, failure rate 1/4
    assert prio.features(history("t", "PFPP", 0.5)) == {
        "since_fail": "2",
        "fail_rate": "0.25-0.3",
        "duration": "0.5-1",
        "new": False,
    }


def test_features_bucket_long_gaps_and_high_failure_rates() -> None:
    old_failure = history("t", "F" + "P" * (KEPT_VERDICTS + 3), 20.0)
    assert prio.features(old_failure)["since_fail"] == "11-20"
    assert prio.features(old_failure)["duration"] == "10+"
    assert prio.features(old_failure)["fail_rate"] == "0.05-0.07"  # 1/20
    flaky = history("t", "FFPF", 0.005)
    assert prio.features(flaky)["fail_rate"] == "0.5+"
    assert prio.features(flaky)["since_fail"] == "<1"
    assert prio.features(flaky)["duration"] == "0.001-0.01"
    assert prio.features(history("t", "P", 0.0005))["duration"] == "<0.001"
    assert prio.features(history("t", "P", 0.05))["duration"] == "0.01-0.1"


@pytest.mark.parametrize(
    ("verdicts", "prior"),
    [
        ("", 0.5),  # new test: a coin flip
        ("PFPP", 0.15),  # 0.5 * (1 + 0.5) / (4 + 1)
        ("PPPF", 0.65),  # 0.5 * 0.3 + 0.5: the last run failed
        ("PPPPPPPPP", 0.025),  # 0.5 * 0.5 / 10
        ("FFFF", 0.95),  # 0.5 * 4.5 / 5 + 0.5
    ],
)
def test_prior_failure_probability(verdicts: str, prior: float) -> None:
    assert prio.prior_failure_probability(history("t", verdicts)) == pytest.approx(prior)


def test_states_per_test_is_per_identity_shared_is_not() -> None:
    p = make_prioritizer()
    per_a, shared_a = p.states(history("m.py::test_a", "PFP"))
    per_b, shared_b = p.states(history("m.py::test_b", "PFP"))
    assert per_a.key != per_b.key
    assert shared_a == shared_b
    assert "test=m.py::test_a" in per_a.readable
    per_a2, _ = p.states(history("m.py::test_a", "PPP"))
    assert per_a2.key != per_a.key


def test_new_tests_are_a_coin_flip_in_the_middle_tier() -> None:
    p = make_prioritizer()
    decisions = p.decide({}, ["b", "a"])
    assert [d.test_id for d in decisions] == ["a", "b"]
    for d in decisions:
        assert d.p_fail == 0.5
        assert d.tier == 1
        assert not d.known
        assert not d.explored


# -- the estimate read from Q-rows --------------------------------------------------------


def _train(
    p: prio.Prioritizer,
    state_key: str,
    verdicts: str,
    next_key: str | None,
    alpha: float | None = None,
) -> None:
    rewards = RewardCalculator()
    for verdict in verdicts:
        failed = verdict == FAILED
        tier_rewards = [rewards.prioritizer(t, 3, failed) for t in range(3)]
        p.learner.update_all(state_key, tier_rewards, next_key, alpha=alpha)


def test_estimate_is_the_exponentially_weighted_failure_share() -> None:
    hyper = Hyperparameters(alpha=0.5, gamma=0.9, epsilon=0.0, epsilon_min=0.0)
    p = make_prioritizer(hyper)
    new = TestHistory("m.py::test_a")
    per_test, shared = p.states(new)
    # a next state with large values: the bootstrap is the same for every tier, so it
    # must not leak into the estimate
    p.learner.load([QEntry("next", 0, 3.0, 1), QEntry("next", 1, 1.0, 1)])
    _train(p, per_test.key, "FPF", "next")
    # Q(first) - Q(last) per update moves towards +2 (failure) or -2 (pass):
    # D1 = 0.5 * 2 = 1, D2 = 1 + 0.5 * (-2 - 1) = -0.5, D3 = -0.5 + 0.5 * (2 + 0.5) = 0.75
    values = p.learner.values(per_test.key)
    assert values[0] - values[2] == pytest.approx(0.75)
    # de-biased: 0.75 / (1 - 0.5**3) = 6/7; p = (6/7 / 2 + 1) / 2 = 5/7
    # exponentially weighted failure share, weights 0.5**(n-k): (0.25*1 + 0.5*0 + 1*1) / 1.75
    estimate, weight = p._estimate(per_test)
    assert estimate == pytest.approx(5 / 7)
    assert weight == 2.0  # min(3 visits, 1/α)
    assert p._estimate(shared) == (0.0, 0.0)  # never updated
    # blended with the prior of a new test (0.5, weight 1), the never-updated shared state
    # counting as the test's own record (weight 5): (5/7 * (2 + 5) + 0.5) / 8 = 11/16
    probability, known, _, _ = p.failure_probability(new)
    assert probability == pytest.approx(11 / 16)
    assert known


def test_estimate_four_updates() -> None:
    hyper = Hyperparameters(alpha=0.25, gamma=0.5, epsilon=0.0, epsilon_min=0.0)
    p = make_prioritizer(hyper)
    per_test, _ = p.states(TestHistory("t"))
    _train(p, per_test.key, "PPFF", per_test.key)  # a self-loop: bootstrap from its own row
    # weights 0.75**3, 0.75**2, 0.75, 1 = 0.421875, 0.5625, 0.75, 1 (sum 2.734375)
    # failures weigh 0.75 + 1 = 1.75 -> 1.75 / 2.734375 = 0.64
    estimate, weight = p._estimate(per_test)
    assert estimate == pytest.approx(0.64)
    assert weight == 4.0  # min(4 visits, 1/α)


@pytest.mark.parametrize(("verdict", "expected"), [(FAILED, 1.0), (PASSED, 0.0)])
def test_estimate_of_a_constant_outcome(verdict: str, expected: float) -> None:
    p = make_prioritizer(Hyperparameters(alpha=0.1, epsilon=0.0, epsilon_min=0.0))
    per_test, _ = p.states(TestHistory("t"))
    _train(p, per_test.key, verdict * 30, None)
    estimate, weight = p._estimate(per_test)
    assert estimate == pytest.approx(expected)
    assert weight == pytest.approx(10.0)  # capped at 1/α


def test_shared_level_counts_as_fixed_pseudo_observations() -> None:
    p = make_prioritizer(Hyperparameters(alpha=0.1, epsilon=0.0, epsilon_min=0.0))
    h = TestHistory("t")
    _, shared = p.states(h)
    _train(p, shared.key, "F" * 50, None, alpha=0.1 * prio.SHARED_ALPHA_SCALE)
    # p_shared = 1 with weight SHARED_WEIGHT = 5 (whatever its visits); prior 0.5 with
    # weight 1; the per-test level was never updated -> (5 + 0.5) / 6 = 11/12
    assert prio.SHARED_WEIGHT == 5.0
    assert p.failure_probability(h)[0] == pytest.approx(11 / 12)


def test_shared_level_learns_at_a_tenth_of_alpha() -> None:
    hyper = Hyperparameters(alpha=0.5, epsilon=0.0, epsilon_min=0.0)
    p = make_prioritizer(hyper)
    per_test, shared = p.states(history("t", "PPP"))
    p.learn(prio.Decision("t", 2, False, 0.0, per_test, shared, False), FAILED, (per_test, shared))
    # one failure: Q(first) - Q(last) moves by α·2 on the per-test level, by α/10·2 shared
    test_q, shared_q = p.learner.values(per_test.key), p.learner.values(shared.key)
    assert test_q[0] - test_q[2] == pytest.approx(0.5 * 2)
    assert shared_q[0] - shared_q[2] == pytest.approx(0.05 * 2)
    # and each reads back de-biased at its own rate: one failure seen -> p = 1
    assert p._row_estimate(p.learner.row(shared.key), 0.05) == (pytest.approx(1.0), 1.0)


# -- determinism --------------------------------------------------------------------------

IDS = [f"m{i % 3}.py::test_{i:02d}" for i in range(30)]
HISTORIES = {tid: history(tid, "PPF"[i % 3 :] + "P" * (i % 4)) for i, tid in enumerate(IDS)}
EXPLORING = Hyperparameters(epsilon=0.5, epsilon_min=0.0)


def _decide(seed: int, ids: list[str]) -> list[prio.Decision]:
    return make_prioritizer(EXPLORING, seed).decide(HISTORIES, ids)


def test_decisions_depend_on_the_set_of_tests_not_their_order() -> None:
    shuffled = list(IDS)
    random.Random(4).shuffle(shuffled)
    assert shuffled != IDS
    assert _decide(1, shuffled) == _decide(1, IDS)
    assert _decide(1, list(reversed(IDS))) == _decide(1, IDS)


def test_same_seed_same_decisions_other_seed_other_decisions() -> None:
    first = _decide(7, IDS)
    assert first == _decide(7, IDS)
    assert any(d.explored for d in first)
    assert any(not d.explored for d in first)
    other = _decide(8, IDS)
    assert [(d.tier, d.explored) for d in other] != [(d.tier, d.explored) for d in first]


def _refs(ids: list[str]) -> list[prio.TestRef]:
    return [prio.TestRef(tid, tid.split("::")[0], None, i) for i, tid in enumerate(ids)]


def _rank(seed: int, refs: list[prio.TestRef]) -> Ranking:
    from pytest_qlearn.store.base import Snapshot

    snapshot = Snapshot(PART, histories=dict(HISTORIES))
    return LearningSession(snapshot, seed=seed, hyper=EXPLORING).rank(refs, "module")


def test_session_order_is_independent_of_input_order_and_reproducible() -> None:
    refs = _refs(IDS)
    shuffled = list(refs)
    random.Random(9).shuffle(shuffled)
    base = _rank(3, refs)
    assert [r.test_id for r in _rank(3, shuffled).order] == [r.test_id for r in base.order]
    assert [r.test_id for r in _rank(3, refs).order] == [r.test_id for r in base.order]
    # another seed explores other tests, but only among ties: the order may stay the same
    other = _rank(4, refs)
    assert {t for t, d in other.decisions.items() if d.explored} != {
        t for t, d in base.decisions.items() if d.explored
    }
    assert sorted(r.test_id for r in base.order) == sorted(IDS)


# -- learning over episodes through the session and a store -------------------------------

PART = Partition("proj", "env")


@pytest.fixture
def store() -> Iterator[SqliteStore]:
    s = SqliteStore(":memory:")
    s.open()
    yield s
    s.close()


def run_episode(
    store: SqliteStore,
    hyper: Hyperparameters,
    refs: list[prio.TestRef],
    outcomes: Mapping[str, str],
    number: int,
    *,
    histories: Mapping[str, TestHistory] | None = None,
) -> tuple[Ranking, LearningSession]:
    """Rank, "run" the tests with the given verdicts, learn, and write the episode."""
    snapshot = store.load_snapshot(PART, [prio.NAME])
    if histories is not None:
        snapshot.histories = dict(histories)
    session = LearningSession(snapshot, seed=number, hyper=hyper, session_id=f"session-{number}")
    ranking = session.rank(refs, "test")
    results = []
    for position, ref in enumerate(ranking.order):
        decision = ranking.decisions[ref.test_id]
        verdict = outcomes[ref.test_id]
        results.append(
            TestResult(
                ref.test_id, verdict, 0.01, ref.index, position, decision.tier, decision.explored
            )
        )
    failed = any(v == FAILED for v in outcomes.values())
    write, _ = session.finish(
        results, started_at=1000.0 + number, duration=1.0, exit_status=int(failed)
    )
    assert store.write_episode(write)
    return ranking, session


def test_always_failing_test_is_ranked_before_an_always_passing_one(store: SqliteStore) -> None:
    refs = [
        prio.TestRef("m.py::test_pass", "m.py", None, 0),
        prio.TestRef("m.py::test_fail", "m.py", None, 1),
    ]
    outcomes = {"m.py::test_pass": PASSED, "m.py::test_fail": FAILED}
    first, _ = run_episode(store, GREEDY, refs, outcomes, 1)
    # nothing known yet: both are coin flips, collection order
    assert [r.test_id for r in first.order] == ["m.py::test_pass", "m.py::test_fail"]
    for number in range(2, 6):
        run_episode(store, GREEDY, refs, outcomes, number)
    ranking, session = run_episode(store, GREEDY, refs, outcomes, 6)
    assert [r.test_id for r in ranking.order] == ["m.py::test_fail", "m.py::test_pass"]
    failing = ranking.decisions["m.py::test_fail"]
    passing = ranking.decisions["m.py::test_pass"]
    assert failing.tier == 0
    assert passing.tier == 2
    assert failing.p_fail > 0.9
    assert passing.p_fail < 0.1
    # the learned Q-values, not only the history prior, shaped these estimates
    assert failing.p_fail > prio.prior_failure_probability(history("f", "FFFFF"))
    assert passing.p_fail < prio.prior_failure_probability(history("p", "PPPPP"))
    assert failing.known and passing.known
    assert not failing.explored and not passing.explored
    assert session.epsilon == 0.0
    assert len(store.recent_sessions(PART)) == 6


def test_per_test_identity_separates_tests_with_identical_histories(store: SqliteStore) -> None:
    # Both tests show the learner the very same history every episode (so the shared state
    # and the prior are identical); only their identity differs. test_a always passes,
    # test_b fails every 3rd episode.
    hyper = Hyperparameters(alpha=0.5, epsilon=0.0, epsilon_min=0.0)
    a, b = "m.py::test_a", "m.py::test_b"
    refs = [prio.TestRef(a, "m.py", None, 0), prio.TestRef(b, "m.py", None, 1)]

    def frozen() -> dict[str, TestHistory]:
        return {tid: history(tid, "PPP", 0.01) for tid in (a, b)}

    for number in range(1, 7):
        outcomes = {a: PASSED, b: FAILED if number % 3 == 0 else PASSED}
        run_episode(store, hyper, refs, outcomes, number, histories=frozen())

    # episode 7: rank from what the store holds now (no learning yet)
    snapshot = store.load_snapshot(PART, [prio.NAME])
    snapshot.histories = frozen()
    session = LearningSession(snapshot, seed=7, hyper=hyper)
    ranking = session.rank(refs, "test")
    p_a = session.prioritizer.failure_probability(frozen()[a])[0]
    p_b = session.prioritizer.failure_probability(frozen()[b])[0]
    # Hand computation, α = 0.5 (weights 0.5**(n-k), see the estimate tests):
    #   per-test a: passes only                                   -> 0, weight min(6, 2) = 2
    #   per-test b: P P F P P F -> (1/8 + 1) / (63/32) = 4/7,        weight 2
    #   shared (α/10 = 0.05, weights 0.95**(n-k)): 12 updates, a then b each episode,
    #           failures at updates 6 and 12 -> (0.95**6 + 1) / Σ_{j<12} 0.95**j = 0.1888,
    #                                                               weight SHARED_WEIGHT = 5
    #   prior of P P P: 0.5 * 0.5 / 4 = 1/16,                       weight 1
    shared_p = (0.95**6 + 1) * 0.05 / (1 - 0.95**12)
    expected_a = (0.0 * 2 + shared_p * 5 + 1 / 16) / 8  # 0.1258
    expected_b = (4 / 7 * 2 + shared_p * 5 + 1 / 16) / 8  # 0.2687
    assert p_a == pytest.approx(expected_a)
    assert p_b == pytest.approx(expected_b)
    assert p_b - p_a == pytest.approx(1 / 7)
    # the ranking of episode 7 uses exactly these estimates
    assert ranking.decisions[a].p_fail == pytest.approx(expected_a)
    assert ranking.decisions[b].p_fail == pytest.approx(expected_b)
    assert ranking.decisions[b].tier == 1  # p_b = 0.269 is nearer to 0.5 than to 0
    assert ranking.decisions[a].tier == 2  # p_a = 0.126 is nearer to 0 than to 0.5
    assert [r.test_id for r in ranking.order] == [b, a]


# -- the order inside a tier --------------------------------------------------------------


def _decision(
    tier: int, p: float, duration: float, evidence: int = prio.NO_EVIDENCE
) -> prio.Decision:
    state = State("k", "r")
    return prio.Decision("t", tier, False, p, state, state, False, duration, None, evidence)


def test_order_key_evidence_class_then_likeliest_failure_then_shortest() -> None:
    keys = {
        "failed last run, unlikely, long": prio.order_key(
            _decision(2, 0.01, 30.0, prio.FAILED_LAST)
        ),
        "reaches changed code": prio.order_key(_decision(2, 0.02, 1.0, prio.DIRECT)),
        "imports changed code": prio.order_key(_decision(2, 0.03, 1.0, prio.IMPORTS)),
        "first tier, likely": prio.order_key(_decision(0, 0.6, 1.0)),
        "p=0.2, long": prio.order_key(_decision(2, 0.2, 5.0)),
        "p=0.2, short": prio.order_key(_decision(2, 0.2, 0.05)),
        "p=0.1, shortest": prio.order_key(_decision(2, 0.1, 0.0)),
    }
    assert sorted(keys, key=keys.__getitem__) == [
        "failed last run, unlikely, long",
        "reaches changed code",
        "imports changed code",
        "first tier, likely",
        "p=0.2, short",
        "p=0.2, long",
        "p=0.1, shortest",
    ]


def test_inside_a_class_running_the_change_then_proximity_come_before_the_estimate() -> None:
    likely = _decision(2, 0.6, 0.01, prio.DIRECT)
    unlikely = _decision(2, 0.01, 5.0, prio.DIRECT)
    keys = {
        "likely": prio.order_key(likely, proximity=6),
        "near": prio.order_key(unlikely, proximity=0),
        "runs the changed lines": prio.order_key(unlikely, runs_change=True, proximity=7),
        "imports, near": prio.order_key(_decision(2, 0.9, 0.0, prio.IMPORTS), proximity=0),
        "failed last run, far": prio.order_key(
            _decision(2, 0.01, 1.0, prio.FAILED_LAST), proximity=99
        ),
    }
    assert sorted(keys, key=keys.__getitem__) == [
        "failed last run, far",  # no fact inside a class moves a test across classes
        "runs the changed lines",
        "near",
        "likely",
        "imports, near",
    ]


def test_known_failures_whose_code_changed_run_farthest_from_the_change_first() -> None:
    """The nearer the change, the likelier it is the fix: a failure that only imports the
    changed module runs before one that calls the changed function (toolz, commit 21 of
    the fault history: the 2 real failures had run behind 25 fixed ones)."""
    maybe_fixed = _decision(2, 0.5, 0.01, prio.FAILED_LAST_CHANGED)
    keys = {
        "calls the change": prio.order_key(maybe_fixed, proximity=proximity(0, True, True)),
        "runs the changed lines": prio.order_key(
            maybe_fixed, runs_change=True, proximity=proximity(IMPORT_DISTANCE, False, False)
        ),
        "imports it": prio.order_key(
            maybe_fixed, proximity=proximity(IMPORT_DISTANCE, False, True)
        ),
        "calls a caller": prio.order_key(maybe_fixed, proximity=proximity(2, False, True)),
    }
    assert sorted(keys, key=keys.__getitem__) == [
        "imports it",
        "calls a caller",
        "calls the change",
        "runs the changed lines",
    ]


def test_evidence_classes_come_from_facts_not_estimates() -> None:
    assert prio.evidence_class(history("t", "PPPF")) == prio.FAILED_LAST
    assert prio.evidence_class(history("t", "PPFS")) == prio.FAILED_LAST  # skips do not hide it
    assert prio.evidence_class(history("t", "FPPP")) == prio.NO_EVIDENCE
    # a new test counts through its code (the change analysis says its code is new)
    assert prio.evidence_class(TestHistory("t")) == prio.NO_EVIDENCE
    assert prio.evidence_class(TestHistory("t"), prio.DIRECT) == prio.DIRECT
    assert prio.evidence_class(history("t", "PPP"), prio.DIRECT) == prio.DIRECT
    assert prio.evidence_class(history("t", "PPP"), prio.IMPORTS) == prio.IMPORTS
    further = prio.evidence_class(history("t", "PPP"), prio.CALLS_FURTHER)
    assert prio.DIRECT < further == prio.CALLS_FURTHER < prio.IMPORTS
    assert prio.evidence_class(history("t", "PPP"), covers_changed=True) == prio.DIRECT
    # failed last run, and code it reaches changed since: maybe its fix, after the others
    changed = prio.evidence_class(history("t", "PPF"), prio.IMPORTS)
    assert prio.FAILED_LAST < changed == prio.FAILED_LAST_CHANGED < prio.DIRECT
    assert prio.evidence_class(history("t", "PPF"), covers_changed=True) == changed


def test_exploration_never_moves_a_test_ahead_of_one_with_evidence() -> None:
    """ε = 1: every decision explores, yet the one known failure leads every order."""
    always = Hyperparameters(epsilon=1.0, epsilon_min=0.0)
    histories = {f"t{i:02d}": history(f"t{i:02d}", "PPPPPPPP") for i in range(40)}
    histories["t33"] = history("t33", "PPPPPPPF")
    for seed in range(5):
        decisions = make_prioritizer(always, seed).decide(histories, list(histories))
        assert all(d.explored for d in decisions)
        first = min(decisions, key=prio.order_key)
        assert first.test_id == "t33"
        # nothing learned yet: an explored test keeps its collection place among ties
        assert all(d.shuffle == -1.0 for d in decisions if not d.known)


def test_a_test_failing_often_joins_the_known_failures_a_one_off_does_not() -> None:
    p = make_prioritizer()
    histories = {
        "flip": history("flip", "FPFPFPFP"),  # failed every other run, passed last
        "once": history("once", "FPPPPPPP"),  # failed long ago
        "last": history("last", "PPPPPPPF"),  # failed last run, rarely before
    }
    # what the learner saw of "flip": far more failures than its recent history shows
    per_test, _ = p.states(histories["flip"])
    _train(p, per_test.key, "F" * 60, None)
    decisions = {d.test_id: d for d in p.decide(histories, list(histories))}
    assert decisions["last"].evidence == prio.FAILED_LAST
    assert decisions["flip"].evidence == prio.FAILED_LAST  # at least as likely as "last"
    assert decisions["once"].evidence == prio.NO_EVIDENCE


def test_order_key_treats_float_noise_and_durations_of_one_power_of_two_as_ties() -> None:
    def key(p: float, duration: float, floor: float = prio.DURATION_FLOOR) -> tuple[int, ...]:
        return prio.order_key(_decision(2, p, duration), floor)

    # estimates 1e-12 apart are equal, so the shorter test runs first
    assert key(0.3 + 1e-12, 0.5) > key(0.3, 0.2)
    # durations in one power of two (0.25-0.5 s) are equal: the collection index decides
    assert key(0.3, 0.26) == key(0.3, 0.49)
    assert key(0.3, 0.24) < key(0.3, 0.26)
    # Commons_imaging's first failure: 0.25 ms (under the floor) before 1.04 ms
    assert key(0.3, 0.00025) < key(0.3, 0.00104)
    # under the floor every duration is equal (unknown ones, 0, included)
    assert key(0.3, 0.0) == key(0.3, 0.00002) == key(0.3, 0.00049)
    assert key(0.3, 0.00049) < key(0.3, 0.0011)
    # pytest-randomly's floor: fast tests keep its shuffle, slower ones still go by duration
    shuffled = prio.SHUFFLED_DURATION_FLOOR
    assert key(0.3, 0.0002, shuffled) == key(0.3, 0.009, shuffled)
    assert key(0.3, 0.009, shuffled) < key(0.3, 0.02, shuffled)


def test_decisions_carry_the_expected_duration() -> None:
    p = make_prioritizer()
    decisions = p.decide({"a": history("a", "PP", 2.5)}, ["a", "new"])
    assert [(d.test_id, d.duration) for d in decisions] == [("a", 2.5), ("new", 0.0)]


def test_per_test_state_tells_short_gaps_since_a_failure_apart() -> None:
    p = make_prioritizer()
    keys = {
        verdicts: p.states(history("t", verdicts))[0].readable
        for verdicts in ("", "PPP", "PPF", "PFP", "FPP", "FPPP", "FPPPPPPP")
    }
    assert keys[""] == keys["PPP"] == "since_fail=never test=t"
    assert keys["PPF"] == "since_fail=<1 test=t"
    assert keys["PFP"] == "since_fail=1 test=t"
    assert keys["FPP"] == "since_fail=2 test=t"
    assert keys["FPPP"] == keys["FPPPPPPP"] == "since_fail=3+ test=t"


def test_next_per_test_state_is_reused_only_when_the_run_left_it_unchanged() -> None:
    agent = make_prioritizer()
    before = TestHistory("m.py::test_a").record(PASSED, 0.1, 1)
    per_test, _ = agent.states(before)
    passed_again = before.record(PASSED, 0.1, 2)  # "never" failed, still "never"
    reused, _ = agent.states(passed_again, per_test)
    assert reused is per_test
    assert reused == agent.states(passed_again)[0]  # the same state a fresh encoding gives
    failed = before.record(FAILED, 0.1, 2)  # runs since failure: "never" -> "<1"
    changed, _ = agent.states(failed, per_test)
    assert changed != per_test
    assert changed == agent.states(failed)[0]
    assert changed.readable == "since_fail=<1 test=m.py::test_a"


# -- covered code changed (--qlearn-cov) -------------------------------------------------------
def test_a_test_covering_changed_code_starts_as_a_coin_flip_and_runs_first() -> None:
    p = make_prioritizer()
    steady = {t: history(t, "PPPPPPPP") for t in ("a", "b")}
    plain = {d.test_id: d for d in p.decide(steady, ["a", "b"])}
    changed = {d.test_id: d for d in p.decide(steady, ["a", "b"], covering_changed={"b": "0.5+"})}
    assert plain["b"].change is None and changed["a"].change is None
    assert changed["b"].change is not None
    assert changed["b"].p_fail >= prio.CHANGE_PRIOR / 2 > plain["b"].p_fail
    assert prio.order_key(changed["b"]) < prio.order_key(changed["a"])


def test_the_change_level_learns_how_often_changes_break_such_tests() -> None:
    p = make_prioritizer()
    steady = {"t": history("t", "PPPPPPPP")}
    first = p.decide(steady, ["t"], covering_changed={"t": "0.5+"})[0]
    assert first.change is not None
    nxt = p.states(steady["t"].record(PASSED, 0.5, 9), first.per_test)
    for _ in range(30):  # every change so far left tests like it passing
        p.learn(p.decide(steady, ["t"], covering_changed={"t": "0.5+"})[0], PASSED, nxt)
    learned = p.decide(steady, ["t"], covering_changed={"t": "0.5+"})[0]
    assert learned.p_fail < first.p_fail / 4
    # ... while one that breaks whenever its code changes stays in front
    breaking = make_prioritizer()
    for _ in range(30):
        decision = breaking.decide(steady, ["t"], covering_changed={"t": "0.5+"})[0]
        breaking.learn(decision, FAILED, nxt)
    assert breaking.decide(steady, ["t"], covering_changed={"t": "0.5+"})[0].p_fail > 0.5


def test_a_change_is_no_failure_evidence_for_promoting_an_old_failure() -> None:
    """Only the record may lift an earlier failure into the known failures: a test whose
    covered code changed has a high estimate, but that is the change speaking."""
    p = make_prioritizer()
    histories = {
        "last": history("last", "PPPPPPPF"),  # failed last run, rarely before
        "old": history("old", "FPPPPPPP"),  # failed long ago
    }
    for test_id in histories:  # both seen passing many times before
        _train(p, p.states(histories[test_id])[0].key, "P" * 60, None)
    change = p.change_state(histories["old"], "0.5+")
    _train(p, change.key, "F" * 40, None)  # changes like this one broke such tests
    decisions = {
        d.test_id: d for d in p.decide(histories, list(histories), covering_changed={"old": "0.5+"})
    }
    assert decisions["old"].p_fail > decisions["last"].p_fail  # the change makes it likely...
    assert decisions["last"].evidence == prio.FAILED_LAST
    assert decisions["old"].evidence == prio.DIRECT  # ...but it stays a change, not a failure


def test_a_reverted_failure_runs_after_the_changes_before_the_rest() -> None:
    """A known failure whose reached changes all revert what it failed with is likely fixed:
    the tests reaching other changes go first; it still precedes every test without evidence,
    and is not lifted back among the known failures by its estimate."""
    p = make_prioritizer()
    histories = {
        "fixed": history("fixed", "PPPPPPFF"),  # its breaking change is reverted now
        "still": history("still", "PPPPPPPF"),  # failed last run, nothing it reaches changed
        "fresh": history("fresh", "PPPPPPPP"),  # calls code that changed now
        "near": history("near", "PPPPPPPP"),  # imports it
        "calm": history("calm", "PPPPPPPP"),
    }
    impacts = {"fixed": prio.DIRECT, "fresh": prio.DIRECT, "near": prio.IMPORTS}
    decisions = p.decide(histories, list(histories), impacts=impacts, reverted={"fixed", "calm"})
    by_id = {d.test_id: d for d in decisions}
    assert by_id["fixed"].evidence == prio.REVERTED
    assert by_id["calm"].evidence == prio.NO_EVIDENCE  # no failure to demote
    order = [d.test_id for d in sorted(decisions, key=prio.order_key)]
    assert order == ["still", "fresh", "near", "fixed", "calm"]
    assert prio.reason(by_id["fixed"], histories["fixed"]) == (
        "failed last run; the change it failed with is reverted since"
    )


def test_traced_tests_keep_their_duration_estimates(store: SqliteStore) -> None:
    """A test traced by --qlearn-cov ran under the tracer: its seconds are not its own. One
    with a measured history keeps its estimates (run time, setup and teardown) — in the
    history and in what the store keeps to replay it — while an untraced test, and a traced
    one never measured before, learn what they took."""
    known = {
        t: history(t, "PPP", duration=0.2)._replace(fixture_mean=0.05, duration_recent=0.2)
        for t in ("m.py::test_traced", "m.py::test_plain")
    }
    snapshot = store.load_snapshot(PART, [prio.NAME])
    snapshot.histories = dict(known)
    session = LearningSession(snapshot, seed=1, hyper=GREEDY, session_id="s1")
    ids = ["m.py::test_traced", "m.py::test_plain", "m.py::test_new"]
    ranking = session.rank([prio.TestRef(t, "m.py", None, i) for i, t in enumerate(ids)], "test")
    results = [
        TestResult(t, PASSED, 3.0, i, i, ranking.decisions[t].tier, False, 1.0)
        for i, t in enumerate(ids)
    ]
    write, _ = session.finish(
        results,
        started_at=1000.0,
        duration=9.0,
        exit_status=0,
        untimed={"m.py::test_traced", "m.py::test_new"},
    )
    after = {h.test_id: h for h in write.next_histories}
    seconds = {o.test_id: (o.duration, o.fixture) for o in write.observations}
    traced = after["m.py::test_traced"]
    assert (traced.duration_recent, traced.fixture_mean, traced.runs) == (0.2, 0.05, 4)
    assert traced.duration_mean == pytest.approx(0.2)
    assert seconds["m.py::test_traced"] == (0.2, 0.05)
    assert after["m.py::test_plain"].duration_recent > 0.2  # learned the 3 s it took
    assert seconds["m.py::test_plain"] == seconds["m.py::test_new"] == (3.0, 1.0)
    assert after["m.py::test_new"].expected_duration == 3.0
