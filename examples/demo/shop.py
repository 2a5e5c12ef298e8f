"""A tiny shop: products, a cart, prices and shipping. It has one bug (see README.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

BULK_QUANTITY = 10  # ten or more of one product: 10 % off that line
BULK_PERCENT = 10
FREE_SHIPPING_FROM_CENTS = 50_00
SHIPPING_CENTS = {"DE": 4_90, "FR": 5_90, "US": 12_00}


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int

    def __post_init__(self) -> None:
        if self.price_cents < 0:
            raise ValueError(f"price of {self.sku} cannot be negative")


CATALOG = {
    p.sku: p
    for p in (
        Product("MUG-01", "Coffee mug", 8_50),
        Product("TEE-M", "T-shirt (M)", 19_00),
        Product("STK-05", "Sticker pack", 3_00),
        Product("BAG-01", "Tote bag", 12_50),
    )
}


def find(sku: str) -> Product:
    try:
        return CATALOG[sku]
    except KeyError:
        raise KeyError(f"unknown product {sku!r}") from None


def search(text: str) -> list[Product]:
    needle = text.casefold()
    return sorted((p for p in CATALOG.values() if needle in p.name.casefold()), key=lambda p: p.sku)


def format_price(cents: int) -> str:
    return f"€{cents // 100},{cents % 100:02d}"


def line_total(product: Product, quantity: int) -> int:
    """Price of ``quantity`` of one product, with the bulk discount when it applies."""
    if quantity < 1:
        raise ValueError("quantity must be at least 1")
    total = product.price_cents * quantity
    if quantity > BULK_QUANTITY:  # BUG: the discount should start *at* ten (>=)
        total -= total * BULK_PERCENT // 100
    return total


def apply_coupon(total_cents: int, percent: int) -> int:
    if not 0 <= percent <= 100:
        raise ValueError("a coupon is between 0 and 100 percent")
    return total_cents - total_cents * percent // 100


def shipping_cents(subtotal_cents: int, country: str) -> int:
    if subtotal_cents >= FREE_SHIPPING_FROM_CENTS:
        return 0
    try:
        return SHIPPING_CENTS[country]
    except KeyError:
        raise ValueError(f"we do not ship to {country!r}") from None


@dataclass
class Cart:
    lines: dict[str, int] = field(default_factory=dict)

    def add(self, sku: str, quantity: int = 1) -> None:
        find(sku)  # unknown products are refused
        if quantity < 1:
            raise ValueError("quantity must be at least 1")
        self.lines[sku] = self.lines.get(sku, 0) + quantity

    def remove(self, sku: str) -> None:
        self.lines.pop(sku, None)

    @property
    def item_count(self) -> int:
        return sum(self.lines.values())

    def subtotal_cents(self) -> int:
        return sum(line_total(find(sku), qty) for sku, qty in self.lines.items())

    def total_cents(self, country: str, coupon_percent: int = 0) -> int:
        subtotal = apply_coupon(self.subtotal_cents(), coupon_percent)
        return subtotal + shipping_cents(subtotal, country)
