"""Money in the console: ``{{ value|usd }}`` is "$100,000.00", with thousands separators everywhere.

Loaded as a template builtin (settings ``TEMPLATES``), so no page needs ``{% load %}``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import template

register = template.Library()

NOTHING = "\u2013"  # the en dash the console's tables show for an empty cell
MAX_PLACES = 9  # nanodollars: the finest the gateway meters


@register.filter
def usd(value, places=None) -> str:
    """``value`` in US dollars: "$1,234.50"; "-$3.00" below zero; a dash for nothing.

    ``places`` fixes the decimals shown (``usd:4`` for a spend that is often small); without it a value shows
    two, or as many as it has (a price of $0.075 per million tokens stays $0.075), up to nine.
    """
    if value is None or value == "":
        return NOTHING
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return str(value)
    if not number.is_finite():
        return str(value)
    if places is None:
        exponent = number.normalize().as_tuple().exponent
        shown = min(max(2, -exponent if isinstance(exponent, int) else 2), MAX_PLACES)
    else:
        shown = int(places)
    text = f"{abs(number):,.{shown}f}"
    return f"-${text}" if number < 0 and text.strip("0.,") else f"${text}"
