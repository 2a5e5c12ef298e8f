"""qlearn's decision for each test as JUnit XML properties (with ``--junitxml``).

Added the way ``record_property`` adds them: appended to each item's ``user_properties``,
which pytest copies onto the test's reports and junitxml writes as ``<property>`` elements of
the test case. One pass over the items after collection, only when a JUnit file is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from .agents.prioritizer import TIERS, Decision


def wanted(config: pytest.Config) -> bool:
    """Whether this run writes JUnit XML (``-p no:junitxml`` removes the option)."""
    return bool(getattr(config.option, "xmlpath", None))


def add_properties(
    items: Sequence[pytest.Item], decisions: Mapping[str, Decision], collected: Mapping[str, int]
) -> None:
    """``qlearn_tier`` (first/middle/last), ``qlearn_collection_position`` and
    ``qlearn_run_position`` (1-based) on every test qlearn decided about."""
    for position, item in enumerate(items, 1):
        decision = decisions.get(item.nodeid)
        if decision is None:
            continue
        tier = TIERS[decision.tier] if 0 <= decision.tier < len(TIERS) else str(decision.tier)
        item.user_properties += [
            ("qlearn_tier", tier),
            ("qlearn_collection_position", collected.get(item.nodeid, -1) + 1),
            ("qlearn_run_position", position),
        ]
