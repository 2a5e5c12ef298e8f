"""Store URLs: parsing, validation and a password-free form for display."""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..engine.hyperparams import ConfigError

SQLITE_SCHEME = "sqlite"
POSTGRES_SCHEME = "postgresql"
POSTGRES_SCHEMES = ("postgresql", "postgres")
ALLOWED = (
    "sqlite:///PATH (relative), sqlite:////ABSOLUTE/PATH or "
    "postgresql://USER@HOST:PORT/DATABASE (password from QLEARN_DATABASE_URL or ~/.pgpass)"
)
#: Query parameters of a PostgreSQL URL that pytest-qlearn reads itself (seconds), instead of
#: passing them on to the server.
TIMEOUT_KEYS = ("connect_timeout", "command_timeout")


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


def has_password(url: str) -> bool:
    """Whether the URL carries a non-empty password (in the user info or as ``?password=``)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and userinfo.partition(":")[2]:
        return True
    return any(
        name.lower() in SECRET_QUERY_KEYS and value
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
    )


def password_of(url: str) -> str | None:
    """The password a URL carries (decoded), or None: for scrubbing it out of messages."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in SECRET_QUERY_KEYS and value:
            return value
    userinfo, at, _ = parts.netloc.rpartition("@")
    secret = userinfo.partition(":")[2] if at else ""
    return unquote(secret) or None


def postgres_dsn(url: str) -> tuple[str, dict[str, float]]:
    """Split a PostgreSQL URL into the DSN for asyncpg and pytest-qlearn's own timeouts
    (``?connect_timeout=5&command_timeout=60``, seconds). Raises ``ValueError`` on a bad one."""
    parts = urlsplit(url.strip())
    kept: list[tuple[str, str]] = []
    timeouts: dict[str, float] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in TIMEOUT_KEYS:
            seconds = float(value)
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
            timeouts[name] = seconds
        else:
            kept.append((name, value))
    query = urlencode(kept) if timeouts else parts.query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)), timeouts


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
        try:
            parts = urlsplit(text)
            _ = parts.port  # a malformed or out-of-range port raises ValueError
            _ = parts.hostname  # as does a malformed host ("[::1")
            postgres_dsn(text)  # our own timeouts must be positive numbers
        except ValueError:
            valid = False
        else:
            valid = True
        if not valid:  # raised outside the handler: no exception context to leak the URL
            raise ConfigError(key, redact(text), ALLOWED)
        return StoreUrl(POSTGRES_SCHEME, "", text)
    raise ConfigError(key, redact(text), ALLOWED)
