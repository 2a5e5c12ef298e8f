"""``qlearn replay``: replay recorded CI histories through the plugin's own learning code.

* :mod:`.datasets` loads the RETECS/COLEMAN and Commons formats into cycles;
* :mod:`.baselines` computes the reference orders (random, sort, failure rate, shortest
  first, oracle) online;
* :mod:`.runner` drives :class:`~pytest_qlearn.session.LearningSession` cycle by cycle
  against one in-memory store and scores every order.
"""

from __future__ import annotations

from .datasets import Cycle, Dataset, DatasetError, TestRun, load
from .runner import DatasetResult, ReplayConfig, replay

__all__ = [
    "Cycle",
    "Dataset",
    "DatasetError",
    "DatasetResult",
    "ReplayConfig",
    "TestRun",
    "load",
    "replay",
]
