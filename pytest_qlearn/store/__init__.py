"""Persistence behind one interface: :class:`Store`, with SQLite as the embedded default."""

from __future__ import annotations

from collections.abc import Callable

from .base import (
    EpisodeWrite,
    Partition,
    SchemaTooNewError,
    Snapshot,
    Store,
    StoreError,
)
from .sqlite import SqliteStore
from .url import StoreUrl, parse_store_url, redact


def open_store(url: StoreUrl, on_warning: Callable[[str], None] | None = None) -> Store:
    """Create (not yet open) the store a validated URL names."""
    return SqliteStore(url.path, on_warning=on_warning)


__all__ = [
    "EpisodeWrite",
    "Partition",
    "SchemaTooNewError",
    "Snapshot",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUrl",
    "open_store",
    "parse_store_url",
    "redact",
]
