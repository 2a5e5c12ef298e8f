"""State encoding: bucketed features, a canonical SHA-256 state hash, a readable twin."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FeatureValue = str | int | bool


@dataclass(frozen=True)
class State:
    """An encoded state: ``key`` is the SHA-256 hash stored in ``q_values``; ``readable`` is
    the same features as text, kept beside the hash so people can inspect the Q-table."""

    key: str
    readable: str


@dataclass(frozen=True)
class Buckets:
    """Maps a number to the label of the half-open interval it falls in.

    ``Buckets((1, 3, 6))`` labels values as ``<1``, ``1-2``, ``3-5`` and ``6+`` for integers;
    for floats the labels read ``<1``, ``1-3``, ``3-6``, ``6+``.
    """

    edges: tuple[float, ...]
    integer: bool = True

    def __post_init__(self) -> None:
        if list(self.edges) != sorted(set(self.edges)) or not self.edges:
            raise ValueError(f"bucket edges must be strictly increasing, got {self.edges}")

    def label(self, value: float) -> str:
        index = bisect.bisect_right(self.edges, value)
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
        cache = self._cache
        if cache is not None:
            state = cache.get(values)
            if state is not None:
                return state
        text = canonical(self.agent, features)
        state = State(hashlib.sha256(text.encode("utf-8")).hexdigest(), readable(features))
        if cache is not None and len(cache) < 100_000:
            cache[values] = state
        return state
