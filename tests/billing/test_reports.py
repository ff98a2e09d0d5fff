"""Usage reports read the daily rollups: grouping by period and dimension, filters, rankings, series, CSV."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings
from django.utils import timezone
from freezegun import freeze_time

from billing.models import UsageRecord
from billing.reports import (
    cost_center_attribution,
    report_columns,
    report_csv,
    spend_series,
    top_spenders,
    usage_report,
)
from billing.rollups import roll_up_day
from tests.billing.usage_rows import add_usage, cost_center, forget_all_usage, new_key

NEW_YORK = ZoneInfo("America/New_York")
NOW = "2026-12-02T15:00:00Z"  # 10:00 on Wednesday 2 December in New York
DEC_1, DEC_2 = date(2026, 12, 1), date(2026, 12, 2)


def ny(*args) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK)


@pytest.fixture(autouse=True)
def clock():
    with override_settings(TIME_ZONE="America/New_York"), freeze_time(NOW) as frozen:
        yield frozen


@pytest.fixture
def org(db):
    """Research (acme, initech) and sales (globex) spending over the last days of November and today."""
    forget_all_usage()
    research, sales = cost_center("lab", "Research lab"), cost_center("sales", "Sales")
    keys = {
        "acme": new_key("acme", research, "Acme Corp"),
        "initech": new_key("initech", research, "Initech"),
        "globex": new_key("globex", sales, "Globex"),
        "loner": new_key("loner", None, "Loner"),
    }
    spend = [
        # day (New York), client, agent, model, cost
        (ny(2026, 11, 23, 12), "acme", "research", "gpt-4o", "1.00"),  # Monday of the week before
        (ny(2026, 11, 29, 12), "acme", "research", "gpt-4o", "2.00"),  # Sunday
        (ny(2026, 11, 30, 12), "globex", "code", "gpt-4o-mini", "4.00"),  # Monday
        (ny(2026, 12, 1, 9), "acme", "writing", "claude-haiku", "0.50"),
        (ny(2026, 12, 1, 10), "initech", "research", "gpt-4o", "0.25"),
        (ny(2026, 12, 1, 23, 59), "globex", "code", "gpt-4o-mini", "3.00"),
        (ny(2026, 12, 2, 0, 1), "loner", "research", "mystery", "0.125"),
        (ny(2026, 12, 2, 9), "acme", "research", "gpt-4o", "1.50"),
    ]
    for at, client, agent, model, cost in spend:
        add_usage(at, keys[client], agent=agent, model=model, cost=cost, input_tokens=10, output_tokens=1,
                  default_priced=model == "mystery")  # fmt: skip
    return {"research": research, "sales": sales, **keys}


def pick(rows, *columns):
    return [tuple(row[c] for c in columns) for row in rows]


def test_a_report_without_grouping_is_one_row_of_totals(org):
    [row] = usage_report(since=date(2026, 11, 1), until=DEC_2)
    assert row == {
        "requests": 8,
        "input_tokens": 80,
        "output_tokens": 8,
        "cost_usd": Decimal("12.375000"),
        "default_priced_requests": 1,
    }
    assert usage_report(since=date(2026, 10, 1), until=date(2026, 10, 31)) == []


def test_it_groups_by_day_and_client_with_readable_labels(org):
    rows = usage_report(since=date(2026, 11, 30), until=DEC_2, group_by=["day", "client"])
    assert list(rows[0]) == report_columns(["day", "client"]) == [
        "day", "client_id", "client", "client_name",
        "requests", "input_tokens", "output_tokens", "cost_usd", "default_priced_requests",
    ]  # fmt: skip
    assert pick(rows, "day", "client", "client_name", "cost_usd") == [
        (date(2026, 11, 30), "globex", "Globex", Decimal("4.000000")),
        (DEC_1, "globex", "Globex", Decimal("3.000000")),  # 23:59 in New York is still 1 December
        (DEC_1, "acme", "Acme Corp", Decimal("0.500000")),
        (DEC_1, "initech", "Initech", Decimal("0.250000")),
        (DEC_2, "acme", "Acme Corp", Decimal("1.500000")),
        (DEC_2, "loner", "Loner", Decimal("0.125000")),
    ]


def test_weeks_start_on_monday_and_months_on_the_first(org):
    weeks = usage_report(since=date(2026, 11, 1), until=DEC_2, group_by=["week"])
    assert pick(weeks, "week", "requests", "cost_usd") == [
        (date(2026, 11, 23), 2, Decimal("3.000000")),
        (date(2026, 11, 30), 6, Decimal("9.375000")),
    ]
    months = usage_report(since=date(2026, 11, 1), until=DEC_2, group_by=["month", "agent"])
    assert pick(months, "month", "agent", "cost_usd") == [
        (date(2026, 11, 1), "code", Decimal("4.000000")),
        (date(2026, 11, 1), "research", Decimal("3.000000")),
        (date(2026, 12, 1), "code", Decimal("3.000000")),
        (date(2026, 12, 1), "research", Decimal("1.875000")),
        (date(2026, 12, 1), "writing", Decimal("0.500000")),
    ]


def test_it_groups_by_cost_center_key_and_model(org):
    rows = usage_report(since=DEC_1, until=DEC_2, group_by=["cost_center", "key", "model"])
    assert pick(rows, "cost_center", "key", "model", "requests") == [
        ("Sales", org["globex"].prefix, "gpt-4o-mini", 1),
        ("Research lab", org["acme"].prefix, "gpt-4o", 1),
        ("Research lab", org["acme"].prefix, "claude-haiku", 1),
        ("Research lab", org["initech"].prefix, "gpt-4o", 1),
        ("(no cost center)", org["loner"].prefix, "mystery", 1),
    ]
    assert rows[-1]["default_priced_requests"] == 1
    assert rows[0]["key_id"] == org["globex"].pk and rows[0]["cost_center_id"] == org["sales"].pk


@pytest.mark.parametrize(
    "filters, requests, cost",
    [
        ({"client": "acme"}, 4, "5.000000"),
        ({"cost_center": "research"}, 5, "5.250000"),
        ({"key": "initech"}, 1, "0.250000"),
        ({"agent": "code"}, 2, "7.000000"),
        ({"model": "gpt-4o"}, 4, "4.750000"),
        ({"client": "acme", "model": "gpt-4o"}, 3, "4.500000"),
        ({"agent": "nobody"}, 0, None),
    ],
)
def test_filters_narrow_the_report(org, filters, requests, cost):
    ids = {"client": lambda o: o.client_id, "key": lambda o: o.pk, "cost_center": lambda o: o.pk}
    given = {name: ids[name](org[value]) if name in ids else value for name, value in filters.items()}
    rows = usage_report(since=date(2026, 11, 1), until=DEC_2, filters=given)
    assert pick(rows, "requests", "cost_usd") == ([(requests, Decimal(cost))] if requests else [])


def test_reports_read_the_rollups_not_the_usage_rows(org):
    usage_report(since=date(2026, 11, 1), until=DEC_2)  # rolls the range up
    UsageRecord.objects.filter(created_at__lt=ny(2026, 12, 1)).delete()
    [row] = usage_report(since=date(2026, 11, 1), until=date(2026, 11, 30))
    assert (row["requests"], row["cost_usd"]) == (3, Decimal("7.000000"))


def test_a_report_is_never_staler_than_the_rollup_max_age(org, clock, settings):
    settings.GATEWAY = {**settings.GATEWAY, "ROLLUP_MAX_AGE": 60}
    usage_report(since=DEC_2, until=DEC_2)
    add_usage(timezone.now(), org["acme"], cost="10")
    clock.tick(timedelta(seconds=30))
    [row] = usage_report(since=DEC_2, until=DEC_2)
    assert row["requests"] == 2  # rolled up 30 s ago: fresh enough
    clock.tick(timedelta(seconds=31))
    [row] = usage_report(since=DEC_2, until=DEC_2)
    assert (row["requests"], row["cost_usd"]) == (3, Decimal("11.625000"))


def test_a_deleted_client_keeps_its_spend_under_a_placeholder(org):
    roll_up_day(DEC_1)
    client_id = org["initech"].client_id
    org["initech"].client.delete()
    rows = usage_report(since=DEC_1, until=DEC_1, group_by=["client"])
    assert (f"(deleted #{client_id})", Decimal("0.250000")) in pick(rows, "client", "cost_usd")


@pytest.mark.parametrize(
    "group_by, message",
    [(["day", "month"], "at most one of day, week and month"), (["colour"], "Unknown group “colour”")],
)
def test_it_refuses_an_unknown_group_or_two_periods(db, group_by, message):
    with pytest.raises(ValueError, match=message):
        usage_report(since=DEC_1, until=DEC_2, group_by=group_by)


def test_top_spenders_rank_clients_by_spend_with_their_share_of_the_total(org):
    top = top_spenders(date(2026, 11, 1), DEC_2, limit=2)
    assert pick(top, "client", "cost_usd", "share_percent") == [
        ("globex", Decimal("7.000000"), Decimal("56.6")),
        ("acme", Decimal("5.000000"), Decimal("40.4")),
    ]
    by_model = top_spenders(DEC_1, DEC_2, by="model", limit=10)
    assert [row["model"] for row in by_model] == ["gpt-4o-mini", "gpt-4o", "claude-haiku", "mystery"]
    with pytest.raises(ValueError):
        top_spenders(DEC_1, DEC_2, by="day")


def test_spend_series_gives_each_top_spender_and_the_rest_a_value_per_day(org):
    series = spend_series(date(2026, 11, 29), DEC_2, by="client", top=2)
    assert series["days"] == [date(2026, 11, 29), date(2026, 11, 30), DEC_1, DEC_2]
    assert [(s.label, s.values) for s in series["series"]] == [
        ("globex", [Decimal(0), Decimal("4.000000"), Decimal("3.000000"), Decimal(0)]),
        ("acme", [Decimal("2.000000"), Decimal(0), Decimal("0.500000"), Decimal("1.500000")]),
        ("Other", [Decimal(0), Decimal(0), Decimal("0.250000"), Decimal("0.125000")]),
    ]
    agents = spend_series(DEC_1, DEC_2, by="agent", top=5)
    assert [s.label for s in agents["series"]] == ["code", "research", "writing"]  # no "Other" when all are shown


def test_cost_centers_keep_the_spend_made_while_a_client_belonged_to_them(org):
    acme = org["acme"].client
    acme.cost_center = org["sales"]
    acme.save()
    add_usage(ny(2026, 12, 2, 9, 30), org["acme"], cost="0.625")  # now attributed to sales
    rows = cost_center_attribution(DEC_1, DEC_2)
    assert pick(rows, "cost_center", "cost_usd", "share_percent") == [
        ("Sales", Decimal("3.625000"), Decimal("60.4")),
        ("Research lab", Decimal("2.250000"), Decimal("37.5")),
        ("(no cost center)", Decimal("0.125000"), Decimal("2.1")),
    ]


def test_the_csv_has_the_reports_columns_and_neutralises_spreadsheet_formulas(org):
    evil = new_key("evil", None, '=HYPERLINK("http://x")')
    add_usage(ny(2026, 12, 1, 8), evil, agent="research", model="@SUM(A1)", cost="0.5")
    group_by = ["day", "client", "model"]
    rows = usage_report(since=DEC_1, until=DEC_1, group_by=group_by)
    text = "".join(report_csv(rows, report_columns(group_by)))
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == report_columns(group_by)
    assert len(table) == 1 + len(rows)
    evil_row = dict(zip(table[0], next(r for r in table if r[2] == "evil"), strict=True))
    assert evil_row["client_name"] == '\'=HYPERLINK("http://x")'
    assert evil_row["model"] == "'@SUM(A1)"
    assert (evil_row["day"], evil_row["cost_usd"]) == ("2026-12-01", "0.500000")
