"""pytest-qlearn: a pytest plugin that learns the test order across CI runs."""

from __future__ import annotations

__version__ = "0.1.0"
