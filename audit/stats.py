"""Traffic figures for the console's dashboard, read from the request log."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q, Sum
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
    }
