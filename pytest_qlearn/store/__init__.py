"""Persistence behind one interface: :class:`Store`, with SQLite as the embedded default and
PostgreSQL (asyncpg, imported only when a ``postgresql://`` URL is used) as the shared store."""

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
from .url import POSTGRES_SCHEME, StoreUrl, parse_store_url, redact


def open_store(url: StoreUrl, on_warning: Callable[[str], None] | None = None) -> Store:
    """Create (not yet open) the store a validated URL names."""
    if url.scheme == POSTGRES_SCHEME:
        from .postgres import PostgresStore

        return PostgresStore(url.raw, on_warning=on_warning)
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
