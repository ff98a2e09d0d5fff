"""A budget's past windows: what each one spent, read from the daily rollups (every window is whole local days)."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

from billing.budgets import in_scope, rule_of
from billing.models import Budget, BudgetAlert, UsageRollup
from billing.periods import previous
from billing.rollups import ensure_fresh


def budget_history(budget: Budget, count: int = 6) -> list[dict]:
    """The ``count`` windows before the current one, newest first, with their spend and alerts."""
    rule = rule_of(budget)
    window = rule.window()
    windows = []
    for _ in range(count):
        window = previous(rule.period, window, days=rule.period_days, anchor=rule.anchor)
        windows.append(window)
    if not windows:
        return []
    first_day, last_day = windows[-1].days[0], windows[0].days[1]
    ensure_fresh(since=first_day, until=last_day)  # past days never rolled up (no beat in the embedded profile)
    daily = dict(
        in_scope(UsageRollup.objects.all(), rule.scope, rule.target_id)
        .filter(day__gte=first_day, day__lte=last_day)
        .values("day")
        .annotate(cost=Sum("cost_usd"))
        .values_list("day", "cost")
    )
    alerts: dict[str, list[int]] = {}
    for key, percent in BudgetAlert.objects.filter(budget=budget, period_key__in=[w.key for w in windows]).values_list(
        "period_key", "threshold_percent"
    ):
        alerts.setdefault(key, []).append(percent)
    history = []
    for w in windows:
        start, end = w.days
        spent = sum((cost for day, cost in daily.items() if start <= day <= end), Decimal(0))
        limit = budget.limit_usd
        history.append(
            {
                "period_key": w.key,
                "start": w.start,
                "end": w.end,
                "spent_usd": spent.quantize(Decimal("0.000001")),
                "limit_usd": limit,
                "percent": int(spent / limit * 100) if limit > 0 else (100 if spent else 0),
                "alerts": sorted(alerts.get(w.key, [])),
            }
        )
    return history
