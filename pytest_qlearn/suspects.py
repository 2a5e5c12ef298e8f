"""Order-dependence suspects, remembered across runs (no pytest here).

A test that failed after the reordering moved it and then passed when rerun is an
*order-dependence suspect* (:attr:`~pytest_qlearn.session.RerunRecord.order_suspect`). The
suspicion is stored as a pattern row of its own kind (:data:`NAME`, the test id as the
pattern; no schema of its own), so every later run, on any runner sharing the store, keeps
the test out of the position that hurt it:

**The rule: a suspect runs before every test collected after it.** In collection order it
passed (it never failed before it was moved), so whatever state the tests ahead of it leave
behind, those collected before it are harmless in that order; the one thing the reordering
added is tests collected *after* it running first — one of those is the polluter. Keeping all
of them behind it (not only the few that ran just before it, which need not include the
polluter: module state survives any number of tests in between) rules that out wherever the
polluter is, with one test moved: the suspect is pulled forward to just before the first
later-collected test the order would otherwise run ahead of it; nothing is moved after it, so
the rest of the order — evidence classes, estimates, kept modules and classes — stays as it
was. Pulling it forward never breaks the evidence rule: a test that failed in its last run
still runs before it (unless the suspect failed in its last run too); if such a test is the
polluter, the suspect may fail again (and is flagged again).

**Forgetting.** A suspect is forgotten after :data:`FORGET_AFTER` *exposed* clean runs: it
passed on its first attempt although a test collected after it ran before it (the guard
cannot keep failed-last tests behind it, and other orders happen: another seed, no store),
i.e. it passed after being moved the way that once hurt it. A flag resets that count. Like
other learned rows its row expires after the TTL (``qlearn_ttl_days``) without a flag or an
exposed pass — a suspect the guard keeps safe is re-examined within a TTL.

Stored columns: ``occurrences`` = times flagged, ``hits`` = exposed clean runs since the last
flag, ``reruns`` = the episode its suspicion started in. All are deltas the store adds up,
like every pattern row (concurrent runs never lose each other's flags).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol

from .agents.prioritizer import TestRef
from .store.base import SUSPECT_AGENT, PatternDelta

NAME = SUSPECT_AGENT
#: Exposed clean runs after which a suspect is forgotten.
FORGET_AFTER = 3
DESCRIPTION = "order-dependence suspect: failed after being moved, passed on a rerun"

SortKey = tuple[float, ...]


class Suspect(NamedTuple):
    test_id: str
    since: int  # the episode its suspicion started in
    flags: int  # times it was flagged
    clean: int  # exposed clean runs since its last flag

    @property
    def active(self) -> bool:
        """Still suspected: the order keeps it before the tests collected after it."""
        return self.flags > 0 and self.clean < FORGET_AFTER


def suspects(patterns: Iterable[PatternDelta]) -> dict[str, Suspect]:
    """The suspects stored as pattern rows (rows of other kinds are ignored)."""
    return {
        p.pattern: Suspect(p.pattern, p.reruns, p.occurrences, p.hits)
        for p in patterns
        if p.agent == NAME
    }


def flagged(test_id: str, episode: int, held: Suspect | None) -> PatternDelta:
    """The delta of a flag in ``episode``: one more flag, the clean count back to 0, and a
    suspicion that was not active (new, or forgotten) starts in ``episode``."""
    renewed = held is None or not held.active
    since = episode - (0 if held is None else held.since) if renewed else 0
    clean = 0 if held is None else -held.clean
    return PatternDelta(NAME, test_id, DESCRIPTION, 1, clean, since)


def passed_exposed(test_id: str) -> PatternDelta:
    """The delta of an exposed clean run."""
    return PatternDelta(NAME, test_id, DESCRIPTION, 0, 1)


class _Ran(Protocol):
    @property
    def test_id(self) -> str: ...
    @property
    def collected_at(self) -> int: ...
    @property
    def position(self) -> int: ...


def exposed(results: Sequence[_Ran], wanted: Mapping[str, object]) -> set[str]:
    """The tests of ``wanted`` that ran after a test collected after them."""
    latest = -1  # the latest collection index among the tests that ran so far
    out = set()
    for result in sorted(results, key=lambda r: r.position):
        if result.test_id in wanted and latest > result.collected_at:
            out.add(result.test_id)
        latest = max(latest, result.collected_at)
    return out


def guarded(
    refs: Sequence[TestRef],
    key: Callable[[TestRef], SortKey],
    active: Mapping[str, Suspect],
    failed_last: Callable[[str], bool],
) -> Callable[[TestRef], SortKey]:
    """``key`` with every active suspect's key lowered to just under the smallest key of the
    tests collected after it (see the module docstring) where that is smaller than its own.
    The evidence rule stays: a suspect that did not fail in its last run (``failed_last``)
    is never lowered past a test that did — it goes no further forward than just after the
    last of them. Keys end with the collection index (an integer): just under a key is the
    key with its index − 0.5, just after it the key with its index + 0.5."""
    keys = {ref.test_id: key(ref) for ref in refs}
    failed = {t for t in keys if failed_last(t)}
    floor: SortKey | None = None  # just after the last test that failed in its last run
    if failed:
        last = max(keys[t] for t in failed)
        floor = (*last[:-1], last[-1] + 0.5)
    lowered: dict[str, SortKey] = {}
    after_all: SortKey | None = None  # the smallest key among the tests collected after
    after_rest: SortKey | None = None  # ... among those that did not fail in their last run
    for ref in sorted(refs, key=lambda r: r.index, reverse=True):
        test_id = ref.test_id
        own = keys[test_id]
        if test_id in active:
            bound = after_all if test_id in failed else after_rest
            if bound is not None and bound < own:
                below = (*bound[:-1], bound[-1] - 0.5)
                if floor is not None and test_id not in failed and below < floor:
                    below = floor
                if below < own:
                    own = lowered[test_id] = below
        if after_all is None or own < after_all:
            after_all = own
        if test_id not in failed and (after_rest is None or own < after_rest):
            after_rest = own
    if not lowered:
        return key
    keys.update(lowered)
    return lambda ref: keys[ref.test_id]


class Note(NamedTuple):
    """A suspect as a run saw it, for the reports: ``kept`` — the order guarded it this run;
    ``after`` — what is stored once this run's deltas are applied."""

    kept: bool
    after: Suspect


def after(held: Suspect | None, delta: PatternDelta) -> Suspect:
    """A suspect once ``delta`` is applied (as the store adds it up)."""
    since, flags, clean = (0, 0, 0) if held is None else held[1:]
    return Suspect(
        delta.pattern, since + delta.reruns, flags + delta.occurrences, clean + delta.hits
    )


def reason(suspect: Suspect) -> str:
    """Why a suspect runs where it does (the reports' "why")."""
    return f"kept in collection order: order-dependent suspect since episode {suspect.since}"
