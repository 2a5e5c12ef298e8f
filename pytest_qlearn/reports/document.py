"""The report document: everything one run did and learned, as plain JSON data.

It is the ``.json`` report as written, and the one source the Markdown and HTML renderings
read, so the three formats never disagree. The schema is stable: fields are only ever added
within a :data:`SCHEMA_VERSION`; renaming or removing one bumps it. Positions are 1-based;
durations and times are seconds; a value that does not exist (APFD of a run without failures,
a reward component that cannot be measured) is ``null``, never a made-up number.

Top-level fields (README, section "Reports", documents each of them):

``schema_version``, ``generator``, ``generated_at``, ``partition``, ``session``, ``store``,
``warnings``, ``learner``, ``orders``, ``time_to_first_failure``, ``episode_reward``,
``failures_first``, ``tests``, ``riskiest``, ``progress``; ``budget`` only when a
``--qlearn-budget`` applied; ``reruns`` only when a test was rerun (its attempts, whether it
was flaky, its failure signature); ``order_suspects`` only when an order-dependence suspect
was kept in place or flagged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__
from ..agents.prioritizer import TIERS
from ..engine.history import FAILED, PASSED, SKIPPED
from ..engine.rewards import REWARD_RANGE
from ..session import EpisodeSummary, TestResult
from ..store.base import SessionRecord

#: Bumped only when a field is renamed, removed or changes meaning.
SCHEMA_VERSION = 1

Document = dict[str, Any]
VERDICTS = {PASSED: "passed", FAILED: "failed", SKIPPED: "skipped"}


@dataclass(frozen=True)
class ReportContext:
    """What the report needs besides the episode summary: where, and how the store fared."""

    project: str
    environment: str
    store_url: str  # for people: never contains a password
    store_status: str
    warnings: Sequence[str] = field(default_factory=tuple)
    generated_at: float | None = None  # None: now


def build_document(summary: EpisodeSummary, context: ReportContext) -> Document:
    """The report document (schema version :data:`SCHEMA_VERSION`)."""
    stats = summary.stats
    session = summary.session
    tests = _tests(summary.results, summary.why)
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "pytest-qlearn", "version": __version__},
        "generated_at": time.time() if context.generated_at is None else context.generated_at,
        "partition": {"project": context.project, "environment": context.environment},
        "session": asdict(session),
        "store": {"url": context.store_url, "status": context.store_status},
        "warnings": list(context.warnings),
        "learner": {
            "agent": stats.agent,
            "episodes": stats.episodes,
            "epsilon_next": stats.epsilon,
            "q_table_size": stats.q_table_size,
            "states": stats.states,
            "updates": stats.updates,
            "mean_step_reward": stats.mean_reward,
            "decisions": stats.decisions,
            "explored": stats.explored,
            "exploration_share": stats.exploration_share,
        },
        "orders": {
            "used": "collection" if session.mode == "observe" else "qlearn",
            "qlearn": {
                "apfd": session.apfd,
                "time_to_first_failure": session.time_to_first_failure,
                "first_failure_position": session.first_failure_position,
            },
            "collection": {
                "apfd": session.collection_apfd,
                "time_to_first_failure": session.collection_time_to_first_failure,
                "first_failure_position": session.collection_first_failure_position,
            },
        },
        "time_to_first_failure": {
            "qlearn_order": session.time_to_first_failure,
            "collection_order": session.collection_time_to_first_failure,
        },
        "episode_reward": {
            "total": summary.reward.total,
            "bonus": summary.reward.bonus,
            "penalty": summary.reward.penalty,
            "range": list(REWARD_RANGE),
            "components": {
                name: {
                    "value": value,
                    "weight": summary.reward.weights[name],
                    "note": summary.reward.notes.get(name),
                }
                for name, value in summary.reward.components.items()
            },
        },
        "failures_first": list(summary.failures_first),
        "tests": tests,
        "riskiest": [
            {
                "test_id": risk.test_id,
                "p_fail": risk.p_fail,
                "runs": risk.runs,
                "failures": risk.failures,
                "q_values": {_tier(action): q for action, q in enumerate(risk.q_values)},
                "visits": risk.visits,
                "features": risk.features,
            }
            for risk in summary.riskiest
        ],
        "progress": _progress(summary.recent_sessions, session),
        # only when --qlearn-budget applied (selected or observed)
        **({} if summary.budget is None else {"budget": summary.budget.as_dict()}),
        # only with --qlearn-cov
        **({} if summary.coverage is None else {"coverage": summary.coverage.as_dict()}),
        # only when a test was rerun (--qlearn-reruns, or pytest-rerunfailures observed)
        **({"reruns": _reruns(summary)} if summary.reruns else {}),
        # only when an order-dependence suspect was kept in place or flagged
        **({"order_suspects": _suspects(summary)} if summary.suspects else {}),
    }


def _suspects(summary: EpisodeSummary) -> list[dict[str, Any]]:
    return [
        {
            "test_id": note.after.test_id,
            "since_episode": note.after.since,
            "flagged": note.after.flags,
            "clean_runs": note.after.clean,
            "kept": note.kept,
            "suspected": note.after.active,
        }
        for note in summary.suspects
    ]


def _reruns(summary: EpisodeSummary) -> list[dict[str, Any]]:
    return [
        {
            "test_id": r.test_id,
            "attempts": r.attempts,
            "reruns": r.reruns,
            "flaky": r.flaky,
            "order_dependent_suspect": r.order_suspect,
            "ran_before": list(r.ran_before),
            "signature": r.signature,
            "signature_text": r.signature_text,
            "kind": r.kind,
            "rerun_seconds": r.rerun_seconds,
            "decided_by": "flaky-hunter" if r.decision else "observed",
            "reward": summary.rerun_rewards.get(r.test_id),
        }
        for r in summary.reruns
    ]


def _tier(tier: int | None) -> str | None:
    if tier is None:
        return None
    return TIERS[tier] if 0 <= tier < len(TIERS) else str(tier)


def _tests(results: Sequence[TestResult], why: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every test in qlearn's order (the order used, or in observe mode the order qlearn
    would have used); ``why`` it ran there for the first tests and the failures."""
    return [
        {
            "test_id": r.test_id,
            "verdict": VERDICTS.get(r.verdict, r.verdict),
            "duration": r.duration,
            "collection_position": r.collected_at + 1,
            "qlearn_position": r.position + 1,
            "tier": _tier(r.tier),
            "explored": r.explored,
            "why": why.get(r.test_id),
        }
        for r in sorted(results, key=lambda r: (r.position, r.collected_at))
    ]


def _progress(earlier: Sequence[SessionRecord], this: SessionRecord) -> list[dict[str, Any]]:
    """The recent episodes, oldest first, ending with this one."""
    sessions = [s for s in reversed(earlier) if s.session_id != this.session_id] + [this]
    return [
        {
            "episode": s.episode,
            "session_id": s.session_id,
            "started_at": s.started_at,
            "duration": s.duration,
            "mode": s.mode,
            "tests": s.tests,
            "failures": s.failures,
            "apfd": s.apfd,
            "collection_apfd": s.collection_apfd,
            "reward": s.reward,
            "epsilon": s.epsilon,
            "q_table_size": s.q_table_size,
            # a narrowed or stopped-early run: learned from, not advancing the schedule
            "partial": s.partial,
            # how early the first failure showed up in each order (schema 9; null without a
            # failure, and for sessions stored before)
            "time_to_first_failure": s.time_to_first_failure,
            "collection_time_to_first_failure": s.collection_time_to_first_failure,
            "first_failure_position": s.first_failure_position,
            "collection_first_failure_position": s.collection_first_failure_position,
        }
        for s in sessions
    ]
