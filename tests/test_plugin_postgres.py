"""End to end with a real PostgreSQL store: pytest runs (``pytester``) that learn into it,
survive it being unreachable, stopped in the middle of the run or killed in the middle of the
final write, share it between eight concurrent processes, and never print its password."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PgInstance, drop_schema, new_schema, pg_execute
from test_plugin_e2e import run_order

from pytest_qlearn.store.spool import episode_from_json

BASE_ARGS = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")
SECRET = "hunter2secret"

CONFTEST = '''
import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_runtest_call(item):
    """Fail the tests named in fail.txt or in $QLEARN_FAIL."""
    listed = (HERE / "fail.txt").read_text().split() if (HERE / "fail.txt").exists() else []
    if item.name in listed or item.name == os.environ.get("QLEARN_FAIL"):
        raise AssertionError(f"{item.name} is told to fail")


def pytest_configure(config):
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        # workers must never talk to the store: log any connection attempt
        import asyncpg

        real_connect = asyncpg.connect
        log = HERE / f"connect-{workerinput['workerid']}.log"

        def spy(*args, **kwargs):
            log.write_text("connected\\n")
            return real_connect(*args, **kwargs)

        asyncpg.connect = spy
    dump = os.environ.get("QLEARN_DUMP_WRITES")
    if dump and workerinput is None:
        # record what this process writes (the real write still happens)
        from pytest_qlearn.store import postgres
        from pytest_qlearn.store.spool import episode_to_json

        real_write = postgres.PostgresStore.write_episode

        def recording(self, write, ttl_days=30.0):
            Path(dump, write.session.session_id + ".json").write_text(episode_to_json(write))
            return real_write(self, write, ttl_days)

        postgres.PostgresStore.write_episode = recording


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    """With $QLEARN_BARRIER, wait until that many processes got here: they then all write
    to the store at the same moment."""
    barrier = os.environ.get("QLEARN_BARRIER")
    if not barrier or hasattr(session.config, "workerinput"):
        return
    directory, count = barrier.rsplit(":", 1)
    Path(directory, f"ready-{os.getpid()}").write_text("")
    deadline = __import__("time").monotonic() + 120
    while len(list(Path(directory).glob("ready-*"))) < int(count):
        if __import__("time").monotonic() > deadline:
            raise RuntimeError("barrier timed out")
        __import__("time").sleep(0.02)
'''

SUITE = {
    "test_one": """
        def test_a():
            pass

        def test_b():
            pass

        def test_c():
            pass
    """,
    "test_two": """
        import pytest

        @pytest.mark.parametrize("x", ["it's", 'say "hi"', "a;b", "ü"])
        def test_p(x):
            pass

        def test_d():
            pass
    """,
}
TESTS = 8


def make_project(
    pytester: pytest.Pytester, *, fail: tuple[str, ...] = (), ini: str = "", epsilon: int = 0
) -> None:
    pytester.makefile(
        ".ini",
        pytest=f"[pytest]\nqlearn = true\nqlearn_exploration_rate = {epsilon}\n"
        "qlearn_min_exploration_rate = 0\nqlearn_order_scope = test\n" + ini,
    )
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(**{name: textwrap.dedent(code) for name, code in SUITE.items()})
    (pytester.path / "fail.txt").write_text("\n".join(fail) + "\n", encoding="utf-8")


@pytest.fixture(autouse=True)
def _no_store_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QLEARN_DATABASE_URL", raising=False)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE_ARGS, *args)


def run_subprocess(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*BASE_ARGS, *args, timeout=300)


def collection_order(pytester: pytest.Pytester) -> list[str]:
    result = run(pytester, "-p", "no:qlearn", "--collect-only", "-q")
    return [line for line in result.outlines if "::" in line and " " not in line]


def warnings_of(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("qlearn: warning")]


def report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def everything_printed(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


def sessions(url: str) -> list[str]:
    return [row[0] for row in pg_execute(url, "SELECT session_id FROM sessions ORDER BY seq")]


def spooled(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".pytest_cache" / "d" / "qlearn" / "spool").glob("*/*.json"))


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{SECRET}@", 1)


# -- learning ----------------------------------------------------------------------------------


def spawn_pytest(
    pytester: pytest.Pytester, env: dict[str, str], *args: str
) -> subprocess.Popen[str]:
    """A pytest process of its own in the test project (output: stdout, stderr folded in)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", *BASE_ARGS, *args],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_learns_across_runs_in_postgresql(pytester: pytest.Pytester, pg_url: str) -> None:
    make_project(pytester, fail=("test_d",))
    first = run(pytester, "-v", "--qlearn-db", pg_url, "--qlearn-report=r1.json")
    first.assert_outcomes(passed=TESTS - 1, failed=1)
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    assert "store postgresql://postgres@" in first.stdout.str()
    assert not warnings_of(first)
    assert report(pytester.path / "r1.json")["store"]["status"].startswith("saved to postgresql")

    second = run(pytester, "-v", "--qlearn-db", pg_url, "--qlearn-report=r2.json")
    assert second.ret == pytest.ExitCode.TESTS_FAILED
    assert run_order(second)[0] == "test_two.py::test_d"  # last run's failure comes first
    data = report(pytester.path / "r2.json")
    assert data["session"]["episode"] == 2
    assert len(sessions(pg_url)) == 2
    assert not spooled(pytester)


