"""The tabular Q-learner: Bellman updates, ε-greedy selection, batched deltas.

The learner never talks to a store. It is loaded with a snapshot of stored values, learns
locally, and hands out *deltas* (how much each Q-value and visit count changed) in batches
of ``update_frequency`` updates. Stores add those deltas to whatever is stored at write time
(``q = q + Δ``), so concurrent runs that learned from the same snapshot lose nothing.
"""

from __future__ import annotations

import contextlib
import gc
import random
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate, chain, cycle, repeat
from operator import getitem, itemgetter
from typing import Any, NamedTuple

from .hyperparams import Hyperparameters

# (state key, action) -> [Δq, Δvisits]
DeltaBatch = dict[tuple[str, int], list[float]]
# (state key, rewards of every action, next state key, chosen action, alpha)
UpdateStep = tuple[str, Sequence[float], str | None, int | None, float | None]
# of a three-action accumulator [Δq0, Δq1, Δq2, Δvisits0, Δvisits1, Δvisits2]
_VALUES_3, _VISITS_3 = itemgetter(0, 1, 2), itemgetter(3, 4, 5)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for a block that makes a few small tuples per
    test (histories, decisions, store rows): with 100,000 tests, the full collections those
    allocations trigger would walk every object the run holds, several times over. What the
    block leaves behind is collected as usual afterwards.

    Re-enabling alone would make the first allocation after the block pay for it: the
    young generation's count has grown by every object the block made, so a collection
    (often a full one) would scan them all at once. Instead the objects the block left are
    moved to the oldest generation, unscanned (``gc.freeze()`` then ``gc.unfreeze()``: two
    list splices, and the young count starts again from zero); the next full collection
    looks at them, as it looks at every other long-lived object. When the program froze
    objects of its own (a non-empty permanent generation), unfreezing would release those
    too: then the block ends with a plain ``gc.enable()``."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        # the run's own freeze known first: gc.get_freeze_count() walks the whole permanent
        # generation (≈ 8 ms per million objects, and a large suite's run froze millions)
        if not _run_frozen and not gc.get_freeze_count():
            gc.freeze()
            gc.unfreeze()
        gc.enable()


#: Whether :func:`freeze_run` froze the objects alive now and :func:`unfreeze_run` has not
#: yet released them: the permanent generation is then known to hold objects.
_run_frozen = False


def freeze_run() -> bool:
    """``gc.freeze()`` the objects alive now for the rest of the run — only when the
    collector is on and nothing is frozen yet (the process's owner may freeze for its own
    ends) — and whether it did. :func:`unfreeze_run` undoes it."""
    global _run_frozen
    if _run_frozen or not gc.isenabled() or gc.get_freeze_count():
        return False
    gc.freeze()
    _run_frozen = True
    return True


def unfreeze_run() -> None:
    """Release what :func:`freeze_run` froze (``gc.unfreeze()``); a no-op otherwise."""
    global _run_frozen
    if _run_frozen:
        _run_frozen = False
        gc.unfreeze()


