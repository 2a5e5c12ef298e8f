"""State encoding: bucketed features, a canonical SHA-256 state hash, a readable twin."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import sha256
from typing import NamedTuple

FeatureValue = str | int | bool


class State(NamedTuple):
    """An encoded state: ``key`` is the SHA-256 hash stored in ``q_values``; ``readable`` is
    the same features as text, kept beside the hash so people can inspect the Q-table.

    The readable text is built on demand only: most states of a run are already in the store
    with their text, and building it for every test on every run would cost more than the
    hashing. A tuple of plain values, so the garbage collector stops tracking it.
    """

    key: str
    text: str = ""  # readable text given up front (else built from the features)
    names: tuple[str, ...] = ()  # sorted feature names ...
    values: tuple[FeatureValue, ...] = ()  # ... and their values in that order

    @property
    def readable(self) -> str:
        if self.text:
            return self.text
        return " ".join(
            f"{name}={value}" for name, value in zip(self.names, self.values, strict=True)
        )


@dataclass(frozen=True)
class Buckets:
    """Maps a number to the label of the half-open interval it falls in.

    ``Buckets((1, 3, 6))`` labels values as ``<1``, ``1-2``, ``3-5`` and ``6+`` for integers;
    for floats the labels read ``<1``, ``1-3``, ``3-6``, ``6+``.
    """

    edges: tuple[float, ...]
    integer: bool = True
    _labels: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        if list(self.edges) != sorted(set(self.edges)) or not self.edges:
            raise ValueError(f"bucket edges must be strictly increasing, got {self.edges}")
        # labels are computed once: label() runs for every test on every run
        labels = tuple(self._make_label(i) for i in range(len(self.edges) + 1))
        object.__setattr__(self, "_labels", labels)

    def label(self, value: float) -> str:
        return self._labels[bisect.bisect_right(self.edges, value)]

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label, in order: ``labels[bisect_right(edges, value)]`` is ``label(value)``
        (for loops that label many values without a call per value)."""
        return self._labels

    def _make_label(self, index: int) -> str:
        if index == 0:
            return f"<{self.edges[0]:g}"
        if index == len(self.edges):
            return f"{self.edges[-1]:g}+"
        low, high = self.edges[index - 1], self.edges[index]
        if self.integer:
            top = high - 1
            return f"{low:g}" if top == low else f"{low:g}-{top:g}"
        return f"{low:g}-{high:g}"


def canonical(agent: str, features: Mapping[str, FeatureValue]) -> str:
    """One unambiguous text for an agent's features: sorted keys, length-prefixed values.

    Length prefixes make any value (test ids with ``;``, ``=`` or newlines) safe without
    escaping, so equal features always give equal text and different ones never collide.
    """
    parts = [agent]
    for name in sorted(features):
        value = features[name]
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        parts.append(f"{name}={len(text)}:{text}")
    return ";".join(parts)


def readable(features: Mapping[str, FeatureValue]) -> str:
    """Features as ``name=value`` pairs for people (not guaranteed unambiguous)."""
    return " ".join(f"{name}={features[name]}" for name in sorted(features))


class StateEncoder:
    """Encodes an agent's features (exactly ``feature_names``) into a :class:`State`.

    With ``memoise`` (for states many tests share) encodings are cached; states unique to
    one test are not worth caching.
    """

    def __init__(self, agent: str, feature_names: Sequence[str], *, memoise: bool = True) -> None:
        self.agent = agent
        self.feature_names = tuple(sorted(feature_names))
        # ";name=" per feature: the canonical text is agent + these with length-prefixed values
        self._prefixes = tuple(f";{name}=" for name in self.feature_names)
        self._cache: dict[tuple[FeatureValue, ...], State] | None = {} if memoise else None

    def encode(self, features: Mapping[str, FeatureValue]) -> State:
        if len(features) != len(self.feature_names):
            extra = sorted(set(features) - set(self.feature_names))
            missing = sorted(set(self.feature_names) - set(features))
            raise KeyError(
                f"state of agent {self.agent!r}: missing features {missing}, unknown {extra}"
            )
        try:
            values = tuple([features[name] for name in self.feature_names])
        except KeyError as exc:
            raise KeyError(f"state of agent {self.agent!r} lacks feature {exc}") from None
        return self.encode_values(values)

    def encode_values(self, values: tuple[FeatureValue, ...]) -> State:
        """Like :meth:`encode`, for values already in ``feature_names`` order (the hot path:
        no mapping to build and check for every test)."""
        if len(values) != len(self.feature_names):
            raise KeyError(
                f"state of agent {self.agent!r}: {len(values)} values for features "
                f"{list(self.feature_names)}"
            )
        cache = self._cache
        if cache is not None:
            state = cache.get(values)
            if state is not None:
                return state
        state = self._encode(values)
        if cache is not None and len(cache) < 100_000:
            cache[values] = state
        return state

    def _encode(self, values: tuple[FeatureValue, ...]) -> State:
        # the same text as canonical(): names are sorted, values length-prefixed
        texts = [
            value
            if value.__class__ is str
            else (("1" if value else "0") if value.__class__ is bool else str(value))
            for value in values
        ]
        canonical_text = self.agent + "".join(
            [
                f"{prefix}{len(text)}:{text}"
                for prefix, text in zip(self._prefixes, texts, strict=True)
            ]
        )
        # surrogatepass: a lone surrogate in a test id ('\\udc80') hashes like other text
        key = sha256(canonical_text.encode("utf-8", "surrogatepass")).hexdigest()
        return State(key, "", self.feature_names, values)
