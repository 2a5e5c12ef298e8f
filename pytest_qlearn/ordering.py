"""Turning per-test priorities into a run order that keeps fixture locality where it pays.

A module or class is kept together (its tests run in one stretch, so its module- and
class-scoped fixtures are set up once) or its tests move freely. The scope says which:

* ``auto`` (the default): a group is kept together only where splitting it costs real time —
  where its tests use a fixture of its scope and its measured shared setup
  (:func:`shared_setup_seconds`, from pytest's setup and teardown durations) reaches
  :data:`AUTO_KEEP_SECONDS`, or nothing is measured yet;
* ``module``: every module and every class inside it stays together;
* ``class``: classes stay together, modules do not;
* ``test``: every test moves alone.

A kept group runs where its most urgent test would; inside it, tests still go by urgency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import NamedTuple

from .agents.prioritizer import TestRef
from .engine.history import TestHistory
from .names import ORDER_SCOPES

#: ``auto`` keeps a group together when re-running its shared setup would cost at least this
#: (seconds per extra split). Below it a module-scoped fixture is cheap next to what running a
#: risky test a few hundred tests earlier saves; above it (a database, a server, a big file)
#: a split run pays the setup again for every stretch.
AUTO_KEEP_SECONDS = 0.1
#: Per-test setup/teardown differences under this are timer noise, not a fixture's cost.
SETUP_NOISE_SECONDS = 0.005

SortKey = tuple[float, ...]
Sticky = Callable[[str], bool]


def shared_setup_seconds(histories: Iterable[TestHistory]) -> float | None:
    """What a group's tests spend in setup and teardown beyond a typical member's: the cost
    of its module/class-scoped fixtures, paid by whichever test runs first (and last) in each
    stretch of the group. The typical member is the lower quartile (the fixture is paid by
    few), and differences under :data:`SETUP_NOISE_SECONDS` are timer noise. None when no
    member has a measured run."""
    measured = sorted(h.fixture_mean for h in histories if h.runs > 0)
    if not measured:
        return None
    typical = measured[(len(measured) - 1) // 4]
    return sum(max(0.0, value - typical - SETUP_NOISE_SECONDS) for value in measured)


class ScopedGroups(NamedTuple):
    """The modules and classes whose tests use a module- or class-scoped fixture (pytest's
    xunit ``setup_module``/``setup_class`` and unittest's ``setUpClass`` are such fixtures):
    only those can cost anything to split."""

    modules: frozenset[str]
    classes: frozenset[str]


def auto_sticky(
    refs: Sequence[TestRef],
    histories: Mapping[str, TestHistory],
    scoped: ScopedGroups | None = None,
) -> tuple[set[str], set[str]]:
    """(modules, classes) that ``auto`` keeps together: among the groups with a fixture of
    their scope (``scoped``; None: any group may have one), those whose own shared setup
    costs at least :data:`AUTO_KEEP_SECONDS` (a module's without what its classes' own
    fixtures cost: a costly class keeps only the class together), and those with no
    measured member (a new module stays as written until one run has measured it). A group
    without such a fixture moves freely whatever its tests' setup times say: a slow
    function- or session-scoped setup is not paid again for a split."""
    modules: dict[str, list[TestHistory]] = {}
    classes: dict[str, list[TestHistory]] = {}
    class_module: dict[str, str] = {}
    get = histories.get
    for ref in refs:
        history = get(ref.test_id)
        # get, not setdefault: no empty list made per test for the groups already seen
        module, cls = ref.module, ref.cls
        members = modules.get(module)
        if members is None:
            members = modules[module] = []
        cls_members: list[TestHistory] | None = None
        if cls is not None:
            class_module[cls] = module
            cls_members = classes.get(cls)
            if cls_members is None:
                cls_members = classes[cls] = []
        if history is not None:
            members.append(history)
            if cls_members is not None:
                cls_members.append(history)
    class_costs = {name: shared_setup_seconds(members) for name, members in classes.items()}
    inner: dict[str, float] = {}
    for name, cost in class_costs.items():
        inner[class_module[name]] = inner.get(class_module[name], 0.0) + (cost or 0.0)
    kept_classes = {
        name
        for name, cost in class_costs.items()
        if (scoped is None or name in scoped.classes)
        and (cost is None or cost >= AUTO_KEEP_SECONDS)
    }
    kept_modules = set()
    for name, members in modules.items():
        if scoped is not None and name not in scoped.modules:
            continue
        cost = shared_setup_seconds(members)
        if cost is None or cost - inner.get(name, 0.0) >= AUTO_KEEP_SECONDS:
            kept_modules.add(name)
    return kept_modules, kept_classes


def locality_order(
    refs: Sequence[TestRef],
    key: Callable[[TestRef], SortKey],
    scope: str,
    histories: Mapping[str, TestHistory] | None = None,
    scoped: ScopedGroups | None = None,
) -> list[TestRef]:
    """Order ``refs`` by ``key`` (smaller runs first) within the groups ``scope`` keeps
    (``auto`` reads the groups' measured setup costs from ``histories``, and which groups
    have fixtures of their scope from ``scoped``)."""
    if scope not in ORDER_SCOPES:
        raise ValueError(f"scope must be one of {ORDER_SCOPES}, got {scope!r}")
    if scope == "auto":
        modules, classes = auto_sticky(refs, histories or {}, scoped)
        return _ordered(refs, key, modules.__contains__, classes.__contains__)
    return _ordered(refs, key, lambda _: scope == "module", lambda _: scope != "test")


def _ordered(
    refs: Sequence[TestRef],
    key: Callable[[TestRef], SortKey],
    module_kept: Sticky,
    class_kept: Sticky,
) -> list[TestRef]:
    """Units — a kept module, a kept class, or a single test — sorted by their most urgent
    member; a kept module's own units (kept classes, single tests) sorted the same way."""

    def unit_in_module(ref: TestRef) -> str:
        return ref.cls if ref.cls is not None and class_kept(ref.cls) else "\0" + ref.test_id

    # units in the order their first member was collected: a single test as (key, None,
    # ref), a kept group as (None, name, members) until its members are all in. Most units
    # are single tests; they get no name, dict entry or list of their own.
    units: list[tuple[SortKey | None, str | None, object]] = []
    groups: dict[str, list[tuple[SortKey, TestRef]]] = {}
    append = units.append
    # a test id collected twice (``--keep-duplicates``) is one unit, as a named group
    singles_unique = len({ref.test_id for ref in refs}) == len(refs)
    for ref in refs:
        if module_kept(ref.module):
            name = "\1" + ref.module
        elif ref.cls is not None and class_kept(ref.cls):
            name = ref.cls
        elif singles_unique:
            append((key(ref), None, ref))
            continue
        else:
            name = "\0" + ref.test_id
        members = groups.get(name)
        if members is None:
            members = groups[name] = []
            append((None, name, members))
        members.append((key(ref), ref))
    # each unit by its most urgent member; the sort is stable, so units whose keys tie
    # keep their collection order
    ranked = sorted(
        (
            unit
            if unit[1] is None
            else (min(k for k, _ in groups[unit[1]]), unit[1], groups[unit[1]])
            for unit in units
        ),
        key=itemgetter(0),
    )
    out: list[TestRef] = []
    for _, group, payload in ranked:
        if group is None:
            out.append(payload)  # type: ignore[arg-type]  # a single test's ref
            continue
        members = groups[group]
        if group.startswith("\1"):  # a kept module: its classes and tests as units inside it
            out.extend(_grouped(members, unit_in_module))
        else:
            out.extend(ref for _, ref in sorted(members, key=itemgetter(0)))
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
