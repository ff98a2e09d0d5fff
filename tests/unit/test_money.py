"""Money as the console shows it."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_project.templatetags.money import usd


@pytest.mark.parametrize(
    ("value", "places", "shown"),
    [
        (Decimal("100000"), None, "$100,000.00"),
        (Decimal("100000.00"), None, "$100,000.00"),
        (Decimal("1234567.5"), None, "$1,234,567.50"),
        (Decimal("0.075000"), None, "$0.075"),
        (Decimal("0.000060000"), None, "$0.00006"),
        (Decimal("0.0000000012"), None, "$0.000000001"),
        (12.5, 4, "$12.5000"),
        ("1234.56789", "4", "$1,234.5679"),
        (Decimal("-3"), None, "-$3.00"),
        (Decimal("-0.00001"), 2, "$0.00"),
        (0, None, "$0.00"),
        (None, None, "\u2013"),
        ("", None, "\u2013"),
        ("n/a", None, "n/a"),
        (Decimal("NaN"), None, "NaN"),
    ],
)
def test_money_has_thousands_separators_and_the_decimals_it_needs(value, places, shown):
    assert usd(value, places) == shown


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=9, allow_nan=False))
def test_the_shown_amount_reads_back_as_the_amount_rounded(value):
    shown = usd(value, 9)
    number = Decimal(shown.replace("$", "").replace(",", ""))
    assert number == value.quantize(Decimal("0.000000001"))
    whole = shown.lstrip("-$").split(".")[0]
    assert all(len(group) == 3 for group in whole.split(",")[1:])
