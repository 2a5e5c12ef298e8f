"""The pure parts of ``--qlearn-cov``: coverage maps, git change detection, stale maps, and
the coverage-tracer agent's decisions and learning."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_qlearn.agents import coverage_tracer as ct
from pytest_qlearn.changes import git as vcs
from pytest_qlearn.changes.coverage import detect
from pytest_qlearn.changes.coverage_map import (
    CorruptMapError,
    CoverageMap,
    changed_share_label,
    compress_lines,
    coverage_percent,
    expand_lines,
    stale_files,
    union_lines,
    unique_line_counts,
)
from pytest_qlearn.engine.hyperparams import Hyperparameters
from pytest_qlearn.engine.qlearner import QLearner
from pytest_qlearn.engine.rewards import RewardCalculator

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cmap(test_id: str, lines: dict[str, str], digests: dict[str, str], episode: int = 1):
    return CoverageMap(test_id, lines, digests, episode)


# -- maps ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lines", "text"),
    [([], ""), ([5], "5"), ([3, 1, 2, 7], "1-3,7"), ([1, 3, 5], "1,3,5"), ([2, 2, 3], "2-3")],
)
def test_lines_compress_to_ranges_and_back(lines: list[int], text: str) -> None:
    assert compress_lines(lines) == text
    assert expand_lines(text) == set(lines)


@given(st.sets(st.integers(min_value=0, max_value=5000)))
def test_any_line_set_round_trips(lines: set[int]) -> None:
    assert expand_lines(compress_lines(lines)) == lines


@pytest.mark.parametrize("bad", ["a", "1-", "5-3", "-2", "1,,2", "1.5"])
def test_malformed_ranges_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        expand_lines(bad)


def test_a_map_round_trips_through_json() -> None:
    m = cmap("t.py::test_x", {"pkg/a.py": "1-3,9"}, {"pkg/a.py": "d1"}, episode=4)
    back = CoverageMap.from_json(m.test_id, m.to_json(), 4)
    assert back == m
    assert back.line_count() == 4


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"l": {}}',
        '{"l": {"a.py": "1-x"}, "d": {"a.py": "d"}}',
        '{"l": {"a.py": "1"}, "d": {}}',
        '{"l": [], "d": {}}',
    ],
)
def test_a_corrupt_stored_map_raises_a_clear_error(text: str) -> None:
    with pytest.raises(CorruptMapError, match=r"corrupt coverage map of 't\.py::test_x'"):
        CoverageMap.from_json("t.py::test_x", text, 1)


def test_stale_files_are_those_whose_digest_moved_or_that_are_gone() -> None:
    m = cmap("t", {"a.py": "1", "b.py": "2", "c.py": "3"}, {"a.py": "A", "b.py": "B", "c.py": "C"})
    assert stale_files(m, {"a.py": "A", "b.py": "B2", "c.py": None}) == {"b.py", "c.py"}
    assert stale_files(m, {}) == set()  # nothing known: nothing claimed


def test_changed_share_is_bucketed() -> None:
    m = cmap("t", {f"{i}.py": "1" for i in range(4)}, {f"{i}.py": "d" for i in range(4)})
    assert changed_share_label(None, {"0.py"}) == "?"
    assert changed_share_label(m, set()) == "0"
    assert changed_share_label(m, {"0.py"}) == "0.25-0.5"
    assert changed_share_label(m, {"0.py", "1.py", "2.py"}) == "0.5+"


def test_unique_lines_and_percent_by_hand() -> None:
    a = cmap("a", {"x.py": "1-3"}, {"x.py": "d"})
    b = cmap("b", {"x.py": "3-4", "y.py": "1"}, {"x.py": "d", "y.py": "e"})
    assert unique_line_counts([a, b]) == {"a": 2, "b": 2}  # line x.py:3 is shared
    covered = union_lines([a, b])
    assert covered == {"x.py": {1, 2, 3, 4}, "y.py": {1}}
    # statements: x.py 1-5 and 10, y.py 1-4 -> 5 of 10 covered
    assert coverage_percent(covered, {"x.py": {1, 2, 3, 4, 5, 10}, "y.py": {1, 2, 3, 4}}) == 50.0
    assert coverage_percent(covered, {}) is None


# -- git -----------------------------------------------------------------------------------
def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "a.py").write_text("A = 1\n")
    (root / "b.py").write_text("B = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one")
    return root


@needs_git
def test_git_names_committed_uncommitted_untracked_and_deleted_changes(repo: Path) -> None:
    first = vcs.state(repo).commit
    assert first is not None and vcs.state(repo).dirty == frozenset()
    (repo / "a.py").write_text("A = 2\n")
    git(repo, "commit", "-qam", "two")
    (repo / "b.py").unlink()  # deleted, uncommitted
    (repo / "c.py").write_text("C = 1\n")  # untracked
    changes = vcs.changed_since(repo, first)
    assert changes.files == {"a.py", "b.py", "c.py"}
    now = vcs.state(repo)
    assert now.commit != first and now.dirty == {"b.py", "c.py"}


@needs_git
def test_a_detached_head_is_fine(repo: Path) -> None:
    first = vcs.state(repo).commit
    assert first is not None
    (repo / "a.py").write_text("A = 3\n")
    git(repo, "commit", "-qam", "two")
    git(repo, "checkout", "-q", "--detach", first)
    assert vcs.state(repo).commit == first
    assert vcs.changed_since(repo, first).files == frozenset()


@needs_git
def test_not_a_checkout_and_unknown_commits_say_why(tmp_path: Path, repo: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert vcs.state(plain).reason == "not a git checkout"
    assert vcs.changed_since(plain, "abc").files is None
    missing = vcs.changed_since(repo, "0" * 40)
    assert missing.files is None and "is unknown (it is not in this checkout)" in missing.reason
    assert vcs.changed_since(repo, None).reason == "no commit is recorded for the last episode"


@needs_git
def test_a_shallow_clone_without_the_old_commit_says_so(tmp_path: Path, repo: Path) -> None:
    first = vcs.state(repo).commit
    assert first is not None
    (repo / "a.py").write_text("A = 4\n")
    git(repo, "commit", "-qam", "two")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    changes = vcs.changed_since(clone, first)
    assert changes.files is None
    assert "this is a shallow clone" in changes.reason


@needs_git
def test_detect_uses_git_and_confirms_with_digests(repo: Path) -> None:
    commit = vcs.state(repo).commit
    stored = {"a.py": digest("A = 1\n"), "b.py": digest("B = 1\n")}
    maps = {
        "t1": cmap("t1", {"a.py": "1"}, {"a.py": stored["a.py"]}),
        "t2": cmap("t2", {"b.py": "1"}, {"b.py": stored["b.py"]}),
    }
    (repo / "a.py").write_text("A = 5\n")
    (repo / "b.py").write_text("B = 1\n")  # touched, same content
    facts = detect(repo, maps, stored, commit, ())
    assert facts.source == "git" and facts.note == ""
    assert facts.changed == {"a.py"}
    assert facts.covering_changed(maps) == {"t1": "0.5+"}  # its only file changed
    assert facts.stale(maps) == {"t1": {"a.py"}}
    assert facts.dirty == {"a.py"}


def test_detect_without_git_hashes_every_covered_file(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("new\n")
    stored = {"a.py": digest("old\n"), "gone.py": digest("x")}
    maps = {"t": cmap("t", {"a.py": "1", "gone.py": "1"}, dict(stored))}
    facts = detect(tmp_path, maps, stored, None, ())
    assert facts.source == "file digests" and facts.note
    assert facts.changed == {"a.py", "gone.py"}  # a deleted file is a change
    assert facts.digests["gone.py"] is None


# -- the coverage-tracer agent ---------------------------------------------------------------
def tracer(epsilon: float = 0.0) -> ct.CoverageTracer:
    hyper = Hyperparameters(epsilon=epsilon, epsilon_min=0.0)
    learner = QLearner(ct.NAME, 2, hyper, random.Random(1))
    return ct.CoverageTracer(learner, RewardCalculator(), ct.agent_type(hyper))


def test_tests_without_a_readable_map_or_with_a_changed_file_are_always_traced() -> None:
    agent = tracer()
    maps = {"kept": cmap("kept", {"a.py": "1"}, {"a.py": "A"}, 3)}
    decisions = agent.decide(
        ["new", "bad", "kept", "own"],
        {**maps, "own": cmap("own", {"a.py": "1"}, {"a.py": "A"})},
        {},
        own_changed={"own"},
        unreadable={"bad"},
        episode=4,
    )
    assert {t: (d.trace, d.reason) for t, d in decisions.items()} == {
        "new": (True, ct.NO_MAP),
        "bad": (True, ct.UNREADABLE),
        "own": (True, ct.OWN_FILE),
        "kept": (False, ct.LEARNED),  # nothing changed: the prior reuses
    }


def test_the_prior_traces_tests_whose_covered_code_changed() -> None:
    agent = tracer()
    m = cmap("t", {"a.py": "1"}, {"a.py": "A"})
    decision = agent.decide(["t"], {"t": m}, {"t": {"a.py"}}, episode=2)["t"]
    assert decision.trace and decision.reason == ct.LEARNED


def test_it_learns_to_stop_tracing_where_traces_find_nothing_new() -> None:
    agent = tracer()
    m = cmap("t", {"a.py": "1"}, {"a.py": "A"})
    stale = {"t": {"a.py"}}
    # a changed file that never changes what the test executes (a comment edit, say): the
    # prior (trace) holds for a few futile traces, then the learned mean wins
    traces = 0
    while agent.decide(["t"], {"t": m}, stale, episode=2)["t"].trace:
        decisions = agent.decide(["t"], {"t": m}, stale, episode=2)
        outcome = agent.learn(decisions, {"t": m}, {"t": m})
        assert outcome == ct.TraceOutcome(1, 0, 0, pytest.approx(-ct.TRACE_COST))
        traces += 1
        assert traces < 10
    assert traces in (4, 5)  # after the 4th the blend is 0: float rounding breaks the tie
    state = agent.decide(["t"], {"t": m}, stale, episode=2)["t"].state
    assert state is not None
    assert agent.advantage(state, 0.8) <= 0


def test_it_learns_to_trace_unchanged_states_where_maps_keep_moving() -> None:
    agent = tracer()
    old = cmap("t", {"a.py": "1"}, {"a.py": "A"})
    new = cmap("t", {"a.py": "1-2"}, {"a.py": "A"}, 2)
    forced = {"t": ct.TraceDecision("t", True, ct.LEARNED, agent.state(old, (), 2))}
    for _ in range(3):  # e.g. it depends on data outside the project that keeps changing
        assert agent.learn(forced, {"t": old}, {"t": new}).changed_maps == 1
    assert agent.decide(["t"], {"t": old}, {}, episode=2)["t"].trace


def test_decisions_depend_only_on_the_seed_and_the_tests() -> None:
    maps = {f"t{i}": cmap(f"t{i}", {"a.py": "1"}, {"a.py": "A"}) for i in range(50)}
    first = tracer(epsilon=0.5).decide(list(maps), maps, {}, episode=1)
    again = tracer(epsilon=0.5).decide(list(reversed(maps)), maps, {}, episode=1)
    assert first == again
    assert any(d.explored for d in first.values())


# -- line-level change awareness (git) ---------------------------------------------------------
TWO_FUNCTIONS = "LIMIT = 3\n\n\ndef one():\n    return 1\n\n\ndef two():\n    return 2\n"


@needs_git
def test_git_names_the_changed_lines_of_the_old_version(repo: Path) -> None:
    (repo / "my mod.py").write_text(TWO_FUNCTIONS)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two functions")
    base = vcs.state(repo).commit
    assert base is not None
    lines = TWO_FUNCTIONS.splitlines(keepends=True)
    lines[4] = "    return 11\n"  # a changed line (5)
    lines.insert(8, "    # note\n")  # an insertion after line 8
    (repo / "my mod.py").write_text("".join(lines))
    (repo / "b.py").unlink()  # removed: its one line changed
    (repo / "new.py").write_text("N = 1\n")  # new: no old lines, so absent
    found = vcs.changed_lines(repo, base, ["my mod.py", "b.py", "new.py"])
    assert found == {"my mod.py": {5, 8, 9}, "b.py": {1}}
    assert vcs.changed_lines(repo, "0" * 40, ["a.py"]) is None


@needs_git
def test_only_tests_that_run_a_changed_line_cover_the_change(repo: Path) -> None:
    (repo / "m.py").write_text(TWO_FUNCTIONS)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "two functions")
    base = vcs.state(repo).commit
    old = digest(TWO_FUNCTIONS)
    stored = {"m.py": old}
    maps = {
        "t_one": cmap("t_one", {"m.py": "5"}, {"m.py": old}),
        "t_two": cmap("t_two", {"m.py": "9"}, {"m.py": old}),
        "t_old": cmap("t_old", {"m.py": "9"}, {"m.py": "an older version"}),
    }
    (repo / "m.py").write_text(TWO_FUNCTIONS.replace("return 1\n", "return 11\n"))
    facts = detect(repo, maps, stored, base, ())
    assert facts.changed_lines == {"m.py": (old, {5})}
    # t_two runs other lines; t_old's lines are numbered by an older version: file level
    assert set(facts.covering_changed(maps)) == {"t_one", "t_old"}

    # a change at module level runs at import, outside every test: file level for all
    (repo / "m.py").write_text(TWO_FUNCTIONS.replace("LIMIT = 3", "LIMIT = 4"))
    facts = detect(repo, maps, stored, base, ())
    assert facts.changed_lines == {"m.py": (old, {1})}
    assert set(facts.covering_changed(maps)) == {"t_one", "t_two", "t_old"}

    # uncommitted at the last episode: its line numbers are not the commit's, file level
    facts = detect(repo, maps, stored, base, ("m.py",))
    assert facts.changed_lines == {}
    assert set(facts.covering_changed(maps)) == {"t_one", "t_two", "t_old"}
