"""Monthly budgets as the hot path sees them: a limit and a spend counter per client."""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from billing.models import NANOS_PER_USD, Budget, UsageRecord
from gateway_project.hotstate import BudgetCheck, HotState
from gateway_project.snapshots import SnapshotCache

NO_LIMIT = -1


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    client_id: int
    month: str  # YYYYMM
    limit_nanos: int  # NO_LIMIT when the client has no budget
    spent_nanos_in_db: int  # seeds the shared counter when it is empty
    seconds_left: int


def current_month(now: datetime | None = None) -> tuple[str, datetime, datetime]:
    """The month key and its [start, end) in the gateway's time zone."""
    now = timezone.localtime(now)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    end = start + timezone.timedelta(days=days)
    return start.strftime("%Y%m"), start, end


def spent_in_db(client_id: int, start: datetime, end: datetime) -> int:
    total = UsageRecord.objects.filter(client_id=client_id, created_at__gte=start, created_at__lt=end).aggregate(
        total=Sum("cost_usd")
    )["total"]
    return int((total or 0) * NANOS_PER_USD)


def _load(ident: str) -> dict:
    client_id, month = ident.split(":")
    month_key, start, end = current_month()
    budget = Budget.objects.filter(client_id=int(client_id)).first()
    return {
        "client_id": int(client_id),
        "month": month,
        "limit_nanos": budget.limit_nanos if budget else NO_LIMIT,
        "spent_nanos_in_db": spent_in_db(int(client_id), start, end) if month == month_key else 0,
        "seconds_left": int((end - timezone.now()).total_seconds()),
    }


budget_snapshots = SnapshotCache(
    "budgetsnap",
    _load,
    lambda raw: BudgetSnapshot(**raw),
    local_seconds=lambda: settings.GATEWAY["KEY_CACHE_SECONDS"],
    shared_seconds=60,
)


_month_cache: tuple[str, float] = ("", 0.0)


def _month_now() -> str:
    """The current month key, recomputed only when a month ends (the hot path asks every request)."""
    global _month_cache
    month, ends_at = _month_cache
    if time.time() >= ends_at:
        month, _, end = current_month()
        _month_cache = (month, end.timestamp())
    return month


async def budget_for(client_id: int) -> BudgetSnapshot:
    return await budget_snapshots.get(f"{client_id}:{_month_now()}")


def budget_check(
    store: HotState, budget: BudgetSnapshot, *, reserve: int = 0, reservation: str = "", hold_seconds: float = 0
) -> BudgetCheck:
    """The spend counter for this client and month (kept a day past the month's end), reserving ``reserve``."""
    return BudgetCheck(
        key=store.key("spend", budget.client_id, budget.month),
        limit=budget.limit_nanos,
        seed=budget.spent_nanos_in_db,
        ttl_seconds=max(60, budget.seconds_left + 86_400),
        reserve=reserve,
        reservation=reservation,
        hold_ms=int(hold_seconds * 1000),
    )


def forget_budget(client_id: int) -> None:
    month, _, _ = current_month()
    budget_snapshots.forget(f"{client_id}:{month}")


# Share of a monthly limit at which the console shows a budget in red.
ALERT_SHARE = Decimal("0.8")
