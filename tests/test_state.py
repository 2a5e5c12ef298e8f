"""State encoding: bucket labels, the canonical text, the SHA-256 state hash, readable text."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_qlearn.engine.state import Buckets, StateEncoder, canonical, readable

# -- Buckets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (-5, "<1"),
        (0, "<1"),
        (1, "1-2"),
        (2, "1-2"),
        (3, "3-5"),
        (5, "3-5"),
        (6, "6+"),
        (1000, "6+"),
    ],
)
def test_integer_bucket_labels(value: int, label: str) -> None:
    assert Buckets((1, 3, 6)).label(value) == label


@pytest.mark.parametrize(
    ("value", "label"),
    [(0, "<1"), (1, "1"), (2, "2"), (3, "3-5"), (10, "6-10"), (11, "11-20"), (21, "21+")],
)
def test_integer_bucket_of_width_one_is_labelled_by_its_single_value(
    value: int, label: str
) -> None:
    assert Buckets((1, 2, 3, 6, 11, 21)).label(value) == label


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (0.0, "<0.001"),
        (0.0009, "<0.001"),
        (0.001, "0.001-0.05"),  # edges belong to the interval above them
        (0.049, "0.001-0.05"),
        (0.05, "0.05-0.2"),
        (0.25, "0.2-0.5"),
        (0.5, "0.5+"),
        (1.0, "0.5+"),
    ],
)
def test_float_bucket_labels(value: float, label: str) -> None:
    assert Buckets((0.001, 0.05, 0.2, 0.5), integer=False).label(value) == label


def test_float_labels_do_not_subtract_one() -> None:
    buckets = Buckets((1, 3, 6), integer=False)
    assert [buckets.label(v) for v in (0.5, 1.5, 3.0, 5.9, 6.0)] == [
        "<1",
        "1-3",
        "3-6",
        "3-6",
        "6+",
    ]


@pytest.mark.parametrize("edges", [(), (3, 1), (1, 1), (1, 2, 2, 3), (0.5, 0.2)])
def test_bad_edges_are_rejected(edges: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Buckets(edges)


# -- canonical text -----------------------------------------------------------------------


def test_canonical_is_length_prefixed_and_sorted() -> None:
    text = canonical("agent", {"b": "xy", "a": 7, "c": True, "d": False})
    assert text == "agent;a=1:7;b=2:xy;c=1:1;d=1:0"


def test_canonical_is_independent_of_insertion_order() -> None:
    first = canonical("agent", {"x": 1, "y": "z", "w": True})
    second = canonical("agent", {"w": True, "y": "z", "x": 1})
    assert first == second


def test_canonical_includes_the_agent() -> None:
    assert canonical("a", {"x": "1"}) != canonical("b", {"x": "1"})


@pytest.mark.parametrize(
    ("left", "right"),
    [
        # a naive "name=value;" join would make these equal
        ({"a": "1;b=2"}, {"a": "1", "b": "2"}),
        ({"a": "x;b=1:y"}, {"a": "x", "b": "y"}),
        ({"a": "", "b": "=1:"}, {"a": "=1:", "b": ""}),
        ({"a": "line\nb=1:2"}, {"a": "line", "b": "2"}),
        ({"a": "é"}, {"a": "e\u0301"}),  # NFC vs NFD: different text, different state
        ({"a": "ab", "b": "c"}, {"a": "a", "b": "bc"}),
        ({"a": "2:xy"}, {"a": "xy"}),
    ],
)
def test_tricky_values_do_not_collide(left: dict[str, str], right: dict[str, str]) -> None:
    assert canonical("agent", left) != canonical("agent", right)
    left_key = StateEncoder("agent", tuple(left)).encode(left).key
    right_key = StateEncoder("agent", tuple(right)).encode(right).key
    assert left_key != right_key


_names = st.sampled_from(["a", "b", "last", "test", "since_fail"])
_values = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_features = st.dictionaries(_names, _values, max_size=5)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(_features, _features)
def test_canonical_equal_exactly_when_features_equal(
    left: dict[str, str], right: dict[str, str]
) -> None:
    assert (canonical("agent", left) == canonical("agent", right)) == (left == right)


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(_features)
def test_canonical_ignores_the_order_of_the_mapping(features: dict[str, str]) -> None:
    reversed_features = dict(reversed(list(features.items())))
    assert canonical("agent", features) == canonical("agent", reversed_features)


# -- hashing ------------------------------------------------------------------------------

PINNED_FEATURES = {"test": "m.py::test_a", "last": "PPF", "since_fail": "1"}
# Written by hand from the documented format: agent, then sorted name=len:value, ';'-joined.
PINNED_TEXT = "prioritizer:test;last=3:PPF;since_fail=1:1;test=12:m.py::test_a"
# hashlib.sha256(PINNED_TEXT.encode("utf-8")).hexdigest(), pinned so stored Q-tables keep
# meaning the same states across versions.
PINNED_KEY = "f2186c8b1d81641588ebab7d8e41470ad30de40bae760e1da2a1a6df80dadf1b"


def test_pinned_digest_is_the_sha256_of_the_pinned_text() -> None:
    assert hashlib.sha256(PINNED_TEXT.encode("utf-8")).hexdigest() == PINNED_KEY


def test_state_hash_is_stable() -> None:
    encoder = StateEncoder("prioritizer:test", ("test", "last", "since_fail"))
    assert canonical("prioritizer:test", PINNED_FEATURES) == PINNED_TEXT
    state = encoder.encode(PINNED_FEATURES)
    assert state.key == PINNED_KEY
    # a fresh encoder without a memo gives the same key
    fresh = StateEncoder("prioritizer:test", ("since_fail", "last", "test"), memoise=False)
    assert fresh.encode(dict(PINNED_FEATURES)).key == PINNED_KEY


@pytest.mark.parametrize("memoise", [True, False])
def test_encoder_gives_the_same_state_for_reordered_features(memoise: bool) -> None:
    encoder = StateEncoder("prioritizer:test", ("test", "last", "since_fail"), memoise=memoise)
    first = encoder.encode(PINNED_FEATURES)
    second = encoder.encode(dict(reversed(list(PINNED_FEATURES.items()))))
    assert first == second
    different = encoder.encode({**PINNED_FEATURES, "last": "PPP"})
    assert different.key != first.key


def test_encoder_memo_does_not_confuse_values_across_features() -> None:
    encoder = StateEncoder("agent", ("a", "b"))
    first = encoder.encode({"a": "x", "b": "y"})
    second = encoder.encode({"b": "x", "a": "y"})
    assert encoder.encode({"b": "y", "a": "x"}) == first
    assert first.key != second.key
    assert first.key == hashlib.sha256(b"agent;a=1:x;b=1:y").hexdigest()
    assert second.key == hashlib.sha256(b"agent;a=1:y;b=1:x").hexdigest()


def test_state_key_is_a_sha256_hex_digest() -> None:
    key = StateEncoder("agent", ("x",)).encode({"x": 1}).key
    assert len(key) == 64
    assert set(key) <= set("0123456789abcdef")


# -- readable text and missing features ---------------------------------------------------


def test_readable_text_sorted_name_value_pairs() -> None:
    state = StateEncoder("prioritizer:test", ("test", "last", "since_fail")).encode(PINNED_FEATURES)
    assert state.readable == "last=PPF since_fail=1 test=m.py::test_a"
    assert readable({"b": True, "a": 3}) == "a=3 b=True"


def test_missing_feature_raises_key_error_naming_it() -> None:
    encoder = StateEncoder("prioritizer:test", ("test", "last", "since_fail"))
    with pytest.raises(KeyError) as info:
        encoder.encode({"test": "m.py::test_a", "last": "PPF"})
    message = str(info.value)
    assert "since_fail" in message
    assert "prioritizer:test" in message


def test_missing_feature_is_detected_even_when_the_count_matches() -> None:
    encoder = StateEncoder("agent", ("a", "b"))
    with pytest.raises(KeyError, match="'b'"):
        encoder.encode({"a": "1", "c": "2"})


def test_unknown_extra_feature_is_rejected() -> None:
    # the encoder encodes exactly its feature names
    encoder = StateEncoder("agent", ("a",))
    with pytest.raises(KeyError, match="'z'"):
        encoder.encode({"a": "1", "z": "2"})
