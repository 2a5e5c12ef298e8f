"""The agent abstraction and the registry of agent types (the ``agent_types`` rows)."""

from __future__ import annotations

from ..engine.agent_type import AgentType
from ..engine.hyperparams import Hyperparameters
from ..engine.qlearner import QLearner
from ..engine.rewards import RewardCalculator

__all__ = ["Agent", "AgentRegistry", "AgentType", "UnknownAgentError"]


class UnknownAgentError(KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown agent {self.name!r}; known agents: {', '.join(self.known) or 'none'}"


class AgentRegistry:
    """Agent types by name. Built-in agents register here; users add theirs through the
    ``pytest_qlearn_register_agents`` hook."""

    def __init__(self) -> None:
        self._types: dict[str, AgentType] = {}

    def register(self, agent_type: AgentType) -> None:
        existing = self._types.get(agent_type.name)
        if existing is not None and existing != agent_type:
            raise ValueError(f"agent {agent_type.name!r} is already registered differently")
        self._types[agent_type.name] = agent_type

    def get(self, name: str) -> AgentType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownAgentError(name, sorted(self._types)) from None

    def with_hyper(self, name: str, hyper: Hyperparameters) -> None:
        """Replace an agent's hyperparameters (from ini values or per-agent overrides)."""
        current = self.get(name)
        self._types[name] = AgentType(
            current.name,
            current.description,
            current.actions,
            current.features,
            current.version,
            hyper,
        )

    def types(self) -> list[AgentType]:
        return [self._types[name] for name in sorted(self._types)]

    def __contains__(self, name: object) -> bool:
        return name in self._types


class Agent:
    """Base of every agent: one decision, one Q-table (its :class:`QLearner`), one reward.

    Subclasses add the decision (``decide``-style methods) and the learning step; the
    learner, the state encoder and the reward calculator are shared building blocks.
    """

    def __init__(self, agent_type: AgentType, learner: QLearner, rewards: RewardCalculator):
        if learner.n_actions != agent_type.n_actions:
            raise ValueError(f"agent {agent_type.name!r}: learner has the wrong action count")
        self.agent_type = agent_type
        self.learner = learner
        self.rewards = rewards

    @property
    def name(self) -> str:
        return self.agent_type.name
