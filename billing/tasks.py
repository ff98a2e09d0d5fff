"""Billing's background work: make and deliver budget alerts, sweep for missed ones, roll usage up.

Tasks take ids and plain values, re-fetch what they need, do nothing when it is gone,
and may run twice: the alert row's unique constraint decides who delivers, and a
webhook is only sent while its alert is still pending.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime

from celery import shared_task
from celery.exceptions import Retry
from django.conf import settings
from django.db.models import F

from billing import alert_delivery as delivery
from billing.models import Budget, BudgetAlert
from billing.periods import Period
from gateway_project.webhooks import DeliveryError, Refused

log = logging.getLogger("gateway.alerts")

_BUDGET_RELATED = ("client", "cost_center", "api_key", "api_key__client")


@shared_task(ignore_result=True)
def record_budget_alert(
    *, budget_id: int, period_key: str, period_start: str, period_end: str, threshold_percent: int, spent_nanos: int
) -> int | None:
    """Make the alert of a crossing the gateway noticed, once; return its id when this run made it."""
    budget = Budget.objects.select_related(*_BUDGET_RELATED).filter(pk=budget_id).first()
    if budget is None:
        return None
    period = Period(period_key, datetime.fromisoformat(period_start), datetime.fromisoformat(period_end))
    alert = _raise_alert(budget, delivery.Crossing(period, threshold_percent, spent_nanos))
    return alert.pk if alert else None


@shared_task(ignore_result=True)
def sweep_budget_alerts() -> int:
    """Make the alerts of crossings the gateway did not hand over (a lost task, a restart); return how many."""
    made = 0
    for budget in Budget.objects.filter(is_active=True).select_related(*_BUDGET_RELATED):
        for crossing in delivery.missed_crossings(budget):
            made += _raise_alert(budget, crossing) is not None
    return made


def _raise_alert(budget: Budget, crossing: delivery.Crossing) -> BudgetAlert | None:
    """Record the alert; only the call that made the row e-mails it and queues its webhook."""
    alert = delivery.record(budget, crossing)
    if alert is None:
        return None
    delivery.send_email(alert)
    if alert.webhook_status == BudgetAlert.PENDING:
        try:
            deliver_alert_webhook.delay(alert.pk)
        except Exception:  # the broker is down: the alert stays pending, visible in the console
            log.exception("could not queue the webhook of alert %s", alert.pk)
    return alert


def backoff_seconds(attempts: int) -> float:
    """Wait before the next attempt: exponential in the attempts so far, with jitter so retries spread out."""
    base, cap = settings.GATEWAY_WEBHOOK_BACKOFF_SECONDS, settings.GATEWAY_WEBHOOK_BACKOFF_MAX_SECONDS
    ceiling = min(cap, base * 2 ** (attempts - 1))
    return random.uniform(ceiling / 2, ceiling)


@shared_task(bind=True, ignore_result=True)
def deliver_alert_webhook(self, alert_id: int) -> str | Retry | None:
    """POST a pending alert to its budget's webhook; retry with backoff until it answers 2xx or attempts run out."""
    alert = (
        BudgetAlert.objects.select_related("budget", *(f"budget__{f}" for f in _BUDGET_RELATED))
        .filter(pk=alert_id)
        .first()
    )
    if alert is None or alert.webhook_status != BudgetAlert.PENDING:
        return None  # gone, or already delivered or given up by an earlier run
    rows = BudgetAlert.objects.filter(pk=alert_id)
    if not alert.budget.alert_webhook_url:
        rows.update(webhook_status=BudgetAlert.NONE)
        return BudgetAlert.NONE
    rows.update(webhook_attempts=F("webhook_attempts") + 1)
    attempts = rows.values_list("webhook_attempts", flat=True).first() or 0
    try:
        delivery.post_webhook(alert)
    except Refused as refused:  # the URL, or what its name resolves to now, is not one the gateway calls
        error = str(refused)[: BudgetAlert._meta.get_field("webhook_error").max_length]
        rows.update(webhook_status=BudgetAlert.FAILED, webhook_error=error)
        log.warning("did not deliver the webhook of alert %s: %s", alert_id, refused)
        return BudgetAlert.FAILED
    except DeliveryError as exc:
        error = str(exc)[: BudgetAlert._meta.get_field("webhook_error").max_length]
        if attempts >= settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS:
            rows.update(webhook_status=BudgetAlert.FAILED, webhook_error=error)
            log.warning("gave up on the webhook of alert %s after %s attempts: %s", alert_id, attempts, error)
            return BudgetAlert.FAILED
        rows.update(webhook_error=error)
        # Attempts are counted on the row, so a re-queued task cannot try more often; Celery's count is a backstop.
        # Run eagerly (the embedded profile) the retry is returned, not raised, and apply() runs it at once.
        return self.retry(
            countdown=backoff_seconds(attempts),
            max_retries=settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS,
            exc=exc,
            throw=not self.request.is_eager,
        )
    rows.update(webhook_status=BudgetAlert.DELIVERED, webhook_error="")
    return BudgetAlert.DELIVERED


@shared_task(ignore_result=True)
def rollup_usage():
    """Rebuild the daily usage rollups of the recent days (reports read those, not the raw rows)."""
    from billing.rollups import roll_up_recent

    return roll_up_recent()
