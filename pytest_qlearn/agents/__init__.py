"""The agents, one module each, free of pytest: the ``prioritizer`` (test order), the
``selector`` (what fits a time budget) and the ``coverage-tracer`` (which tests to re-trace
under ``--qlearn-cov``). A new agent goes here, as a module with an ``agent_type()`` that
returns its :class:`AgentType`; :func:`pytest_qlearn.session.default_registry` lists the
built-in ones, and users register their own with the ``pytest_qlearn_register_agents`` hook.
"""

from __future__ import annotations

from .registry import Agent, AgentRegistry, AgentType

__all__ = ["Agent", "AgentRegistry", "AgentType"]
