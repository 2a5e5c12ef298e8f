"""Issue 16's fast paths give exactly what the plain code gives: the batched Bellman
updates, the delta rows, the per-test state keys, the many-test estimator, the
garbage-collector pause, and ranking's column-wise decisions and int sort keys."""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_qlearn.agents import prioritizer as prio
from pytest_qlearn.engine.history import FAILED, PASSED, SKIPPED, TestHistory
from pytest_qlearn.engine.hyperparams import Hyperparameters
from pytest_qlearn.engine.qlearner import QEntry, QLearner, UpdateStep, gc_paused
from pytest_qlearn.engine.rewards import RewardCalculator
from pytest_qlearn.engine.state import State, StateEncoder
from pytest_qlearn.ordering import locality_order
from pytest_qlearn.session import LearningSession, TestResult
from pytest_qlearn.store import Partition, SqliteStore


def make_learner(frequency: int = 10) -> QLearner:
    learner = QLearner(
        "agent",
        3,
        Hyperparameters(alpha=0.3, gamma=0.9, update_frequency=frequency),
        random.Random(0),
    )
    learner.load([QEntry("a", 0, 0.5, 2), QEntry("a", 2, -0.25, 2), QEntry("b", 1, 1.0, 1)])
    return learner


def steps() -> list[UpdateStep]:
    rng = random.Random(4)
    out: list[UpdateStep] = []
    for _ in range(200):
        state, nxt = rng.choice("abcde"), rng.choice(["a", "b", "f", None])
        rewards = [rng.uniform(-1, 1) for _ in range(3)]
        out.append((state, rewards, nxt, rng.choice([0, 1, 2, None]), rng.choice([None, 0.05])))
    return out


def test_update_all_many_is_update_all_in_turn() -> None:
    for frequency in (1, 4, 10):
        one, many = make_learner(frequency), make_learner(frequency)
        for state, rewards, nxt, chosen, alpha in steps():
            one.update_all(state, rewards, nxt, chosen, alpha)
        many.update_all_many(steps())
        assert many.entries() == one.entries()  # exactly, not approximately
        assert many.statistics() == one.statistics()
        assert (many.flushes, many.updates) == (one.flushes, one.updates)
        assert many.take_deltas() == one.take_deltas()


def test_update_all_many_with_a_flush_receiver_flushes_as_update_all() -> None:
    batches_one: list[object] = []
    batches_many: list[object] = []
    one = QLearner(
        "x", 3, Hyperparameters(update_frequency=7), random.Random(0), on_flush=batches_one.append
    )
    many = QLearner(
        "x", 3, Hyperparameters(update_frequency=7), random.Random(0), on_flush=batches_many.append
    )
    for state, rewards, nxt, chosen, alpha in steps():
        one.update_all(state, rewards, nxt, chosen, alpha)
    many.update_all_many(steps())
    assert batches_many == batches_one


def test_delta_rows_are_the_deltas_in_key_order() -> None:
    one, rows = make_learner(), make_learner()
    for learner in (one, rows):
        learner.update_all_many(steps())
    deltas = one.take_deltas()
    texts = {"a": "a text", "f": "f text"}
    got = rows.take_delta_rows(texts)
    assert got == sorted(
        (s, texts.get(s, ""), a, dq, int(dn)) for (s, a), (dq, dn) in deltas.items()
    )
    assert rows.take_delta_rows() == []


def test_per_test_states_hash_as_the_encoder() -> None:
    agent = prio.agent_type()
    prioritizer = prio.Prioritizer(
        QLearner(prio.NAME, 3, agent.hyper, random.Random(0)), RewardCalculator(), agent
    )
    encoder = StateEncoder(prio.NAME + ":test", prio.PER_TEST_FEATURES, memoise=False)
    for test_id in ("t.py::a", "t.py::ü[\udc80;=\n]", ""):
        for label in ("never", "<1", "1", "2", "3+"):
            state = prioritizer._per_test_state(label, test_id)
            assert state == encoder.encode_values((label, test_id))
            # built once per run: asked again, the same object
            assert prioritizer._per_test_state(label, test_id) is state


