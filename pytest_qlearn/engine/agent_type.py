"""What an agent is, as stored in the ``agent_types`` rows: plain data the stores, the spool
and the agents share (the agents and their registry live in :mod:`pytest_qlearn.agents`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .hyperparams import Hyperparameters


@dataclass(frozen=True)
class AgentType:
    """What an agent is, as stored in ``agent_types``: its name, the decision it makes, its
    actions (by number, with labels), the state features it reads and its hyperparameters."""

    name: str
    description: str
    actions: tuple[str, ...]
    features: tuple[str, ...]
    version: int = 1
    hyper: Hyperparameters = field(default_factory=Hyperparameters)

    @property
    def n_actions(self) -> int:
        return len(self.actions)
