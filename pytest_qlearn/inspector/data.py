"""What each inspector command shows, as JSON-ready dictionaries built from the store's
read-only API. The tables and ``--json`` render the very same dictionaries, so both always
show the same figures. Nothing here prints or parses a command line."""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from statistics import fmean
from typing import Any

from ..agents.prioritizer import NAME as PRIORITIZER
from ..reports import text as report_text
from ..session import default_registry
from ..store.base import (
    AgentState,
    Partition,
    QTableSummary,
    QValueRecord,
    SessionRecord,
    Store,
)

EXPORT_FORMAT = 1


class InspectorError(Exception):
    """The command cannot do what was asked (unknown agent, nothing stored...); one line."""


def known_agents(store: Store, partition: Partition) -> list[str]:
    return sorted(set(store.agent_states(partition)) | set(store.q_table_summaries(partition)))


def require_agent(store: Store, partition: Partition, agent: str) -> None:
    """Raise :class:`InspectorError` naming the agents there are when ``agent`` is not one."""
    agents = known_agents(store, partition)
    if agent in agents:
        return
    where = f"project {partition.project!r}, environment {partition.environment!r}"
    if agents:
        raise InspectorError(f"unknown agent {agent!r} in {where}; agents: {', '.join(agents)}")
    raise InspectorError(
        f"unknown agent {agent!r}: nothing is stored for {where}{_elsewhere(store)}"
    )


def _elsewhere(store: Store) -> str:
    partitions = store.partitions()
    if not partitions:
        return " (the store is empty: run pytest --qlearn first)"
    shown = ", ".join(f"{p.project}/{p.environment}" for p in partitions[:10])
    more = f" and {len(partitions) - 10} more" if len(partitions) > 10 else ""
    return f" (stored: {shown}{more}; choose with --project and --env)"


@functools.cache
def _action_names(agent: str) -> tuple[str, ...]:
    registry = default_registry()
    return registry.get(agent).actions if agent in registry else ()


def action_label(agent: str, action: int) -> str:
    """The built-in agents' action names (``first``...), else the number."""
    names = _action_names(agent)
    return names[action] if 0 <= action < len(names) else str(action)


def _q_row(r: QValueRecord) -> dict[str, Any]:
    return {
        "state": r.state,
        "state_text": r.state_text,
        "action": r.action,
        "action_label": action_label(r.agent, r.action),
        "q": r.q,
        "visits": r.visits,
        "updated_at": r.updated_at,
        "expires_at": r.expires_at,
    }


def _summary(s: QTableSummary | None) -> dict[str, Any]:
    if s is None:
        return {
            "entries": 0,
            "states": 0,
            "visits": 0,
            "q_min": None,
            "q_max": None,
            "q_mean": None,
            "last_updated": None,
        }
    return {k: v for k, v in asdict(s).items() if k != "agent"}


def _agent_state(s: AgentState | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "episodes": s.episodes,
        "epsilon": s.epsilon,
        "reward_sum": s.reward_sum,
        "rewards": s.rewards,
        "mean_step_reward": s.mean_reward,
        "last_active": s.last_active,
    }


def _where(store: Store, partition: Partition) -> dict[str, Any]:
    return {
        "store": store.display_url,
        "project": partition.project,
        "environment": partition.environment,
    }


# -- show-qvalues ----------------------------------------------------------------------------
def show_qvalues(
    store: Store, partition: Partition, agent: str, limit: int | None, order: str
) -> dict[str, Any]:
    require_agent(store, partition, agent)
    summary = store.q_table_summaries(partition).get(agent)
    rows = store.q_values(partition, agent, limit=limit, order=order)
    return {
        **_where(store, partition),
        "agent": agent,
        "order": order,
        "total": summary.entries if summary else 0,
        "q_values": [_q_row(r) for r in rows],
    }


# -- progress ----------------------------------------------------------------------------------
def first_failure_saved(session: SessionRecord) -> dict[str, float] | None:
    """How many seconds (of test time) and tests earlier the session's first failure showed up
    in qlearn's order than in collection order (as the reports say); None without a failure,
    and for sessions stored before schema 9 (they have no figures)."""
    figures = report_text.first_failure_saved(asdict(session))
    return None if figures is None else {"seconds": figures[0], "tests": figures[1]}


