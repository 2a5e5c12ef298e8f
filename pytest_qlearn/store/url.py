"""Store URLs: parsing, validation, a password-free form for display, and the identity of
the store a URL names."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

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
#: Query keys (compared percent-decoded and in lower case) whose values are secrets.
SECRET_QUERY_KEYS = frozenset({"password", "sslpassword"})
#: Query keys that say how to connect, not which store: the same database with another
#: timeout or TLS setting is the same store (and has the same spool).
CONNECTION_ONLY_KEYS = frozenset(
    {
        *TIMEOUT_KEYS,
        *SECRET_QUERY_KEYS,
        "application_name",
        "gsslib",
        "krbsrvname",
        "passfile",
        "sslcert",
        "sslcrl",
        "sslkey",
        "sslmode",
        "sslnegotiation",
        "sslrootcert",
        "ssl_max_protocol_version",
        "ssl_min_protocol_version",
        "target_session_attrs",
    }
)
#: Schemes whose text after ``://`` is a path, never ``user:password@host``.
_PATH_SCHEMES = frozenset({"sqlite", "file"})
_URL_START = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_WHITESPACE = re.compile(r"\s")
HIDDEN = "***"
#: What may follow ``***`` in a value redacted before: the punctuation of the message that
#: quoted it (``store postgresql://h/db?password=***: timed out``).
_TRAILING = ":;,.)]}'\""


@dataclass(frozen=True)
class StoreUrl:
    scheme: str
    path: str  # filesystem path for SQLite
    raw: str

    @property
    def display(self) -> str:
        return redact(self.raw)


class StoreUrlError(ConfigError):
    """A bad store URL: a :class:`ConfigError` (key, value without its password, what is
    allowed) that also says what is wrong with it."""

    def __init__(self, key: str, value: str, problem: str | None = None) -> None:
        super().__init__(key, value, ALLOWED)
        self.problem = problem
        if problem:
            self.args = (f"{key} = {value!r} is not valid ({problem}): allowed is {ALLOWED}",)


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (safe to print, log
    or raise), and nothing else changed.

    Works on any string that looks like a URL with credentials, valid or not: a password may
    hold ``/``, ``?``, ``#``, ``@`` or ``:`` unencoded (the user info ends at the *last* ``@``
    of the URL), and query keys are compared percent-decoded (``?pass%77ord=`` is the
    password to libpq and asyncpg). In a message a URL ends at whitespace; a text that is one
    URL (it starts with ``scheme://``) is taken whole, spaces and all. Only the secret values
    are replaced: the message around a URL is kept.
    """
    stripped = text.strip()
    whole = _URL_START.match(stripped) is not None
    out: list[str] = []
    pos = 0
    for match in _URL_START.finditer(text):
        if match.start() < pos:
            continue  # inside the URL just redacted
        start = match.end()
        if whole:
            end = len(text.rstrip())
        else:
            space = _WHITESPACE.search(text, start)
            end = len(text) if space is None else space.start()
        out.append(text[pos:start])
        out.append(_redact_after_scheme(match.group(1).lower(), text[start:end]))
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _redact_after_scheme(scheme: str, rest: str) -> str:
    """What follows ``scheme://``, its password and secret query values hidden."""
    host_from = 0
    if scheme not in _PATH_SCHEMES:
        at = rest.rfind("@")
        if at >= 0:
            user, colon, _ = rest[:at].partition(":")
            if colon:
                rest = f"{user}:{HIDDEN}{rest[at:]}"
                at = len(user) + 1 + len(HIDDEN)
            host_from = at + 1
    question = rest.find("?", host_from)
    if question < 0:
        return rest
    items = rest[question + 1 :].split("&")
    for i, item in enumerate(items):
        name, eq, value = item.partition("=")
        if eq and _is_secret_key(name) and not _redacted_already(value):
            items[i] = f"{name}={HIDDEN}"
    return rest[: question + 1] + "&".join(items)


def _is_secret_key(name: str) -> bool:
    return unquote(name.replace("+", " ")).strip().lower() in SECRET_QUERY_KEYS


def _redacted_already(value: str) -> bool:
    return value.startswith(HIDDEN) and not value[len(HIDDEN) :].strip(_TRAILING)


