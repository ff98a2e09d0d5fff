"""Usage records and the monthly usage report a client sees at /v1/usage."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, Sum
from django.utils import timezone

from billing.models import UsageRecord
from billing.periods import MONTHLY, period_of
from billing.pricing import nanos_to_usd
from gateway_project.writer import writer


def record_usage(
    *,
    request_id,
    client_id,
    key_id,
    agent,
    model,
    input_tokens,
    output_tokens,
    cost_nanos,
    cost_center_id=None,
    default_priced=False,
) -> dict:
    """Queue one usage row for the buffered writer."""
    row = dict(
        request_id=request_id,
        created_at=timezone.now(),
        client_id=client_id,
        api_key_id=key_id,
        cost_center_id=cost_center_id,
        agent=agent,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=nanos_to_usd(cost_nanos),
        default_priced=default_priced,
    )
    writer.add(UsageRecord, row)
    return row


def _money(value) -> str:
    return str((value or Decimal(0)).quantize(Decimal("0.000001")))


def monthly_usage(client_id: int) -> dict:
    """This month's spend and tokens for a client, in total and by agent and by model."""
    month = period_of(MONTHLY)
    start, end = month.start, month.end
    rows = UsageRecord.objects.filter(client_id=client_id, created_at__gte=start, created_at__lt=end)
    sums = {
        "requests": Count("id"),
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
        "cost": Sum("cost_usd"),
    }

    def grouped(field):
        return [
            {
                field: row[field],
                "requests": row["requests"],
                "input_tokens": row["input_tokens"] or 0,
                "output_tokens": row["output_tokens"] or 0,
                "cost_usd": _money(row["cost"]),
            }
            for row in rows.values(field).annotate(**sums).order_by("-cost", field)
        ]

    total = rows.aggregate(**sums)
    spent = total["cost"] or Decimal(0)
    return {
        "object": "usage",
        "period": {"month": f"{start:%Y-%m}", "start": start.isoformat(), "end": end.isoformat()},
        "requests": total["requests"],
        "input_tokens": total["input_tokens"] or 0,
        "output_tokens": total["output_tokens"] or 0,
        "cost_usd": _money(spent),
        "by_agent": grouped("agent"),
        "by_model": grouped("model"),
    }


def spend_summary(now=None) -> dict:
    """Spend across all clients today and this month, for the dashboard."""
    now = timezone.localtime(now or timezone.now())
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = period_of(MONTHLY, now).start

    def totals(since):
        return UsageRecord.objects.filter(created_at__gte=since).aggregate(
            cost=Sum("cost_usd"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens")
        )

    day, month = totals(today), totals(month_start)
    return {
        "spend_today": day["cost"] or Decimal(0),
        "spend_month": month["cost"] or Decimal(0),
        "tokens_month": (month["input_tokens"] or 0) + (month["output_tokens"] or 0),
    }


def usage_by_key(client_id: int) -> dict[int, dict]:
    """This month's requests, tokens and cost of each of a client's keys."""
    month = period_of(MONTHLY)
    start, end = month.start, month.end
    rows = (
        UsageRecord.objects.filter(client_id=client_id, created_at__gte=start, created_at__lt=end)
        .values("api_key_id")
        .annotate(requests=Count("id"), input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"),
                  cost=Sum("cost_usd"))
    )  # fmt: skip
    return {
        row["api_key_id"]: {
            "requests": row["requests"],
            "tokens": (row["input_tokens"] or 0) + (row["output_tokens"] or 0),
            "cost_usd": _money(row["cost"]),
        }
        for row in rows
    }


def daily_spend(client_id: int, days: int = 30, now=None) -> list[dict]:
    """The client's spend per day for the last ``days`` days, oldest first (for the trend chart)."""
    from django.db.models.functions import TruncDate

    today = timezone.localdate(now or timezone.now())
    start = today - timezone.timedelta(days=days - 1)
    totals = {
        row["day"]: row["cost"]
        for row in UsageRecord.objects.filter(client_id=client_id, created_at__date__gte=start)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(cost=Sum("cost_usd"))
    }
    return [
        {"day": (start + timezone.timedelta(days=i)).isoformat(),
         "cost": float(totals.get(start + timezone.timedelta(days=i)) or 0)}
        for i in range(days)
    ]  # fmt: skip