def _advance(pending: int, steps: int, frequency: int, size: int) -> tuple[int, int]:
    """(pending updates, flushes) after ``steps`` updates of ``size`` each, from ``pending``
    (>= 0), with a flush (pending back to 0) whenever pending reaches ``frequency``: what
    ``pending += size; if pending >= frequency: pending = 0; flushes += 1`` per step gives."""
    if steps <= 0:
        return pending, 0
    if frequency <= size:  # every step flushes
        return 0, steps
    first = max(1, -(-(frequency - pending) // size))  # steps to the first flush
    if steps < first:
        return pending + steps * size, 0
    per_flush = -(-frequency // size)  # steps from 0 to a flush
    rest = steps - first
    return (rest % per_flush) * size, 1 + rest // per_flush


def debiased_gap(q: Sequence[float], visits: int, high: int, low: int, alpha: float) -> float:
    """Q(s, high) − Q(s, low) for a row whose actions were all updated together ``visits``
    (≥ 1) times at ``alpha``: the bootstrap terms cancel, and dividing by 1 − (1 − α)^n
    removes the pull of the zero start, leaving the weighted mean of the reward
    differences."""
    return (q[high] - q[low]) / (1.0 - (1.0 - alpha) ** visits)


class QEntry(NamedTuple):
    """One stored Q-value: the value and how many Bellman updates produced it."""

    state: str
    action: int
    q: float
    visits: int


@dataclass(frozen=True)
class LearnerStats:
    agent: str
    episodes: int
    epsilon: float
    q_table_size: int
    states: int
    updates: int
    mean_reward: float
    decisions: int
    explored: int

    @property
    def exploration_share(self) -> float:
        return self.explored / self.decisions if self.decisions else 0.0


class QLearner:
    """Q(s,a) ← Q(s,a) + α·[r + γ·max_a' Q(s',a') − Q(s,a)], one table per agent.

    ``episodes`` is the number of episodes this agent completed before this run (stored per
    agent), so ε keeps decaying across CI runs: ε = max(ε_min, ε₀·decay^episodes).
    """

    def __init__(
        self,
        agent: str,
        n_actions: int,
        hyper: Hyperparameters,
        rng: random.Random,
        *,
        episodes: int = 0,
        on_flush: Callable[[DeltaBatch], None] | None = None,
    ) -> None:
        if n_actions < 1:
            raise ValueError("an agent needs at least one action")
        self.agent = agent
        self.n_actions = n_actions
        self.hyper = hyper
        self.rng = rng
        self.episodes = episodes
        # (episodes, hyperparameters, ε) last computed
        self._epsilon_at: tuple[int, Hyperparameters | None, float] = (-1, None, 0.0)
        # arrays, not lists: compact, and invisible to the cyclic garbage collector, which
        # otherwise walks every row of a large table on each full collection
        self._q: dict[str, array[float]] = {}
        self._visits: dict[str, array[int]] = {}
        self._zeros = array("d", [0.0] * n_actions)
        self._zero_visits = array("q", [0] * n_actions)
        # Deltas per state: [Δq of each action..., Δvisits of each action...]. Without an
        # ``on_flush`` receiver they accumulate straight into the outbox (a flush would only
        # move them there), which keeps the per-update cost to one dict lookup.
        self._pending: dict[str, list[float]] = {}
        self._pending_updates = 0
        self._outbox: dict[str, list[float]] = {}
        self._on_flush = on_flush
        self.updates = 0
        self.flushes = 0
        self.decisions = 0
        self.explored = 0
        self._reward_sum = 0.0
        self._rewarded = 0

    # -- table access -------------------------------------------------------------------
    def load(self, entries: Iterable[QEntry]) -> None:
        """Warm start: take stored values as the starting point (replacing local ones)."""
        n_actions = self.n_actions
        table, visit_table = self._q, self._visits
        for state, action, q, visits in entries:
            if not 0 <= action < n_actions:
                continue  # an action this version of the agent no longer has
            row = table.get(state)
            if row is None:
                row = table[state] = array("d", self._zeros)
                visit_table[state] = array("q", self._zero_visits)
            row[action] = float(q)
            visit_table[state][action] = int(visits)

    def _row(self, state: str) -> array[float]:
        row = self._q.get(state)
        if row is None:
            row = self._q[state] = array("d", self._zeros)
            self._visits[state] = array("q", self._zero_visits)
        return row

    def row(self, state: str) -> tuple[array[float], array[int]] | None:
        """The live Q-row and visit counts of a state (read only), or None if never seen."""
        row = self._q.get(state)
        return None if row is None else (row, self._visits[state])

    @property
    def q_rows(self) -> Mapping[str, array[float]]:
        """The live Q-table, state -> Q-row (read only: for agents that read many rows)."""
        return self._q

    @property
    def visit_rows(self) -> Mapping[str, array[int]]:
        """The live visit counts, state -> one count per action (read only)."""
        return self._visits

    def knows(self, state: str) -> bool:
        return state in self._q

    def values(self, state: str) -> list[float]:
        """A copy of Q(s,·); zeros for a state never seen."""
        row = self._q.get(state)
        return row.tolist() if row is not None else [0.0] * self.n_actions

    def visits(self, state: str) -> list[int]:
        row = self._visits.get(state)
        return row.tolist() if row is not None else [0] * self.n_actions

    def max_q(self, state: str | None) -> float:
        if state is None:
            return 0.0
        row = self._q.get(state)
        return max(row) if row is not None else 0.0

    def entries(self) -> list[QEntry]:
        return [
            QEntry(state, action, row[action], self._visits[state][action])
            for state, row in self._q.items()
            for action in range(self.n_actions)
        ]

    # -- acting -------------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        # asked once per decision: recomputed only when the episode count moves
        episodes, hyper, epsilon = self._epsilon_at
        if episodes != self.episodes or hyper is not self.hyper:
            epsilon = self.hyper.epsilon_after(self.episodes)
            self._epsilon_at = (self.episodes, self.hyper, epsilon)
        return epsilon

    def greedy(self, scores: Sequence[float]) -> int:
        """The best action; ties go to the lowest action number (deterministic)."""
        best = 0
        for action in range(1, len(scores)):
            if scores[action] > scores[best]:
                best = action
        return best

    def choose(self, scores: Sequence[float]) -> tuple[int, bool]:
        """ε-greedy over action scores (Q-values, or an agent's estimate of them).

        Returns the action and whether it was an exploratory (random) choice. All
        randomness comes from the learner's one seeded RNG.
        """
        self.decisions += 1
        if self.rng.random() < self.epsilon:
            self.explored += 1
            return self.rng.randrange(self.n_actions), True
        return self.greedy(scores), False

    def count_decision(self, explored: bool) -> None:
        """Count a decision made elsewhere (a pytest-xdist worker's copy of this learner)."""
        self.decisions += 1
        self.explored += explored

    # -- learning -----------------------------------------------------------------------
    def update(self, state: str, action: int, reward: float, next_state: str | None) -> float:
        """One Bellman update; ``next_state`` None means terminal. Returns the TD error."""
        target = reward + self.hyper.gamma * self.max_q(next_state)
        row = self._row(state)
        td_error = target - row[action]
        change = self.hyper.alpha * td_error
        row[action] += change
        self._visits[state][action] += 1
        acc = self._accumulator(state)
        acc[action] += change
        acc[self.n_actions + action] += 1.0
        self.updates += 1
        self._pending_updates += 1
        if self._pending_updates >= self.hyper.update_frequency:
            self.flush()
        return td_error

    def update_all(
        self,
        state: str,
        rewards: Sequence[float],
        next_state: str | None,
        chosen: int | None = None,
        alpha: float | None = None,
    ) -> None:
        """Bellman-update every action of ``state`` with the reward it would have earned.

        Used when the reward of every action is known after the fact (ordering does not
        change whether a test fails), so no action's value goes stale. The bootstrap term is
        computed once, before any action of the row changes. ``alpha``: this update's
        learning rate when it is not the agent's own (a state many tests share learns
        slower).
        """
        if len(rewards) != self.n_actions:
            raise ValueError(f"expected {self.n_actions} rewards, got {len(rewards)}")
        bootstrap = self.max_q(next_state)
        gamma = self.hyper.gamma
        if alpha is None:
            alpha = self.hyper.alpha
        row = self._row(state)
        visits = self._visits[state]
        acc = self._accumulator(state)
        n = self.n_actions
        for action, reward in enumerate(rewards):
            change = alpha * (reward + gamma * bootstrap - row[action])
            row[action] += change
            visits[action] += 1
            acc[action] += change
            acc[n + action] += 1.0
        if chosen is not None:
            self.record_reward(rewards[chosen])
        self.updates += self.n_actions
        self._pending_updates += self.n_actions
        if self._pending_updates >= self.hyper.update_frequency:
            self.flush()

    def update_all_many(self, steps: Iterable[UpdateStep]) -> None:
        """:meth:`update_all` for each of ``steps`` in turn, (state, rewards, next state,
        chosen action, alpha) each: the same arithmetic in the same order, so the same
        values, without a method call and its lookups per update (a run's session end makes
        two per test)."""
        if self._on_flush is not None:
            for state, rewards, next_state, chosen, alpha in steps:
                self.update_all(state, rewards, next_state, chosen, alpha)
            return
        n = self.n_actions
        actions = range(n)
        hyper = self.hyper
        gamma, default_alpha, frequency = hyper.gamma, hyper.alpha, hyper.update_frequency
        table, visit_table, outbox = self._q, self._visits, self._outbox
        zeros, zero_visits = self._zeros, self._zero_visits
        pending, flushes, updates = self._pending_updates, self.flushes, self.updates
        reward_sum, rewarded = self._reward_sum, self._rewarded
        try:
            for state, rewards, next_state, chosen, alpha in steps:
                if len(rewards) != n:
                    raise ValueError(f"expected {n} rewards, got {len(rewards)}")
                # the bootstrap term once, before any action of the row changes (max_q)
                if next_state is None:
                    bootstrap = 0.0
                else:
                    next_row = table.get(next_state)
                    bootstrap = max(next_row) if next_row is not None else 0.0
                if alpha is None:
                    alpha = default_alpha
                row = table.get(state)
                if row is None:
                    row = table[state] = array("d", zeros)
                    visits = visit_table[state] = array("q", zero_visits)
                else:
                    visits = visit_table[state]
                acc = outbox.get(state)
                if acc is None:
                    acc = outbox[state] = [0.0] * (2 * n)
                if n == 3:  # the prioritizer's three tiers, unrolled
                    change = alpha * (rewards[0] + gamma * bootstrap - row[0])
                    row[0] += change
                    acc[0] += change
                    change = alpha * (rewards[1] + gamma * bootstrap - row[1])
                    row[1] += change
                    acc[1] += change
                    change = alpha * (rewards[2] + gamma * bootstrap - row[2])
                    row[2] += change
                    acc[2] += change
                    visits[0] += 1
                    visits[1] += 1
                    visits[2] += 1
                    acc[3] += 1.0
                    acc[4] += 1.0
                    acc[5] += 1.0
                else:
                    for action in actions:
                        change = alpha * (rewards[action] + gamma * bootstrap - row[action])
                        row[action] += change
                        visits[action] += 1
                        acc[action] += change
                        acc[n + action] += 1.0
                if chosen is not None:
                    reward_sum += rewards[chosen]
                    rewarded += 1
                updates += n
                pending += n
                if pending >= frequency and pending:
                    pending = 0  # flush(): without a receiver the outbox already holds them
                    flushes += 1
        finally:
            self._pending_updates, self.flushes, self.updates = pending, flushes, updates
            self._reward_sum, self._rewarded = reward_sum, rewarded

    def update_all_rows(
        self,
        states: Sequence[str],
        rewards: Sequence[Sequence[float]],
        next_states: Sequence[str | None],
        chosen: Sequence[int] | None,
        alpha: float | None = None,
    ) -> None:
        """:meth:`update_all` (at ``alpha``, else the agent's α) for each ``states[i]``,
        ``rewards[i]``, ``next_states[i]``, ``chosen[i]`` in turn: :meth:`update_all_many`
        over columns, for the one row per test of a run (or the shared rows those tests
        update) — no step tuple per update, and a state that is its own next state (most
        tests' after a run like the last) looked up once. ``chosen`` None: no reward is
        recorded (as ``chosen`` None in :meth:`update_all`)."""
        if self._on_flush is not None or self.n_actions != 3:
            self.update_all_many(
                zip(
                    states,
                    rewards,
                    next_states,
                    [None] * len(states) if chosen is None else chosen,
                    [alpha] * len(states),
                    strict=True,
                )
            )
            return
        if chosen is not None and len(chosen) != len(states):
            raise ValueError(f"{len(states)} states, but {len(chosen)} chosen actions")
        hyper = self.hyper
        gamma, frequency = hyper.gamma, hyper.update_frequency
        if alpha is None:
            alpha = hyper.alpha
        table, visit_table, outbox = self._q, self._visits, self._outbox
        zeros, zero_visits = self._zeros, self._zero_visits
        pending, flushes, updates = self._pending_updates, self.flushes, self.updates
        reward_sum, rewarded = self._reward_sum, self._rewarded
        try:
            done = 0  # steps applied
            # each step's row, visit counts and accumulator looked up by lazy maps: in C, at
            # the start of the step (after the step before it changed the table), as the
            # loop body would look them up
            for state, step_rewards, next_state, row, visits, acc in zip(
                states,
                rewards,
                next_states,
                map(table.get, states),
                map(visit_table.get, states),
                map(outbox.get, states),
                strict=True,
            ):
                if len(step_rewards) != 3:
                    raise ValueError(f"expected 3 rewards, got {len(step_rewards)}")
                # the bootstrap term once, before any action of the row changes (max_q,
                # as max() picks it: the first of equal values, > only)
                next_row = row if next_state is state else table.get(next_state)
                if next_state is None or next_row is None:
                    bootstrap = 0.0
                else:
                    bootstrap = next_row[0]
                    if next_row[1] > bootstrap:
                        bootstrap = next_row[1]
                    if next_row[2] > bootstrap:
                        bootstrap = next_row[2]
                if row is None:
                    row = table[state] = array("d", zeros)
                    visits = visit_table[state] = array("q", zero_visits)
                change0 = alpha * (step_rewards[0] + gamma * bootstrap - row[0])
                row[0] += change0
                change1 = alpha * (step_rewards[1] + gamma * bootstrap - row[1])
                row[1] += change1
                change2 = alpha * (step_rewards[2] + gamma * bootstrap - row[2])
                row[2] += change2
                visits[0] += 1
                visits[1] += 1
                visits[2] += 1
                if acc is None:
                    # a test's row is new to the outbox (the common case): its accumulator
                    # made with this update's values, as 0.0 + each would leave them
                    outbox[state] = [0.0 + change0, 0.0 + change1, 0.0 + change2, 1.0, 1.0, 1.0]
                else:
                    acc[0] += change0
                    acc[1] += change1
                    acc[2] += change2
                    acc[3] += 1.0
                    acc[4] += 1.0
                    acc[5] += 1.0
                done += 1
        finally:
            # the counters, as the steps done would have moved them one by one (flush():
            # without a receiver the outbox already holds the deltas)
            pending, flushed = _advance(pending, done, frequency, 3)
            self._pending_updates, self.flushes = pending, flushes + flushed
            self.updates = updates + 3 * done
            if chosen is not None and done:
                # the chosen tiers' rewards added one by one, in order (accumulate: the same
                # sums as the loop's +=, where sum() may compensate)
                (reward_sum,) = deque(
                    accumulate(map(getitem, rewards[:done], chosen[:done]), initial=reward_sum),
                    maxlen=1,
                )
                self._reward_sum, self._rewarded = reward_sum, rewarded + done

    def record_reward(self, reward: float) -> None:
        """Count a reward the agent actually received (for the mean-reward statistic)."""
        self._reward_sum += reward
        self._rewarded += 1

    def _accumulator(self, state: str) -> list[float]:
        deltas = self._pending if self._on_flush is not None else self._outbox
        acc = deltas.get(state)
        if acc is None:
            acc = deltas[state] = [0.0] * (2 * self.n_actions)
        return acc

    def _batch(self, deltas: dict[str, list[float]]) -> DeltaBatch:
        """Per-state accumulators as (state, action) -> [Δq, Δvisits], updated actions only."""
        n = self.n_actions
        return {
            (state, action): [acc[action], acc[n + action]]
            for state, acc in deltas.items()
            for action in range(n)
            if acc[n + action]
        }

    def flush(self) -> None:
        """Hand the pending deltas on: to ``on_flush`` if given, else to the outbox."""
        if not self._pending_updates:
            return
        self._pending_updates = 0
        self.flushes += 1
        if self._on_flush is not None:
            batch, self._pending = self._batch(self._pending), {}
            self._on_flush(batch)

    def end_episode(self, *, partial: bool = False) -> None:
        """Close an episode: flush what is pending and decay ε once (not after a partial
        episode — a narrowed or stopped run — which learns but does not advance the schedule)."""
        self.flush()
        if not partial:
            self.episodes += 1

    def take_deltas(self) -> DeltaBatch:
        """Everything flushed to the outbox so far; the outbox is emptied."""
        self.flush()
        out, self._outbox = self._batch(self._outbox), {}
        return out

    def take_delta_rows(
        self, texts: Mapping[str, str] | None = None, row_type: type[tuple[Any, ...]] = tuple
    ) -> list[Any]:
        """:meth:`take_deltas` as (state, text, action, Δq, Δvisits) rows in (state, action)
        order (the order a store writes them in), without the intermediate mapping; the
        text is the state's in ``texts``, else empty. ``row_type``: a tuple type the rows
        are made as (a named tuple of these five fields: no second copy of every row)."""
        self.flush()
        outbox, self._outbox = self._outbox, {}
        texts = texts or {}
        n = self.n_actions
        actions = range(n)
        rows: list[Any] = []
        append = rows.append
        new_tuple = tuple.__new__
        if n == 3:  # the prioritizer's three tiers
            states = sorted(outbox)
            accs = list(map(outbox.__getitem__, states))
            visits = list(chain.from_iterable(map(_VISITS_3, accs)))
            if all(visits):
                # every action of every state updated (update_all updates a whole row): the
                # rows taken in C, column by column — each state and its text three times,
                # the actions 0, 1, 2 in turn, the Δq and Δvisits of each
                state_texts = list(map(texts.get, states, repeat("")))
                return list(
                    map(
                        partial(new_tuple, row_type),
                        zip(
                            chain.from_iterable(zip(states, states, states, strict=True)),
                            chain.from_iterable(
                                zip(state_texts, state_texts, state_texts, strict=True)
                            ),
                            cycle(actions),
                            chain.from_iterable(map(_VALUES_3, accs)),
                            map(int, visits),
                        ),
                    )
                )
            del accs, visits
            for state in states:
                acc = outbox[state]
                text = texts.get(state, "")
                if acc[3]:
                    append(new_tuple(row_type, (state, text, 0, acc[0], int(acc[3]))))
                if acc[4]:
                    append(new_tuple(row_type, (state, text, 1, acc[1], int(acc[4]))))
                if acc[5]:
                    append(new_tuple(row_type, (state, text, 2, acc[2], int(acc[5]))))
            return rows
        for state in sorted(outbox):
            acc = outbox[state]
            text = texts.get(state, "")
            for action in actions:
                dn = acc[n + action]
                if dn:
                    append(new_tuple(row_type, (state, text, action, acc[action], int(dn))))
        return rows

    def statistics(self) -> LearnerStats:
        return LearnerStats(
            agent=self.agent,
            episodes=self.episodes,
            epsilon=self.epsilon,
            q_table_size=len(self._q) * self.n_actions,
            states=len(self._q),
            updates=self.updates,
            mean_reward=self._reward_sum / self._rewarded if self._rewarded else 0.0,
            decisions=self.decisions,
            explored=self.explored,
        )
