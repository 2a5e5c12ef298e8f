"""Store URLs: parsing, validation and a password-free form for display."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..hyperparams import ConfigError

SQLITE_SCHEME = "sqlite"
POSTGRES_SCHEMES = ("postgresql", "postgres")
ALLOWED = "sqlite:///PATH (relative) or sqlite:////ABSOLUTE/PATH"


@dataclass(frozen=True)
class StoreUrl:
    scheme: str
    path: str  # filesystem path for SQLite
    raw: str

    @property
    def display(self) -> str:
        return redact(self.raw)


SECRET_QUERY_KEYS = frozenset({"password"})


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to print, log or raise).

    Works on the raw text rather than ``SplitResult.port``/``hostname`` so a malformed port
    or host cannot make redaction itself fail, and the host is kept exactly as written.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable store URL>"
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query_items = parts.query.split("&") if parts.query else []
    for i, item in enumerate(query_items):
        name, eq, _ = item.partition("=")
        if eq and name.lower() in SECRET_QUERY_KEYS:
            query_items[i] = f"{name}=***"
    query = "&".join(query_items)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def parse_store_url(url: str, key: str = "--qlearn-db") -> StoreUrl:
    """Validate a store URL; a bad one is a :class:`ConfigError` naming what is allowed."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ConfigError(key, redact(text), ALLOWED)
    scheme = scheme.lower()
    if scheme == SQLITE_SCHEME:
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(key, redact(text), ALLOWED)
        path = rest[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
        return StoreUrl(SQLITE_SCHEME, path, text)
    if scheme in POSTGRES_SCHEMES:
        raise ConfigError(
            key,
            redact(text),
            ALLOWED + " (the PostgreSQL store is not part of this version yet)",
        )
    raise ConfigError(key, redact(text), ALLOWED)
