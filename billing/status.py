"""Where each budget stands in its current window: what the console, the API and /v1/usage show."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from billing.budgets import counter_key, rule_of, spent_in_window
from billing.models import NANOS_PER_USD, Budget
from billing.periods import Period
from gateway_project.hotstate import get_hot_state

CENTS = Decimal("0.01")


def _usd(nanos: int) -> Decimal:
    return (Decimal(nanos) / NANOS_PER_USD).quantize(Decimal("0.000001"))


def budget_status(budget: Budget, at: datetime | None = None) -> dict:
    """Spend, remaining and share of ``budget`` in the window containing ``at`` (now).

    The current window's spend is the gateway's own counter when it has one (what
    enforcement sees, up to the last request, without summing rows); otherwise, and
    for past windows, it is counted from the usage rows.
    """
    rule = rule_of(budget)
    period: Period = rule.window_at(at) if at else rule.window()
    spent = None
    if at is None:
        store = get_hot_state()
        spent = store.get_int_now(counter_key(store, rule, period))
    if spent is None:
        spent = spent_in_window(rule.scope, rule.target_id, period)
    limit = budget.limit_nanos
    share = Decimal(spent) / limit if limit > 0 else (Decimal(1) if spent or budget.mode == Budget.HARD else Decimal(0))
    return {
        "budget": budget,
        "id": budget.pk,
        "scope": budget.scope,
        "target": budget.describe_target(),
        "period": budget.period,
        "period_key": period.key,
        "period_start": period.start,
        "period_end": period.end,
        "mode": budget.mode,
        "limit_usd": budget.limit_usd,
        "spent_usd": _usd(spent),
        "remaining_usd": _usd(max(0, limit - spent)),
        "percent": int(share * 100),
        "bar_width": min(100, int(share * 100)),
        "alerting": share * 100 >= budget.alert_percent,
        "exhausted": spent >= limit,
    }


def statuses_for_key(key_id: int, client_id: int, cost_center_id: int | None) -> list[dict]:
    """Every active budget a key's requests must fit, with where each stands."""
    from django.db.models import Q

    applies = (
        Q(scope=Budget.ORGANIZATION)
        | Q(scope=Budget.CLIENT, client_id=client_id)
        | Q(scope=Budget.KEY, api_key_id=key_id)
    )
    if cost_center_id is not None:
        applies |= Q(scope=Budget.COST_CENTER, cost_center_id=cost_center_id)
    budgets = Budget.objects.filter(applies, is_active=True).select_related("client", "cost_center", "api_key")
    return [budget_status(b) for b in budgets]


def budget_report(key_id: int, client_id: int, cost_center_id: int | None) -> list[dict]:
    """The budgets a key must fit, as JSON: scope, window, limit, spent and remaining."""
    return [
        {
            "id": s["id"],
            "scope": s["scope"],
            "target": s["target"],
            "period": s["period"],
            "period_start": s["period_start"].isoformat(),
            "period_end": s["period_end"].isoformat(),
            "mode": s["mode"],
            "limit_usd": str(s["limit_usd"]),
            "spent_usd": str(s["spent_usd"]),
            "remaining_usd": str(s["remaining_usd"]),
            "percent": s["percent"],
        }
        for s in statuses_for_key(key_id, client_id, cost_center_id)
    ]
