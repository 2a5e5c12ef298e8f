"""locality_order: priorities inside the groups that fixture scope keeps together."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_qlearn.ordering import SCOPES, locality_order
from pytest_qlearn.prioritizer import TestRef


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
    for scope in SCOPES:
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
    for scope in SCOPES:
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
