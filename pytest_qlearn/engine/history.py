"""Per-test history: the stored facts agents build their states from (not Q-values)."""

from __future__ import annotations

from typing import NamedTuple

PASSED = "P"
FAILED = "F"
SKIPPED = "S"

#: How many recent verdicts a history keeps (most recent last).
KEPT_VERDICTS = 16
#: Setup + teardown seconds are averaged over about this many recent runs: a fixture's cost
#: follows the code, and one slow setup should not weigh for ever.
FIXTURE_WINDOW = 10
#: ``duration_recent`` follows about the last this many runs ...
DURATION_WINDOW = 5
#: ... and counts no run as more than this many times the recent estimate (a timeout or a
#: loaded machine: one 60 s outlier of a 0.1 s test inflated the plain mean for a long
#: time). A real slowdown still gets through: the cap grows with the estimate, run by run.
OUTLIER_FACTOR = 4.0
#: The cap never falls below this many seconds (sub-millisecond tests: timer noise).
OUTLIER_FLOOR = 0.01


class TestHistory(NamedTuple):
    """What one test did in earlier episodes of a project/environment.

    ``verdicts`` holds the most recent verdicts as letters (``P``/``F``/``S``), oldest first.
    Durations use Welford's running mean so the history stays small. Immutable, and a
    tuple of plain values so the garbage collector stops tracking the thousands a run
    holds (every full collection of the user's test run would otherwise walk them).
    """

    test_id: str
    runs: int = 0
    failures: int = 0
    flips: int = 0
    verdicts: str = ""
    last_failure_episode: int = -1
    last_run_episode: int = -1
    first_episode: int = -1
    duration_mean: float = 0.0
    duration_m2: float = 0.0
    last_duration: float = 0.0
    #: Running mean, over the same runs as ``duration_mean`` (those with a pass/fail
    #: verdict), of the seconds spent in the test's setup and teardown.
    fixture_mean: float = 0.0
    #: Runs that failed and then passed on a rerun (a flake confirmed, by ``--qlearn-reruns``
    #: or pytest-rerunfailures): each also counts as a failure followed by a pass.
    flaky: int = 0
    #: Seconds a run is expected to take now: a mean over about the last
    #: :data:`DURATION_WINDOW` runs, outliers capped (the budget's estimate). 0: not measured
    #: yet (a history from before schema 8; ``expected_duration`` falls back to the mean).
    duration_recent: float = 0.0

    @property
    def expected_duration(self) -> float:
        """The seconds the next run is expected to take (0 when it never ran)."""
        return self.duration_recent if self.duration_recent > 0.0 else self.duration_mean

    @property
    def is_new(self) -> bool:
        """Never seen in an earlier episode (a test that only ever skipped is not new)."""
        return self.first_episode < 0

    @property
    def failure_rate(self) -> float:
        return self.failures / self.runs if self.runs else 0.0

    def runs_since_failure(self) -> int | None:
        """Verdict-bearing runs since the last failure, or None if it never failed."""
        if self.failures == 0:
            return None
        index = self.verdicts.rfind(FAILED)
        if index >= 0:
            return self.verdicts[index + 1 :].count(PASSED)
        # The failure is older than the kept verdicts.
        return len(self.verdicts)

    def last_passed_episode(self) -> int | None:
        """The episode this test last passed in, when its last verdict was a failure and the
        kept verdicts hold a pass (None otherwise). Counted back from its last run, one
        episode per verdict: exact for a test that ran in every episode since."""
        verdicts = self.verdicts
        if verdicts.rstrip(SKIPPED)[-1:] != FAILED:
            return None
        index = verdicts.rfind(PASSED)
        if index < 0:
            return None
        return self.last_run_episode - (len(verdicts) - 1 - index)

    def passing_streak(self) -> tuple[int, ...]:
        """The episodes it passed in, newest first, from :meth:`last_passed_episode` back to
        the failure before (skipped runs in between neither end nor join it); empty when
        that is None. Counted back one episode per verdict, like it."""
        if self.last_passed_episode() is None:
            return ()
        verdicts, last = self.verdicts, self.last_run_episode
        episodes = []
        for index in range(verdicts.rfind(PASSED), -1, -1):
            if verdicts[index] == FAILED:
                break
            if verdicts[index] == PASSED:
                episodes.append(last - (len(verdicts) - 1 - index))
        return tuple(episodes)

    def last_verdicts(self, k: int) -> str:
        """The last ``k`` pass/fail verdicts, padded on the left with ``-`` for unknown."""
        if k <= 0:
            return ""
        recent = self.verdicts.replace(SKIPPED, "")[-k:]
        return recent.rjust(k, "-")

    @property
    def flaky_rate(self) -> float:
        """The share of its runs that were confirmed flakes (0 without reruns)."""
        return self.flaky / self.runs if self.runs else 0.0

    def record(
        self,
        verdict: str,
        duration: float,
        episode: int,
        fixture: float = 0.0,
        flaky: bool = False,
    ) -> TestHistory:
        """A new history with one more episode's verdict, its duration and its setup +
        teardown seconds (``fixture``); skipped runs keep only the episode. A ``flaky`` run
        (it failed, then passed on a rerun) is learned as a flip: a failure, then a pass,
        each with half the seconds — never as a plain pass."""
        if flaky and verdict == PASSED:
            after_failure = self.record(FAILED, duration / 2, episode, fixture / 2)
            after_pass = after_failure.record(PASSED, duration / 2, episode, fixture / 2)
            return after_pass._replace(flaky=self.flaky + 1)
        # every field at once (one unpack, not a property call each: a run records one
        # history per test)
        (
            test_id,
            runs,
            failures,
            flips,
            verdicts,
            last_failure_episode,
            _,
            first_episode,
            duration_mean,
            duration_m2,
            _,
            fixture_mean,
            flaky_runs,
            duration_recent,
        ) = self
        if first_episode < 0:
            first_episode = episode
        if verdict == SKIPPED:
            return self._replace(first_episode=first_episode, last_run_episode=episode)
        # the last pass/fail verdict (rstrip: the string itself, unless it ends in skips)
        previous = verdicts.rstrip(SKIPPED)[-1:]
        runs += 1
        failed = verdict == FAILED
        delta = duration - duration_mean
        mean = duration_mean + delta / runs
        # fixture_mean: a mean over about the last FIXTURE_WINDOW runs; 0 means never
        # measured (a history from before fixture times were kept): the first replaces it
        if fixture_mean == 0.0:
            fixture_mean = fixture
        else:
            fixture_mean = fixture_mean + (fixture - fixture_mean) / min(runs, FIXTURE_WINDOW)
        # duration_recent: a recent mean that caps each run at OUTLIER_FACTOR times the
        # estimate so far (from the 4th run on)
        if runs <= 1:
            recent = duration
        else:
            recent = duration_recent
            if recent <= 0.0:
                recent = duration_mean  # a history from before schema 8 starts from its mean
            value = duration
            if runs > 3:
                value = min(value, max(OUTLIER_FACTOR * recent, OUTLIER_FLOOR))
            recent = recent + (value - recent) / min(runs, DURATION_WINDOW)
        # every field, in order (no call of __new__)
        return _new_tuple(
            TestHistory,
            (
                test_id,
                runs,
                failures + failed,
                flips + (1 if previous and previous != verdict else 0),
                (verdicts + verdict)[-KEPT_VERDICTS:],
                episode if failed else last_failure_episode,
                episode,
                first_episode,
                mean,
                duration_m2 + delta * (duration - mean),
                duration,
                fixture_mean,
                flaky_runs,
                recent,
            ),
        )


_new_tuple = tuple.__new__
assert len(TestHistory._fields) == 14  # record() builds it from all its fields

TestHistory.__test__ = False  # type: ignore[attr-defined]  # not a pytest test class
