"""Text at the store boundary: any Python string goes in and comes back out unchanged.

Test ids, paths and names may hold what a database cannot store: NUL (PostgreSQL's ``text``
refuses ``\\x00``) and lone surrogates (``'\\udc80'``: pytest ids built from undecodable bytes,
or from ``disable_test_id_escaping_and_forfeit_all_rights_to_community_support``; neither
SQLite nor PostgreSQL takes them, as they are not UTF-8). Both stores therefore write every
text through :func:`to_store` and read it back through :func:`from_store`, one escape that
round-trips:

- each NUL, lone surrogate and U+FFFF becomes U+FFFF followed by the character's code as
  four lower-case hex digits (``'a\\x00b'`` is stored as ``'a\\uffff0000b'``);
- everything else is stored as it is, so text without those characters (all text ever stored
  before this escape) reads back as written.

U+FFFF is a Unicode noncharacter, never part of real text, and is escaped itself, so the
escape is lossless for every string. Both stores use the same escape, so hashes and keys the
database computes on stored text (``md5(test_id)``) agree between runs, and ``qlearn
migrate`` copies text between stores unchanged.

The checks are made once per batch (a scan of the joined texts), so a run of 100,000 ordinary
ids pays a few milliseconds, not a function call per id.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from .base import (
    CheckpointPush,
    CoverageSnapshot,
    EpisodeWrite,
    Partition,
    PendingRun,
    Snapshot,
)

T = TypeVar("T")

ESCAPE = "\uffff"
#: What a store cannot take as it is (and the escape character itself).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff\uffff]")
_ESCAPED = re.compile("\uffff([0-9a-f]{4})")


def _unstorable(text: str) -> bool:
    """Whether ``text`` holds NUL, a lone surrogate or U+FFFF (C-speed checks: a regular
    expression over megabytes of ids costs a tenth of a second, these a few milliseconds)."""
    if "\x00" in text or ESCAPE in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # only a lone surrogate is not UTF-8
        return True
    return False


def to_store(text: str) -> str:
    """``text`` as a store keeps it (itself, unless it holds NUL, a lone surrogate or
    U+FFFF)."""
    if not _unstorable(text):
        return text
    return _UNSTORABLE.sub(lambda m: f"{ESCAPE}{ord(m.group()):04x}", text)


def from_store(text: str) -> str:
    """The text :func:`to_store` was given."""
    if ESCAPE not in text:
        return text
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), text)


def needs_escape(texts: Iterable[str]) -> bool:
    """Whether any of ``texts`` must be escaped (one scan of them all)."""
    return _unstorable("".join(texts))


def has_escape(texts: Iterable[str]) -> bool:
    """Whether any of ``texts`` holds an escape to undo (one scan of them all)."""
    return ESCAPE in "".join(texts)


def _deep(value: Any, convert: Any) -> Any:
    """``value`` with every string in it converted: through named tuples, dataclasses,
    tuples, lists and dicts (keys too)."""
    if isinstance(value, str):
        return convert(value)
    if isinstance(value, tuple):
        items = [_deep(v, convert) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_deep(v, convert) for v in value]
    if isinstance(value, dict):
        return {_deep(k, convert): _deep(v, convert) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _deep(getattr(value, f.name), convert)
            for f in dataclasses.fields(value)
            if f.init
        }
        return dataclasses.replace(value, **changes)
    return value


def _strings(value: Any) -> Iterable[str]:
    """Every string in ``value`` (as :func:`_deep` walks it)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _strings(getattr(value, f.name))


def stored(value: T) -> T:
    """Any record (a partition, a checkpoint push, a list of them...) as a store keeps it."""
    if not needs_escape(_strings(value)):
        return value
    result: T = _deep(value, to_store)
    return result


def loaded(value: T) -> T:
    """Any record read from a store, its text as it was written."""
    if not has_escape(_strings(value)):
        return value
    result: T = _deep(value, from_store)
    return result


def stored_partition(partition: Partition) -> Partition:
    return stored(partition)


