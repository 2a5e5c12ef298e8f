"""Change awareness on by default: which tests can reach the code changed since the last
episode, so the prioritizer runs them right after the known failures.

The changes are the files whose content differs from the digests the last episode stored
(the store's ``file_hashes``: test files, the conftest files above them and the project
modules they import); the static analysis of :mod:`pytest_qlearn.changes.impact` maps them to tests
(those whose code names a changed definition: DIRECT; those that import a changed module:
IMPORTS). With ``--qlearn-cov`` the coverage maps add the tests that execute the change
without naming it. Pure (no pytest): every pytest-xdist worker computes
the same answer from the same checkout and snapshot. Whatever fails here leaves the order to
the learned estimates, with one note, and never breaks the run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .impact import ChangeSet, DependencyIndex, Impact
from .reach import CALLS_FURTHER, DIRECT, IMPORTS


def _evidence(impact: Impact) -> int:
    """impact.py's finding as a reach (the prioritizer's evidence class)."""
    if impact.level >= 2:
        return DIRECT
    return CALLS_FURTHER if impact.calls else IMPORTS


@dataclass
class ChangeAwareness:
    """What one run found: test id -> evidence class, and the digests to store."""

    impacts: dict[str, int] = field(default_factory=dict)
    #: test id -> how close it is to the change inside its class (impact.proximity; smaller
    #: runs first): the order among, say, the hundred tests that all reach a changed module
    proximity: dict[str, int] = field(default_factory=dict)
    #: test id -> what the analysis found, in words ("calls curry, which reaches bind,
    #: changed in toolz/functoolz.py"): the report's "why"
    reasons: dict[str, str] = field(default_factory=dict)
    changed_files: frozenset[str] = frozenset()
    #: Every analysed file's digest now: stored with the episode, the next run's baseline.
    digests: dict[str, str] = field(default_factory=dict)
    note: str = ""
    index: DependencyIndex | None = None
    #: Tests that failed in the last run, that this change reaches by name, and whose code
    #: (every file they reach) is again what it was when they last passed: a revert.
    reverted: frozenset[str] = frozenset()

    def summary(self) -> str:
        """One line for the header, or "" when nothing changed."""
        if self.note:
            return self.note
        if not self.changed_files:
            return ""
        direct = sum(level == DIRECT for level in self.impacts.values())
        line = f"{len(self.changed_files)} changed file(s) since the last run"
        if self.impacts or not self.reverted:
            line += (
                f" reach {len(self.impacts)} test(s) ({direct} directly); they run right "
                "after known failures"
            )
        if self.reverted:
            line += (
                f"; {len(self.reverted)} failure(s) of the last run have the change they "
                "failed with reverted"
            )
        return line

    def save(self, episode: int = -1) -> None:
        """Keep the analysed files' versions for the next run (``episode``: this run's)."""
        if self.index is not None:
            self.index.save(episode)


def analyse(
    root: Path,
    test_files: Collection[str],
    test_ids: Iterable[str],
    stored_digests: Mapping[str, str],
    cache_file: Path | None,
    last_passed: Callable[[], Mapping[str, int | tuple[int, ...]]] | None = None,
) -> ChangeAwareness:
    """The static change analysis of one run (see the module docstring). ``last_passed``:
    the tests that failed in the last run -> the episode they last passed in, or the
    episodes of their last passing streak, newest first (asked for only when something
    changed)."""
    watch: dict[str, int] = {}
    streaks: dict[str, tuple[int, ...]] = {}
    try:
        index = DependencyIndex(root, cache_file)
        index.scan(test_files)
        changes = index.changes(stored_digests)
        if changes.files and last_passed is not None:
            for test_id, passed in last_passed().items():
                streaks[test_id] = (passed,) if isinstance(passed, int) else tuple(passed)
                watch[test_id] = streaks[test_id][0]
        found = index.impacts(changes, test_ids) if changes.files else {}
        reverted = _reverted(index, found, watch, changes, streaks)
        if reverted:  # code back to a known-good version is no change to rank tests by
            fresh = _without_restored(index, changes, {watch[t] for t in reverted})
            if fresh != changes:
                found = index.impacts(fresh, test_ids) if fresh.files else {}
    except Exception as exc:  # an analysis bug must not cost the user's run its order
        return ChangeAwareness(note=f"change awareness is off this run ({type(exc).__name__})")
    return ChangeAwareness(
        impacts={test_id: _evidence(impact) for test_id, impact in found.items()},
        proximity={test_id: impact.proximity for test_id, impact in found.items()},
        reasons={test_id: impact.reason for test_id, impact in found.items()},
        changed_files=changes.files,
        digests=dict(index.digests),
        index=index,
        reverted=reverted,
    )


def _named(impact: Impact | None) -> bool:
    """A finding that the test names changed code (directly or through callers), not only
    that it imports or is named after a changed module."""
    return impact is not None and (impact.level >= 2 or impact.calls > 0)


def _reverted(
    index: DependencyIndex,
    found: Mapping[str, Impact],
    last_passed: Mapping[str, int],
    current: ChangeSet,
    streaks: Mapping[str, tuple[int, ...]] | None = None,
) -> frozenset[str]:
    """The known failures (``last_passed``: test id -> the episode it last passed in) this
    change (``current``) reaches by name, whose breaking change is undone: either no file
    they reach (test file, conftests, imported modules) differs from its version when they
    passed, in any definition (by the cache's kept versions; a file whose version then is
    unknown differs) — not only the definitions they name: a fault the names miss, in a file
    they import, may still be there (toolz commit 21: two failures demoted that way ran at
    138) — or, see :func:`_cause_undone`, what they started failing with is back while
    this run changed the same files elsewhere."""
    by_episode: dict[int, list[str]] = {}
    for test_id, episode in last_passed.items():
        if _named(found.get(test_id)):
            by_episode.setdefault(episode, []).append(test_id)
    reverted: set[str] = set()
    for episode, test_ids in by_episode.items():
        since = index.changes_since(episode)
        then = index.impacts(since, test_ids) if since.files else {}
        reverted.update(test_id for test_id in test_ids if test_id not in then)
        still = [test_id for test_id in test_ids if test_id in then]
        if still:
            # the episodes all of them passed in (their streaks' common part, before this one)
            earlier = set.intersection(
                *(set((streaks or {}).get(test_id, ())[1:]) for test_id in still)
            )
            reverted.update(_cause_undone(index, episode, since, current, still, earlier))
    return frozenset(reverted)


#: A breaking change of more definitions than this is not looked into one by one (each costs
#: an impact pass): its failures stay known failures.
MAX_CAUSE_DEFINITIONS = 16


def _cause_undone(
    index: DependencyIndex,
    passed: int,
    since: ChangeSet,
    current: ChangeSet,
    test_ids: list[str],
    earlier: Collection[int] = (),
) -> set[str]:
    """Of ``test_ids`` — failing since the run after episode ``passed``, with code that
    still differs from then (``since``) — those whose failure's cause is undone although
    their files changed again (a fix and a new fault in one commit): every definition that
    changed when they started failing (from episode ``passed`` to the next) is back to its
    version then, a test names at least one of them, and whatever else differs from then
    changed in this very run (``current``: the change analysis ranks the tests it reaches on
    its own), not while they were failing, where it could have added a second fault.
    Every definition, not only those a test names: a fault its names miss may have come
    with the same commit (toolz commit 21 of the fault history: two failures from a fault
    in an unnamed definition, whose named companions were fixed, ran at 137). A definition
    that fails either test is still harmless where it is back at its version in one of the
    ``earlier`` episodes they passed in (their passing streak before ``passed``): the commit
    that broke them also repaired it. Unknown versions answer nothing."""
    cause = index.changes_between(passed, passed + 1)
    if cause is None:
        return set()
    onset = [
        (path, qual)
        for path in sorted(cause.files)
        for qual in sorted(cause.definitions[path] or ())
    ]
    if not onset or len(onset) > MAX_CAUSE_DEFINITIONS:
        return set()
    known_good: list[ChangeSet] = []  # changes_since each earlier passing episode, if needed
    for path, differing in since.definitions.items():
        changed_now = current.definitions.get(path) if path in current.files else frozenset()
        if differing is None or changed_now is None:
            return set()  # unknown
        # changed while they were failing, or a definition they started failing with that
        # still differs — harmless only where it is back at a version they passed with
        # earlier (the commit that broke them also repaired it: more-itertools commit 13)
        doubtful = (differing - changed_now) | (differing & (cause.definitions.get(path) or set()))
        if not doubtful:
            continue
        if not known_good and earlier:
            known_good = [index.changes_since(e) for e in sorted(earlier, reverse=True)]
        if not all(_passed_with(path, qual, known_good) for qual in doubtful):
            return set()
    named = index.impacts(cause, test_ids)
    return {test_id for test_id in test_ids if _named(named.get(test_id))}


def _without_restored(index: DependencyIndex, current: ChangeSet, episodes: set[int]) -> ChangeSet:
    """``current`` without what is back to its version in each of ``episodes`` (the runs
    the reverted failures last passed in): a fix that restores known-good code reaches no
    test as a change. Left as a change, it put every test importing the fixed module ahead
    of the reverted failures — after a plain fix, those ran last of all (marshmallow,
    1,192 tests: the 7 fixed failures at 1186-1192, where ``--ff`` runs them first). What
    else this run changed (a fresh fault beside the fix) still reaches its tests."""
    befores = [index.changes_since(episode) for episode in sorted(episodes)]
    definitions: dict[str, frozenset[str] | None] = {}
    for path in sorted(current.files):
        changed = current.definitions.get(path)
        if changed is None:
            definitions[path] = None
            continue
        kept = {
            qual
            for qual in changed
            for before in befores
            if path in before.files
            and ((differing := before.definitions.get(path)) is None or qual in differing)
        }
        if kept:
            definitions[path] = frozenset(kept)
    return ChangeSet(frozenset(definitions), definitions)


def _passed_with(path: str, qual: str, then: Iterable[ChangeSet]) -> bool:
    """Whether definition ``qual`` of ``path`` is now as it was in one of the episodes whose
    differences from today are ``then`` (each ``changes_since`` an episode they passed in)."""
    for before in then:
        if path not in before.files:
            return True
        differing = before.definitions.get(path)
        if differing is not None and qual not in differing:
            return True
    return False


def refine_with_coverage(
    impacts: Mapping[str, int], covering_changed: Collection[str]
) -> dict[str, int]:
    """Coverage adds what names miss: a test whose map executes the change
    (``covering_changed``) without naming it is CALLS_FURTHER (it runs the change on the way
    to something else) — unless its names already make it DIRECT. It takes nothing away: on
    the fault histories, demoting a test named after the change because its map did not
    show the changed line lost failures (toolz fresh-bug APFD 0.897 with coverage against
    0.923 without, more-itertools 0.720 against 0.980)."""
    refined = dict(impacts)
    for test_id in covering_changed:
        if impacts.get(test_id) != DIRECT:
            refined[test_id] = CALLS_FURTHER
    return refined
