"""Store URLs as an operator writes them (issue 13, cases 5-7): passwords with characters that
make the URL invalid, percent-encoded query keys, URLs that name no host or database, and
messages that quote a URL. A password is never printed, anywhere; the rest of a message is.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pytest_qlearn import cli
from pytest_qlearn.engine.hyperparams import ConfigError
from pytest_qlearn.store.url import has_password, parse_store_url, password_of, redact

BASE_ARGS = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")
SECRET = "S3CRETpw"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Passwords written into the URL as they are (base64 secrets have ``/``, ``+`` and ``=``),
#: each one making the URL invalid or mean something else.
RAW_PASSWORDS = {
    "slash": f"ab/{SECRET}",
    "hash": f"ab#{SECRET}",
    "question": f"ab?{SECRET}",
    "at": f"ab@{SECRET}",
    "base64": f"{SECRET}+/x9Q==",
    "colon": f"a:{SECRET}",
}


@pytest.mark.parametrize("password", list(RAW_PASSWORDS.values()), ids=list(RAW_PASSWORDS))
@pytest.mark.parametrize("port", ["5432", "notaport"])
def test_redact_hides_unencoded_passwords_of_invalid_urls(password: str, port: str) -> None:
    url = f"postgresql://ci:{password}@db.example:{port}/qlearn"
    shown = redact(url)
    assert SECRET not in shown
    assert shown == f"postgresql://ci:***@db.example:{port}/qlearn"
    # and inside a message, which keeps everything around the URL
    message = f"cannot connect to {url}: connection refused; spooled"
    assert redact(message) == f"cannot connect to {shown}: connection refused; spooled"


def test_redact_a_port_looking_user_and_a_password_with_a_slash() -> None:
    """``postgres:5432/SECRET@127.0.0.1:5432/db``: the user ``postgres``, the password
    ``5432/SECRET`` (urllib reads the host ``postgres``, port 5432, database ``SECRET@...``)."""
    url = f"postgresql://postgres:5432/{SECRET}@127.0.0.1:5432/db"
    assert redact(url) == "postgresql://postgres:***@127.0.0.1:5432/db"
    assert SECRET not in redact(f"warning: {url} is slow")


@pytest.mark.parametrize(
    "query",
    [
        f"password={SECRET}",
        f"pass%77ord={SECRET}",
        f"PASSWORD={SECRET}",
        f"%70assword={SECRET}",
        f"sslmode=require&password={SECRET}",
        f"sslpassword={SECRET}",
        f"password={SECRET}#frag",
    ],
)
def test_redact_decodes_query_keys_before_deciding(query: str) -> None:
    url = f"postgresql://ci@db.example/qlearn?{query}"
    assert SECRET not in redact(url)
    assert redact(url).startswith("postgresql://ci@db.example/qlearn?")
    assert has_password(url)


def test_password_of_decodes_the_query_key_and_value() -> None:
    assert password_of(f"postgresql://ci@h/db?pass%77ord={SECRET}%21") == f"{SECRET}!"
    assert password_of(f"postgresql://ci:{SECRET}%2F@h/db") == f"{SECRET}/"


def test_redaction_redacts_the_value_and_keeps_the_message() -> None:
    """Case 7: a warning was cut after ``?password=***``, losing its cause and the spool note."""
    url = f"postgresql://ci@db.example:5432/qlearn?password={SECRET}&sslmode=require"
    message = (
        f"cannot write to the qlearn store {url}: TimeoutError: timed out; this run's learning "
        "is spooled to /tmp/x.json and saved by the next run that reaches the store"
    )
    shown = redact(message)
    assert SECRET not in shown
    assert shown == message.replace(SECRET, "***")
    assert redact(shown) == shown  # redacting twice changes nothing
    # the URL already redacted, followed by a colon, keeps the colon
    once = redact(url)
    assert redact(f"store {once}: refused") == f"store {once}: refused"


def test_redact_keeps_urls_without_credentials_and_plain_text() -> None:
    for text in (
        "postgresql://ci@db.example:5432/qlearn?sslmode=require",
        "see https://example.org/a?b=c#d for more",
        "sqlite:////tmp/a:b@c/qlearn.db",
        "no url: user:pw or a@b here",
    ):
        assert redact(text) == text


# -- case 6: a URL must name its host and database ---------------------------------------------
@pytest.mark.parametrize(
    ("url", "missing"),
    [
        ("postgresql://", "host"),
        ("postgresql:///", "host"),
        ("postgresql:///qlearn", "host"),
        ("postgresql://ci@/qlearn", "host"),
        ("postgresql://db.example", "database"),
        ("postgresql://db.example/", "database"),
        ("postgresql://ci@db.example:5432/", "database"),
        ("postgresql://ci@db.example:5432/?sslmode=require", "database"),
        ("postgresql://?sslmode=require", "host"),
    ],
)
def test_a_postgresql_url_without_host_or_database_is_a_usage_error(url: str, missing: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_store_url(url, key="QLEARN_DATABASE_URL")
    message = str(info.value)
    assert message.startswith("QLEARN_DATABASE_URL = ")
    assert f"no {missing}" in message
    assert "postgresql://USER@HOST:PORT/DATABASE" in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:///qlearn?host=/run/postgresql",
        "postgresql://db.example?dbname=qlearn",
        "postgresql://db.example/?database=qlearn",
        "postgresql://?service=ci",
        "postgresql://ci@db.example/qlearn",
    ],
)
def test_host_and_database_may_come_from_the_query(url: str) -> None:
    assert parse_store_url(url).raw == url


def test_a_password_with_an_unencoded_slash_is_a_usage_error_without_the_password() -> None:
    url = f"postgresql://postgres:5432/{SECRET}@127.0.0.1:5432/db"
    with pytest.raises(ConfigError) as info:
        parse_store_url(url)
    for shown in (str(info.value), repr(info.value), repr(info.value.args)):
        assert SECRET not in shown
    assert "percent-encode" in str(info.value)
    assert "postgres:***@127.0.0.1:5432/db" in str(info.value)


# -- end to end: pytest and the qlearn subcommands ---------------------------------------------
def _printed(result: pytest.RunResult) -> str:
    return result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("password", list(RAW_PASSWORDS.values()), ids=list(RAW_PASSWORDS))
def test_pytest_never_prints_an_unencoded_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    monkeypatch.setenv(
        "QLEARN_DATABASE_URL",
        f"postgresql://ci:{password}@127.0.0.1:{_closed_port()}/qlearn?connect_timeout=2",
    )
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*BASE_ARGS, "--qlearn", "-v", "--qlearn-report=r.json")
    printed = _printed(result)
    assert SECRET not in printed
    assert "ci:***@" in printed
    report = pytester.path / "r.json"
    if report.exists():
        assert SECRET not in report.read_text(encoding="utf-8")


def test_a_percent_encoded_password_key_is_hidden_in_header_warning_and_report(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"postgresql://ci@127.0.0.1:{_closed_port()}/qlearn?pass%77ord={SECRET}&connect_timeout=2"
    monkeypatch.setenv("QLEARN_DATABASE_URL", url)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*BASE_ARGS, "--qlearn", "-v", "--qlearn-report=r.json")
    result.assert_outcomes(passed=1)
    printed = _printed(result)
    assert SECRET not in printed
    assert "pass%77ord=***" in printed
    data = json.loads((pytester.path / "r.json").read_text(encoding="utf-8"))
    assert SECRET not in json.dumps(data)
    assert "pass%77ord=***" in data["store"]["url"]
    # the warning keeps its cause and the spool note after the redacted URL
    [warning] = [line for line in result.outlines if line.startswith("qlearn: warning")]
    assert "cannot connect to the qlearn store" in warning
    assert "spooled" in warning


def test_a_password_in_the_ini_is_warned_about_with_the_password_redacted(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QLEARN_DATABASE_URL", raising=False)
    url = f"postgresql://postgres:5432/{SECRET}@127.0.0.1:{_closed_port()}/db"
    pytester.makeini(f"[pytest]\nqlearn = true\nqlearn_db = {url}\n")
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*BASE_ARGS)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert SECRET not in _printed(result)
    assert "qlearn_db" in _printed(result)


@pytest.mark.parametrize("url", ["postgresql://", "postgresql://db.example/"])
def test_pytest_refuses_a_url_without_host_or_database(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("QLEARN_DATABASE_URL", url)
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest(*BASE_ARGS, "--qlearn")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "QLEARN_DATABASE_URL" in _printed(result)
    assert "no host" in _printed(result) or "no database" in _printed(result)
    result.stdout.no_fnmatch_line("*1 passed*")


COMMANDS = [
    ["show-qvalues", "prioritizer"],
    ["progress", "prioritizer"],
    ["top-actions", "prioritizer"],
    ["export", "prioritizer", "-o", "-"],
    ["fleet-status"],
    ["compare", "prioritizer", "prioritizer"],
    ["cleanup"],
    ["migrate"],
    ["import-junit", "junit.xml"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://ci:ab/{SECRET}@127.0.0.1:1/qlearn?connect_timeout=1",
        f"postgresql://ci:ab#{SECRET}@127.0.0.1:1/qlearn",
        f"postgresql://ci:ab?{SECRET}@127.0.0.1:1/qlearn",
        f"postgresql://ci@127.0.0.1:1/qlearn?pass%77ord={SECRET}&connect_timeout=1",
    ],
    ids=["slash", "hash", "question", "encoded-key"],
)
def test_no_qlearn_subcommand_prints_the_password(
    command: list[str],
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junit.xml").write_text(
        '<testsuite><testcase classname="t" name="test_x" time="0.1"/></testsuite>',
        encoding="utf-8",
    )
    monkeypatch.setenv("QLEARN_DATABASE_URL", url)
    code = cli.main(command)
    out, err = capsys.readouterr()
    assert code in (1, 2)
    assert SECRET not in out + err
    assert "ci:***@" in err or "=***" in err