def _joined(items: Iterable[Any], *fields: str) -> Iterable[str]:
    """The ``fields`` of every item, each field's values joined into one text (``map`` with
    ``attrgetter`` runs in C: 100,000 rows cost milliseconds, not a generator step each)."""
    for name in fields:
        yield "".join(map(attrgetter(name), items))


def _write_texts(write: EpisodeWrite) -> Iterable[str]:
    """Every text of a write, the bulky parts joined per field (faster than walking them)."""
    yield write.partition.project
    yield write.partition.environment
    yield write.session.session_id
    yield write.session.mode
    yield write.session.narrowing or ""
    yield from _joined(write.agent_types, "name", "description")
    yield from _joined(write.observations, "test_id", "verdict")
    for agent, deltas in write.q_deltas.items():
        yield agent
        yield from _joined(deltas, "state", "state_text")
    yield from _joined(write.trajectories, "agent", "test_id", "state")
    yield "".join([s.next_state for s in write.trajectories if s.next_state is not None])
    yield from _joined(write.rewards, "component")
    yield from _joined(write.patterns, "agent", "pattern", "description")
    yield from _joined(write.agents, "agent")
    yield from _joined(write.next_histories, "test_id", "verdicts")
    yield "".join(map(itemgetter(0), write.file_hashes))
    yield "".join(map(itemgetter(1), write.file_hashes))
    yield from _joined(write.pending_skips, "test_id", "state_key")
    if write.coverage is not None:
        yield from _strings(write.coverage)


def stored_write(write: EpisodeWrite) -> EpisodeWrite:
    """An episode as a store keeps it: the same object when nothing needs escaping."""
    if not any(map(_unstorable, _write_texts(write))):  # each part a field's joined texts
        return write
    changes: dict[str, Any] = {
        f.name: _deep(getattr(write, f.name), to_store)
        for f in dataclasses.fields(write)
        if f.name != "agent_types"  # code's own names: escaped by the hyperparameters' JSON
    }
    changes["agent_types"] = [
        dataclasses.replace(t, name=to_store(t.name), description=to_store(t.description))
        for t in write.agent_types
    ]
    return dataclasses.replace(write, **changes)


def stored_push(push: CheckpointPush) -> CheckpointPush:
    """A checkpoint push as a store keeps it (its run's partition, ids and owner)."""
    run = push.run
    texts = (run.partition.project, run.partition.environment, run.session_id, run.owner)
    if not needs_escape(texts):
        return push
    run = dataclasses.replace(
        run,
        partition=stored_partition(run.partition),
        session_id=to_store(run.session_id),
        owner=to_store(run.owner),
    )
    return dataclasses.replace(push, run=run)


def loaded_run(run: PendingRun) -> PendingRun:
    """A claimed checkpoint's run, its text as written (results included)."""
    return loaded(run)


def _snapshot_texts(snapshot: Snapshot) -> Iterable[str]:
    yield snapshot.partition.project
    yield snapshot.partition.environment
    yield "".join(snapshot.histories)
    yield from _joined(snapshot.histories.values(), "verdicts")
    for agent, entries in snapshot.q_entries.items():
        yield agent
        yield from _joined(entries, "state")
    yield "".join(snapshot.agent_states)
    yield from _joined(snapshot.recent_sessions, "session_id", "mode")
    yield "".join(s.narrowing or "" for s in snapshot.recent_sessions)
    yield "".join(snapshot.file_hashes)
    yield "".join(snapshot.file_hashes.values())
    for test_id, rows in snapshot.pending_skips.items():
        yield test_id
        yield "".join(rows)


def loaded_snapshot(snapshot: Snapshot) -> Snapshot:
    """A snapshot read from a store, its text as written: the same object when nothing in it
    was escaped."""
    if not any(ESCAPE in text for text in _snapshot_texts(snapshot)):
        return snapshot
    decoded: Snapshot = _deep(snapshot, from_store)
    return decoded


def loaded_coverage(coverage: CoverageSnapshot) -> CoverageSnapshot:
    return loaded(coverage)