def _credentials(url: str) -> list[str]:
    """The secrets a URL carries, decoded: its password and secret query values."""
    text = url.strip()
    match = _URL_START.match(text)
    if match is None or match.group(1).lower() in _PATH_SCHEMES:
        return []
    rest = text[match.end() :]
    found = []
    at = rest.rfind("@")
    if at >= 0:
        _, colon, password = rest[:at].partition(":")
        if colon and password:
            found.append(unquote(password))
    question = rest.find("?", at + 1)
    if question >= 0:
        for item in rest[question + 1 :].split("&"):
            name, eq, value = item.partition("=")
            if eq and value and _is_secret_key(name):
                found.append(unquote(value.replace("+", " ")))
    return found


def has_password(url: str) -> bool:
    """Whether the URL carries a non-empty password (in the user info or as ``?password=``,
    its key percent-encoded or not)."""
    return bool(_credentials(url))


def password_of(url: str) -> str | None:
    """The password a URL carries (decoded), or None: for scrubbing it out of messages."""
    found = _credentials(url)
    return found[0] if found else None


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
    """Validate a store URL; a bad one is a :class:`ConfigError` naming what is allowed (and,
    where it can tell, what is wrong), never showing a password."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise StoreUrlError(key, redact(text))
    scheme = scheme.lower()
    if scheme == SQLITE_SCHEME:
        if not rest.startswith("/") or rest == "/":
            raise StoreUrlError(key, redact(text))
        path = rest[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
        return StoreUrl(SQLITE_SCHEME, path, text)
    if scheme in POSTGRES_SCHEMES:
        problem = _postgres_problem(text)
        if problem is not None:  # raised outside any handler: no exception context to leak
            raise StoreUrlError(key, redact(text), problem or None)
        return StoreUrl(POSTGRES_SCHEME, "", text)
    raise StoreUrlError(key, redact(text))


def _postgres_problem(text: str) -> str | None:
    """What is wrong with a ``postgresql://`` URL ("" when it is invalid without a better
    word for why), or None."""
    try:
        parts = urlsplit(text)
        query = {name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)}
    except ValueError:
        return ""
    try:
        _ = parts.port  # a malformed or out-of-range port raises ValueError
        host = parts.hostname  # as does a malformed host ("[::1")
        postgres_dsn(text)  # our own timeouts must be positive numbers
        valid = True
    except ValueError:
        valid = False
    # "u:ab/cd@h/db": urllib reads the host "u", port "ab", and the database "cd@h/db"
    after_netloc = parts.path + parts.fragment + ("" if valid else parts.query)
    if "@" in after_netloc:
        return (
            "a user or password with an unencoded '/', '?' or '#'? percent-encode them as "
            "%2F, %3F and %23"
        )
    if not valid:
        return ""
    missing = []
    if not host and not query & {"host", "service"}:
        missing.append("host")
    if not unquote(parts.path).strip("/") and not query & {"dbname", "database", "service"}:
        missing.append("database")
    if missing:
        return (
            f"it names no {' and no '.join(missing)}, and libpq's defaults are not used: a "
            "variable it was built from may be unset"
        )
    return None


def store_identity(display_url: str) -> str:
    """Which store a (password-free) URL names: for PostgreSQL its user, host, port, database
    and the query parameters that change which tables it reaches (``search_path``,
    ``options``...), without the ones that only say how to connect (timeouts, TLS...); a
    SQLite URL as it is."""
    text = display_url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in POSTGRES_SCHEMES:
        return text
    at = rest.rfind("@")
    user = unquote(rest[:at].partition(":")[0]) if at >= 0 else ""
    try:
        parts = urlsplit(f"postgresql://{rest[at + 1 :]}")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:
        return text
    hostport = parts.netloc.lower()
    if hostport and "," not in hostport and not re.search(r":\d*$", hostport):
        hostport += ":5432"
    kept = sorted((k, v) for k, v in pairs if k.lower() not in CONNECTION_ONLY_KEYS)
    database = unquote(parts.path).lstrip("/")
    return (
        f"postgresql://{quote(user, safe='')}@{hostport}/{quote(database, safe='')}"
        f"?{urlencode(kept)}"
    )
