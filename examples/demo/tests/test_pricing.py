import time

import pytest
import shop


def test_line_total_single_item():
    assert shop.line_total(shop.find("BAG-01"), 1) == 12_50


def test_line_total_rejects_zero_quantity():
    with pytest.raises(ValueError):
        shop.line_total(shop.find("BAG-01"), 0)


def test_no_bulk_discount_below_ten():
    assert shop.line_total(shop.find("STK-05"), 9) == 27_00


def test_bulk_discount_above_ten():
    time.sleep(0.05)  # pretend to ask the pricing service
    assert shop.line_total(shop.find("STK-05"), 20) == 54_00


def test_coupon_bounds():
    with pytest.raises(ValueError):
        shop.apply_coupon(10_00, 101)


def test_bulk_discount_starts_at_ten():
    # ten stickers: 30,00 minus 10 %
    assert shop.line_total(shop.find("STK-05"), 10) == 27_00