def test_the_estimator_is_the_blend() -> None:
    agent = prio.agent_type()
    learner = QLearner(prio.NAME, 3, agent.hyper, random.Random(0))
    prioritizer = prio.Prioritizer(learner, RewardCalculator(), agent)
    rng = random.Random(2)
    histories = []
    for number in range(300):
        history = TestHistory(f"t{number}")
        for episode in range(rng.randrange(0, 12)):
            history = history.record(FAILED if rng.random() < 0.2 else PASSED, 0.01, episode)
        histories.append(history)
    # learn a little so that rows exist, some with visits and some shared
    for history in histories[:200]:
        decision = prioritizer.decide({history.test_id: history}, [history.test_id])[0]
        after = history.record(PASSED, 0.01, 20)
        prioritizer.learn(decision, PASSED, prioritizer.states(after, decision.per_test))
    estimate = prioritizer.estimator()
    for history in histories:
        states = prioritizer.states(history)
        expected = prioritizer._blend(history, states)
        assert estimate(history, states[0].key, states[1].key) == expected


def test_update_all_rows_is_update_all_in_turn() -> None:
    rng = random.Random(5)
    columns: tuple[list[str], list[list[float]], list[str | None], list[int]] = ([], [], [], [])
    for _ in range(200):
        state = rng.choice("abcdef")
        # a state that is its own next state (the same object), another's, unknown, terminal
        nxt = rng.choice([state, "a", "g", None])
        for column, value in zip(
            columns,
            (state, [rng.uniform(-1, 1) for _ in range(3)], nxt, rng.randrange(3)),
            strict=True,
        ):
            column.append(value)  # type: ignore[attr-defined]
    for frequency in (1, 4, 10):
        one, rows = make_learner(frequency), make_learner(frequency)
        for state, rewards, nxt, chosen in zip(*columns, strict=True):
            one.update_all(state, rewards, nxt, chosen)
        rows.update_all_rows(*columns)
        assert rows.entries() == one.entries()  # exactly, not approximately
        assert rows.statistics() == one.statistics()
        assert (rows.flushes, rows.updates) == (one.flushes, one.updates)
        assert rows.take_deltas() == one.take_deltas()


def test_many_estimates_and_next_states_are_the_plain_ones() -> None:
    agent = prio.agent_type()
    learner = QLearner(prio.NAME, 3, agent.hyper, random.Random(0))
    prioritizer = prio.Prioritizer(learner, RewardCalculator(), agent)
    rng = random.Random(3)
    histories = []
    for number in range(300):
        history = TestHistory(f"t{number}")
        for episode in range(rng.randrange(0, 12)):
            history = history.record(FAILED if rng.random() < 0.2 else PASSED, 0.01, episode)
        histories.append(history)
    for history in histories[:200]:
        decision = prioritizer.decide({history.test_id: history}, [history.test_id])[0]
        after = history.record(PASSED, rng.choice([0.0001, 0.01, 2.0]), 20)
        memo: dict[tuple[object, ...], State] = {}
        assert prioritizer.next_states(after, decision.per_test, memo) == prioritizer.states(
            after, decision.per_test
        )
        prioritizer.learn(decision, PASSED, prioritizer.states(after, decision.per_test))
    estimate = prioritizer.estimator()
    keys = [(h, *(s.key for s in prioritizer.states(h))) for h in histories]
    assert prioritizer.failure_probabilities(keys) == [estimate(*k)[0] for k in keys]
    # deciding many at once estimates each as the blend does
    decisions = prioritizer.decide(
        {h.test_id: h for h in histories}, [h.test_id for h in histories]
    )
    for decision, history in zip(
        decisions, sorted(histories, key=lambda h: h.test_id), strict=True
    ):
        assert decision.p_fail == prioritizer.estimate(history, prioritizer.states(history))


def test_gc_paused_restores_the_collector() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()


