"""Usage reports over the daily rollups: grouped by period and dimension, top spenders, series, attribution.

Reports read only ``UsageRollup`` rows, never the raw usage rows: before reading
they make sure the range's rollups are fresh (``rollups.ensure_fresh``), so a
report is never older than ``GATEWAY_ROLLUP_MAX_AGE``. Money is Decimal USD
rounded to six places.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from django.db.models import F, Sum
from django.db.models.functions import TruncMonth, TruncWeek

from audit.exports import csv_cell
from billing import rollups
from billing.models import UsageRollup
from keys.models import ApiKey, Client, CostCenter

MICRO = Decimal("0.000001")
PERIODS = ("day", "week", "month")
DIMENSIONS = ("client", "cost_center", "key", "agent", "model")
GROUPS = PERIODS + DIMENSIONS
# Each dimension's column in the rollups, which is also how a filter on it is written.
FIELDS = {
    "client": "client_id",
    "cost_center": "cost_center_id",
    "key": "api_key_id",
    "agent": "agent",
    "model": "model",
}
METRICS = ("requests", "input_tokens", "output_tokens", "cost_usd", "default_priced_requests")
# The columns each group adds to a report row: its id (if any) and readable labels.
LABEL_COLUMNS = {
    "day": ["day"],
    "week": ["week"],
    "month": ["month"],
    "client": ["client_id", "client", "client_name"],
    "cost_center": ["cost_center_id", "cost_center"],
    "key": ["key_id", "key"],
    "agent": ["agent"],
    "model": ["model"],
}
UNATTRIBUTED = "(no cost center)"


def label_column(name: str) -> str:
    """The column that names a group's rows readably: client slug, cost center name, key prefix, agent, model."""
    columns = LABEL_COLUMNS[name]
    return columns[1] if len(columns) > 1 else columns[0]


def check_group_by(groups: Iterable[str]) -> list[str]:
    """The groups in order without repeats; ValueError for an unknown one or more than one period."""
    chosen: list[str] = []
    for name in groups:
        if name not in GROUPS:
            raise ValueError(f"Unknown group “{name}”: use {', '.join(GROUPS)}.")
        if name not in chosen:
            chosen.append(name)
    if sum(name in PERIODS for name in chosen) > 1:
        raise ValueError("Group by at most one of day, week and month.")
    return chosen


def report_columns(group_by: Iterable[str]) -> list[str]:
    """The columns of a report grouped by ``group_by``, in order: the groups' labels, then the metrics."""
    return [column for name in group_by for column in LABEL_COLUMNS[name]] + list(METRICS)


def _rollups(since: date, until: date, filters: Mapping[str, object] | None):
    rows = UsageRollup.objects.filter(day__gte=since, day__lte=until)
    for name, value in (filters or {}).items():
        if name not in FIELDS:
            raise ValueError(f"Unknown filter “{name}”: use {', '.join(DIMENSIONS)}.")
        if value is not None and value != "":
            rows = rows.filter(**{FIELDS[name]: value})
    return rows


def _group_fields(group_by: list[str]) -> dict:
    """The annotation that puts each rollup row in its period bucket, if the report has one."""
    if "week" in group_by:
        return {"bucket": TruncWeek("day")}
    if "month" in group_by:
        return {"bucket": TruncMonth("day")}
    if "day" in group_by:
        return {"bucket": F("day")}
    return {}


def _labels(rows: list[dict], group_by: list[str]) -> None:
    """Add readable labels to rows: client slug and name, cost center name, key prefix (a placeholder once deleted)."""
    if "client" in group_by:
        clients = Client.objects.in_bulk({r["client_id"] for r in rows if r["client_id"] is not None})
        for r in rows:
            c = clients.get(r["client_id"])
            r["client"] = c.slug if c else _gone(r["client_id"])
            r["client_name"] = c.name if c else ""
    if "cost_center" in group_by:
        centers = CostCenter.objects.in_bulk({r["cost_center_id"] for r in rows if r["cost_center_id"] is not None})
        for r in rows:
            cc = centers.get(r["cost_center_id"])
            r["cost_center"] = cc.name if cc else _gone(r["cost_center_id"], UNATTRIBUTED)
    if "key" in group_by:
        keys = ApiKey.objects.in_bulk({r["key_id"] for r in rows if r["key_id"] is not None})
        for r in rows:
            k = keys.get(r["key_id"])
            r["key"] = k.prefix if k else _gone(r["key_id"])


def _gone(pk, none: str = "(none)") -> str:
    return none if pk is None else f"(deleted #{pk})"


