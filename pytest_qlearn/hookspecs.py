"""Hooks pytest-qlearn publishes for other plugins and conftest files (``pytest_qlearn_*``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .agents.prioritizer import Decision
    from .agents.registry import AgentRegistry


@pytest.hookspec(historic=True)
def pytest_qlearn_register_agents(registry: AgentRegistry) -> None:
    """Register additional agent types (they are recorded in the store's ``agent_types``)."""


@pytest.hookspec
def pytest_qlearn_ranking(
    config: pytest.Config, order: list[str], decisions: dict[str, Decision]
) -> None:
    """Observe the order qlearn chose (test ids in run order) and the per-test decisions."""
