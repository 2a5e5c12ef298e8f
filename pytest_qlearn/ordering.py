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

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import compress, groupby
from operator import attrgetter, itemgetter
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
_test_id = itemgetter(0)  # of a TestRef
_module_cls = itemgetter(1, 2)
_first = itemgetter(0)
_FIXTURE_MEAN, _RUNS = attrgetter("fixture_mean"), attrgetter("runs")  # of a TestHistory
#: A sort key as ``locality_order`` takes it: a tuple, or an int of the same order (the
#: session's ranks, issue 16).
AnyKey = SortKey | int
Sticky = Callable[[str], bool]


def shared_setup_seconds(histories: Iterable[TestHistory]) -> float | None:
    """What a group's tests spend in setup and teardown beyond a typical member's: the cost
    of its module/class-scoped fixtures, paid by whichever test runs first (and last) in each
    stretch of the group. The typical member is the lower quartile (the fixture is paid by
    few), and differences under :data:`SETUP_NOISE_SECONDS` are timer noise. None when no
    member has a measured run."""
    return _setup_seconds([h.fixture_mean for h in histories if h.runs > 0])


def _setup_seconds(values: list[float]) -> float | None:
    """:func:`shared_setup_seconds` of the measured members' ``fixture_mean`` values."""
    if not values:
        return None
    measured = sorted(values)
    typical = measured[(len(measured) - 1) // 4]
    if measured[-1] - typical - SETUP_NOISE_SECONDS <= 0.0:
        # no member above the noise (most groups: no shared fixture cost): every term of
        # the sum below is 0.0 (the difference is monotone in the value)
        return 0.0
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
    # each group's measured fixture seconds (a test without a measured run adds none, but
    # its group exists). Refs come in runs of one module and class (collection order): a
    # run's values are found together, its groups looked up once (issue 16: per test this
    # was a tenth of ranking 100,000 tests); member order does not matter (sorted below).
    modules: dict[str, list[float]] = {}
    classes: dict[str, list[float]] = {}
    class_module: dict[str, str] = {}
    found = list(map(histories.get, map(_test_id, refs)))
    if None in found:
        groups: Iterable[tuple[tuple[str, str | None], list[float]]] = (
            (
                group,
                [
                    history.fixture_mean
                    for _, history in run
                    if history is not None and history.runs > 0
                ],
            )
            for group, run in groupby(zip(map(_module_cls, refs), found, strict=True), key=_first)
        )
    else:
        # every test has a history (a warm run): each run's measured values sliced out of
        # whole columns, in C (runs >= 0: a measured history is a true ``runs``)
        groups = _measured_groups(refs, found)  # type: ignore[arg-type]
    for (module, cls), values in groups:
        members = modules.get(module)
        if members is None:
            members = modules[module] = []
        members += values
        if cls is not None:
            class_module[cls] = module
            cls_members = classes.get(cls)
            if cls_members is None:
                cls_members = classes[cls] = []
            cls_members += values
    class_costs = {name: _setup_seconds(members) for name, members in classes.items()}
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
        cost = _setup_seconds(members)
        if cost is None or cost - inner.get(name, 0.0) >= AUTO_KEEP_SECONDS:
            kept_modules.add(name)
    return kept_modules, kept_classes


def _measured_groups(
    refs: Sequence[TestRef], found: list[TestHistory]
) -> Iterator[tuple[tuple[str, str | None], list[float]]]:
    """Per run of refs of one (module, class), in order: that group and the fixture means
    of its measured tests (``runs > 0``), in ref order."""
    fixtures = list(map(_FIXTURE_MEAN, found))
    runs = list(map(_RUNS, found))
    start = 0
    for group, run in groupby(map(_module_cls, refs)):
        end = start + len(list(run))
        yield group, list(compress(fixtures[start:end], runs[start:end]))
        start = end


def locality_order(
    refs: Sequence[TestRef],
    key: Callable[[TestRef], SortKey] | Sequence[AnyKey],
    scope: str,
    histories: Mapping[str, TestHistory] | None = None,
    scoped: ScopedGroups | None = None,
) -> list[TestRef]:
    """Order ``refs`` by ``key`` (smaller runs first) within the groups ``scope`` keeps
    (``auto`` reads the groups' measured setup costs from ``histories``, and which groups
    have fixtures of their scope from ``scoped``). ``key``: a function of a ref, or the
    refs' keys themselves, in ``refs``' order."""
    if scope not in ORDER_SCOPES:
        raise ValueError(f"scope must be one of {ORDER_SCOPES}, got {scope!r}")
    keys: Sequence[AnyKey] = list(map(key, refs)) if callable(key) else key
    if scope == "auto":
        modules, classes = auto_sticky(refs, histories or {}, scoped)
        if not modules and not classes:
            return _sorted(refs, keys)
        return _ordered(refs, keys, modules.__contains__, classes.__contains__)
    if scope == "test":
        return _sorted(refs, keys)
    return _ordered(refs, keys, lambda _: scope == "module", lambda _: scope != "test")


def _sorted(refs: Sequence[TestRef], keys: Sequence[AnyKey]) -> list[TestRef]:
    """``refs`` by ``keys`` when nothing is kept together: each test is its own unit (the
    sort is stable: equal keys keep their collection order), unless a test id was
    collected twice (``--keep-duplicates``: those are one unit, :func:`_ordered`)."""
    if len(set(map(_test_id, refs))) != len(refs):
        return _ordered(refs, keys, _never, _never)
    return list(map(refs.__getitem__, sorted(range(len(refs)), key=keys.__getitem__)))


def _never(_: str) -> bool:
    return False


def _ordered(
    refs: Sequence[TestRef],
    keys: Sequence[AnyKey],
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
    units: list[tuple[AnyKey | None, str | None, object]] = []
    groups: dict[str, list[tuple[AnyKey, TestRef]]] = {}
    append = units.append
    # a test id collected twice (``--keep-duplicates``) is one unit, as a named group
    singles_unique = len({ref.test_id for ref in refs}) == len(refs)
    for ref, key in zip(refs, keys, strict=True):
        if module_kept(ref.module):
            name = "\1" + ref.module
        elif ref.cls is not None and class_kept(ref.cls):
            name = ref.cls
        elif singles_unique:
            append((key, None, ref))
            continue
        else:
            name = "\0" + ref.test_id
        members = groups.get(name)
        if members is None:
            members = groups[name] = []
            append((None, name, members))
        members.append((key, ref))
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
    keyed: Sequence[tuple[AnyKey, TestRef]], group_of: Callable[[TestRef], str]
) -> list[TestRef]:
    groups: dict[str, list[tuple[AnyKey, TestRef]]] = {}
    for pair in keyed:
        groups.setdefault(group_of(pair[1]), []).append(pair)
    out: list[TestRef] = []
    for members in sorted(groups.values(), key=lambda members: min(k for k, _ in members)):
        out.extend(ref for _, ref in sorted(members, key=lambda pair: pair[0]))
    return out
