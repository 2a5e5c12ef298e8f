import pytest
import shop


def test_new_cart_is_empty():
    cart = shop.Cart()
    assert cart.item_count == 0
    assert cart.subtotal_cents() == 0


def test_add_accumulates_quantity():
    cart = shop.Cart()
    cart.add("MUG-01")
    cart.add("MUG-01", 2)
    assert cart.lines == {"MUG-01": 3}


def test_add_unknown_product_is_refused():
    with pytest.raises(KeyError):
        shop.Cart().add("NOPE")


def test_remove_line():
    cart = shop.Cart()
    cart.add("TEE-M")
    cart.remove("TEE-M")
    assert cart.item_count == 0


def test_subtotal_of_mixed_cart():
    cart = shop.Cart()
    cart.add("MUG-01", 2)
    cart.add("STK-05")
    assert cart.subtotal_cents() == 2 * 8_50 + 3_00


def test_total_with_coupon_and_shipping():
    cart = shop.Cart()
    cart.add("TEE-M")
    assert cart.total_cents("DE", coupon_percent=10) == 17_10 + 4_90
