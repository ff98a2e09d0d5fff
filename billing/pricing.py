"""Prices in memory for the hot path, and the arithmetic of cost.

Cost is kept as integer nanodollars (1e-9 USD) everywhere it is summed, so
counters in Redis never drift the way floats would.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from billing.models import DEFAULT_PRICE_MODEL, NANOS_PER_USD, ModelPrice
from gateway_project.snapshots import RefreshingTable

# Used only if the price table has no "default" row at all.
FALLBACK_PRICE = (Decimal("10.00"), Decimal("30.00"))


@dataclass(frozen=True, slots=True)
class Price:
    model: str
    input_nanos_per_token: Decimal
    output_nanos_per_token: Decimal


def _per_token(per_million: Decimal) -> Decimal:
    return per_million * NANOS_PER_USD / 1_000_000


def _load_prices() -> dict[str, Price]:
    return {
        row.model: Price(row.model, _per_token(row.input_per_million), _per_token(row.output_per_million))
        for row in ModelPrice.objects.all()
    }


prices = RefreshingTable("prices", _load_prices, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"])


def price_for(table: dict[str, Price], model: str) -> Price:
    """The model's price, else the table's default, else a conservative fallback."""
    price = table.get(model) or table.get(DEFAULT_PRICE_MODEL)
    if price is None:
        price = Price(DEFAULT_PRICE_MODEL, _per_token(FALLBACK_PRICE[0]), _per_token(FALLBACK_PRICE[1]))
    return price


def cost_nanos(price: Price, input_tokens: int, output_tokens: int) -> int:
    return int(
        (price.input_nanos_per_token * input_tokens + price.output_nanos_per_token * output_tokens).to_integral_value()
    )


def nanos_to_usd(nanos: int) -> Decimal:
    return (Decimal(nanos) / NANOS_PER_USD).quantize(Decimal("0.000000001"))
