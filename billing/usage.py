"""Usage records, and the usage report a client sees at /v1/usage (live to the last request)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import parse_qs

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.models import UsageRecord, UsageRollup
from billing.periods import DAILY, MONTHLY, WEEKLY, period_of
from billing.rollups import complete_days, day_window
from billing.rows import usage_row
from gateway_project.writer import writer


def record_usage(**facts) -> dict:
    """Queue one usage row for the buffered writer, built by ``billing.rows.usage_row`` (valid for every column)."""
    row = usage_row(**facts)
    writer.add(UsageRecord, row)
    return row


def _money(value) -> str:
    return str((value or Decimal(0)).quantize(Decimal("0.000001")))


WINDOWS = {"day": DAILY, "week": WEEKLY, "month": MONTHLY}
BUCKETS = ("day", "week", "month")
MAX_RANGE_DAYS = 366
METRICS = ("requests", "input_tokens", "output_tokens", "cost_usd", "default_priced_requests")


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Which local days a usage report covers, and how to break it down over time."""

    kind: str  # "day", "week" or "month" (the current one), or "range"
    since: date
    until: date
    key: str = ""  # the current window's period key, e.g. m202612
    group_by: str | None = None  # "day", "week" or "month": a row per bucket

    def describe(self) -> dict:
        start, end = day_window(self.since)[0], day_window(self.until)[1]
        period = {"kind": self.kind, "since": self.since.isoformat(), "until": self.until.isoformat()}
        if self.key:
            period["key"] = self.key
        if self.kind == "month":
            period["month"] = f"{self.since:%Y-%m}"
        return {**period, "start": start.isoformat(), "end": end.isoformat()}


def current_window(kind: str = "month", group_by: str | None = None) -> UsageQuery:
    """The day, week or month we are in, in the gateway's time zone."""
    period = period_of(WINDOWS[kind])
    first, last = period.days
    return UsageQuery(kind, first, last, period.key, group_by)


def usage_query(query_string: str) -> UsageQuery:
    """The report a /v1/usage query asks for: ``period=day|week|month`` (default month) or ``since=&until=``.

    ``group_by=day|week|month`` adds a row per bucket. Raises ValueError with a
    message for the caller when a value is not understood.
    """
    params = {name: values[-1].strip() for name, values in parse_qs(query_string, keep_blank_values=True).items()}
    group_by = params.get("group_by") or None
    if group_by is not None and group_by not in BUCKETS:
        raise ValueError(f"group_by must be one of {', '.join(BUCKETS)}, not “{group_by}”.")
    since, until = _date_param(params, "since"), _date_param(params, "until")
    if since is None and until is None:
        kind = params.get("period") or "month"
        if kind not in WINDOWS:
            raise ValueError(f"period must be one of {', '.join(WINDOWS)}, not “{kind}”.")
        return current_window(kind, group_by)
    if params.get("period"):
        raise ValueError("Give either period or since/until, not both.")
    if since is None:
        raise ValueError("until needs since.")
    until = until or timezone.localdate()
    if since > until:
        raise ValueError("since must not be after until.")
    if (until - since).days >= MAX_RANGE_DAYS:
        raise ValueError(f"A range covers at most {MAX_RANGE_DAYS} days.")
    return UsageQuery("range", since, until, "", group_by)


def _date_param(params: dict, name: str) -> date | None:
    if not params.get(name):
        return None
    try:
        return date.fromisoformat(params[name])
    except ValueError:
        raise ValueError(f"{name} must be a date (YYYY-MM-DD), not “{params[name]}”.") from None


class Sums:
    """Requests, tokens and cost added up over some usage."""

    __slots__ = ("values",)

    def __init__(self):
        self.values = [0, 0, 0, Decimal(0), 0]  # in the order of METRICS

    def add(self, values) -> None:
        for i, value in enumerate(values):
            self.values[i] += value or 0

    def as_dict(self) -> dict:
        requests, input_tokens, output_tokens, cost, default_priced = self.values
        return {
            "requests": requests,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": _money(cost),
            "default_priced_requests": default_priced,
        }


