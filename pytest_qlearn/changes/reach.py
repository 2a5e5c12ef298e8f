"""How a test reaches code changed since the last episode: the vocabulary change detection
answers in and the prioritizer orders by (its evidence classes 2-4, after the known
failures). A module of its own so the agents read it without importing the analysis."""

from __future__ import annotations

DIRECT = 2  # its own code is new or changed, or it calls changed code (or a caller of it)
CALLS_FURTHER = 3  # it calls a function further up a chain of callers of changed code
IMPORTS = 4  # its module imports changed code
