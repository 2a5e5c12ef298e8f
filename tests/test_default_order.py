"""What a user with ``qlearn = true`` and nothing else sees (issue 11's scenarios).

Every project here enables the plugin and sets nothing else: default exploration, default
``qlearn_order_scope = auto``, change awareness on by default, the default SQLite store.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest
from test_plugin_e2e import BASE_ARGS, run_order

MODULES = 30
TESTS_PER_MODULE = 20


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*BASE_ARGS, "-v", *args)


def _wide_suite(pytester: pytest.Pytester, steady: bool = False) -> None:
    """30 modules × 20 tests; a test fails while its name is listed in fail.txt.
    ``steady``: every phase of every test reports 1 ms, as on an idle machine (a loaded one
    spreads even 5.5 ms sleeps over 6-15 ms, across duration classes)."""
    pytester.makeini("[pytest]\nqlearn = true\n")
    pytester.makeconftest(
        f"""
        from pathlib import Path

        import pytest

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtest_makereport(item, call):
            outcome = yield
            if {steady!r}:
                outcome.get_result().duration = 0.001

        def pytest_runtest_call(item):
            listed = Path(__file__).with_name("fail.txt")
            if listed.exists() and item.name in listed.read_text().split():
                raise AssertionError(item.name + " is listed in fail.txt")
        """
    )
    body = "\n".join(f"def test_{i:02d}():\n    pass\n" for i in range(TESTS_PER_MODULE))
    pytester.makepyfile(**{f"test_m{m:02d}": body for m in range(MODULES)})
    (pytester.path / "fail.txt").write_text("")


def _same_neighbours(a: list[str], b: list[str]) -> float:
    """The share of tests that have the same predecessor in both orders."""
    before_a = {t: a[i - 1] if i else None for i, t in enumerate(a)}
    before_b = {t: b[i - 1] if i else None for i, t in enumerate(b)}
    return sum(before_a[t] == before_b.get(t) for t in a) / len(a)


def test_a_new_failure_runs_among_the_first_tests_of_the_next_run(
    pytester: pytest.Pytester,
) -> None:
    # steady durations: what is tested is that exploration and the estimates leave a green
    # suite's order alone; with real timings, a loaded machine's noise moved trivial tests
    # across the 0.5 ms duration floor (0.42-0.58 of the neighbours kept, 0.70-0.90 idle)
    _wide_suite(pytester, steady=True)
    collected = [f"test_m{m:02d}.py::test_{i:02d}" for m in range(MODULES) for i in range(20)]
    orders = []
    for _ in range(4):
        result = _run(pytester)
        result.assert_outcomes(passed=MODULES * TESTS_PER_MODULE)
        orders.append(run_order(result))
    assert orders[0] == collected  # an empty store: collection order
    # a suite that keeps passing keeps its order (exploration only moves a test among equals)
    # most tests keep their neighbours: only the ε-explored few (2-5 %) move, each breaking
    # up to three neighbourhoods (measured 0.89-1.0)
    assert _same_neighbours(orders[2], orders[3]) >= 0.8

    victim = "test_m23.py::test_17"
    pytester.path.joinpath("test_m23.py").write_text(
        pytester.path.joinpath("test_m23.py")
        .read_text()
        .replace("def test_17():\n    pass", "def test_17():\n    assert False")
    )
    failing = _run(pytester)
    failing.assert_outcomes(passed=MODULES * TESTS_PER_MODULE - 1, failed=1)
    # the edited test file is a change: its tests already run early
    assert run_order(failing).index(victim) < TESTS_PER_MODULE

    again = _run(pytester)
    again.assert_outcomes(passed=MODULES * TESTS_PER_MODULE - 1, failed=1)
    assert run_order(again).index(victim) < 3  # --ff puts it at 1: so does qlearn


def test_a_failure_with_no_edit_runs_first_next_time(pytester: pytest.Pytester) -> None:
    """The failure comes from outside the tests (fail.txt): no change points at it."""
    _wide_suite(pytester)
    for _ in range(3):
        _run(pytester).assert_outcomes(passed=MODULES * TESTS_PER_MODULE)
    (pytester.path / "fail.txt").write_text("test_17\n")  # test_17 of every module fails
    _run(pytester).assert_outcomes(passed=MODULES * 19, failed=MODULES)
    (pytester.path / "fail.txt").write_text("")
    # the 30 known failures run first, then the rest
    order = run_order(_run(pytester))
    assert {t.rsplit("::", 1)[1] for t in order[:MODULES]} == {"test_17"}


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", *args],
        cwd=root,
        check=True,
        capture_output=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "HOME": str(root),
        },
    )


def _package_suite(pytester: pytest.Pytester, ini: str = "") -> None:
    """pkg/ with ten modules, each with one function; tests/test_<m>.py tests it, and
    tests/test_zz_<m>.py only imports it (no test names the function)."""
    pytester.makeini("[pytest]\nqlearn = true\n" + ini)
    pkg = pytester.path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    tests = pytester.path / "tests"
    tests.mkdir()
    for name in "abcdefghij":
        (pkg / f"mod_{name}.py").write_text(f"def value_{name}():\n    return 1\n")
        (tests / f"test_{name}.py").write_text(
            f"from pathlib import Path\n\nfrom pkg.mod_{name} import value_{name}\n\n"
            + "".join(
                f"def test_{name}{i}():\n"
                f"    assert not Path(__file__).with_name('{name}{i}-broken').exists()\n"
                f"    assert value_{name}() == 1\n\n"
                for i in range(5)
            )
        )
        (tests / f"test_zz_{name}.py").write_text(
            f"import pkg.mod_{name}\n\n"
            + "".join(f"def test_zz_{name}{i}():\n    assert pkg\n\n" for i in range(3))
        )
    (pytester.path / ".gitignore").write_text(".pytest_cache/\n__pycache__/\n*-broken\n")
    _git(pytester.path, "init", "-q")
    _git(pytester.path, "add", "-A")
    _git(pytester.path, "commit", "-q", "-m", "start")


@pytest.mark.parametrize("coverage", [False, True], ids=["default", "qlearn-cov"])
def test_tests_reaching_a_committed_change_run_right_after_known_failures(
    pytester: pytest.Pytester, coverage: bool
) -> None:
    _package_suite(pytester)
    extra = ["--qlearn-cov"] if coverage else []
    pytester.syspathinsert()
    for _ in range(3):
        _run(pytester, *extra).assert_outcomes(passed=80)
    # a known failure with no code change: tests/test_b.py::test_b3 fails on a flag file
    flag = pytester.path / "tests" / "b3-broken"
    flag.write_text("")
    _run(pytester, *extra).assert_outcomes(passed=79, failed=1)
    flag.unlink()

    # a one-line change in pkg/mod_g.py, committed
    mod_g = pytester.path / "pkg" / "mod_g.py"
    mod_g.write_text(mod_g.read_text().replace("return 1", "return 2"))
    _git(pytester.path, "commit", "-q", "-am", "g changes")
    result = _run(pytester, *extra, "--qlearn-report=report.json")
    result.assert_outcomes(passed=75, failed=5)
    order = run_order(result)
    # test_b3 failed last run: first; then the five tests that call value_g
    assert order[0] == "tests/test_b.py::test_b3"
    assert set(order[1:6]) == {f"tests/test_g.py::test_g{i}" for i in range(5)}
    # the tests that only import the changed module come next, before everything else
    assert set(order[6:9]) == {f"tests/test_zz_g.py::test_zz_g{i}" for i in range(3)}
    result.stdout.fnmatch_lines(["qlearn: 1 changed file(s) since the last run reach 8 test(s)*"])


def test_an_empty_store_keeps_collection_order(pytester: pytest.Pytester) -> None:
    _package_suite(pytester)
    pytester.syspathinsert()
    collected = [
        line
        for line in pytester.runpytest(*BASE_ARGS, "-p", "no:qlearn", "--co", "-q").outlines
        if "::" in line
    ]
    assert len(collected) == 80
    assert run_order(_run(pytester)) == collected


def _episode(report: Path) -> tuple[int, float]:
    data = json.loads(report.read_text())
    return data["session"]["episode"], data["session"]["epsilon"]


@pytest.mark.parametrize(
    "narrowing", [("-k", "test_m01"), ("-m", "not slow"), ("-x",), ("--deselect", "test_m00.py")]
)
def test_narrowed_and_stopped_runs_rank_only_what_runs_and_do_not_advance_the_episode(
    pytester: pytest.Pytester, narrowing: tuple[str, ...]
) -> None:
    _wide_suite(pytester)
    pytester.makeini("[pytest]\nqlearn = true\nmarkers = slow\n")
    slow = pytester.path / "test_m29.py"  # what -m "not slow" leaves out
    slow.write_text("import pytest\n\npytestmark = pytest.mark.slow\n\n" + slow.read_text())
    for _ in range(2):
        _run(pytester).assert_outcomes(passed=MODULES * TESTS_PER_MODULE)
    _run(pytester, "--qlearn-report=full.json")
    if narrowing == ("-x",):  # a failure stops the run
        (pytester.path / "fail.txt").write_text("test_05\n")
    narrowed = _run(pytester, *narrowing, "--qlearn-report=narrowed.json")
    narrowed.stdout.fnmatch_lines(["qlearn: partial run (*"])
    after = _run(pytester, "--qlearn-report=after.json")
    episode, epsilon = _episode(pytester.path / "full.json")
    narrowed_episode, narrowed_epsilon = _episode(pytester.path / "narrowed.json")
    after_episode, after_epsilon = _episode(pytester.path / "after.json")
    assert narrowed_episode == after_episode == episode + 1  # the partial run did not count
    assert epsilon > narrowed_epsilon == after_epsilon  # the full run decayed ε, it did not
    report = json.loads((pytester.path / "narrowed.json").read_text())
    if narrowing != ("-x",):  # positions count only what was ranked: what was selected
        ran = len(run_order(narrowed))
        assert ran < MODULES * TESTS_PER_MODULE
        assert max(t["collection_position"] for t in report["tests"]) == ran
    assert after.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)


@pytest.mark.parametrize(
    "narrowing",
    [("-m", "not slow"), ("-k", "not test_m29"), ("--deselect", "test_m29.py")],
)
def test_a_job_that_narrows_the_same_way_every_run_counts_full_episodes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, narrowing: tuple[str, ...]
) -> None:
    """``pytest -m "not slow"`` in every pipeline is the job's normal run: its first run is
    partial (a one-off narrowing looks the same), every run after it narrowed the same way
    advances the episode and decays ε — given on the command line or in PYTEST_ADDOPTS."""
    _wide_suite(pytester)
    pytester.makeini("[pytest]\nqlearn = true\nmarkers = slow\n")
    slow = pytester.path / "test_m29.py"
    slow.write_text("import pytest\n\npytestmark = pytest.mark.slow\n\n" + slow.read_text())
    monkeypatch.setenv("PYTEST_ADDOPTS", " ".join(shlex.quote(arg) for arg in narrowing[:2]))
    first = _run(pytester, "--qlearn-report=r0.json")
    first.stdout.fnmatch_lines(["qlearn: partial run (*", "*, episode 1 (partial), ε *"])
    episodes = []
    for run in range(1, 4):
        result = _run(pytester, f"--qlearn-report=r{run}.json")
        result.assert_outcomes(passed=(MODULES - 1) * TESTS_PER_MODULE)
        result.stdout.fnmatch_lines(
            ["qlearn: narrowed as in earlier runs (*): this job's*", f"*, episode {run}, ε *"]
        )
        assert "partial run" not in result.stdout.str()
        episodes.append(_episode(pytester.path / f"r{run}.json"))
    assert [episode for episode, _ in episodes] == [1, 2, 3]
    assert episodes[0][1] > episodes[1][1] > episodes[2][1]  # ε decays
    # a different narrowing is a one-off again
    monkeypatch.setenv("PYTEST_ADDOPTS", "-k test_m01")
    _run(pytester).stdout.fnmatch_lines(["qlearn: partial run (-k narrowed the run)*"])


def test_tests_that_only_ever_skip_run_after_the_tests_with_a_record(
    pytester: pytest.Pytester,
) -> None:
    """A skip (or an expected failure) gives no verdict to learn from: such tests keep no
    record, and once seen they run after every test that has one, not ahead of them."""
    pytester.makeini("[pytest]\nqlearn = true\n")
    pytester.makepyfile(
        test_a="import pytest\n\n"
        + "".join(f"@pytest.mark.skip\ndef test_skip{i}():\n    pass\n\n" for i in range(3))
        + "@pytest.mark.xfail\ndef test_expected():\n    assert False\n\n",
        test_b="".join(f"def test_b{i}():\n    pass\n\n" for i in range(6)),
    )
    for run in range(3):
        result = _run(pytester, "--qlearn-report")
        result.assert_outcomes(passed=6, skipped=3, xfailed=1)
        if run == 0:  # an empty store: collection order, the skips first
            assert "what ran first (4 skipped test(s) ahead), and why:" in result.outlines
    assert "what ran first, and why:" in result.outlines
    order = run_order(result)
    assert set(order[:6]) == {f"test_b.py::test_b{i}" for i in range(6)}
    assert set(order[6:]) == {f"test_a.py::test_skip{i}" for i in range(3)} | {
        "test_a.py::test_expected"
    }


def test_deselects_in_the_ini_addopts_are_the_projects_normal_run(
    pytester: pytest.Pytester,
) -> None:
    """A project whose ini always deselects a few tests (say, ones that need a network)
    runs full episodes: the episode and ε advance; the same --deselect given on the command
    line narrows that one run."""
    _wide_suite(pytester)
    pytester.makeini(
        "[pytest]\nqlearn = true\n"
        "addopts = --deselect test_m03.py::test_07 --deselect=test_m04.py\n"
    )
    ran = MODULES * TESTS_PER_MODULE - 1 - TESTS_PER_MODULE
    episodes = []
    for _ in range(2):
        result = _run(pytester, "--qlearn-report=r.json")
        result.assert_outcomes(passed=ran, deselected=1 + TESTS_PER_MODULE)
        assert not any("partial run" in line for line in result.outlines)
        episodes.append(_episode(pytester.path / "r.json"))
    assert episodes[1][0] == episodes[0][0] + 1 and episodes[1][1] < episodes[0][1]
    narrowed = _run(pytester, "--deselect", "test_m05.py", "--qlearn-report=r.json")
    narrowed.stdout.fnmatch_lines(["qlearn: partial run (20 test(s) were deselected)*"])
    assert _episode(pytester.path / "r.json")[0] == episodes[1][0] + 1
    assert json.loads((pytester.path / "r.json").read_text())["session"]["partial"]


def test_auto_keeps_a_module_whose_module_fixture_is_costly_and_frees_the_rest(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\nqlearn = true\n")
    fixture_log = pytester.path / "setups.log"
    flag = "Path(__file__).with_name(name + '-broken').exists()"
    pytester.makepyfile(
        test_db=textwrap.dedent(
            f"""
            import time
            from pathlib import Path

            import pytest

            @pytest.fixture(scope="module")
            def db():
                with open({str(fixture_log)!r}, "a") as log:
                    log.write("setup\\n")
                time.sleep(0.2)  # a database: paid again for every stretch of this module
                yield

            """
        )
        + "".join(
            f"def test_d{i}(db):\n    name = 'd{i}'\n    assert not {flag}\n\n" for i in range(5)
        ),
        test_free="from pathlib import Path\n\n"
        + "".join(
            f"def test_f{i}():\n    name = 'f{i}'\n    assert not {flag}\n\n" for i in range(5)
        ),
    )
    for _ in range(2):
        _run(pytester).assert_outcomes(passed=10)
    for name in ("d3", "f3"):
        (pytester.path / f"{name}-broken").write_text("")
    _run(pytester).assert_outcomes(passed=8, failed=2)
    for name in ("d3", "f3"):
        (pytester.path / f"{name}-broken").unlink()
    fixture_log.write_text("")
    order = run_order(_run(pytester))
    db_positions = [i for i, t in enumerate(order) if t.startswith("test_db.py")]
    assert db_positions == list(range(db_positions[0], db_positions[0] + 5))  # one stretch
    assert order[db_positions[0]] == "test_db.py::test_d3"  # its known failure leads it
    assert fixture_log.read_text().count("setup") == 1
    # the cheap module is free: its known failure runs within the first stretch of the run,
    # not after its siblings
    assert order.index("test_free.py::test_f3") < order.index("test_free.py::test_f0")
    assert order.index("test_free.py::test_f3") <= 5


def test_among_the_tests_reaching_a_change_the_nearest_run_first(
    pytester: pytest.Pytester,
) -> None:
    """Every test here reaches the changed ``bind`` within one call; the one calling it
    runs first, then those named after what they call, then the rest (collection order
    would run them the other way round)."""
    pytester.makeini("[pytest]\nqlearn = true\n")
    pkg = pytester.path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "core.py").write_text(
        "def bind(x):\n    return x + 1\n\n\ndef curry(x):\n    return bind(x)\n"
    )
    tests = pytester.path / "tests"
    tests.mkdir()
    (tests / "test_aa.py").write_text(
        "from pkg.core import curry\n\n"
        + "".join(f"def test_wrapper{i}():\n    assert curry({i}) == {i + 1}\n\n" for i in range(3))
    )
    (tests / "test_core.py").write_text(
        "from pkg.core import bind, curry\n\n"
        "def test_plain():\n    assert curry(1) == 2\n\n"
        "def test_curry():\n    assert curry(2) == 3\n\n"
        "def test_bind():\n    assert bind(1) == 2\n"
    )
    (pytester.path / ".gitignore").write_text(".pytest_cache/\n__pycache__/\n")
    _git(pytester.path, "init", "-q")
    _git(pytester.path, "add", "-A")
    _git(pytester.path, "commit", "-q", "-m", "start")
    pytester.syspathinsert()
    for _ in range(2):
        _run(pytester).assert_outcomes(passed=6)
    core = pkg / "core.py"
    core.write_text(core.read_text().replace("x + 1", "x + 2"))
    _git(pytester.path, "commit", "-q", "-am", "bind changes")
    result = _run(pytester, "--qlearn-report=report.json")
    result.assert_outcomes(failed=6)
    why = {t["test_id"]: t["why"] for t in json.loads(Path("report.json").read_text())["tests"]}
    assert why["tests/test_core.py::test_bind"] == "calls bind, changed in pkg/core.py"
    assert why["tests/test_aa.py::test_wrapper0"] == (
        "calls curry, which reaches bind, changed in pkg/core.py"
    )
    order = run_order(result)
    assert order[:3] == [
        "tests/test_core.py::test_bind",  # calls the changed definition
        "tests/test_core.py::test_curry",  # one call away, named after the caller
        "tests/test_core.py::test_plain",  # one call away, in the module's test file
    ]
    # equals among themselves (exploration may shuffle them)
    assert set(order[3:]) == {f"tests/test_aa.py::test_wrapper{i}" for i in range(3)}


def test_a_failure_whose_breaking_change_is_reverted_runs_after_the_fresh_change(
    pytester: pytest.Pytester,
) -> None:
    """One commit reverts the change test_c* failed with and breaks mod_g: the five tests
    calling value_g run first, then the tests importing mod_g; the reverted failures next,
    still ahead of every test without evidence (mod_c is back to its known-good version:
    no change to rank the tests importing it by)."""
    _package_suite(pytester)
    pytester.syspathinsert()
    for _ in range(2):
        _run(pytester).assert_outcomes(passed=80)
    mod_c, mod_g = pytester.path / "pkg" / "mod_c.py", pytester.path / "pkg" / "mod_g.py"
    mod_c.write_text(mod_c.read_text().replace("return 1", "return 3"))
    _git(pytester.path, "commit", "-q", "-am", "c breaks")
    _run(pytester).assert_outcomes(passed=75, failed=5)
    still = _run(pytester)  # nothing changed: the known failures run first
    still.assert_outcomes(passed=75, failed=5)
    assert set(run_order(still)[:5]) == {f"tests/test_c.py::test_c{i}" for i in range(5)}

    mod_c.write_text(mod_c.read_text().replace("return 3", "return 1"))
    mod_g.write_text(mod_g.read_text().replace("return 1", "return 2"))
    _git(pytester.path, "commit", "-q", "-am", "revert c; g breaks")
    result = _run(pytester)
    result.assert_outcomes(passed=75, failed=5)
    order = run_order(result)
    assert set(order[:5]) == {f"tests/test_g.py::test_g{i}" for i in range(5)}
    # then the tests that import mod_g
    assert set(order[5:8]) == {f"tests/test_zz_g.py::test_zz_g{i}" for i in range(3)}
    assert set(order[8:13]) == {f"tests/test_c.py::test_c{i}" for i in range(5)}


def test_the_failures_a_plain_fix_reverts_run_first(pytester: pytest.Pytester) -> None:
    """A commit that only restores the code test_c* failed with: nothing else changed, so
    the fixed failures run first, as with --ff — not after the tests importing the fixed
    module, which is no change to them (it is their known-good version again)."""
    _package_suite(pytester)
    pytester.syspathinsert()
    for _ in range(2):
        _run(pytester).assert_outcomes(passed=80)
    mod_c = pytester.path / "pkg" / "mod_c.py"
    good = mod_c.read_text()
    mod_c.write_text(good.replace("return 1", "return 3"))
    _git(pytester.path, "commit", "-q", "-am", "c breaks")
    _run(pytester).assert_outcomes(passed=75, failed=5)
    mod_c.write_text(good)
    _git(pytester.path, "commit", "-q", "-am", "fix c")
    result = _run(pytester, "--qlearn-report=fixed.json")
    result.assert_outcomes(passed=80)
    assert set(run_order(result)[:5]) == {f"tests/test_c.py::test_c{i}" for i in range(5)}
    report = json.loads((pytester.path / "fixed.json").read_text())
    why = {
        t["test_id"]: t["why"]
        for t in report["tests"]
        if t["test_id"].startswith("tests/test_c.py")
    }
    assert set(why.values()) == {"failed last run; the change it failed with is reverted since"}


def test_a_fix_and_a_new_fault_in_one_file_run_the_fresh_failure_first(
    pytester: pytest.Pytester,
) -> None:
    """One commit undoes the change test_c* failed with and breaks another function of the
    same module: the module still differs from when they passed, but not in what they
    started failing with — the tests calling the newly broken function run first, and the
    fixed failures after the tests reaching the change, ahead of every test without
    evidence."""
    _package_suite(pytester)
    mod_c = pytester.path / "pkg" / "mod_c.py"
    mod_c.write_text(mod_c.read_text() + "\n\ndef helper_c():\n    return 1\n")
    (pytester.path / "tests" / "test_helper_c.py").write_text(
        "from pkg.mod_c import helper_c\n\n"
        + "".join(f"def test_helper_c{i}():\n    assert helper_c() == 1\n\n" for i in range(3))
    )
    _git(pytester.path, "add", "-A")
    _git(pytester.path, "commit", "-q", "-m", "helper")
    pytester.syspathinsert()
    for _ in range(2):
        _run(pytester).assert_outcomes(passed=83)
    mod_c.write_text(mod_c.read_text().replace("return 1", "return 3", 1))  # value_c
    _git(pytester.path, "commit", "-q", "-am", "c breaks")
    _run(pytester).assert_outcomes(passed=78, failed=5)
    _run(pytester).assert_outcomes(passed=78, failed=5)

    text = mod_c.read_text().replace("return 3", "return 1")
    mod_c.write_text(text.replace("def helper_c():\n    return 1", "def helper_c():\n    return 2"))
    _git(pytester.path, "commit", "-q", "-am", "fix value_c; helper_c breaks")
    result = _run(pytester)
    result.assert_outcomes(passed=80, failed=3)
    order = run_order(result)
    assert set(order[:3]) == {f"tests/test_helper_c.py::test_helper_c{i}" for i in range(3)}
    fixed = {f"tests/test_c.py::test_c{i}" for i in range(5)}
    assert set(order[3:6]) == {f"tests/test_zz_c.py::test_zz_c{i}" for i in range(3)}
    assert set(order[6:11]) == fixed


XDIST_LINE = re.compile(r"^\[(gw\d+)\] \[\s*\d+%\] (PASSED|FAILED) (\S+::\S+)")


def test_under_xdist_the_workers_know_what_changed(pytester: pytest.Pytester) -> None:
    """pytest-xdist workers rank from the snapshot the controller hands them: it carries the
    last run's file digests, so the tests calling changed code run first there too (each
    worker takes the next items of the order: the five test_g tests are among the first
    each worker runs; in collection order they are tests 31-35 of 80)."""
    _package_suite(pytester)
    pytester.syspathinsert()
    for _ in range(2):
        pytester.runpytest_subprocess(*BASE_ARGS, "-n", "2").assert_outcomes(passed=80)
    mod_g = pytester.path / "pkg" / "mod_g.py"
    mod_g.write_text(mod_g.read_text().replace("return 1", "return 2"))
    _git(pytester.path, "commit", "-q", "-am", "g changes")
    result = pytester.runpytest_subprocess(
        *BASE_ARGS, "-n", "2", "-v", "--qlearn-report", "--qlearn-report=x.json"
    )
    result.assert_outcomes(passed=75, failed=5)
    # the controller says what the workers found and why they ran what they ran first
    result.stdout.fnmatch_lines(
        [
            "what ran first, and why:",
            "qlearn: 1 changed file(s) since the last run reach * test(s) (* directly)*",
        ]
    )
    why = {
        t["test_id"]: t["why"] for t in json.loads((pytester.path / "x.json").read_text())["tests"]
    }
    for i in range(5):
        assert "value_g" in why[f"tests/test_g.py::test_g{i}"]
    by_worker: dict[str, list[str]] = {}
    for line in result.outlines:
        if match := XDIST_LINE.match(line):
            by_worker.setdefault(match.group(1), []).append(match.group(3))
    assert sum(map(len, by_worker.values())) == 80
    # xdist hands each worker the next items of the order (one by one or in chunks)
    first = {test_id for ran in by_worker.values() for test_id in ran[:5]}
    assert {f"tests/test_g.py::test_g{i}" for i in range(5)} <= first, by_worker
