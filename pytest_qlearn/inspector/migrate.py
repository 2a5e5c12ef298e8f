"""``qlearn migrate --from URL --to URL``: copy a project's learning between stores.

The copy goes through the same :meth:`Store.write_episode` every run uses, one write per
stored session (oldest first, with its trajectories and reward components), the last one also
carrying the Q-tables (as deltas onto an empty table: ``0 + q`` is ``q`` exactly), the visit
counts, the patterns, the agents' counters and ε, the selector's pending skips (as deltas onto
an empty table too), the test histories (taken as they are), the file digests and, from
``--qlearn-cov``, the coverage maps, the files' statements and the newest coverage run's
commit, uncommitted files and line coverage.
So the target holds exactly what the source holds; only timestamps of the copy itself
(``updated_at``, expiry, ``last_active``) are new. The target partitions must be empty, and
everything is read back and compared after the copy.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from ..engine.history import SKIPPED
from ..store.base import (
    DEFAULT_TTL_DAYS,
    AgentProgress,
    CoverageSnapshot,
    CoverageWrite,
    EpisodeWrite,
    Observation,
    Partition,
    PendingSkipDelta,
    QDelta,
    Store,
    TrajectoryStep,
)
from .data import InspectorError


@dataclass
class Copied:
    partition: Partition
    sessions: int = 0
    q_values: int = 0
    histories: int = 0
    trajectories: int = 0
    patterns: int = 0
    agents: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.partition.project,
            "environment": self.partition.environment,
            "sessions": self.sessions,
            "q_values": self.q_values,
            "histories": self.histories,
            "trajectories": self.trajectories,
            "patterns": self.patterns,
            "agents": self.agents,
        }


def _agents(store: Store, partition: Partition) -> list[str]:
    return sorted(set(store.agent_states(partition)) | set(store.q_table_summaries(partition)))


def _content(store: Store, partition: Partition) -> dict[str, Any]:
    """Everything a partition holds that the copy must preserve exactly, comparable."""
    agents = _agents(store, partition)
    snapshot = store.load_snapshot(partition, [])
    return {
        "sessions": store.sessions(partition),
        "rewards": store.rewards(partition),
        "histories": snapshot.histories,
        "pending_skips": snapshot.pending_skips,
        "file_hashes": snapshot.file_hashes,
        "coverage": store.load_coverage(partition),
        "q": {
            a: [
                (r.state, r.state_text, r.action, r.q, r.visits)
                for r in store.q_values(partition, a, order="key")
            ]
            for a in agents
        },
        "trajectories": {
            a: sorted(
                (
                    t.session_id,
                    t.step,
                    t.test_id,
                    t.state,
                    t.action,
                    t.explored,
                    t.reward,
                    t.next_state,
                )
                for t in store.trajectories(partition, a)
            )
            for a in agents
        },
        "patterns": store.patterns(partition),
        "agents": {
            name: (s.episodes, s.epsilon, s.reward_sum, s.rewards)
            for name, s in store.agent_states(partition).items()
        },
    }


def copy_project(
    source: Store,
    target: Store,
    project: str,
    environment: str | None = None,
    ttl_days: float = DEFAULT_TTL_DAYS,
) -> list[Copied]:
    """Copy every partition of ``project`` (only ``environment`` when given)."""
    partitions = [
        p for p in source.partitions(project) if environment is None or p.environment == environment
    ]
    if not partitions:
        where = f"project {project!r}" + (f", environment {environment!r}" if environment else "")
        raise InspectorError(f"nothing is stored for {where} in {source.display_url}")
    occupied = set(target.partitions(project))
    for p in partitions:  # check everything before writing anything
        if p in occupied:
            raise InspectorError(
                f"{target.display_url} already holds learning for project {p.project!r}, "
                f"environment {p.environment!r}; migrate copies into empty partitions only"
            )
    return [_copy_partition(source, target, p, ttl_days) for p in partitions]


def _copy_partition(source: Store, target: Store, partition: Partition, ttl_days: float) -> Copied:
    content = _content(source, partition)
    sessions = content["sessions"]
    if not sessions:
        raise InspectorError(
            f"project {partition.project!r}, environment {partition.environment!r} in "
            f"{source.display_url} holds learning but no sessions; nothing can carry it"
        )
    steps: dict[str, list[TrajectoryStep]] = defaultdict(list)
    for agent, rows in content["trajectories"].items():
        for session_id, step, test_id, state, action, explored, reward, nxt in rows:
            steps[session_id].append(
                TrajectoryStep(agent, step, test_id, state, action, explored, reward, nxt)
            )
    histories = list(content["histories"].values())
    copied = Copied(partition)
    last = len(sessions) - 1
    for i, session in enumerate(sessions):
        write = EpisodeWrite(
            partition=partition,
            session=session,
            agent_types=[],
            trajectories=steps.get(session.session_id, []),
            rewards=content["rewards"].get(session.session_id, []),
        )
        if i == last:
            write.q_deltas = {
                agent: [QDelta(s, text, a, q, n) for s, text, a, q, n in rows]
                for agent, rows in content["q"].items()
                if rows
            }
            write.patterns = list(content["patterns"])
            write.pending_skips = [
                PendingSkipDelta(test_id, state_key, count)
                for test_id, rows in sorted(content["pending_skips"].items())
                for state_key, count in sorted(rows.items())
            ]
            write.agents = [
                AgentProgress(name, episodes, epsilon, reward_sum, rewards)
                for name, (episodes, epsilon, reward_sum, rewards) in content["agents"].items()
            ]
            # The histories are taken as they are: the store's fast path for a run that
            # learned from the latest snapshot (base_session_count = the sessions written
            # before, partial ones included).
            write.observations = [
                Observation(h.test_id, h.verdicts[-1:] or SKIPPED, h.last_duration)
                for h in histories
            ]
            write.next_histories = histories
            write.base_episodes = sum(not s.partial for s in sessions[:last])
            write.base_session_count = last
            write.file_hashes = sorted(content["file_hashes"].items())
            coverage: CoverageSnapshot = content["coverage"]
            if coverage != CoverageSnapshot():
                write.coverage = CoverageWrite(
                    maps=[
                        (t, data, episode) for t, (data, episode) in sorted(coverage.maps.items())
                    ],
                    commit=coverage.last_commit,
                    dirty=list(coverage.last_dirty),
                    percent=coverage.last_percent,
                    statements=[(p, d, r) for p, (d, r) in sorted(coverage.statements.items())],
                )
        if not target.write_episode(write, ttl_days=ttl_days):
            raise InspectorError(
                f"session {session.session_id!r} is already stored in {target.display_url} "
                "(in another partition); nothing more was copied"
            )
        copied.trajectories += len(write.trajectories)
    copied.sessions = len(sessions)
    copied.q_values = sum(len(rows) for rows in content["q"].values())
    copied.histories = len(histories)
    copied.patterns = len(content["patterns"])
    copied.agents = len(content["agents"])
    if _content(target, partition) != content:
        raise InspectorError(
            f"the copy of project {partition.project!r}, environment "
            f"{partition.environment!r} in {target.display_url} differs from the source"
        )
    return copied
