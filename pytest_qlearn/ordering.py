"""Turning per-test priorities into a run order that respects fixture locality.

With scope ``module`` (the default) the tests of a module stay together, and so do the tests
of a class inside it, so module- and class-scoped fixtures are set up once as usual; groups
are ordered by their most urgent test. Scope ``class`` keeps only classes together; ``test``
orders tests freely.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from .prioritizer import TestRef

SCOPES = ("module", "class", "test")

T = TypeVar("T")
SortKey = tuple[float, ...]


def locality_order(
    refs: Sequence[TestRef], key: Callable[[TestRef], SortKey], scope: str
) -> list[TestRef]:
    """Order ``refs`` by ``key`` (smaller runs first) within the groups ``scope`` keeps."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    keyed = [(key(ref), ref) for ref in refs]
    if scope == "test":
        return [ref for _, ref in sorted(keyed, key=lambda pair: pair[0])]
    if scope == "class":
        return _grouped(keyed, lambda ref: ref.cls or ref.test_id)
    # module scope: modules by their most urgent test, then classes inside each module
    modules: dict[str, list[tuple[SortKey, TestRef]]] = {}
    for pair in keyed:
        modules.setdefault(pair[1].module, []).append(pair)
    ordered_modules = sorted(modules.values(), key=lambda members: min(k for k, _ in members))
    out: list[TestRef] = []
    for members in ordered_modules:
        out.extend(_grouped(members, lambda ref: ref.cls or ref.test_id))
    return out


def _grouped(
    keyed: Sequence[tuple[SortKey, TestRef]], group_of: Callable[[TestRef], str]
) -> list[TestRef]:
    groups: dict[str, list[tuple[SortKey, TestRef]]] = {}
    for pair in keyed:
        groups.setdefault(group_of(pair[1]), []).append(pair)
    out: list[TestRef] = []
    for members in sorted(groups.values(), key=lambda members: min(k for k, _ in members)):
        out.extend(ref for _, ref in sorted(members, key=lambda pair: pair[0]))
    return out
