"""The loaded learning state is frozen for the cyclic garbage collector during the run
(``gc.freeze()``), and unfrozen at the session's end; never when the collector is off or
something else froze objects first."""

from __future__ import annotations

import gc
import textwrap

import pytest

BASE_ARGS = ("-p", "no:randomly", "-p", "no:benchmark", "-p", "no:hypothesispytest")

SUITE = """
    import gc
    import os


    def test_freeze_count():
        with open(os.environ["QLEARN_FREEZE_LOG"], "a") as log:
            log.write(f"{gc.get_freeze_count()}\\n")


    def test_other():
        pass
"""


def frozen_during_the_run(pytester: pytest.Pytester, *args: str) -> int:
    log = pytester.path / "freeze.log"
    log.unlink(missing_ok=True)
    result = pytester.runpytest_subprocess(*BASE_ARGS, *args)
    result.assert_outcomes(passed=2)
    return int(log.read_text(encoding="utf-8").split()[-1])


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makepyfile(test_gc=textwrap.dedent(SUITE))
    monkeypatch.setenv("QLEARN_FREEZE_LOG", str(pytester.path / "freeze.log"))
    return pytester


def test_the_run_is_frozen_with_qlearn_and_not_without(project: pytest.Pytester) -> None:
    assert frozen_during_the_run(project, "-p", "no:qlearn") == 0
    for _ in range(2):  # a fresh store, then one with something learned
        assert frozen_during_the_run(project, "--qlearn") > 0


def test_nothing_is_frozen_when_the_collector_is_off_or_already_frozen(
    project: pytest.Pytester,
) -> None:
    project.makeconftest("import gc\n\ngc.disable()\n")
    assert frozen_during_the_run(project, "--qlearn") == 0
    # someone froze first: qlearn leaves it as it is (and does not unfreeze it)
    project.makeconftest("import gc\n\ngc.freeze()\nFROZEN = gc.get_freeze_count()\n")
    (project.path / "test_gc.py").write_text(
        textwrap.dedent(SUITE).replace(
            "def test_other():\n    pass",
            "def test_other():\n    import conftest\n\n"
            # frozen objects that are freed leave the count; a second freeze would add the
            # thousands created since
            "    assert gc.get_freeze_count() <= conftest.FROZEN",
        ),
        encoding="utf-8",
    )
    assert frozen_during_the_run(project, "--qlearn") > 0


def test_an_in_process_run_unfreezes_at_its_end(project: pytest.Pytester) -> None:
    if gc.get_freeze_count() or not gc.isenabled():
        pytest.skip("this process froze objects or runs without the collector")
    result = project.runpytest_inprocess(*BASE_ARGS, "--qlearn")
    result.assert_outcomes(passed=2)
    assert int((project.path / "freeze.log").read_text(encoding="utf-8").split()[-1]) > 0
    assert gc.get_freeze_count() == 0
