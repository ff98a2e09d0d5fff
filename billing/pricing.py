"""Prices in memory for the hot path, and the arithmetic of cost.

Cost is kept as integer nanodollars (1e-9 USD) everywhere it is summed, so
counters in Redis never drift the way floats would. Each model may have several
prices with effective dates; a request is priced at the one in force when it is
settled, so a price change never reprices past usage.
"""

from __future__ import annotations

import bisect
import time
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

    @property
    def is_default(self) -> bool:
        return self.model == DEFAULT_PRICE_MODEL


@dataclass(frozen=True, slots=True)
class PriceHistory:
    """A model's prices, oldest first, with the moments (epoch seconds) they take effect."""

    starts: tuple[float, ...]
    prices: tuple[Price, ...]

    def at(self, moment: float) -> Price | None:
        index = bisect.bisect_right(self.starts, moment) - 1
        return self.prices[index] if index >= 0 else None


def _per_token(per_million: Decimal) -> Decimal:
    return per_million * NANOS_PER_USD / 1_000_000


def _load_prices() -> dict[str, PriceHistory]:
    rows: dict[str, list[ModelPrice]] = {}
    for row in ModelPrice.objects.order_by("model", "effective_from"):
        rows.setdefault(row.model, []).append(row)
    return {
        model: PriceHistory(
            tuple(r.effective_from.timestamp() for r in history),
            tuple(Price(model, _per_token(r.input_per_million), _per_token(r.output_per_million)) for r in history),
        )
        for model, history in rows.items()
    }


prices = RefreshingTable("prices", _load_prices, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"])


def price_for(table: dict[str, PriceHistory], model: str, at: float | None = None) -> Price:
    """The model's price in force at ``at`` (now), else the default's, else a conservative fallback.

    A price whose ``model`` is the default means the model had none of its own: usage
    priced so is flagged.
    """
    moment = time.time() if at is None else at
    history = table.get(model)
    price = history.at(moment) if history is not None else None
    if price is None:
        default = table.get(DEFAULT_PRICE_MODEL)
        price = default.at(moment) if default is not None else None
    if price is None:
        price = Price(DEFAULT_PRICE_MODEL, _per_token(FALLBACK_PRICE[0]), _per_token(FALLBACK_PRICE[1]))
    return price


def cost_nanos(price: Price, input_tokens: int, output_tokens: int) -> int:
    return int(
        (price.input_nanos_per_token * input_tokens + price.output_nanos_per_token * output_tokens).to_integral_value()
    )


def nanos_to_usd(nanos: int) -> Decimal:
    return (Decimal(nanos) / NANOS_PER_USD).quantize(Decimal("0.000000001"))