def usage_report(
    *, since: date, until: date, group_by: Iterable[str] = (), filters: Mapping[str, object] | None = None
) -> list[dict]:
    """Requests, tokens and cost from ``since`` to ``until`` (local days, inclusive), one row per group.

    ``group_by`` takes at most one period (day, week, month: the row gets the
    bucket's first day; buckets are clipped to the range) and any dimensions
    (client, cost_center, key, agent, model); ``filters`` maps dimensions to an
    id (client, cost_center, key) or a name (agent, model). Rows come in period
    order, then most expensive first.
    """
    group_by = check_group_by(group_by)
    rollups.ensure_fresh(since=since, until=until)
    bucket = _group_fields(group_by)
    dims = [FIELDS[name] for name in group_by if name in DIMENSIONS]
    # Named apart from the rollups' own columns, which an annotation may not shadow.
    sums = {f"total_{metric}": Sum(metric) for metric in METRICS}
    selected = _rollups(since, until, filters).order_by()
    if bucket or dims:
        grouped = list(selected.annotate(**bucket).values(*bucket, *dims).annotate(**sums))
    else:
        grouped = [selected.aggregate(**sums)]
    period = next((name for name in group_by if name in PERIODS), None)
    rows = []
    for g in grouped:
        if not g["total_requests"]:
            continue  # the total of a range without usage
        row = {period: g["bucket"]} if period else {}
        for name in group_by:
            if name in DIMENSIONS:
                row[LABEL_COLUMNS[name][0]] = g[FIELDS[name]]
        row.update({metric: g[f"total_{metric}"] or 0 for metric in METRICS})
        row["cost_usd"] = Decimal(row["cost_usd"]).quantize(MICRO)
        rows.append(row)
    _labels(rows, group_by)
    rows.sort(key=lambda r: (r[period] if period else date.min, -r["cost_usd"], *(str(r[c]) for c in _keys(group_by))))
    return [{column: row[column] for column in report_columns(group_by)} for row in rows]


def _keys(group_by: list[str]) -> list[str]:
    return [LABEL_COLUMNS[name][0] for name in group_by if name in DIMENSIONS]


def totals(rows: Iterable[dict]) -> dict:
    """The metrics of ``rows`` added up."""
    total = {metric: 0 for metric in METRICS}
    total["cost_usd"] = Decimal(0)
    for row in rows:
        for metric in METRICS:
            total[metric] += row[metric]
    total["cost_usd"] = total["cost_usd"].quantize(MICRO)
    return total


def _share(part: Decimal, whole: Decimal) -> Decimal:
    return (part * 100 / whole).quantize(Decimal("0.1")) if whole else Decimal("0.0")


def top_spenders(
    since: date, until: date, by: str = "client", limit: int = 10, filters: Mapping[str, object] | None = None
) -> list[dict]:
    """The ``limit`` biggest spenders among clients (or cost centers, keys, agents, models), with their share."""
    if by not in DIMENSIONS:
        raise ValueError(f"Rank by one of {', '.join(DIMENSIONS)}.")
    rows = usage_report(since=since, until=until, group_by=[by], filters=filters)
    whole = totals(rows)["cost_usd"]
    return [{**row, "share_percent": _share(row["cost_usd"], whole)} for row in rows[:limit]]


def cost_center_attribution(since: date, until: date, filters: Mapping[str, object] | None = None) -> list[dict]:
    """Spend per cost center the requests were attributed to when made, with each one's share of the total."""
    rows = usage_report(since=since, until=until, group_by=["cost_center"], filters=filters)
    whole = totals(rows)["cost_usd"]
    return [{**row, "share_percent": _share(row["cost_usd"], whole)} for row in rows]


@dataclass(frozen=True)
class Series:
    label: str
    values: list[Decimal]


def spend_series(since: date, until: date, by: str, top: int = 5, filters: Mapping[str, object] | None = None) -> dict:
    """Spend per day of the ``top`` biggest spenders (by client, agent, model …) and of all others together.

    Returns ``{"days": [date, …], "series": [Series(label, values), …]}``, one value per
    day, the biggest spender first and "Other" last (left out when it is all zero).
    """
    if by not in DIMENSIONS:
        raise ValueError(f"Chart by one of {', '.join(DIMENSIONS)}.")
    days = [since + timedelta(days=i) for i in range((until - since).days + 1)]
    index = {day: i for i, day in enumerate(days)}
    id_column, name_column = LABEL_COLUMNS[by][0], label_column(by)
    rows = usage_report(since=since, until=until, group_by=["day", by], filters=filters)
    spent: dict[object, Decimal] = {}
    labels: dict[object, str] = {}
    for row in rows:
        spent[row[id_column]] = spent.get(row[id_column], Decimal(0)) + row["cost_usd"]
        labels[row[id_column]] = str(row[name_column])
    leaders = sorted(spent, key=lambda k: (-spent[k], labels[k]))[:top]
    values = {k: [Decimal(0)] * len(days) for k in leaders}
    other = [Decimal(0)] * len(days)
    for row in rows:
        (values[row[id_column]] if row[id_column] in values else other)[index[row["day"]]] += row["cost_usd"]
    series = [Series(labels[k], values[k]) for k in leaders]
    if any(other):
        series.append(Series("Other", other))
    return {"days": days, "series": series}


class _Echo:
    def write(self, value):
        return value


def report_csv(rows: Iterable[Mapping], columns: list[str]) -> Iterator[str]:
    """The rows as CSV lines, a header first, produced one at a time; spreadsheet formulas are neutralised."""
    writer = csv.writer(_Echo())
    yield writer.writerow(columns)
    for row in rows:
        yield writer.writerow([csv_cell(row.get(column)) for column in columns])
