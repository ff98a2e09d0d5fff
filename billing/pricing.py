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


@dataclass(frozen=True, slots=True)
class Quote:
    """What a request is reserved at, decided once at admission: the owner of "which model is priced".

    ``model`` is the model sent upstream; ``price`` is, per token, the dearest price the
    answer could be charged at (the model sent, and every model the upstream may answer
    with instead), so a settlement can exceed its reservation only when an upstream
    answers with a model nobody knew it could.
    """

    model: str
    price: Price

    def worst_case(self, input_tokens: int, output_tokens: int) -> int:
        return cost_nanos(self.price, input_tokens, output_tokens)


@dataclass(frozen=True, slots=True)
class Charge:
    """What a finished request costs, and whether that is more than its quote covered."""

    model: str
    nanos: int
    default_priced: bool
    over_quote: bool


def _dearest(prices_: list[Price], model: str) -> Price:
    return Price(
        model,
        max(p.input_nanos_per_token for p in prices_),
        max(p.output_nanos_per_token for p in prices_),
    )


def quote(table: dict[str, PriceHistory], sent_model: str, may_answer=(), *, any_model: bool = False) -> Quote:
    """The quote for a request sending ``sent_model``, whose answer may also come from ``may_answer``.

    ``any_model``: the upstream chooses the model itself (nothing is asked of it), so
    every price in the table is a possible charge and the dearest is reserved.
    """
    candidates = [price_for(table, sent_model), *(price_for(table, model) for model in may_answer)]
    if any_model:
        moment = time.time()
        candidates += [price for history in table.values() if (price := history.at(moment)) is not None]
    return Quote(sent_model, _dearest(candidates, sent_model))


def charge(table: dict[str, PriceHistory], quote_: Quote, reported_model: str, input_tokens: int, output_tokens: int):
    """Price what the upstream reported: its model's own price, else (no model, or a name without a price of its
    own, such as a dated snapshot) the price of the model that was sent."""
    price, model = _answered_price(table, quote_, reported_model)
    nanos = cost_nanos(price, input_tokens, output_tokens)
    return Charge(model, nanos, price.is_default and model != price.model, _dearer(price, quote_))


def priced_over(table: dict[str, PriceHistory], quote_: Quote, reported_model: str) -> bool:
    """Whether an answer from ``reported_model`` is charged at a price above what ``quote_`` reserved."""
    return _dearer(_answered_price(table, quote_, reported_model)[0], quote_)


def _answered_price(table, quote_: Quote, reported_model: str) -> tuple[Price, str]:
    price = price_for(table, reported_model) if reported_model else None
    if price is None or price.is_default:
        return price_for(table, quote_.model), quote_.model or reported_model
    return price, reported_model


def _dearer(price: Price, quote_: Quote) -> bool:
    return (
        price.input_nanos_per_token > quote_.price.input_nanos_per_token
        or price.output_nanos_per_token > quote_.price.output_nanos_per_token
    )
