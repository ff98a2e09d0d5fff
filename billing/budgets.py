"""Budgets as the hot path sees them: every active budget in memory, and the spend counters of their windows.

A request must fit every budget that applies to it: the organization's, its
client's cost center's, its client's and its key's. Each budget's spend in its
current window is one counter in the hot state, keyed by budget and window, so a
new window starts from zero by itself and the old one's record stays in the
database. A counter that is missing (a new window, a Redis restart) is seeded
from the usage rows before it is used, never guessed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, datetime

from django.conf import settings
from django.db.models import Sum

from billing.models import NANOS_PER_USD, Budget, UsageRecord
from billing.periods import Period, clock, period_of
from gateway_project.hotstate import BudgetCheck, HotState
from gateway_project.snapshots import RefreshingTable

NO_LIMIT = -1
# Counters outlive their window by a day, so late settles still land and reports can read them.
COUNTER_GRACE_SECONDS = 86_400


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """An immutable copy of an active budget."""

    budget_id: int
    scope: str
    target_id: int | None
    period: str
    period_days: int | None
    anchor: date | None
    limit_nanos: int
    hard: bool
    alert_percent: int
    label: str

    def window(self) -> Period:
        return clock.current(self.period, self.period_days, self.anchor)

    def window_at(self, at: datetime) -> Period:
        return period_of(self.period, at, days=self.period_days, anchor=self.anchor)


def rule_of(budget: Budget) -> BudgetRule:
    return BudgetRule(
        budget_id=budget.pk,
        scope=budget.scope,
        target_id=getattr(budget, f"{Budget.TARGET_FIELDS[budget.scope]}_id") if budget.scope != Budget.ORGANIZATION
        else None,
        period=budget.period,
        period_days=budget.period_days,
        anchor=budget.period_anchor,
        limit_nanos=budget.limit_nanos,
        hard=budget.mode == Budget.HARD,
        alert_percent=budget.alert_percent,
        label=f"{budget.describe_target()}'s {budget.get_period_display().split(' ')[0].lower()} budget",
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BudgetTable:
    organization: tuple[BudgetRule, ...] = ()
    by_target: dict[tuple[str, int], tuple[BudgetRule, ...]] = field(default_factory=dict)

    def applying_to(self, key_id: int, client_id: int, cost_center_id: int | None) -> tuple[BudgetRule, ...]:
        """The budgets a request of this key must fit, widest scope first."""
        found = self.organization
        for scope, target in (
            (Budget.COST_CENTER, cost_center_id),
            (Budget.CLIENT, client_id),
            (Budget.KEY, key_id),
        ):
            if target is not None:
                found += self.by_target.get((scope, target), ())
        return found


def _load_budgets() -> BudgetTable:
    rules = [
        rule_of(b) for b in Budget.objects.filter(is_active=True).select_related("client", "cost_center", "api_key")
    ]
    by_target: dict[tuple[str, int], tuple[BudgetRule, ...]] = {}
    for rule in rules:
        if rule.scope != Budget.ORGANIZATION:
            by_target[(rule.scope, rule.target_id)] = (*by_target.get((rule.scope, rule.target_id), ()), rule)
    return BudgetTable(tuple(r for r in rules if r.scope == Budget.ORGANIZATION), by_target)


budget_table = RefreshingTable("budgets", _load_budgets, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"])


def counter_key(store: HotState, rule: BudgetRule, period: Period) -> str:
    return store.key("spend", rule.budget_id, period.key)


_counter_keys: dict[tuple[int, str], str] = {}


def budget_checks(
    store: HotState, rules: tuple[BudgetRule, ...], *, reserve: int = 0, reservation: str = "", hold_seconds: float = 0
) -> tuple[list[BudgetCheck], list[Period]]:
    """One check per budget in its current window; only hard budgets refuse and hold reservations."""
    checks, periods = [], []
    now = time.time()
    hold_ms = int(hold_seconds * 1000)
    for rule in rules:
        period, ends = clock.current_and_end(rule.period, rule.period_days, rule.anchor)
        key = _counter_keys.get((rule.budget_id, period.key))
        if key is None:
            if len(_counter_keys) > 100_000:
                _counter_keys.clear()
            key = _counter_keys[(rule.budget_id, period.key)] = counter_key(store, rule, period)
        hard = rule.hard
        checks.append(
            BudgetCheck(
                key,
                rule.limit_nanos if hard else NO_LIMIT,
                int(ends - now) + COUNTER_GRACE_SECONDS,
                reserve if hard else 0,
                reservation if hard else "",
                hold_ms,
            )
        )
        periods.append(period)
    return checks, periods


def in_scope(rows, scope: str, target_id: int | None):
    """Narrow usage or rollup ``rows`` to what a budget of ``scope`` on ``target_id`` counts."""
    if scope == Budget.ORGANIZATION:
        return rows
    return rows.filter(**{f"{Budget.TARGET_FIELDS[scope]}_id": target_id})


def usage_in_scope(scope: str, target_id: int | None):
    """The usage rows a budget of ``scope`` counts."""
    return in_scope(UsageRecord.objects.all(), scope, target_id)


def spent_in_window(scope: str, target_id: int | None, period: Period) -> int:
    """Nanodollars spent in ``period`` by what a budget of ``scope`` covers, counted from the usage rows."""
    total = (
        usage_in_scope(scope, target_id)
        .filter(created_at__gte=period.start, created_at__lt=period.end)
        .aggregate(total=Sum("cost_usd"))["total"]
    )
    return int((total or 0) * NANOS_PER_USD)


def seeds_for(rules: list[BudgetRule], periods: list[Period]) -> list[int]:
    """Spend so far of each budget's window, to fill counters that are empty."""
    return [spent_in_window(r.scope, r.target_id, p) for r, p in zip(rules, periods, strict=True)]


def forget_budgets() -> None:
    """Make this process re-read the budgets on its next request (others do within their refresh)."""
    budget_table.expire()