def test_password_in_ini_is_warned_about_and_never_printed(
    pytester: pytest.Pytester, pg_url: str, pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(pytester, ini=f"qlearn_db = {with_password(pg_url)}\n")
    result = run(pytester, "-v", "--qlearn-report=r.json", "--junitxml=junit.xml", "-rA")
    result.assert_outcomes(passed=TESTS)
    [warning] = warnings_of(result)
    assert "qlearn_db in the ini file contains a password" in warning
    assert "QLEARN_DATABASE_URL" in warning
    assert "postgres:***@" in warning
    assert len(sessions(pg_url)) == 1
    files = (pytester.path / "r.json", pytester.path / "junit.xml")
    for text in (everything_printed(result), *(p.read_text(encoding="utf-8") for p in files)):
        assert SECRET not in text

    # the environment wins over the ini file (and the ini password is still warned about)
    schema, env_url = new_schema(pg_server)
    try:
        monkeypatch.setenv("QLEARN_DATABASE_URL", with_password(env_url))
        result = run(pytester, "-v")
        result.assert_outcomes(passed=TESTS)
        assert len(warnings_of(result)) == 1
        assert SECRET not in everything_printed(result)
        assert len(sessions(env_url)) == 1 and len(sessions(pg_url)) == 1
    finally:
        drop_schema(pg_server, schema)


# -- the store unreachable at start ------------------------------------------------------------
def test_unreachable_at_start_warns_once_keeps_order_spools_and_the_next_run_replays(
    pytester: pytest.Pytester, pg_instance: PgInstance
) -> None:
    make_project(pytester, fail=("test_b",), epsilon=1)
    url = with_password(pg_instance.url())  # the server is not started yet
    collected = collection_order(pytester)

    down = run(pytester, "-v", "--qlearn-db", url, "--qlearn-report=r1.json")
    down.assert_outcomes(passed=TESTS - 1, failed=1)
    assert down.ret == pytest.ExitCode.TESTS_FAILED
    assert run_order(down) == collected
    [warning] = warnings_of(down)
    assert "cannot connect to the qlearn store postgresql://postgres:***@127.0.0.1" in warning
    assert "spooled" in warning
    assert SECRET not in everything_printed(down)
    assert "Traceback" not in everything_printed(down)
    first_id = report(pytester.path / "r1.json")["session"]["session_id"]
    [spool_file] = spooled(pytester)
    assert spool_file.name == f"{first_id}.json"
    kept = spool_file.read_text(encoding="utf-8")
    assert SECRET not in kept

    strict = run(pytester, "--qlearn-strict", "--qlearn-db", url)
    assert strict.ret == pytest.ExitCode.USAGE_ERROR
    assert "--qlearn-strict" in everything_printed(strict)
    assert "postgres:***@127.0.0.1" in everything_printed(strict)
    assert SECRET not in everything_printed(strict)
    assert "Traceback" not in everything_printed(strict)

    pg_instance.start()
    up = run(pytester, "-v", "--qlearn-db", url, "--qlearn-report=r2.json")
    up.assert_outcomes(passed=TESTS - 1, failed=1)
    assert not warnings_of(up)
    assert "with 1 spooled earlier run(s)" in report(pytester.path / "r2.json")["store"]["status"]
    second_id = report(pytester.path / "r2.json")["session"]["session_id"]
    stored_url = pg_instance.url()
    assert sessions(stored_url) == [first_id, second_id]
    assert not spooled(pytester)
    history = pg_execute(
        stored_url, "SELECT runs, failures FROM test_history WHERE test_id = 'test_one.py::test_b'"
    )
    assert tuple(history[0]) == (2, 2)

    # a retried replay (the spool file back, as if removing it had failed) changes nothing
    spool_file.parent.mkdir(parents=True, exist_ok=True)
    spool_file.write_text(kept, encoding="utf-8")
    again = run(pytester, "--qlearn-db", url)
    again.assert_outcomes(passed=TESTS - 1, failed=1)
    assert sessions(stored_url)[:2] == [first_id, second_id]
    assert len(sessions(stored_url)) == 3
    assert not spooled(pytester)
    assert tuple(pg_execute(stored_url, "SELECT episodes FROM agent_states")[0]) == (3,)


# -- the store stops in the middle of the run ----------------------------------------------------
STOPPER = """
    import os
    import signal
    import time
    from pathlib import Path


    def test_zz_stop_the_database():
        pushed_to = os.environ.get("QLEARN_WAIT_FOR_PUSH")
        if pushed_to:  # a checkpoint of the tests before this one reached the database first
            import asyncio

            import asyncpg

            async def pushes():
                conn = await asyncpg.connect(pushed_to)
                try:
                    return await conn.fetchval("SELECT count(*) FROM checkpoint_results")
                finally:
                    await conn.close()

            deadline = time.monotonic() + 60
            while not asyncio.run(pushes()):
                assert time.monotonic() < deadline, "no checkpoint was pushed"
                time.sleep(0.02)
        pid = int(os.environ["QLEARN_POSTMASTER_PID"])
        os.kill(pid, signal.SIGINT)  # fast shutdown: every connection is dropped
        deadline = time.monotonic() + 60
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists()
"""


PUSH_EVERY_TEST = "qlearn_checkpoint_seconds = 1e-9\nqlearn_update_frequency = 1\n"


@pytest.mark.parametrize("pushing", [False, True], ids=["no-checkpoints", "pushing-checkpoints"])
def test_database_stopping_mid_run_completes_the_run_and_the_next_run_replays(
    pytester: pytest.Pytester,
    pg_instance: PgInstance,
    monkeypatch: pytest.MonkeyPatch,
    pushing: bool,
) -> None:
    """With checkpoints pushed after every test, the pushes after the stop fail too: still
    one warning, and the local checkpoint and spool hold everything."""
    make_project(pytester, fail=("test_c",), ini=PUSH_EVERY_TEST if pushing else "")
    pg_instance.start()
    url = pg_instance.url()
    run(pytester, "--qlearn-db", url).assert_outcomes(passed=TESTS - 1, failed=1)

    pytester.makepyfile(test_stopper=textwrap.dedent(STOPPER))
    monkeypatch.setenv("QLEARN_POSTMASTER_PID", str(pg_instance.postmaster_pid()))
    if pushing:
        monkeypatch.setenv("QLEARN_WAIT_FOR_PUSH", url)
    stopped = run_subprocess(pytester, "-v", "--qlearn-db", url, "--qlearn-report=r1.json")
    stopped.assert_outcomes(passed=TESTS, failed=1)  # the stopper passed, test_c failed
    assert stopped.ret == pytest.ExitCode.TESTS_FAILED
    [warning] = warnings_of(stopped)
    assert "cannot write to the qlearn store" in warning and "spooled to" in warning
    assert "Traceback" not in everything_printed(stopped)
    assert "INTERNALERROR" not in everything_printed(stopped)
    lost_id = report(pytester.path / "r1.json")["session"]["session_id"]
    [spool_file] = spooled(pytester)
    kept = spool_file.read_text(encoding="utf-8")
    assert episode_from_json(kept).session.session_id == lost_id

    (pytester.path / "test_stopper.py").unlink()
    pg_instance.start()
    # what it pushed before the stop (superseded by its spooled episode in the next run)
    assert pg_execute(url, "SELECT count(*) FROM checkpoints")[0][0] == int(pushing)
    after = run_subprocess(pytester, "--qlearn-db", url)
    after.assert_outcomes(passed=TESTS - 1, failed=1)
    assert not warnings_of(after)
    assert lost_id in sessions(url) and len(sessions(url)) == 3
    assert not spooled(pytester)
    runs = pg_execute(url, "SELECT runs, failures FROM test_history WHERE test_id LIKE '%test_c'")
    assert tuple(runs[0]) == (3, 3)
    trajectories = pg_execute(
        url, f"SELECT count(*) FROM trajectories WHERE session_id = '{lost_id}'"
    )
    assert trajectories[0][0] == len(episode_from_json(kept).trajectories) > 0

    # retried: the same spooled episode again is not applied twice
    spool_file.parent.mkdir(parents=True, exist_ok=True)
    spool_file.write_text(kept, encoding="utf-8")
    run(pytester, "--qlearn-db", url).assert_outcomes(passed=TESTS - 1, failed=1)
    assert sessions(url).count(lost_id) == 1 and len(sessions(url)) == 4
    assert tuple(pg_execute(url, "SELECT episodes FROM agent_states")[0]) == (4,)
    assert pg_execute(url, "SELECT count(*) FROM checkpoints")[0][0] == 0


def test_strict_makes_a_failed_write_fail_the_run(
    pytester: pytest.Pytester, pg_instance: PgInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_project(pytester)
    pg_instance.start()
    pytester.makepyfile(test_stopper=textwrap.dedent(STOPPER))
    monkeypatch.setenv("QLEARN_POSTMASTER_PID", str(pg_instance.postmaster_pid()))
    result = run_subprocess(pytester, "--qlearn-strict", "--qlearn-db", pg_instance.url())
    result.assert_outcomes(passed=TESTS + 1)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert len(warnings_of(result)) == 1
    assert len(spooled(pytester)) == 1  # strict or not, nothing learned is lost


# -- the store freezes in the middle of the run (issue 13, case 8) ------------------------------
FREEZER = """
    import asyncio
    import os
    import signal
    import time
    from pathlib import Path

    import asyncpg


    async def pushed():
        conn = await asyncpg.connect(os.environ["QLEARN_FREEZE_DB"])
        try:
            return await conn.fetchval("SELECT count(*) FROM checkpoint_results")
        finally:
            await conn.close()


    def children(pid):
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
        return found


    def test_one_freeze_the_database():
        deadline = time.monotonic() + 60
        while not asyncio.run(pushed()):  # a checkpoint reached the database first
            assert time.monotonic() < deadline, "no checkpoint was pushed"
            time.sleep(0.02)
        root = int(os.environ["QLEARN_POSTMASTER_PID"])
        pids = [root, *children(root)]  # the server and every backend: it stops answering
        Path(os.environ["QLEARN_FROZEN"]).write_text(" ".join(map(str, pids)))
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
"""
TIMER = """

@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    (HERE / "finish-started").write_text(repr(__import__("time").monotonic()))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        (HERE / "unconfigured").write_text(repr(__import__("time").monotonic()))
"""


def test_a_frozen_database_costs_the_run_one_command_timeout_not_a_sum(
    pytester: pytest.Pytester, pg_instance: PgInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database stops answering mid-run (every server process SIGSTOPped) while the run
    pushes checkpoints. The heartbeat, the push under way and the final write each waited a
    command timeout of their own (a 12 s run took 127 s with the default 60 s); after the
    first timeout the run gives up on the store: the end of the session costs at most one
    command timeout, and the run's learning is spooled."""
    timeout = 4.0
    make_project(pytester, fail=("test_c",), ini=PUSH_EVERY_TEST)
    pytester.makeconftest(CONFTEST + TIMER)
    pytester.makepyfile(test_one_freezer=textwrap.dedent(FREEZER))
    pg_instance.start()
    url = pg_instance.url()
    frozen = pytester.path / "frozen.pids"
    monkeypatch.setenv("QLEARN_FREEZE_DB", url)
    monkeypatch.setenv("QLEARN_POSTMASTER_PID", str(pg_instance.postmaster_pid()))
    monkeypatch.setenv("QLEARN_FROZEN", str(frozen))
    try:
        result = run_subprocess(
            pytester, "--qlearn-db", f"{url}?command_timeout={timeout:g}", "--qlearn-report=r.json"
        )
    finally:
        for pid in map(int, frozen.read_text().split() if frozen.exists() else []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    result.assert_outcomes(passed=TESTS, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    [warning] = warnings_of(result)
    assert "cannot write to the qlearn store" in warning and "spooled to" in warning
    assert "stopped answering earlier in this run" in warning
    added = float((pytester.path / "unconfigured").read_text()) - float(
        (pytester.path / "finish-started").read_text()
    )
    assert added < timeout + 2.5, added  # two timeouts before (8.0 s), one now (4.0 s)
    [spool_file] = spooled(pytester)
    lost_id = report(pytester.path / "r.json")["session"]["session_id"]
    assert episode_from_json(spool_file.read_text(encoding="utf-8")).session.session_id == lost_id

    # the server answers again: the next run writes the spooled episode, complete
    (pytester.path / "test_one_freezer.py").unlink()
    after = run_subprocess(pytester, "--qlearn-db", url)
    after.assert_outcomes(passed=TESTS - 1, failed=1)
    assert not warnings_of(after)
    assert lost_id in sessions(url) and not spooled(pytester)
    [(tests,)] = pg_execute(url, f"SELECT tests FROM sessions WHERE session_id = '{lost_id}'")
    assert tests == TESTS + 1


def test_a_complete_spooled_run_wins_over_its_checkpoint_recovered_by_another_runner(
    pytester: pytest.Pytester,
    pg_instance: PgInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Issue 13, case 1, as it happened: runner A pushes checkpoints; its database freezes; A
    ends with its complete run spooled. The server resumes; runner B (another checkout of the
    same project) recovers A's checkpoint, which holds A's first results only. A's next run
    found the session stored and deleted its spool: the results after the freeze were lost.
    Now they are learned as well, each test once."""
    shared = "qlearn_project = shared\n"
    make_project(pytester, fail=("test_c",), ini=PUSH_EVERY_TEST + shared)
    runner_b = tmp_path / "runner-b"  # another checkout, on the same host
    runner_b.mkdir()
    for name in ("pytest.ini", "conftest.py", "test_one.py", "test_two.py", "fail.txt"):
        shutil.copy(pytester.path / name, runner_b / name)
    pytester.makepyfile(test_one_freezer=textwrap.dedent(FREEZER))
    pg_instance.start()
    url = pg_instance.url()
    frozen = pytester.path / "frozen.pids"
    monkeypatch.setenv("QLEARN_FREEZE_DB", url)
    monkeypatch.setenv("QLEARN_POSTMASTER_PID", str(pg_instance.postmaster_pid()))
    monkeypatch.setenv("QLEARN_FROZEN", str(frozen))
    try:
        a1 = run_subprocess(
            pytester, "--qlearn-db", f"{url}?command_timeout=3", "--qlearn-report=a1.json"
        )
    finally:
        for pid in map(int, frozen.read_text().split() if frozen.exists() else []):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    a1.assert_outcomes(passed=TESTS, failed=1)
    assert "spooled to" in warnings_of(a1)[0]
    a_id = report(pytester.path / "a1.json")["session"]["session_id"]
    [spool_file] = spooled(pytester)
    assert episode_from_json(spool_file.read_text(encoding="utf-8")).session.tests == TESTS + 1

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    b = subprocess.run(
        [sys.executable, "-m", "pytest", *BASE_ARGS, "--qlearn-db", url, "--qlearn-report=b.json"],
        cwd=runner_b,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert b.returncode == pytest.ExitCode.TESTS_FAILED, b.stdout + b.stderr
    b_status = report(runner_b / "b.json")["store"]["status"]
    assert "1 interrupted run(s) recovered from the store" in b_status
    [(recovered_tests,)] = pg_execute(
        url, f"SELECT tests FROM sessions WHERE session_id = '{a_id}'"
    )
    assert 0 < recovered_tests < TESTS + 1  # a part of A's run

    (pytester.path / "test_one_freezer.py").unlink()
    a2 = run_subprocess(pytester, "--qlearn-db", url, "--qlearn-report=a2.json")
    a2.assert_outcomes(passed=TESTS - 1, failed=1)
    assert not warnings_of(a2)
    assert "with 1 spooled earlier run(s)" in report(pytester.path / "a2.json")["store"]["status"]
    assert not spooled(pytester)
    runs = _runs_by_test(url)
    freezer = "test_one_freezer.py::test_one_freeze_the_database"
    assert runs.pop(freezer) == 1  # only A's first run had it
    assert runs == dict.fromkeys(runs, 3) and len(runs) == TESTS  # A, B, A again: once each
    stored = sessions(url)
    assert len(stored) == 4 and a_id in stored and a_id + "+rest" in stored
    assert tuple(pg_execute(url, "SELECT episodes FROM agent_states")[0]) == (3,)


# -- killed in the middle of the final write -----------------------------------------------------
def test_killed_during_the_final_write_leaves_no_half_written_episode(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    """The outer test holds the ``agent_types`` row the write upserts right after inserting
    its session row; the writer blocks there, mid-transaction, and is killed."""
    import asyncio

    import asyncpg

    make_project(pytester, fail=("test_a",))
    run(pytester, "--qlearn-db", pg_url).assert_outcomes(passed=TESTS - 1, failed=1)
    count_rows = (
        "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM trajectories), "
        "(SELECT count(*) FROM rewards), (SELECT sum(visits)::float8 FROM q_values), "
        "(SELECT sum(runs) FROM test_history), (SELECT episodes FROM agent_states)"
    )
    before = pg_execute(pg_url, count_rows)

    async def scenario() -> int:
        holder = await asyncpg.connect(pg_url)
        watcher = await asyncpg.connect(pg_url)  # activity is read outside the holder's snapshot
        try:
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT 1 FROM agent_types WHERE name = 'prioritizer' FOR UPDATE")
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", *BASE_ARGS, "--qlearn-db", pg_url],
                cwd=pytester.path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 120
                while True:
                    waiting = await watcher.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                        "'pytest-qlearn' AND wait_event_type = 'Lock' "
                        "AND query LIKE '%agent_types%'"
                    )
                    if waiting:
                        break
                    assert proc.poll() is None, "the run ended before it blocked"
                    assert time.monotonic() < deadline, "the write never blocked"
                    await asyncio.sleep(0.05)
                # mid-transaction: its session row is inserted but not committed
                proc.send_signal(signal.SIGKILL)
                proc.wait(60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            await tx.rollback()
            deadline = time.monotonic() + 60
            while await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pytest-qlearn'"
            ):
                assert time.monotonic() < deadline, "the killed writer's backend lingers"
                await asyncio.sleep(0.05)
            return proc.returncode
        finally:
            await holder.close()
            await watcher.close()

    assert asyncio.run(scenario()) == -signal.SIGKILL
    assert pg_execute(pg_url, count_rows) == before
    assert len(sessions(pg_url)) == 1

    run(pytester, "--qlearn-db", pg_url).assert_outcomes(passed=TESTS - 1, failed=1)
    assert len(sessions(pg_url)) == 2


# -- many writers at once ------------------------------------------------------------------------
def test_eight_concurrent_pytest_processes_lose_nothing(
    pytester: pytest.Pytester, pg_url: str, tmp_path: Path
) -> None:
    processes = 8
    make_project(pytester)
    run(pytester, "--qlearn-db", pg_url).assert_outcomes(passed=TESTS)  # a shared history
    before = {
        (r[0], r[1]): (r[2], r[3])
        for r in pg_execute(pg_url, "SELECT state_hash, action, q, visits FROM q_values")
    }
    dumps, barrier = tmp_path / "writes", tmp_path / "barrier"
    dumps.mkdir()
    barrier.mkdir()
    names = ["test_a", "test_b", "test_c", "test_d", "test_a", "test_b", "test_c", "test_d"]
    children = []
    for i in range(processes):
        env = dict(os.environ)
        env.update(
            QLEARN_FAIL=names[i],
            QLEARN_DUMP_WRITES=str(dumps),
            QLEARN_BARRIER=f"{barrier}:{processes}",
            PYTHONPATH=os.pathsep.join(sys.path),
        )
        children.append(
            spawn_pytest(
                pytester,
                env,
                "--qlearn-db",
                pg_url,
                "--qlearn-seed",
                str(i),
                f"--qlearn-report=r{i}.json",
            )
        )
    outputs = [child.communicate(timeout=300)[0] for child in children]
    for child, output in zip(children, outputs, strict=True):
        assert child.returncode == pytest.ExitCode.TESTS_FAILED, output
        assert "qlearn: warning" not in output, output

    writes = [episode_from_json(p.read_text(encoding="utf-8")) for p in dumps.glob("*.json")]
    assert len(writes) == processes
    ids = {report(pytester.path / f"r{i}.json")["session"]["session_id"] for i in range(8)}
    assert ids == {w.session.session_id for w in writes}
    assert set(sessions(pg_url)) >= ids and len(sessions(pg_url)) == processes + 1

    for w in writes:
        rows = pg_execute(
            pg_url,
            f"SELECT count(*) FROM trajectories WHERE session_id = '{w.session.session_id}'",
        )
        assert rows[0][0] == len(w.trajectories) > 0
        rewards = pg_execute(
            pg_url, f"SELECT count(*) FROM rewards WHERE session_id = '{w.session.session_id}'"
        )
        assert rewards[0][0] == len(w.rewards)

    # every Q-value is what was stored before plus the eight runs' deltas: visits exactly
    expected = {key: list(value) for key, value in before.items()}
    for w in writes:
        for d in w.q_deltas["prioritizer"]:
            held = expected.setdefault((d.state, d.action), [0.0, 0])
            held[0] += d.dq
            held[1] += d.dvisits
    after = {
        (r[0], r[1]): (r[2], r[3])
        for r in pg_execute(pg_url, "SELECT state_hash, action, q, visits FROM q_values")
    }
    assert set(after) == set(expected)
    for key, (q, visits) in expected.items():
        assert after[key][1] == visits, key
        assert after[key][0] == pytest.approx(q, rel=1e-12, abs=1e-12), key
    histories = pg_execute(pg_url, "SELECT test_id, runs, failures FROM test_history")
    by_name = {row[0].split("::")[-1]: (row[1], row[2]) for row in histories}
    assert by_name["test_a"] == (processes + 1, 2)
    assert by_name["test_d"] == (processes + 1, 2)
    assert by_name["test_p[a;b]"] == (processes + 1, 0)
    assert tuple(pg_execute(pg_url, "SELECT episodes FROM agent_states")[0]) == (processes + 1,)


# -- opening the store in the background ------------------------------------------------------
BACKGROUND_SPY = """

def pytest_addhooks(pluginmanager):
    # record the thread each load of the snapshot runs in; $QLEARN_BREAK_LOAD makes it fail
    import threading

    from pytest_qlearn.store import postgres

    real_load = postgres.PostgresStore.load_snapshot

    def spying(self, partition, agents):
        with open(HERE / "loads.txt", "a") as log:
            log.write(threading.current_thread().name + "\\n")
        broken = os.environ.get("QLEARN_BREAK_LOAD")
        if broken:
            raise {"RuntimeError": RuntimeError, "SystemExit": SystemExit}[broken]("broken load")
        return real_load(self, partition, agents)

    postgres.PostgresStore.load_snapshot = spying
"""


def loads(pytester: pytest.Pytester) -> list[str]:
    """The threads the snapshot was loaded in, since the last call."""
    log = pytester.path / "loads.txt"
    names = log.read_text(encoding="utf-8").split() if log.exists() else []
    log.unlink(missing_ok=True)
    return names


def test_the_store_opens_in_the_background_unless_strict_or_cov(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    """PostgreSQL is opened and its snapshot loaded in a thread while pytest collects; the
    learning waits for it (with -q there is no header to wait for), and what it learns is
    what a run in the foreground learns. --qlearn-strict and --qlearn-cov open it first."""
    make_project(pytester, fail=("test_d",))
    pytester.makeconftest(CONFTEST + BACKGROUND_SPY)
    first = run_subprocess(pytester, "-q", "--qlearn-db", pg_url)
    first.assert_outcomes(passed=TESTS - 1, failed=1)
    assert not warnings_of(first)
    assert loads(pytester) == ["pytest-qlearn-open"]
    second = run_subprocess(pytester, "-v", "--qlearn-db", pg_url)
    assert run_order(second)[0] == "test_two.py::test_d"  # last run's failure comes first
    assert "store postgresql://postgres@" in second.stdout.str()  # the header waited for it
    assert loads(pytester) == ["pytest-qlearn-open"]
    strict = run_subprocess(pytester, "-v", "--qlearn-strict", "--qlearn-db", pg_url)
    assert run_order(strict)[0] == "test_two.py::test_d"
    assert loads(pytester) == ["MainThread"]
    assert len(sessions(pg_url)) == 3
    assert tuple(pg_execute(pg_url, "SELECT episodes FROM agent_states")[0]) == (3,)


@pytest.mark.parametrize("fault", ["RuntimeError", "SystemExit"])
def test_a_fault_while_opening_in_the_background_falls_back_and_loses_nothing(
    pytester: pytest.Pytester, pg_url: str, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load that fails in the background thread (an Exception, or not even that) is one
    warning, collection order and a spooled run, as in the foreground; the next run that
    loads saves it."""
    make_project(pytester, fail=("test_b",))
    pytester.makeconftest(CONFTEST + BACKGROUND_SPY)
    collected = collection_order(pytester)
    monkeypatch.setenv("QLEARN_BREAK_LOAD", fault)
    down = run_subprocess(pytester, "-v", "--qlearn-db", pg_url)
    down.assert_outcomes(passed=TESTS - 1, failed=1)
    assert run_order(down) == collected
    [warning] = warnings_of(down)
    assert "broken load" in warning and "spooled" in warning
    assert "Traceback" not in everything_printed(down)
    assert loads(pytester) == ["pytest-qlearn-open"]
    [spool_file] = spooled(pytester)
    assert sessions(pg_url) == []

    monkeypatch.delenv("QLEARN_BREAK_LOAD")
    up = run_subprocess(pytester, "-q", "--qlearn-db", pg_url, "--qlearn-report=r.json")
    up.assert_outcomes(passed=TESTS - 1, failed=1)
    assert not warnings_of(up)
    assert "with 1 spooled earlier run(s)" in report(pytester.path / "r.json")["store"]["status"]
    assert sessions(pg_url)[0] == spool_file.stem
    assert len(sessions(pg_url)) == 2
    assert not spooled(pytester)
    history = pg_execute(
        pg_url, "SELECT runs, failures FROM test_history WHERE test_id = 'test_one.py::test_b'"
    )
    assert tuple(history[0]) == (2, 2)


# -- pytest-xdist and the tests' own event loops -------------------------------------------------
def test_xdist_workers_never_connect(pytester: pytest.Pytester, pg_url: str) -> None:
    make_project(pytester, fail=("test_c",))
    result = run_subprocess(pytester, "-n", "2", "--qlearn-db", pg_url)
    result.assert_outcomes(passed=TESTS - 1, failed=1)
    assert not warnings_of(result)
    assert len(sessions(pg_url)) == 1
    assert not list(pytester.path.glob("connect-*.log"))


LOOP_SUITE = """
    import asyncio

    import pytest


    @pytest.fixture(scope="session")
    def loop():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        yield loop
        assert asyncio.get_event_loop_policy().get_event_loop() is loop
        loop.close()
        asyncio.set_event_loop(None)


    async def answer(value):
        await asyncio.sleep(0)
        return value


    @pytest.mark.parametrize("n", range(6))
    def test_on_the_session_loop(loop, n):
        assert loop.run_until_complete(answer(n)) == n
        assert asyncio.get_event_loop_policy().get_event_loop() is loop
"""


def test_a_suite_running_its_own_event_loops_is_unaffected(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    pytester.makefile(".ini", pytest="[pytest]\nqlearn = true\nfilterwarnings = error\n")
    pytester.makepyfile(test_loops=textwrap.dedent(LOOP_SUITE))
    for _ in range(2):
        result = run_subprocess(pytester, "-W", "error", "--qlearn-db", pg_url)
        result.assert_outcomes(passed=6)
        assert not warnings_of(result)
    assert len(sessions(pg_url)) == 2


def test_spool_and_replay_work_for_sqlite_too(pytester: pytest.Pytester) -> None:
    """An SQLite store that cannot be opened spools as well, and the next run that can open
    it writes the spooled episode."""
    make_project(pytester, fail=("test_a",))
    (pytester.path / "blocker").write_text("a file where the directory should be\n")
    down = run(pytester, "--qlearn-db", "sqlite:///blocker/q.db", "--qlearn-report=r.json")
    down.assert_outcomes(passed=TESTS - 1, failed=1)
    assert len(warnings_of(down)) == 1 and len(spooled(pytester)) == 1
    first_id = report(pytester.path / "r.json")["session"]["session_id"]
    (pytester.path / "blocker").unlink()
    up = run(pytester, "--qlearn-db", "sqlite:///blocker/q.db", "--qlearn-report=r.json")
    up.assert_outcomes(passed=TESTS - 1, failed=1)
    assert not warnings_of(up) and not spooled(pytester)
    data = report(pytester.path / "r.json")
    assert data["session"]["episode"] == 2  # learned from the replayed run
    import sqlite3

    conn = sqlite3.connect(pytester.path / "blocker" / "q.db")
    try:
        stored = [row[0] for row in conn.execute("SELECT session_id FROM sessions")]
    finally:
        conn.close()
    assert first_id in stored and len(stored) == 2
    shutil.rmtree(pytester.path / "blocker")


# -- a run killed in the middle: its checkpoint in the database --------------------------------
KILLER = """
    import asyncio
    import os
    import signal
    import time

    import asyncpg


    async def pushed():
        conn = await asyncpg.connect(os.environ["QLEARN_KILL_DB"])
        try:
            return await conn.fetchval("SELECT count(*) FROM checkpoint_results")
        finally:
            await conn.close()


    def test_zz_kill():
        deadline = time.monotonic() + 120
        while not asyncio.run(pushed()):  # at least one push reached the database
            assert time.monotonic() < deadline, "no checkpoint was pushed"
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _runs_by_test(url: str) -> dict[str, int]:
    return {row[0]: row[1] for row in pg_execute(url, "SELECT test_id, runs FROM test_history")}


@pytest.mark.parametrize("local_checkpoint", ["deleted", "kept"])
def test_a_killed_runs_checkpoint_in_the_database_is_learned_once(
    pytester: pytest.Pytester, pg_url: str, monkeypatch: pytest.MonkeyPatch, local_checkpoint: str
) -> None:
    """A CI job killed mid-run, whose runner's disk (and local checkpoint) is gone: the
    results it pushed to the database are learned by a later run, once, even when two later
    runs race for them, or a run is retried; with the local checkpoint still there, also once."""
    make_project(
        pytester,
        fail=("test_c",),
        ini=PUSH_EVERY_TEST,
    )
    pytester.makepyfile(test_zz_killer=textwrap.dedent(KILLER))
    monkeypatch.setenv("QLEARN_KILL_DB", pg_url)
    killed = run_subprocess(pytester, "--qlearn-db", pg_url)
    assert killed.ret == -signal.SIGKILL, killed.stdout.str()
    (pytester.path / "test_zz_killer.py").unlink()
    [(killed_id, owner)] = pg_execute(pg_url, "SELECT session_id, owner FROM checkpoints")
    assert owner.rpartition(":")[0] == socket.gethostname()
    pushed = {
        result[0]
        for (chunk,) in pg_execute(pg_url, "SELECT results FROM checkpoint_results")
        for result in json.loads(chunk)
    }
    assert pushed and sessions(pg_url) == []
    if local_checkpoint == "deleted":
        shutil.rmtree(pytester.path / ".pytest_cache")  # the runner is gone, and its disk
        expected = pushed
    else:
        assert len(spooled(pytester)) == 1  # the local checkpoint: every test before the kill
        expected = {r[0] for r in json.loads(spooled(pytester)[0].read_text())["results"]}
        assert expected >= pushed

    # two later runs at once: one of them claims and learns it
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    racers = [
        spawn_pytest(pytester, env, "--qlearn-db", pg_url, f"--qlearn-report=race{i}.json")
        for i in range(2)
    ]
    outputs = [racer.communicate(timeout=300)[0] for racer in racers]
    for racer, output in zip(racers, outputs, strict=True):
        assert racer.returncode == pytest.ExitCode.TESTS_FAILED, output
        assert "qlearn: warning" not in output, output
    statuses = [report(pytester.path / f"race{i}.json")["store"]["status"] for i in range(2)]
    recovered = "with 1 interrupted run(s) recovered from the store"
    spool_replayed = "with 1 spooled earlier run(s)"
    if local_checkpoint == "deleted":
        assert sorted(recovered in s for s in statuses) == [False, True], statuses
    else:  # the local checkpoint was replayed (it superseded the database's)
        assert not any(recovered in s for s in statuses), statuses
        shutil.rmtree(pytester.path / ".pytest_cache", ignore_errors=True)
    retried = run_subprocess(pytester, "--qlearn-db", pg_url, "--qlearn-report=retry.json")
    retried.assert_outcomes(passed=TESTS - 1, failed=1)
    assert recovered not in report(pytester.path / "retry.json")["store"]["status"]
    assert spool_replayed not in report(pytester.path / "retry.json")["store"]["status"]

    stored = sessions(pg_url)
    assert stored.count(killed_id) == 1 and len(stored) == 4  # killed, 2 racers, the retry
    [(tests, exit_status)] = pg_execute(
        pg_url, f"SELECT tests, exit_status FROM sessions WHERE session_id = '{killed_id}'"
    )
    assert (tests, exit_status) == (len(expected), int(pytest.ExitCode.INTERRUPTED))
    runs = _runs_by_test(pg_url)
    assert len(runs) == TESTS
    for test_id, count in runs.items():
        assert count == 3 + (test_id in expected), test_id
    assert pg_execute(pg_url, "SELECT count(*) FROM checkpoints")[0][0] == 0
    assert pg_execute(pg_url, "SELECT count(*) FROM checkpoint_results")[0][0] == 0
    assert tuple(pg_execute(pg_url, "SELECT episodes FROM agent_states")[0]) == (4,)


def test_a_failed_push_whose_run_then_saves_its_episode_warns_once(
    pytester: pytest.Pytester, pg_url: str
) -> None:
    """A push that fails (the database refuses it) stops the pushing; the final write still
    saves the run: one warning, saying so."""
    make_project(pytester, fail=("test_c",), ini=PUSH_EVERY_TEST)
    pytester.makeconftest(
        CONFTEST
        + """

from pytest_qlearn.store import postgres


async def _refused(self, push, now):
    await self.conn.execute("SELECT * FROM no_such_table")


postgres.PostgresStore._push_checkpoint = _refused
"""
    )
    result = run_subprocess(pytester, "--qlearn-db", pg_url)
    result.assert_outcomes(passed=TESTS - 1, failed=1)
    [warning] = warnings_of(result)
    assert "cannot push a checkpoint to the qlearn store" in warning
    assert "no_such_table" in warning and "its learning was saved" in warning
    assert len(sessions(pg_url)) == 1
    assert pg_execute(pg_url, "SELECT count(*) FROM checkpoints")[0][0] == 0