def _cells(client_id: int, since: date, until: date) -> dict[tuple[date, str, str], Sums]:
    """The client's usage per local day, agent and model: complete days from the rollups, the rest from usage rows.

    Days still filling (today, and any day no rollup has finished) are read
    live, so the report includes the request made a moment ago, like the budgets.
    """
    complete = complete_days(since, until)
    rolled = (
        UsageRollup.objects.filter(client_id=client_id, day__in=complete)
        .order_by()
        .values_list("day", "agent", "model")
        .annotate(**{f"total_{metric}": Sum(metric) for metric in METRICS})
    )
    start, end = day_window(since)[0], day_window(until)[1]
    live = UsageRecord.objects.filter(client_id=client_id, created_at__gte=start, created_at__lt=end)
    for first, last in _runs(sorted(complete)):
        live = live.exclude(created_at__gte=day_window(first)[0], created_at__lt=day_window(last)[1])
    recent = (
        live.annotate(day=TruncDate("created_at"))
        .order_by()
        .values_list("day", "agent", "model")
        .annotate(requests=Count("id"), total_input=Sum("input_tokens"), total_output=Sum("output_tokens"),
                  total_cost=Sum("cost_usd"), default_priced_requests=Count("id", filter=Q(default_priced=True)))
    )  # fmt: skip
    cells: dict[tuple[date, str, str], Sums] = {}
    for day, agent, model, *values in [*rolled, *recent]:
        cells.setdefault((day, agent, model), Sums()).add(values)
    return cells


def _runs(days: list[date]):
    """Consecutive days as (first, last) pairs."""
    run: list[date] = []
    for day in days:
        if run and day != run[-1] + timedelta(days=1):
            yield run[0], run[-1]
            run = []
        run.append(day)
    if run:
        yield run[0], run[-1]


def _bucket(day: date, group_by: str) -> date:
    if group_by == "week":
        return day - timedelta(days=day.weekday())
    if group_by == "month":
        return day.replace(day=1)
    return day


def _ranked(groups: dict[str, Sums], name: str) -> list[dict]:
    rows = [{name: key, **sums.as_dict()} for key, sums in groups.items()]
    return sorted(rows, key=lambda row: (-Decimal(row["cost_usd"]), row[name]))


def client_usage(client_id: int, query: UsageQuery | None = None) -> dict:
    """A client's spend and tokens in a window (this month by default): in total, by agent, by model, over time."""
    query = query or current_window()
    cells = _cells(client_id, query.since, query.until)
    total, by_agent, by_model = Sums(), {}, {}
    buckets: dict[date, Sums] = {}
    if query.group_by:
        day, last = query.since, min(query.until, timezone.localdate())
        while day <= last:  # every bucket up to today, with usage or not
            buckets.setdefault(_bucket(day, query.group_by), Sums())
            day += timedelta(days=1)
    for (day, agent, model), sums in cells.items():
        for group in (total, by_agent.setdefault(agent, Sums()), by_model.setdefault(model, Sums())):
            group.add(sums.values)
        if query.group_by:
            buckets.setdefault(_bucket(day, query.group_by), Sums()).add(sums.values)
    report = {
        "object": "usage",
        "period": query.describe(),
        **total.as_dict(),
        "by_agent": _ranked(by_agent, "agent"),
        "by_model": _ranked(by_model, "model"),
    }
    if query.group_by:
        report[f"by_{query.group_by}"] = [
            {query.group_by: bucket.isoformat(), **buckets[bucket].as_dict()} for bucket in sorted(buckets)
        ]
    return report


def monthly_usage(client_id: int) -> dict:
    """This month's spend and tokens for a client, in total and by agent and by model."""
    return client_usage(client_id)


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
