import time

import pytest
import shop


def test_find_known_product():
    assert shop.find("MUG-01").name == "Coffee mug"


def test_find_unknown_product_raises():
    with pytest.raises(KeyError, match="NOPE"):
        shop.find("NOPE")


def test_negative_price_is_refused():
    with pytest.raises(ValueError):
        shop.Product("BAD", "Broken", -1)


def test_search_is_case_insensitive():
    time.sleep(0.05)  # pretend to hit a search index
    assert [p.sku for p in shop.search("MUG")] == ["MUG-01"]


def test_format_price():
    assert shop.format_price(8_50) == "€8,50"
    assert shop.format_price(12_05) == "€12,05"