def progress(store: Store, partition: Partition, agent: str, since: float | None) -> dict[str, Any]:
    require_agent(store, partition, agent)
    sessions = store.sessions(partition, since)
    rewards = store.rewards(partition, since)
    steps = store.episode_agent_stats(partition, agent, since)
    # a session keeps the ε and Q-table size of the agent that ordered it (the
    # prioritizer): another agent's runs have none of their own to show
    own = {} if agent == PRIORITIZER else {"epsilon": None, "q_table_size": None}
    episodes = []
    for s in sessions:
        st = steps.get(s.session_id)
        episodes.append(
            {
                **asdict(s),
                **own,
                "reward_components": {
                    r.component: r.value
                    for r in rewards.get(s.session_id, [])
                    if r.component != "total"
                },
                "agent_steps": st.steps if st else 0,
                "agent_explored": st.explored if st else 0,
                "agent_reward": st.reward_sum if st else 0.0,
                "first_failure_saved": first_failure_saved(s),
            }
        )
    saved = [e["first_failure_saved"] for e in episodes if e["first_failure_saved"] is not None]
    apfds = [s.apfd for s in sessions if s.apfd is not None]
    collection = [s.collection_apfd for s in sessions if s.collection_apfd is not None]
    half = len(apfds) // 2
    summary = {
        "episodes": len(sessions),
        # narrowed or stopped-early runs among them (learned from, not advancing the schedule)
        "partial_episodes": sum(s.partial for s in sessions),
        "tests": sum(s.tests for s in sessions),
        "failures": sum(s.failures for s in sessions),
        "mean_apfd": fmean(apfds) if apfds else None,
        "mean_collection_apfd": fmean(collection) if collection else None,
        "first_half_apfd": fmean(apfds[:half]) if half else None,
        "second_half_apfd": fmean(apfds[half:]) if half else None,
        "mean_episode_reward": fmean(s.reward for s in sessions) if sessions else None,
        "first_epsilon": episodes[0]["epsilon"] if episodes else None,
        "last_epsilon": episodes[-1]["epsilon"] if episodes else None,
        "agent_steps": sum(e["agent_steps"] for e in episodes),
        "agent_explored": sum(e["agent_explored"] for e in episodes),
        # how much earlier than in collection order the first failure showed up, over the
        # runs that have the figures (stored since schema 9)
        "first_failure_runs": len(saved),
        "mean_first_failure_saved_seconds": (fmean(f["seconds"] for f in saved) if saved else None),
        "mean_first_failure_saved_tests": fmean(f["tests"] for f in saved) if saved else None,
        # runs with failures stored before schema 9: no figures
        "first_failure_runs_without_figures": sum(
            s.failures > 0 and first_failure_saved(s) is None for s in sessions
        ),
    }
    return {
        **_where(store, partition),
        "agent": agent,
        "since": since,
        "summary": summary,
        "episodes": episodes,
    }


# -- top-actions -------------------------------------------------------------------------------
def top_actions(store: Store, partition: Partition, agent: str, top: int) -> dict[str, Any]:
    """Per action: entries, states where it is the greedy choice (ties go to the lower action
    number, as the learner breaks them), visits and Q; and the ``top`` greedy decisions the
    agent has practised most (by the visits of the chosen action)."""
    require_agent(store, partition, agent)
    rows = store.q_values(partition, agent, order="key")
    by_state: dict[str, list[QValueRecord]] = defaultdict(list)
    for r in rows:
        by_state[r.state].append(r)
    per_action: dict[int, dict[str, Any]] = {}
    for r in rows:
        a = per_action.setdefault(
            r.action, {"entries": 0, "visits": 0, "q_sum": 0.0, "q_max": r.q, "greedy": 0}
        )
        a["entries"] += 1
        a["visits"] += r.visits
        a["q_sum"] += r.q
        a["q_max"] = max(a["q_max"], r.q)
    decisions = []
    for state_rows in by_state.values():
        best = max(state_rows, key=lambda r: (r.q, -r.action))
        per_action[best.action]["greedy"] += 1
        others = [r.q for r in state_rows if r is not best]
        decisions.append(
            {
                **_q_row(best),
                "margin": best.q - max(others) if others else None,
                "state_visits": sum(r.visits for r in state_rows),
            }
        )
    total_visits = sum(a["visits"] for a in per_action.values())
    actions = [
        {
            "action": action,
            "action_label": action_label(agent, action),
            "entries": a["entries"],
            "greedy_states": a["greedy"],
            "visits": a["visits"],
            "visit_share": a["visits"] / total_visits if total_visits else 0.0,
            "q_mean": a["q_sum"] / a["entries"],
            "q_max": a["q_max"],
        }
        for action, a in per_action.items()
    ]
    actions.sort(key=lambda a: (-a["greedy_states"], -a["visits"], a["action"]))
    decisions.sort(key=lambda d: (-d["visits"], -d["q"], d["state"]))
    return {
        **_where(store, partition),
        "agent": agent,
        "states": len(by_state),
        "actions": actions,
        "top": decisions[:top],
    }