def test_gc_paused_leaves_the_runs_frozen_objects_unwalked(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the run's own freeze holds, leaving a paused block does not ask
    ``gc.get_freeze_count()`` (it walks the whole permanent generation: ≈ 8 ms per million
    frozen objects, at every block's end); without it, it asks, as before."""
    from pytest_qlearn.engine import qlearner

    asked: list[int] = []
    count = gc.get_freeze_count
    monkeypatch.setattr(gc, "get_freeze_count", lambda: asked.append(1) or count())
    monkeypatch.setattr(qlearner, "_run_frozen", True)
    with gc_paused():
        pass
    assert asked == [] and gc.isenabled()
    monkeypatch.setattr(qlearner, "_run_frozen", False)
    with gc_paused():
        pass
    assert asked == [1] and gc.isenabled()


def test_freeze_run_freezes_once_and_unfreeze_run_releases() -> None:
    from pytest_qlearn.engine.qlearner import freeze_run, unfreeze_run

    assert gc.get_freeze_count() == 0  # nothing of the test process is frozen
    try:
        assert freeze_run() is True
        assert gc.get_freeze_count() > 0
        assert freeze_run() is False  # already frozen: not again
    finally:
        unfreeze_run()
    assert gc.get_freeze_count() == 0
    unfreeze_run()  # nothing to release: a no-op
    gc.disable()
    try:
        assert freeze_run() is False  # the collector is off: nothing to spare it
    finally:
        gc.enable()
    assert gc.get_freeze_count() == 0


def test_test_files_are_the_relative_keys_of_every_item(tmp_path: Path) -> None:
    """The change analysis's test files, made relative once per distinct path, are what
    ``relative_key`` per item gives (inside the root, outside it, shared Path objects)."""
    from types import SimpleNamespace

    from pytest_qlearn.changes.digests import relative_key
    from pytest_qlearn.lifecycle import _test_files

    shared = tmp_path / "tests" / "test_a.py"
    paths = [
        shared,
        shared,
        tmp_path / "tests" / "test_a.py",  # equal, not the same object
        tmp_path / "pkg" / "test_b.py",
        Path("/elsewhere/test_c.py"),
    ]
    items = [SimpleNamespace(path=path) for path in paths]
    assert _test_files(items, tmp_path) == {relative_key(p, tmp_path) for p in paths}  # type: ignore[arg-type]
    assert _test_files(items, tmp_path) == {
        "tests/test_a.py",
        "pkg/test_b.py",
        "/elsewhere/test_c.py",
    }


def test_finish_keeps_the_session_duration_apart_from_the_tests_seconds() -> None:
    """The per-test loop of ``finish`` unpacks every result's seconds: the session's
    ``duration`` (stored, and what a recovered checkpoint is recognised by) stays its own."""
    from pytest_qlearn.session import LearningSession, TestResult
    from pytest_qlearn.store import Partition, SqliteStore

    store = SqliteStore(":memory:")
    store.open()
    try:
        session = LearningSession(store.load_snapshot(Partition("p", "e"), [prio.NAME]), seed=3)
        refs = [prio.TestRef(f"t.py::test_{i}", "t.py", None, i) for i in range(4)]
        ranking = session.rank(refs)
        results = [
            TestResult(r.test_id, FAILED if i == 1 else PASSED, 0.25 + i, r.index, i)
            for i, r in enumerate(ranking.order)
        ]
        write, _ = session.finish(results, started_at=1_000.0, duration=12.0, exit_status=1)
    finally:
        store.close()
    assert write.session.duration == 12.0
    assert {o.test_id: o.duration for o in write.observations} == {
        r.test_id: r.duration for r in results
    }


def warm_session(
    tests: int = 300, seed: int = 1, epsilon: float = 0.3
) -> tuple[LearningSession, list[prio.TestRef]]:
    """A session from a store that saw a few episodes of ``tests`` synthetic tests (some
    failing now and then, some new, durations over several classes)."""
    refs = []
    for index in range(tests):
        module_no, number = divmod(index, 23)
        module = f"tests/test_m{module_no:02d}.py"
        cls = f"{module}::TestC{number // 7}" if module_no % 2 else None
        refs.append(prio.TestRef(f"{cls or module}::test_{number:02d}", module, cls, index))
    store = SqliteStore(":memory:")
    store.open()
    partition = Partition("fast-paths", "default")
    rng = random.Random(seed)
    for episode in range(4):
        ran = refs if episode else refs[: tests // 2]
        session = LearningSession(
            store.load_snapshot(partition, [prio.NAME]),
            seed=episode,
            hyper=Hyperparameters(alpha=0.05, epsilon=0.3),
        )
        ranking = session.rank(ran)
        position = {ref.test_id: at for at, ref in enumerate(ranking.order)}
        results = []
        for ref in ran:
            decision = ranking.decisions[ref.test_id]
            draw = rng.random()
            verdict = FAILED if draw < 0.08 else SKIPPED if draw < 0.1 else PASSED
            seconds = (0.0002, 0.003, 0.04, 0.6, 2.5)[(ref.index + episode) % 5]
            results.append(
                TestResult(
                    ref.test_id,
                    verdict,
                    seconds,
                    ref.index,
                    position[ref.test_id],
                    decision.tier,
                    decision.explored,
                )
            )
        write, _ = session.finish(results, started_at=1000.0 + episode, duration=9.0, exit_status=1)
        store.write_episode(write)
    refs.append(prio.TestRef("tests/test_new.py::test_new", "tests/test_new.py", None, tests))
    session = LearningSession(
        store.load_snapshot(partition, [prio.NAME]),
        seed=seed,
        hyper=Hyperparameters(epsilon=epsilon),
    )
    store.close()
    return session, refs


def tuple_key(
    session: LearningSession, decisions: dict[str, prio.Decision], spread: int
) -> Callable[[prio.TestRef], tuple[float, ...]]:
    """The 7-field key ranking sorted by before issue 16's fourth round."""

    def key(ref: prio.TestRef) -> tuple[float, ...]:
        d = decisions[ref.test_id]
        fixed = d.evidence == prio.FAILED_LAST_CHANGED
        runs_change = ref.test_id in session.covering_changed
        near = session.proximity.get(ref.test_id, 0)
        return (
            d.evidence,
            runs_change if fixed else not runs_change,
            -near if fixed else near,
            -int(d.p_fail / prio.P_RESOLUTION + 0.5),
            math.floor(math.log2(max(d.duration, prio.DURATION_FLOOR))),
            ref.index if d.shuffle < 0 else d.shuffle * spread,
            ref.index,
        )

    return key


def test_rank_orders_as_the_tuple_key() -> None:
    """rank()'s one int per test (issue 16) orders as the 7-field key it replaced."""
    for seed in (1, 2, 3):
        for scope in ("auto", "module", "class", "test"):
            session, refs = warm_session(seed=seed)
            pick = random.Random(seed)
            ids = [ref.test_id for ref in refs]
            if seed > 1:
                session.impacts = {t: pick.choice((2, 3, 4)) for t in pick.sample(ids, 30)}
                session.proximity = {t: pick.randrange(5) for t in pick.sample(ids, 40)}
                session.covering_changed = {t: "some" for t in pick.sample(ids, 20)}
            ranking = session.rank(refs, scope)
            decisions = ranking.decisions
            assert any(d.shuffle >= 0 for d in decisions.values())

            key = tuple_key(session, decisions, len(refs))
            expected = locality_order(refs, key, scope, session.snapshot.histories)
            assert ranking.order == expected, (seed, scope)


def test_decide_estimates_as_the_blend() -> None:
    """decide()'s column-wise estimates and states are the plain per-test ones."""
    session, refs = warm_session(seed=4, epsilon=0.0)
    ids = [ref.test_id for ref in refs]
    session.impacts = {ids[3]: 2, ids[40]: 4}
    session.covering_changed = {ids[41]: "some"}
    ranking = session.rank(refs, "test")
    prioritizer = session.prioritizer
    histories = session.snapshot.histories
    checked = 0
    for test_id, decision in ranking.decisions.items():
        history = histories.get(test_id) or TestHistory(test_id)
        per_test, shared = prioritizer.states(history)
        assert (decision.per_test.key, decision.shared) == (per_test.key, shared)
        change = decision.change
        p, known = prioritizer._blend(history, (per_test, shared), change)
        assert (decision.p_fail, decision.known) == (p, known)  # exactly
        checked += change is not None
    assert checked == 3


def test_finish_by_columns_learns_as_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """finish()'s column-wise learning (issue 16's fifth round) gives exactly what its
    per-test loop gives: the write, the learner's table and counters, the riskiest tests."""

    def learn(by_columns: bool, seed: int) -> tuple[object, ...]:
        session, refs = warm_session(seed=seed)
        ranking = session.rank(refs)
        rng = random.Random(seed)
        position = {ref.test_id: at for at, ref in enumerate(ranking.order)}
        results = []
        for ref in refs:
            decision = ranking.decisions[ref.test_id]
            draw = rng.random()
            verdict = FAILED if draw < 0.1 else SKIPPED if draw < 0.15 else PASSED
            tier = None if draw > 0.97 else decision.tier
            results.append(
                TestResult(
                    ref.test_id,
                    verdict,
                    rng.choice((0.0001, 0.02, 0.7, 3.0)),
                    ref.index,
                    position[ref.test_id],
                    tier,
                    decision.explored,
                    rng.random() / 100,
                )
            )
        if not by_columns:
            monkeypatch.setattr(LearningSession, "_learn_columns", lambda *_: None)
        try:
            write, summary = session.finish(results, started_at=2000.0, duration=9.0, exit_status=1)
        finally:
            monkeypatch.undo()
        learner = session.learner
        return (
            write.q_deltas,
            write.next_histories,
            write.trajectories,
            write.observations,
            write.patterns,
            repr(write.agents),
            write.session.reward,
            learner.entries(),
            learner.statistics(),
            (learner.flushes, learner.updates),
            summary.riskiest,
        )

    for seed in (1, 2, 3):
        assert learn(True, seed) == learn(False, seed), seed


def test_column_estimates_and_next_states_are_the_plain_ones() -> None:
    session, refs = warm_session(seed=5)
    ranking = session.rank(refs)
    prioritizer = session.prioritizer
    histories = session.snapshot.histories
    rng = random.Random(5)
    afters, previous = [], []
    for ref in refs:
        history = histories.get(ref.test_id) or TestHistory(ref.test_id)
        verdict = FAILED if rng.random() < 0.2 else PASSED
        afters.append(history.record(verdict, rng.choice((0.0001, 0.05, 4.0)), 9))
        previous.append(ranking.decisions[ref.test_id].per_test)
    memo: dict[tuple[object, ...], State] = {}
    per_tests, shareds = prioritizer.next_state_columns(afters, previous, memo)
    plain_memo: dict[tuple[object, ...], State] = {}
    plain = [
        prioritizer.next_states(a, p, plain_memo) for a, p in zip(afters, previous, strict=True)
    ]
    assert list(zip(per_tests, shareds, strict=True)) == plain
    keys = [(h, t.key, s.key) for h, t, s in zip(afters, per_tests, shareds, strict=True)]
    assert prioritizer.failure_probability_columns(
        afters, [t.key for t in per_tests], [s.key for s in shareds]
    ) == prioritizer.failure_probabilities(keys)


def test_update_all_rows_at_an_alpha_without_rewards_is_update_all() -> None:
    rng = random.Random(6)
    states = [rng.choice("abcdef") for _ in range(100)]
    rewards = [[rng.uniform(-1, 1) for _ in range(3)] for _ in states]
    nexts: list[str | None] = [rng.choice([s, "a", "g", None]) for s in states]
    for frequency in (1, 4, 10):
        one, rows = make_learner(frequency), make_learner(frequency)
        for state, reward, nxt in zip(states, rewards, nexts, strict=True):
            one.update_all(state, reward, nxt, None, 0.05)
        rows.update_all_rows(states, rewards, nexts, None, 0.05)
        assert rows.entries() == one.entries()
        assert rows.statistics() == one.statistics()
        assert (rows.flushes, rows.updates) == (one.flushes, one.updates)
        assert rows.take_delta_rows() == one.take_delta_rows()
