import pytest
import shop


def test_shipping_to_germany():
    assert shop.shipping_cents(10_00, "DE") == 4_90


def test_free_shipping_from_fifty_euros():
    assert shop.shipping_cents(50_00, "US") == 0


def test_unknown_country_is_refused():
    with pytest.raises(ValueError, match="XX"):
        shop.shipping_cents(10_00, "XX")


def test_bulk_order_of_mugs_ships_free():
    cart = shop.Cart()
    cart.add("MUG-01", 10)
    # 10 mugs at 8,50 with the bulk discount: 76,50, which ships free
    assert cart.total_cents("FR") == 76_50
