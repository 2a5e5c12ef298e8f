"""locality_order: priorities inside the groups that fixture scope keeps together."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_qlearn.agents.prioritizer import TestRef
from pytest_qlearn.engine.history import TestHistory
from pytest_qlearn.names import ORDER_SCOPES
from pytest_qlearn.ordering import (
    AUTO_KEEP_SECONDS,
    ScopedGroups,
    locality_order,
    shared_setup_seconds,
)


def ref(test_id: str, index: int) -> TestRef:
    module, _, rest = test_id.partition("::")
    parts = rest.split("::")
    cls = f"{module}::{parts[0]}" if len(parts) > 1 else None
    return TestRef(test_id, module, cls, index)


REFS = [
    ref("a.py::test_1", 0),
    ref("a.py::TestK::test_2", 1),
    ref("a.py::TestK::test_3", 2),
    ref("a.py::test_4", 3),
    ref("b.py::test_5", 4),
    ref("b.py::TestL::test_6", 5),
    ref("b.py::TestL::test_7", 6),
]
# smaller runs first
URGENCY = {
    "b.py::TestL::test_7": 0,
    "a.py::TestK::test_3": 1,
    "a.py::test_1": 2,
    "b.py::test_5": 3,
    "a.py::test_4": 4,
    "a.py::TestK::test_2": 5,
    "b.py::TestL::test_6": 6,
}


def key(r: TestRef) -> tuple[float, ...]:
    return (URGENCY[r.test_id],)


def names(refs: list[TestRef]) -> list[str]:
    return [r.test_id.rsplit("::", 1)[1] for r in refs]


def test_module_scope_keeps_modules_and_classes_together() -> None:
    # module b holds the most urgent test (test_7: 0), module a's best is test_3 (1)
    # inside b: class TestL (best 0) before test_5 (3); inside TestL: test_7, test_6
    # inside a: TestK (best 1: test_3 then test_2), test_1 (2), test_4 (4)
    order = locality_order(REFS, key, "module")
    assert names(order) == ["test_7", "test_6", "test_5", "test_3", "test_2", "test_1", "test_4"]


def test_class_scope_lets_modules_interleave() -> None:
    # groups: TestL (0), TestK (1), test_1 (2), test_5 (3), test_4 (4)
    order = locality_order(REFS, key, "class")
    assert names(order) == ["test_7", "test_6", "test_3", "test_2", "test_1", "test_5", "test_4"]
    modules = [r.module for r in order]
    assert modules == ["b.py", "b.py", "a.py", "a.py", "a.py", "b.py", "a.py"]


def test_test_scope_is_a_plain_sort() -> None:
    order = locality_order(REFS, key, "test")
    assert names(order) == ["test_7", "test_3", "test_1", "test_5", "test_4", "test_2", "test_6"]
    assert order == sorted(REFS, key=key)


def test_input_order_does_not_matter() -> None:
    for scope in ORDER_SCOPES:
        assert locality_order(list(reversed(REFS)), key, scope) == locality_order(REFS, key, scope)


def test_module_scope_ties_are_broken_by_the_key_not_by_luck() -> None:
    # the key carries the collection index, so equal priorities keep collection order
    refs = [ref("a.py::test_x", 0), ref("b.py::test_y", 1), ref("a.py::test_z", 2)]
    order = locality_order(refs, lambda r: (0.0, r.index), "module")
    assert names(order) == ["test_x", "test_z", "test_y"]


def test_unknown_scope_is_rejected() -> None:
    with pytest.raises(ValueError, match="function"):
        locality_order(REFS, key, "function")


def test_empty_input() -> None:
    for scope in ORDER_SCOPES:
        assert locality_order([], key, scope) == []


def _contiguous(labels: list[str]) -> bool:
    seen: set[str] = set()
    previous = None
    for label in labels:
        if label != previous:
            if label in seen:
                return False
            seen.add(label)
            previous = label
    return True


_test = st.tuples(
    st.sampled_from(["a.py", "b.py", "c.py"]),
    st.sampled_from([None, "TestA", "TestB"]),
    st.integers(min_value=0, max_value=5),
)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.lists(_test, max_size=25))
def test_module_scope_properties(tests: list[tuple[str, str | None, int]]) -> None:
    refs = []
    for index, (module, cls, _) in enumerate(tests):
        test_id = f"{module}::{cls}::t{index}" if cls else f"{module}::t{index}"
        refs.append(TestRef(test_id, module, f"{module}::{cls}" if cls else None, index))
    urgency = {r.test_id: (float(t[2]), float(r.index)) for r, t in zip(refs, tests, strict=True)}
    order = locality_order(refs, lambda r: urgency[r.test_id], "module")

    assert sorted(order, key=lambda r: r.index) == refs  # a permutation
    assert _contiguous([r.module for r in order])
    assert _contiguous([r.cls for r in order if r.cls is not None])
    if refs:
        assert urgency[order[0].test_id] == min(urgency.values())
    # modules appear in the order of their most urgent member
    firsts: list[tuple[float, float]] = []
    for position, r in enumerate(order):
        if position == 0 or r.module != order[position - 1].module:
            firsts.append(min(urgency[x.test_id] for x in refs if x.module == r.module))
    assert firsts == sorted(firsts)


# -- auto: keep a group together only where its measured setup makes splitting costly -------
def measured(fixtures: dict[str, float]) -> dict[str, TestHistory]:
    return {
        test_id: TestHistory(test_id, runs=3, fixture_mean=seconds)
        for test_id, seconds in fixtures.items()
    }


def test_shared_setup_is_what_members_spend_beyond_a_typical_member() -> None:
    assert shared_setup_seconds([]) is None
    assert shared_setup_seconds([TestHistory("new")]) is None  # nothing measured yet
    histories = measured({"a": 0.001, "b": 0.001, "c": 0.5, "d": 0.002}).values()
    # typical (lower quartile) 0.001: c spends 0.499 more, less 5 ms of timer noise; d's
    # extra millisecond is noise
    assert shared_setup_seconds(histories) == pytest.approx(0.494)
    # many members with noisy setups add up to nothing
    noisy = measured({f"t{i}": 0.001 + 0.004 * (i % 2) for i in range(200)}).values()
    assert shared_setup_seconds(noisy) == 0.0


def test_auto_with_cheap_setups_orders_like_test_scope() -> None:
    cheap = measured({r.test_id: 0.001 for r in REFS})
    assert locality_order(REFS, key, "auto", cheap) == locality_order(REFS, key, "test")


def test_auto_keeps_a_module_with_costly_setup_together_and_frees_the_rest() -> None:
    fixtures = {r.test_id: 0.001 for r in REFS}
    fixtures["b.py::test_5"] = 2 * AUTO_KEEP_SECONDS  # b.py's module fixture: paid again per split
    order = locality_order(REFS, key, "auto", measured(fixtures))
    # b.py holds the most urgent test: it runs first, whole; inside it the cheap class TestL
    # is free: test_7 (0), test_5 (3), test_6 (6)
    assert names(order) == ["test_7", "test_5", "test_6", "test_3", "test_1", "test_4", "test_2"]


def test_auto_keeps_a_costly_class_together_inside_a_cheap_module() -> None:
    fixtures = {r.test_id: 0.001 for r in REFS}
    fixtures["a.py::TestK::test_2"] = 2 * AUTO_KEEP_SECONDS  # TestK's class fixture
    order = locality_order(REFS, key, "auto", measured(fixtures))
    # TestK (best: test_3, 1) runs whole; everything else moves freely
    assert names(order) == ["test_7", "test_3", "test_2", "test_1", "test_5", "test_4", "test_6"]


def test_auto_keeps_groups_nothing_was_measured_for() -> None:
    # no history at all (a new suite, or an empty store): like module scope
    assert locality_order(REFS, key, "auto", {}) == locality_order(REFS, key, "module")


def test_auto_moves_groups_without_a_fixture_of_their_scope_whatever_their_setup_costs() -> None:
    fixtures = {r.test_id: 0.001 for r in REFS}
    fixtures["b.py::test_5"] = 2 * AUTO_KEEP_SECONDS  # a slow *function*-scoped setup
    none_scoped = ScopedGroups(frozenset(), frozenset())
    free = locality_order(REFS, key, "auto", measured(fixtures), none_scoped)
    assert free == locality_order(REFS, key, "test")
    # the same costs, with b.py using a module-scoped fixture: b.py stays together
    b_scoped = ScopedGroups(frozenset({"b.py"}), frozenset())
    kept = locality_order(REFS, key, "auto", measured(fixtures), b_scoped)
    assert names(kept) == ["test_7", "test_5", "test_6", "test_3", "test_1", "test_4", "test_2"]
    # nothing measured, no scoped fixture: free from the first run
    assert locality_order(REFS, key, "auto", {}, none_scoped) == locality_order(REFS, key, "test")


def test_a_test_collected_twice_runs_as_one_unit() -> None:
    """``--keep-duplicates``: both copies of a test id run together, where the first would."""
    refs = [TestRef("t.py::a", "t.py", None, 0), TestRef("t.py::b", "t.py", None, 1)]
    refs.append(TestRef("t.py::a", "t.py", None, 2))
    order = locality_order(refs, lambda ref: (float(ref.index),), "test")
    assert [ref.index for ref in order] == [0, 2, 1]
