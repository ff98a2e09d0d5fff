"""Budget alerts as the hot path raises them: find the thresholds a settle crossed and hand them to Celery.

The gateway only notices; the ``record_budget_alert`` task makes the alert row
(unique per budget, window and threshold, so an alert is made once however many
processes notice) and delivers it. Each process also remembers what it has
handed over, so a budget that keeps refusing costs one task, not one per request.
"""

from __future__ import annotations

import asyncio
import logging

from billing.budgets import BudgetRule
from billing.periods import Period

log = logging.getLogger("gateway.alerts")

LIMIT_PERCENT = 100
_noticed: set[tuple[int, str, int]] = set()


def thresholds(rule: BudgetRule) -> list[int]:
    return sorted({rule.alert_percent, LIMIT_PERCENT})


def crossed(rule: BudgetRule, before: int, after: int) -> list[int]:
    """The thresholds (percent of the limit) that spend moving from ``before`` to ``after`` crossed."""
    if rule.limit_nanos <= 0:
        return [LIMIT_PERCENT] if after > 0 and before <= 0 else []
    return [p for p in thresholds(rule) if before * 100 < rule.limit_nanos * p <= after * 100]


def notice(rule: BudgetRule, period: Period, percent: int, spent_nanos: int) -> None:
    """Hand one crossing to Celery, once per process; never blocks the event loop or fails the request."""
    seen = (rule.budget_id, period.key, percent)
    if seen in _noticed:
        return
    if len(_noticed) > 100_000:
        _noticed.clear()
    _noticed.add(seen)
    args = dict(
        budget_id=rule.budget_id,
        period_key=period.key,
        period_start=period.start.isoformat(),
        period_end=period.end.isoformat(),
        threshold_percent=percent,
        spent_nanos=spent_nanos,
    )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _enqueue(args)
        return
    loop.run_in_executor(None, _enqueue, args)


def _enqueue(args: dict) -> None:
    try:
        from billing.tasks import record_budget_alert

        record_budget_alert.delay(**args)
    except Exception:
        # The beat sweep (``sweep_budget_alerts``) finds the crossing again from the database.
        _noticed.discard((args["budget_id"], args["period_key"], args["threshold_percent"]))
        log.exception("could not queue the alert of budget %s", args["budget_id"])


def forget_noticed() -> None:
    _noticed.clear()