# -- export ------------------------------------------------------------------------------------
def export(
    store: Store, partition: Partition, agent: str, trajectories: int | None
) -> dict[str, Any]:
    require_agent(store, partition, agent)
    summary = store.q_table_summaries(partition).get(agent)
    state = store.agent_states(partition).get(agent)
    sessions = store.sessions(partition)
    rewards = store.rewards(partition)
    steps = store.trajectories(partition, agent, limit=trajectories)
    apfds = [s.apfd for s in sessions if s.apfd is not None]
    return {
        "qlearn_export": EXPORT_FORMAT,
        "exported_at": time.time(),
        **_where(store, partition),
        "agent": agent,
        "summary": {
            "q_table": _summary(summary),
            "sessions": len(sessions),
            "first_session": sessions[0].started_at if sessions else None,
            "last_session": sessions[-1].started_at if sessions else None,
            "mean_apfd": fmean(apfds) if apfds else None,
            "mean_episode_reward": fmean(s.reward for s in sessions) if sessions else None,
            "trajectory_steps": len(steps),
        },
        "agent_state": _agent_state(state),
        "q_values": [_q_row(r) for r in store.q_values(partition, agent, order="key")],
        "sessions": [
            {
                **asdict(s),
                "rewards": [r._asdict() for r in rewards.get(s.session_id, [])],
            }
            for s in sessions
        ],
        "trajectories": [asdict(t) for t in steps],
        "patterns": [p._asdict() for p in store.patterns(partition) if p.agent == agent],
    }


# -- fleet-status ------------------------------------------------------------------------------
def fleet_status(store: Store, project: str, environment: str | None) -> dict[str, Any]:
    partitions = [
        p for p in store.partitions(project) if environment is None or p.environment == environment
    ]
    if not partitions:
        where = f"project {project!r}" + (
            f", environment {environment!r}" if environment is not None else ""
        )
        raise InspectorError(f"nothing is stored for {where}{_elsewhere(store)}")
    agents = []
    for partition in partitions:
        states = store.agent_states(partition)
        tables = store.q_table_summaries(partition)
        sessions = store.sessions(partition)
        for agent in sorted(set(states) | set(tables)):
            state, table = states.get(agent), tables.get(agent)
            agents.append(
                {
                    "environment": partition.environment,
                    "agent": agent,
                    "episodes": state.episodes if state else 0,
                    "epsilon": state.epsilon if state else None,
                    "q_table_size": table.entries if table else 0,
                    "states": table.states if table else 0,
                    "visits": table.visits if table else 0,
                    "mean_step_reward": state.mean_reward if state else None,
                    "last_active": _last_active(state, table),
                    "sessions": len(sessions),
                }
            )
    return {"store": store.display_url, "project": project, "agents": agents}


def _last_active(state: AgentState | None, table: QTableSummary | None) -> float | None:
    times = [t for t in (state.last_active if state else None, table and table.last_updated) if t]
    return max(times) if times else None


# -- compare -----------------------------------------------------------------------------------
def compare(store: Store, sides: Sequence[tuple[Partition, str]]) -> dict[str, Any]:
    """Two agents (or one agent in two environments) side by side, and how their Q-tables
    agree on the states both have seen."""
    out: list[dict[str, Any]] = []
    tables: list[dict[tuple[str, int], QValueRecord]] = []
    for partition, agent in sides:
        require_agent(store, partition, agent)
        state = store.agent_states(partition).get(agent)
        summary = store.q_table_summaries(partition).get(agent)
        out.append(
            {
                "agent": agent,
                "environment": partition.environment,
                "agent_state": _agent_state(state),
                "q_table": _summary(summary),
            }
        )
        rows = store.q_values(partition, agent, order="key")
        tables.append({(r.state, r.action): r for r in rows})
    a, b = tables
    shared_keys = sorted(set(a) & set(b))
    greedy_a, greedy_b = _greedy(a.values()), _greedy(b.values())
    shared_states = sorted(set(greedy_a) & set(greedy_b))
    agree = sum(greedy_a[s] == greedy_b[s] for s in shared_states)
    diffs = [abs(a[k].q - b[k].q) for k in shared_keys]
    return {
        "store": store.display_url,
        "project": sides[0][0].project,
        "sides": out,
        "shared": {
            "states": len(shared_states),
            "entries": len(shared_keys),
            "greedy_agreement": agree,
            "greedy_agreement_share": agree / len(shared_states) if shared_states else None,
            "mean_abs_q_difference": fmean(diffs) if diffs else None,
            "max_abs_q_difference": max(diffs) if diffs else None,
        },
    }


def _greedy(rows: Iterable[QValueRecord]) -> dict[str, int]:
    """Each state's best stored action; ties go to the lower action number."""
    best: dict[str, QValueRecord] = {}
    for r in rows:
        held = best.get(r.state)
        if held is None or (r.q, -r.action) > (held.q, -held.action):
            best[r.state] = r
    return {state: r.action for state, r in best.items()}
