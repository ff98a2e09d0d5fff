"""The price table as people edit and read it: which row is in force, the default price that must stay in
force, each model's current, scheduled and past prices, and the models used without a price.

The hot path reads prices through ``billing.pricing``; this module answers the
questions the console and the management API ask about the rows themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import BooleanField, Count, Exists, ExpressionWrapper, Max, Min, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from billing.models import DEFAULT_PRICE_MODEL, ModelPrice, UsageRecord
from billing.periods import Period


def in_force_condition(at: datetime | None = None) -> Q:
    """Rows in force at ``at`` (now): started, and no later row of the same model has started since."""
    at = at or timezone.now()
    superseded = ModelPrice.objects.filter(
        model=OuterRef("model"), effective_from__gt=OuterRef("effective_from"), effective_from__lte=at
    )
    return Q(effective_from__lte=at) & ~Exists(superseded)


def with_in_force(prices: QuerySet, at: datetime | None = None) -> QuerySet:
    """``prices`` annotated with ``in_force``: whether each row is the one its model is priced at now."""
    return prices.annotate(in_force=ExpressionWrapper(in_force_condition(at), output_field=BooleanField()))


def is_in_force(price: ModelPrice, at: datetime | None = None) -> bool:
    return ModelPrice.objects.filter(in_force_condition(at), pk=price.pk).exists()


def unprices_unknown_models(price: ModelPrice, after: ModelPrice | None = None, at: datetime | None = None) -> bool:
    """Whether changing ``price`` into ``after`` (deleting it, if None) leaves no default price in force.

    Without one, models with no price of their own would be priced at the
    hard-coded fallback instead of the table's default.
    """
    at = at or timezone.now()

    def is_default_in_force(row: ModelPrice | None) -> bool:
        return row is not None and row.model == DEFAULT_PRICE_MODEL and row.effective_from <= at

    if not is_default_in_force(price) or is_default_in_force(after):
        return False
    defaults_in_force = ModelPrice.objects.filter(model=DEFAULT_PRICE_MODEL, effective_from__lte=at)
    return not defaults_in_force.exclude(pk=price.pk).exists()


@dataclass
class ModelPrices:
    model: str
    current: ModelPrice | None = None
    scheduled: list[ModelPrice] = field(default_factory=list)  # soonest first
    past: list[ModelPrice] = field(default_factory=list)  # newest first

    @property
    def is_default(self) -> bool:
        return self.model == DEFAULT_PRICE_MODEL


def price_book(now: datetime | None = None) -> list[ModelPrices]:
    """Every priced model, the default first, with its prices split around ``now``."""
    now = now or timezone.now()
    book: dict[str, ModelPrices] = {}
    for row in ModelPrice.objects.order_by("model", "-effective_from"):
        entry = book.setdefault(row.model, ModelPrices(row.model))
        if row.effective_from > now:
            entry.scheduled.insert(0, row)
        elif entry.current is None:
            entry.current = row
        else:
            entry.past.append(row)
    return sorted(book.values(), key=lambda entry: (not entry.is_default, entry.model))


def unpriced_models(period: Period) -> list[dict]:
    """Models requests used in ``period`` that had no price of their own, most used first.

    Each says whether it has a price now (added since) so the page offers "add price" only where needed.
    """
    rows = (
        UsageRecord.objects.filter(default_priced=True, created_at__gte=period.start, created_at__lt=period.end)
        .values("model")
        .annotate(requests=Count("id"), cost_usd=Sum("cost_usd"), last_seen=Max("created_at"))
        .order_by("-requests", "model")
    )
    priced_from = dict(
        ModelPrice.objects.filter(model__in=[row["model"] for row in rows])
        .values("model")
        .annotate(first=Min("effective_from"))
        .values_list("model", "first")
    )
    return [{**row, "priced_from": priced_from.get(row["model"])} for row in rows]
