"""The ``selector`` agent (``--qlearn-budget``) without pytest: budget parsing, the
selection walk, rewards, pending skips paid back later, and the session wiring.
Numbers are hand-computed."""

from __future__ import annotations

import random

import pytest

from pytest_qlearn.agents import selector as sel
from pytest_qlearn.engine.history import TestHistory
from pytest_qlearn.engine.hyperparams import ConfigError, Hyperparameters
from pytest_qlearn.engine.qlearner import QEntry, QLearner
from pytest_qlearn.engine.rewards import RewardCalculator
from pytest_qlearn.session import LearningSession, TestResult, default_registry
from pytest_qlearn.store.base import Partition, PendingSkipDelta, Snapshot

GREEDY = Hyperparameters(alpha=0.5, gamma=0.9, epsilon=0.0, epsilon_min=0.0)


def history(test_id: str, duration: float, verdicts: str = "PPP") -> TestHistory:
    h = TestHistory(test_id)
    for episode, verdict in enumerate(verdicts, start=1):
        h = h.record(verdict, duration, episode)
    return h


def selector(hyper: Hyperparameters = GREEDY, pending: dict[str, dict[str, float]] | None = None):
    learner = QLearner(sel.NAME, 2, hyper, random.Random(1))
    return sel.Selector(learner, RewardCalculator(), sel.agent_type(hyper), pending)


# A 1s, B 2s, C 3s pass; E 1s failed last time; F 0.5s is marked; D is new (never ran).
HISTORIES = {
    "A": history("A", 1.0),
    "B": history("B", 2.0),
    "C": history("C", 3.0),
    "E": history("E", 1.0, "PPF"),
    "F": history("F", 0.5),
}
ORDER = ["A", "B", "C", "D", "E", "F"]


# -- budget values ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds", "share"),
    [
        ("120s", 120.0, None),
        ("2.5m", 150.0, None),
        ("1h", 3600.0, None),
        (" 0.5S ", 0.5, None),
        ("25%", None, 0.25),
        ("100%", None, 1.0),
    ],
)
def test_budget_values_parse(text: str, seconds: float | None, share: float | None) -> None:
    budget = sel.parse_budget("--qlearn-budget", text)
    assert (budget.seconds, budget.share) == (seconds, share)


