"""PostgreSQL for the tests: a real server, never a mock, and never a silent skip.

``QLEARN_TEST_DATABASE_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``) names the
server to use. When it is not set, the suite starts a throwaway server of its own from the
binaries of the ``pgserver`` package (in the ``test`` extra), once per test process, and
removes it at the end. Each test gets a schema of its own (``?search_path=``), dropped
afterwards, so parallel and repeated runs never see each other's rows.

:class:`PgInstance` is a private server in a temporary directory on a free loopback port; the
fault tests start, stop and restart their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

PG_ENV = "QLEARN_TEST_DATABASE_URL"
PG_USER = "pgserver"  # the unprivileged system user pgserver itself runs postgres as
HELP = (
    f"the PostgreSQL tests need a server: set {PG_ENV} (e.g. "
    "postgresql://postgres@127.0.0.1:5432/test) or install the test extra "
    "(pip install -e '.[test]'), whose pgserver package brings PostgreSQL binaries"
)


def _bin_dir() -> Path:
    """PostgreSQL server binaries: pgserver's, else the system's."""
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at import
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
        return Path(POSTGRES_BIN_PATH)
    except ImportError:
        pass
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if candidates:
        return candidates[-1].parent
    pytest.fail(f"no PostgreSQL binaries found: {HELP}", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgInstance:
    """A PostgreSQL server of the tests' own: ``initdb`` in a temporary directory, listening
    on 127.0.0.1 only, trust authentication, fsync off (throwaway data)."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="qlearn-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # postgres refuses to run as root
            self.user = PG_USER
            self._prepare_unprivileged()
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip

    def _prepare_unprivileged(self) -> None:
        import pwd

        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/bin/false", PG_USER], check=True)
        entry = pwd.getpwnam(PG_USER)
        self.root.chmod(0o755)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        # the binaries may live under a private home directory: let the user traverse to them
        for parent in [self.bin, *self.bin.parents]:
            mode = parent.stat().st_mode
            if mode & 0o005 != 0o005:
                parent.chmod(mode | 0o005)

    def _run(self, program: str, *args: str | Path, check: bool = True) -> None:
        # as the unprivileged user with its own group only: root's supplementary groups kept
        # would make group permission bits (e.g. a 0705 /root) deny what "others" may do
        drop = {"user": self.user, "group": self.user, "extra_groups": []} if self.user else {}
        proc = subprocess.run(
            [str(self.bin / program), *map(str, args)],
            **drop,
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        if check and proc.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({proc.returncode}):\n{proc.stdout}\n{log}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options,
                  "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", self.data, "-w", "-t", "60", "-m", mode, "stop", check=False)

    def postmaster_pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def destroy(self) -> None:
        pid = self.postmaster_pid()
        self.stop("immediate")
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def pg_execute(url: str, *statements: str) -> list[Any]:
    """Run statements on a fresh connection; returns the rows of the last one."""

    async def go() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=15)
        try:
            rows: list[Any] = []
            for statement in statements:
                rows = list(await conn.fetch(statement))
            return rows
        finally:
            await conn.close()

    return asyncio.run(go())


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    extra = "&".join(f"{k}={v}" for k, v in params.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of the server the PostgreSQL tests use (see the module docstring)."""
    url = os.environ.get(PG_ENV, "").strip()
    if url:
        try:
            pg_execute(url, "SELECT 1")
        except Exception as exc:
            pytest.fail(f"{PG_ENV} names a server that does not answer ({exc!r}); {HELP}",
                        pytrace=False)  # fmt: skip
        yield url
        return
    try:
        instance = PgInstance()
        instance.start()
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        pytest.fail(f"cannot start a throwaway PostgreSQL server ({exc}); {HELP}", pytrace=False)
    try:
        yield instance.url()
    finally:
        instance.destroy()


def new_schema(server_url: str) -> tuple[str, str]:
    """A fresh schema; returns its name and the URL that uses it."""
    name = f"qlearn_test_{uuid.uuid4().hex[:16]}"
    pg_execute(server_url, f'CREATE SCHEMA "{name}"')
    return name, with_query(server_url, search_path=name)


def drop_schema(server_url: str, name: str) -> None:
    for attempt in range(3):
        try:
            pg_execute(server_url, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            return
        except (OSError, asyncpg.PostgresError):
            time.sleep(0.5 * (attempt + 1))


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A store URL on the test server, in a schema of this test's own."""
    name, url = new_schema(pg_server)
    try:
        yield url
    finally:
        drop_schema(pg_server, name)


@pytest.fixture
def pg_instance() -> Iterator[PgInstance]:
    """A private server (not started) that the test may start, stop and restart."""
    instance = PgInstance()
    try:
        yield instance
    finally:
        instance.destroy()


@pytest.fixture(autouse=True)
def _terminal_width_as_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest-xdist's workers run with COLUMNS=80, which the qlearn CLI honours when piped;
    every test sees what a plain pipe gives (a test of COLUMNS sets it itself)."""
    monkeypatch.delenv("COLUMNS", raising=False)
