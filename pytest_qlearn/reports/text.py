"""How numbers read in the Markdown and HTML reports (one place, so both say the same)."""

from __future__ import annotations

NA = "n/a"


def number(value: float | None, digits: int = 3) -> str:
    return NA if value is None else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 2) -> str:
    return NA if value is None else f"{value:+.{digits}f}"


def seconds(value: float | None) -> str:
    return NA if value is None else f"{value:.2f} s"


def percent(value: float | None) -> str:
    return NA if value is None else f"{value:.1%}"


def position(value: int | None) -> str:
    return NA if value is None else f"#{value}"


def order_name(used: str) -> str:
    return "qlearn order" if used == "qlearn" else "collection order (observe: qlearn only watched)"


def store(status: str, url: str) -> str:
    """The store's status, naming the store unless the status already does."""
    return status if url in status else f"{status} ({url})"