@pytest.mark.parametrize(
    "text", ["0", "-5s", "150%", "abc", "10x", "0s", "0%", "", "5", "nan", "1e3s", "5 s s"]
)
def test_bad_budget_values_name_key_value_and_forms(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        sel.parse_budget("qlearn_budget", text)
    message = str(info.value)
    assert "qlearn_budget" in message and repr(text) in message
    assert "90s" in message and "25%" in message


def test_a_share_resolves_against_the_estimated_suite_time() -> None:
    assert sel.Budget("25%", share=0.25).resolve(8.0) == 2.0
    assert sel.Budget("3s", seconds=3.0).resolve(8.0) == 3.0


# -- selection ----------------------------------------------------------------------------
def test_unknown_durations_are_the_median_known_duration() -> None:
    estimates, median = sel.estimate_durations(ORDER, HISTORIES)
    assert median == 1.0  # of 1, 2, 3, 1, 0.5
    assert estimates == {"A": 1.0, "B": 2.0, "C": 3.0, "D": 1.0, "E": 1.0, "F": 0.5}
    assert sel.estimate_durations(["X"], {}) == ({"X": 0.0}, 0.0)


def test_selection_runs_the_always_set_then_fills_the_budget_in_priority_order() -> None:
    selection = selector().select(ORDER, HISTORIES, sel.Budget("4s", seconds=4.0), marked={"F"})
    reasons = {c.test_id: (c.run, c.reason) for c in selection.choices}
    # always: D (new, 1.0) + E (failed last, 1.0) + F (marked, 0.5) = 2.5 s
    # then A: 2.5 + 1 = 3.5 fits; B: 3.5 + 2 = 5.5 does not; C: 6.5 does not
    assert reasons == {
        "A": (True, sel.FITS),
        "B": (False, sel.OVER),
        "C": (False, sel.OVER),
        "D": (True, sel.NEW),
        "E": (True, sel.FAILED_LAST),
        "F": (True, sel.MARKED),
    }
    assert [c.test_id for c in selection.choices] == ORDER
    assert selection.estimated_total == 8.5
    assert selection.estimated_selected == 3.5
    assert not selection.always_over_budget


def test_a_later_cheaper_test_still_fits_after_an_expensive_one_did_not() -> None:
    order = ["C", "B", "A"]
    selection = selector().select(order, HISTORIES, sel.Budget("3.5s", seconds=3.5))
    # C: 3 fits (3.0); B: 5.0 does not; A: 4.0 does not
    assert [c.test_id for c in selection.selected] == ["C"]
    selection = selector().select(["B", "C", "A"], HISTORIES, sel.Budget("3.5s", seconds=3.5))
    # B: 2.0; C: 5.0 no; A: 3.0 yes
    assert [c.test_id for c in selection.selected] == ["B", "A"]


def test_a_share_budget_of_the_estimated_suite() -> None:
    # 50 % of 8.5 s = 4.25 s: the same tests as a 4 s budget
    selection = selector().select(ORDER, HISTORIES, sel.Budget("50%", share=0.5), marked={"F"})
    assert selection.budget_seconds == 4.25
    assert {c.test_id for c in selection.selected} == {"A", "D", "E", "F"}


def test_a_budget_below_the_always_run_set_runs_only_that_set_and_says_so() -> None:
    selection = selector().select(ORDER, HISTORIES, sel.Budget("2s", seconds=2.0), marked={"F"})
    assert {c.test_id for c in selection.selected} == {"D", "E", "F"}
    assert selection.always_estimate == 2.5
    assert selection.always_over_budget


def test_a_full_run_runs_everything() -> None:
    selection = selector().select(ORDER, HISTORIES, sel.Budget("1s", seconds=1.0), full_run=True)
    assert all(c.run and c.reason == sel.FULL_RUN for c in selection.choices)
    assert not selection.always_over_budget


def test_a_learned_skip_declines_a_test_that_would_fit() -> None:
    agent = selector()
    state = agent.state(HISTORIES["A"], 1.0)
    agent.learner.load([QEntry(state.key, sel.RUN, -0.3, 3), QEntry(state.key, sel.SKIP, 0.0, 3)])
    selection = agent.select(["A", "F"], HISTORIES, sel.Budget("10s", seconds=10.0))
    assert [(c.test_id, c.run, c.reason) for c in selection.choices] == [
        ("A", False, sel.DECLINED),
        ("F", True, sel.FITS),  # F's state (cost below the median) is another row
    ]


def test_selection_is_deterministic_for_a_seed_with_exploration_on() -> None:
    hyper = Hyperparameters(epsilon=1.0, epsilon_min=0.0)
    histories = {f"t{i}": history(f"t{i}", 0.1) for i in range(40)}
    order = sorted(histories)

    def pick(seed: int) -> list[bool]:
        learner = QLearner(sel.NAME, 2, hyper, random.Random(seed))
        agent = sel.Selector(learner, RewardCalculator(), sel.agent_type(hyper))
        return [c.run for c in agent.select(order, histories, sel.Budget("1m", seconds=60)).choices]

    assert pick(7) == pick(7)
    assert pick(7) != pick(8)
    assert 0 < sum(pick(7)) < 40  # ε = 1: random run/skip among tests that fit


def test_selection_round_trips_through_json() -> None:
    selection = selector().select(ORDER, HISTORIES, sel.Budget("4s", seconds=4.0), marked={"F"})
    assert sel.Selection.from_json(selection.to_json()) == selection


# -- learning -----------------------------------------------------------------------------
def test_rewards_a_failure_caught_minus_the_budget_share_spent() -> None:
    agent = selector()
    assert agent.run_rewards(True, 1.0, 4.0) == [0.75, -1.0]
    assert agent.run_rewards(False, 2.0, 4.0) == [-0.5, -0.0]
    assert agent.run_rewards(False, 9.0, 4.0) == [-1.0, -0.0]  # cost capped at the budget


def test_learning_updates_both_actions_and_leaves_deselected_skips_pending() -> None:
    agent = selector()
    selection = agent.select(ORDER, HISTORIES, sel.Budget("4s", seconds=4.0), marked={"F"})
    after = {t: (HISTORIES.get(t) or TestHistory(t)).record("P", 1.5, 4) for t in ORDER}
    verdicts = {t: ("F" if t == "A" else "P", 1.5, after[t]) for t in ("A", "D", "E", "F")}
    learned = agent.learn(selection, HISTORIES, verdicts)
    state_a = agent.state(HISTORIES["A"], 1.0)
    # the selected tests took 6 s of 4: time is charged. A failed and took 1.5 s of 4:
    # run earned 1 − 0.375 = 0.625, skip −1; α = 0.5, next state unseen (0)
    assert agent.learner.values(state_a.key) == [0.3125, -0.5]
    expected = {PendingSkipDelta(t, agent.state(HISTORIES[t], 1.0).key, 1.0) for t in ("B", "C")}
    assert set(learned.pending) == expected
    assert len(learned.pending) == 2
    assert [s.test_id for s in learned.trajectories] == ["A", "D", "E", "F"]
    assert [s.step for s in learned.trajectories] == [0, 1, 2, 3]


def test_time_within_the_budget_is_not_charged() -> None:
    agent = selector()
    selection = agent.select(ORDER, HISTORIES, sel.Budget("4s", seconds=4.0), marked={"F"})
    after = {t: (HISTORIES.get(t) or TestHistory(t)).record("P", 1.0, 4) for t in ORDER}
    verdicts = {t: ("P", 1.0, after[t]) for t in ("A", "D", "E", "F")}  # 4 s of 4
    agent.learn(selection, HISTORIES, verdicts)
    assert agent.learner.values(agent.state(HISTORIES["A"], 1.0).key) == [0.0, 0.0]
    assert agent.advantage(agent.state(HISTORIES["A"], 1.0).key) == 0.0


def test_the_advantage_is_de_biased_by_the_visits() -> None:
    agent = selector()
    key = agent.state(HISTORIES["A"], 1.0).key
    assert agent.advantage(key) == 0.0  # never seen
    agent.learner.load([QEntry(key, sel.RUN, -0.3, 3), QEntry(key, sel.SKIP, 0.0, 3)])
    # (−0.3 − 0) / (1 − 0.5³)
    assert agent.advantage(key) == pytest.approx(-0.3 / 0.875)


def test_observe_mode_leaves_nothing_pending() -> None:
    agent = selector()
    selection = agent.select(ORDER, HISTORIES, sel.Budget("4s", seconds=4.0))
    verdicts = {
        t: ("P", 1.0, (HISTORIES.get(t) or TestHistory(t)).record("P", 1, 4)) for t in ORDER
    }
    assert agent.learn(selection, HISTORIES, verdicts, deselect=False).pending == []


def test_a_deselected_test_failing_later_penalises_the_skip_in_its_state() -> None:
    skip_state = selector().state(HISTORIES["B"], 1.0).key
    agent = selector(pending={"B": {skip_state: 1.0}})
    after = HISTORIES["B"].record("F", 2.0, 4)
    # a run without a budget: only the pending skip is paid back
    learned = agent.learn(None, HISTORIES, {"B": ("F", 2.0, after)})
    # Q(s, skip) = 0 + 0.5 · (−1 + 0.9 · 0 − 0) = −0.5
    assert agent.learner.values(skip_state) == [0.0, -0.5]
    assert learned.pending == [PendingSkipDelta("B", skip_state, -1.0)]
    assert [(s.test_id, s.state, s.action, s.reward) for s in learned.trajectories] == [
        ("B", skip_state, sel.SKIP, -1.0)
    ]
    assert agent.pending == {}


def test_a_deselected_test_passing_later_pays_its_skip_nothing() -> None:
    skip_state = selector().state(HISTORIES["B"], 1.0).key
    agent = selector(pending={"B": {skip_state: 1.0}})
    agent.learn(None, HISTORIES, {"B": ("P", 2.0, HISTORIES["B"].record("P", 2.0, 4))})
    assert agent.learner.values(skip_state) == [0.0, 0.0]
    assert agent.learner.visits(skip_state) == [0, 1]


def test_summary_counts_caught_failures_and_in_observe_mode_what_would_be_missed() -> None:
    selection = selector().select(ORDER, HISTORIES, sel.Budget("4s", seconds=4.0), marked={"F"})
    verdicts = {t: ("F" if t in ("A", "C") else "P", 1.5) for t in ORDER}
    applied = sel.summarise(selection, {t: verdicts[t] for t in "ADEF"}, "reorder")
    assert (applied.mode, applied.selected, applied.deselected) == ("select", 4, 2)
    assert (applied.failures, applied.caught, applied.actual_time) == (1, 1, 6.0)
    assert applied.missed == () and applied.saved == 0.0
    observed = sel.summarise(selection, verdicts, "observe")
    assert (observed.mode, observed.failures, observed.caught) == ("observe", 2, 1)
    assert observed.missed == ("C",)
    assert observed.saved == 3.0  # B and C, 1.5 s each
    assert observed.as_dict()["missed"] == ["C"]


# -- the session ------------------------------------------------------------------------
def test_the_selector_is_a_registered_agent() -> None:
    registry = default_registry()
    assert sel.NAME in registry
    assert registry.get(sel.NAME).actions == ("run", "skip")


def _session(snapshot: Snapshot, seed: int = 3) -> LearningSession:
    return LearningSession(snapshot, seed=seed, hyper=GREEDY)


def test_session_selects_learns_and_writes_the_selectors_rows() -> None:
    partition = Partition("p", "e")
    histories = dict(HISTORIES)
    session = _session(Snapshot(partition, histories=histories, episodes=3))
    refs_order = ORDER
    selection = session.select(refs_order, sel.Budget("4s", seconds=4.0), marked={"F"})
    ran = [c.test_id for c in selection.selected]
    results = [TestResult(t, "F" if t == "E" else "P", 1.0, i, i) for i, t in enumerate(ran)]
    write, summary = session.finish(results, started_at=0.0, duration=4.0, exit_status=1)
    assert summary.budget is not None
    assert (summary.budget.selected, summary.budget.deselected, summary.budget.caught) == (4, 2, 1)
    rows = write.q_deltas[sel.NAME]
    assert rows and not any("pending" in d.state for d in rows)  # the Q-table proper only
    assert sorted((p.test_id, p.delta) for p in write.pending_skips) == [("B", 1.0), ("C", 1.0)]
    assert [a.agent for a in write.agents] == ["prioritizer", sel.NAME]
    assert {s.agent for s in write.trajectories} == {sel.NAME}  # rank() was not called


def test_full_run_every_n_episodes() -> None:
    budget = sel.Budget("1s", seconds=1.0)
    for episodes, full in ((2, True), (3, False), (5, True)):
        session = _session(
            Snapshot(Partition("p", "e"), histories=dict(HISTORIES), episodes=episodes)
        )
        assert session.select(ORDER, budget, full_run_every=3).full_run is full
    session = _session(Snapshot(Partition("p", "e"), histories=dict(HISTORIES), episodes=2))
    assert not session.select(ORDER, budget, full_run_every=0).full_run


def test_without_a_budget_the_selector_writes_nothing() -> None:
    session = _session(Snapshot(Partition("p", "e"), histories=dict(HISTORIES)))
    results = [TestResult("A", "P", 1.0, 0, 0)]
    write, summary = session.finish(results, started_at=0.0, duration=1.0, exit_status=0)
    assert sel.NAME not in write.q_deltas
    assert summary.budget is None
    assert [a.agent for a in write.agents] == ["prioritizer"]


def test_workers_get_the_selectors_table_in_the_snapshot() -> None:
    snapshot = Snapshot(Partition("p", "e"), histories=dict(HISTORIES))
    agent = selector()
    key = agent.state(HISTORIES["A"], 1.0).key
    snapshot.q_entries = {sel.NAME: [QEntry(key, sel.SKIP, 0.5, 2)]}
    session = _session(snapshot)
    restored = Snapshot.from_json(session.snapshot_json())
    assert restored.q_entries[sel.NAME] == [QEntry(key, 0, 0.0, 0), QEntry(key, 1, 0.5, 2)]


def test_pending_skips_come_from_the_snapshot_and_are_paid_back_beside_the_q_table() -> None:
    skip_state = selector().state(HISTORIES["B"], 1.0).key
    snapshot = Snapshot(
        Partition("p", "e"), histories=dict(HISTORIES), pending_skips={"B": {skip_state: 1.0}}
    )
    session = _session(snapshot)
    # workers get them too
    assert Snapshot.from_json(session.snapshot_json()).pending_skips == {"B": {skip_state: 1.0}}
    # a run without a budget: B ran and failed, its skip is paid back
    write, _ = session.finish(
        [TestResult("B", "F", 2.0, 0, 0)], started_at=0.0, duration=2.0, exit_status=1
    )
    assert write.pending_skips == [PendingSkipDelta("B", skip_state, -1.0)]
    assert [(d.state, d.action) for d in write.q_deltas[sel.NAME]] == [(skip_state, sel.SKIP)]


def test_snapshot_json_without_pending_skips_reads_as_none() -> None:
    import json

    data = json.loads(Snapshot(Partition("p", "e")).to_json())
    del data["pending_skips"]
    assert Snapshot.from_json(json.dumps(data)).pending_skips == {}


def test_cost_efficiency_is_100_within_the_budget_and_scaled_down_by_an_overrun() -> None:
    from pytest_qlearn.engine.rewards import EpisodeFacts

    def cost(used: float | None) -> float | None:
        facts = EpisodeFacts(
            tests=3,
            failures=0,
            apfd=None,
            duration=1.0,
            time_to_first_failure=None,
            budget_seconds=None if used is None else 10.0,
            budget_used=used,
        )
        return RewardCalculator().episode(facts).components["cost_efficiency"]

    assert cost(5.0) == 100.0
    assert cost(20.0) == 50.0
    assert cost(None) is None


def test_a_test_whose_file_changed_always_runs() -> None:
    budget = sel.Budget("4s", seconds=4.0)
    selection = selector().select(ORDER, HISTORIES, budget, marked={"F"}, changed={"C", "D"})
    reasons = {c.test_id: (c.run, c.reason) for c in selection.choices}
    # always: C (changed, 3.0) + D (new, 1.0: new wins) + E (failed last, 1.0) + F (0.5)
    # = 5.5 s > 4 s: only the always-run set runs
    assert reasons["C"] == (True, sel.CHANGED)
    assert reasons["D"] == (True, sel.NEW)
    assert reasons["A"][0] is False and reasons["B"][0] is False
    assert selection.always_over_budget


# -- lines only one test covers (--qlearn-cov) ------------------------------------------------
def test_covering_lines_no_other_test_covers_is_worth_running_and_has_its_own_state() -> None:
    s = selector()
    assert s.run_rewards(False, 0.5, 1.0, sel.UNIQUE) == [
        pytest.approx(sel.UNIQUE_LINES_VALUE - 0.5),
        0.0,
    ]
    assert s.run_rewards(False, 0.5, 1.0, sel.NOT_UNIQUE) == [-0.5, 0.0]
    h = HISTORIES["A"]
    keys = {s.state(h, 1.0, u).key for u in (sel.UNIQUE, sel.NOT_UNIQUE, sel.UNKNOWN)}
    assert len(keys) == 3
    assert s.state(h, 1.0).key == s.state(h, 1.0, sel.UNKNOWN).key


def test_the_unique_feature_is_decided_once_and_learned_in_that_state() -> None:
    s = selector()
    unique = {"A": sel.UNIQUE, "B": sel.NOT_UNIQUE}
    selection = s.select(ORDER, HISTORIES, sel.Budget("100s", seconds=100.0), unique=unique)
    by_id = {c.test_id: c for c in selection.choices}
    assert (by_id["A"].unique, by_id["B"].unique, by_id["C"].unique) == ("yes", "no", "?")
    # the controller of a pytest-xdist run learns from the worker's selection
    handed = sel.Selection.from_json(selection.to_json())
    assert handed == selection
    verdicts = {t: ("P", 1.0, HISTORIES[t].record("P", 1.0, 4)) for t in ("A", "B")}
    s.learn(handed, HISTORIES, verdicts)
    a_state = s.state(HISTORIES["A"], selection.median, sel.UNIQUE)
    b_state = s.state(HISTORIES["B"], selection.median, sel.NOT_UNIQUE)
    assert s.advantage(a_state.key) == pytest.approx(sel.UNIQUE_LINES_VALUE)
    assert s.advantage(b_state.key) == pytest.approx(0.0)
