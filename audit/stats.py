"""Traffic figures for the console's dashboard, read from the request log."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone

from audit.models import AuditRecord

LATENCY_SAMPLE = 10_000


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(share * len(values)))]


def traffic_summary(now=None) -> dict:
    """Requests in the last minute, today's error rate and latency, top clients and agents today."""
    now = now or timezone.now()
    today = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    todays = AuditRecord.objects.filter(created_at__gte=today)
    totals = todays.aggregate(
        requests=Count("id"),
        errors=Count("id", filter=Q(status__gte=400)),
        input_tokens=Sum("input_tokens"),
        output_tokens=Sum("output_tokens"),
    )
    latencies = list(todays.order_by("-created_at").values_list("latency_ms", flat=True)[:LATENCY_SAMPLE])
    return {
        "requests_last_minute": AuditRecord.objects.filter(created_at__gte=now - timedelta(minutes=1)).count(),
        "requests_today": totals["requests"],
        "error_rate": (totals["errors"] / totals["requests"]) if totals["requests"] else 0.0,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "tokens_today": (totals["input_tokens"] or 0) + (totals["output_tokens"] or 0),
        "top_clients": list(
            todays.exclude(client_slug="").values("client_slug").annotate(n=Count("id")).order_by("-n")[:5]
        ),
        "top_agents": list(todays.exclude(agent="").values("agent").annotate(n=Count("id")).order_by("-n")[:5]),
        "recent": list(AuditRecord.objects.order_by("-created_at", "-id")[:20]),
        "per_minute": requests_per_minute(now),
    }


def requests_per_minute(now, minutes: int = 60) -> list[dict]:
    """Requests and errors in each of the last ``minutes`` minutes, oldest first (for the chart)."""
    start = (now - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    counts = {
        row["minute"]: row
        for row in AuditRecord.objects.filter(created_at__gte=start)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("id"), errors=Count("id", filter=Q(status__gte=400)))
    }
    series = []
    for i in range(minutes):
        minute = start + timedelta(minutes=i)
        row = counts.get(minute, {})
        series.append({"minute": minute.strftime("%H:%M"), "requests": row.get("n", 0), "errors": row.get("errors", 0)})
    return series
