"""Budget alerts after the hot path: the alert row made once, its e-mail, its webhook, and the sweep's findings.

The unique (budget, period, threshold) constraint is what makes an alert once:
however many gateway processes, task runs or sweeps try, one insert wins, and only
the call that made the row delivers it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse
from django.utils import timezone

from billing import alerts
from billing.budgets import rule_of
from billing.models import NANOS_PER_USD, Budget, BudgetAlert
from billing.periods import Period
from billing.status import budget_status
from gateway_project import webhooks

log = logging.getLogger("gateway.alerts")

EVENT_TYPE = "budget.threshold_crossed"
MICRODOLLARS = Decimal("0.000001")
MODE_EFFECT = {
    Budget.HARD: "hard: requests the rest of the budget cannot cover are refused with 402 until the period ends",
    Budget.SOFT: "soft: requests are still allowed; this alert is the only consequence",
}


@dataclass(frozen=True, slots=True)
class Crossing:
    """A threshold a budget's spend passed in one of its windows."""

    period: Period
    threshold_percent: int
    spent_nanos: int


def record(budget: Budget, crossing: Crossing) -> BudgetAlert | None:
    """Make the alert row of ``crossing``; return it only when this call made it (else another one did)."""
    alert, created = BudgetAlert.objects.get_or_create(
        budget=budget,
        period_key=crossing.period.key,
        threshold_percent=crossing.threshold_percent,
        defaults={
            "period_start": crossing.period.start,
            "period_end": crossing.period.end,
            "spent_usd": Decimal(crossing.spent_nanos) / NANOS_PER_USD,
            "limit_usd": budget.limit_usd,
            "email_status": BudgetAlert.PENDING if budget.alert_addresses else BudgetAlert.NONE,
            "webhook_status": BudgetAlert.PENDING if budget.alert_webhook_url else BudgetAlert.NONE,
        },
    )
    return alert if created else None


def missed_crossings(budget: Budget) -> list[Crossing]:
    """Thresholds the spend in ``budget``'s current window (from the usage rows) passed that have no alert yet."""
    status = budget_status(budget)
    period = Period(status["period_key"], status["period_start"], status["period_end"])
    spent = int(status["spent_usd"] * NANOS_PER_USD)
    made = set(
        BudgetAlert.objects.filter(budget=budget, period_key=period.key).values_list("threshold_percent", flat=True)
    )
    return [Crossing(period, p, spent) for p in alerts.crossed(rule_of(budget), 0, spent) if p not in made]


def console_link(budget: Budget) -> str:
    """The budget's page in the console, where its alerts are listed too."""
    return settings.GATEWAY_CONSOLE_URL + reverse("console:budget", args=[budget.pk])


def money(value: Decimal) -> str:
    """Dollars with cents, or with up to four decimals for amounts under a dollar ($0.0114)."""
    if value == 0 or abs(value) >= 1:
        return f"${value:,.2f}"
    text = f"{value:.4f}".rstrip("0")
    return "$" + (text if len(text.split(".")[1]) >= 2 else f"{value:.2f}")


def _percent_of_limit(alert: BudgetAlert) -> str:
    return f"{alert.spent_usd * 100 / alert.limit_usd:.0f}%" if alert.limit_usd else "all"


def _local(moment) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


def subject(alert: BudgetAlert) -> str:
    label = rule_of(alert.budget).label
    amounts = f"{money(alert.spent_usd)} of {money(alert.limit_usd)}"
    if alert.threshold_percent < alerts.LIMIT_PERCENT:
        return f"[Agent Gateway] {label} reached {alert.threshold_percent}% ({amounts})"
    effect = "requests are refused" if alert.budget.mode == Budget.HARD else "requests are still allowed"
    return f"[Agent Gateway] {label} reached its limit, {effect} ({amounts})"


def body(alert: BudgetAlert) -> str:
    budget = alert.budget
    reached = (
        f"reached {alert.threshold_percent}% of its limit"
        if alert.threshold_percent < alerts.LIMIT_PERCENT
        else "reached its limit"
    )
    lines = [
        f"{rule_of(budget).label} {reached}.",
        "",
        f"Budget:    {budget.name or budget}",
        f"Scope:     {budget.describe_target()}",
        f"Period:    {budget.get_period_display()}, {_local(alert.period_start)} to {_local(alert.period_end)}",
        f"Spent:     {money(alert.spent_usd)} of {money(alert.limit_usd)} ({_percent_of_limit(alert)})",
        f"Threshold: {alert.threshold_percent}%",
        f"Mode:      {MODE_EFFECT[budget.mode]}",
        "",
        f"In the console: {console_link(budget)}",
        "",
        "This address is on the budget's alert list. Each threshold alerts once per period.",
    ]
    return "\n".join(lines) + "\n"


def send_email(alert: BudgetAlert) -> str:
    """E-mail ``alert`` to the budget's addresses and record how that went."""
    addresses = alert.budget.alert_addresses
    if not addresses:
        status = BudgetAlert.NONE
    else:
        try:
            send_mail(subject(alert), body(alert), None, addresses)
            status = BudgetAlert.DELIVERED
        except Exception:  # any mail backend's failure: recorded on the alert, never lost in a retry loop
            log.exception("could not e-mail alert %s of budget %s", alert.pk, alert.budget_id)
            status = BudgetAlert.FAILED
    BudgetAlert.objects.filter(pk=alert.pk).update(email_status=status)
    alert.email_status = status
    return status


def event_id(alert: BudgetAlert) -> str:
    return f"budget-alert-{alert.pk}"


def payload(alert: BudgetAlert) -> dict:
    """The webhook's JSON: the same for every delivery attempt of one alert."""
    budget = alert.budget
    target = budget.target
    return {
        "type": EVENT_TYPE,
        "id": event_id(alert),
        "alert_id": alert.pk,
        "budget_id": budget.pk,
        "budget_name": budget.name,
        "scope": budget.scope,
        "target": budget.describe_target(),
        "target_id": target.pk if target is not None else None,
        "period": budget.period,
        "period_key": alert.period_key,
        "period_start": alert.period_start.isoformat(),
        "period_end": alert.period_end.isoformat(),
        "threshold_percent": alert.threshold_percent,
        "spent_usd": str(alert.spent_usd.quantize(MICRODOLLARS)),
        "limit_usd": str(alert.limit_usd),
        "mode": budget.mode,
        "created_at": alert.created_at.isoformat(),
        "console_url": console_link(budget),
    }


def post_webhook(alert: BudgetAlert) -> None:
    """POST ``alert`` to its budget's webhook, signed with that webhook's own secret; raise
    ``webhooks.DeliveryError`` unless it answers 2xx."""
    budget = alert.budget
    webhooks.post_signed(budget.alert_webhook_url, payload(alert), event_id(alert), secret=budget.alert_webhook_secret)
