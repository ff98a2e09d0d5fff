"""Daily rollups: a local day's usage rows summed per cost center, client, key, agent and model, rebuilt whole."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.test import override_settings
from django.utils import timezone
from freezegun import freeze_time

from billing import rollups
from billing.models import RollupDay, UsageRecord, UsageRollup
from billing.rollups import ensure_fresh, roll_up_day, roll_up_recent
from tests.billing.usage_rows import add_usage, cost_center, forget_all_usage, new_key

NEW_YORK = ZoneInfo("America/New_York")
GROUP = ("cost_center_id", "client_id", "api_key_id", "agent", "model")


@pytest.fixture(autouse=True)
def new_york():
    """The gateway's days are New York days in these tests, so local and UTC midnights differ."""
    with override_settings(TIME_ZONE="America/New_York"):
        yield


def ny(*args) -> datetime:
    return datetime(*args, tzinfo=NEW_YORK)


def rollup_table(day: date) -> dict[tuple, tuple]:
    return {
        tuple(getattr(r, f) for f in GROUP): (
            r.requests, r.input_tokens, r.output_tokens, r.cost_usd, r.default_priced_requests,
        )
        for r in UsageRollup.objects.filter(day=day)
    }  # fmt: skip


def expected_from_raw(start: datetime, end: datetime) -> dict[tuple, tuple]:
    sums: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, Decimal(0), 0])
    for r in UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end):
        cell = sums[tuple(getattr(r, f) for f in GROUP)]
        cell[0] += 1
        cell[1] += r.input_tokens
        cell[2] += r.output_tokens
        cell[3] += r.cost_usd
        cell[4] += int(r.default_priced)
    return {k: tuple(v) for k, v in sums.items()}


@pytest.fixture
def clean(db):
    forget_all_usage()


@pytest.fixture
def traffic(clean):
    """Two cost centers, three clients (one unattributed), several agents and models over 1-2 December."""
    research, sales = cost_center("lab"), cost_center("sales")
    acme, globex, loner = new_key("acme", research), new_key("globex", sales), new_key("loner")
    acme2 = new_key("acme-two", research)
    rows = [
        (ny(2026, 12, 1, 0, 0, 0), acme, "research", "gpt-4o", "0.010000000", False),
        (ny(2026, 12, 1, 9, 30), acme, "research", "gpt-4o", "0.020000000", False),
        (ny(2026, 12, 1, 9, 31), acme, "writing", "gpt-4o-mini", "0.000300000", False),
        (ny(2026, 12, 1, 12), acme2, "research", "gpt-4o", "0.005000000", False),
        (ny(2026, 12, 1, 13), globex, "code", "mystery-model", "0.123456789", True),
        (ny(2026, 12, 1, 14), globex, "code", "mystery-model", "0.000000001", True),
        (ny(2026, 12, 1, 23, 59, 59), loner, "research", "claude-haiku", "0.000100000", False),
        (ny(2026, 12, 2, 0, 0, 0), acme, "research", "gpt-4o", "1.000000000", False),
        (ny(2026, 11, 30, 23, 59, 59), acme, "research", "gpt-4o", "2.000000000", False),
    ]
    for at, key, agent, model, cost, default in rows:
        add_usage(at, key, agent=agent, model=model, cost=cost, default_priced=default,
                  input_tokens=int(Decimal(cost) * 10**6) % 997, output_tokens=7)  # fmt: skip
    return {"acme": acme, "globex": globex, "loner": loner, "research": research, "sales": sales}


def test_a_days_rollup_sums_its_usage_rows_per_cost_center_client_key_agent_and_model(traffic):
    rows = roll_up_day(date(2026, 12, 1))
    table = rollup_table(date(2026, 12, 1))
    assert table == expected_from_raw(ny(2026, 12, 1), ny(2026, 12, 2))
    assert rows == len(table) == 5
    acme = traffic["acme"]
    assert table[(traffic["research"].pk, acme.client_id, acme.pk, "research", "gpt-4o")][:1] == (2,)
    globex = traffic["globex"]
    mystery = table[(traffic["sales"].pk, globex.client_id, globex.pk, "code", "mystery-model")]
    assert (mystery[0], mystery[3], mystery[4]) == (2, Decimal("0.123456790"), 2)
    loner = traffic["loner"]
    assert (None, loner.client_id, loner.pk, "research", "claude-haiku") in table


def test_days_split_at_local_midnight_in_the_gateway_time_zone(traffic):
    for day in (date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2)):
        roll_up_day(day)
    requests = {
        day: sum(r.requests for r in UsageRollup.objects.filter(day=day))
        for day in (date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2))
    }
    # 23:59:59 on 30 November and 00:00 on 2 December New York time are 04:59:59 and 05:00 UTC a day later.
    assert requests == {date(2026, 11, 30): 1, date(2026, 12, 1): 7, date(2026, 12, 2): 1}
    assert sum(requests.values()) == UsageRecord.objects.count()


def test_a_day_with_a_clock_change_is_rolled_up_whole(clean):
    key = new_key("dst")
    add_usage(ny(2026, 3, 8, 0, 30), key)  # 05:30 UTC
    add_usage(ny(2026, 3, 8, 23, 30), key)  # 03:30 UTC on the 9th: still the 8th, a 23-hour day
    add_usage(ny(2026, 3, 9, 0, 30), key)
    roll_up_day(date(2026, 3, 8))
    assert UsageRollup.objects.get(day=date(2026, 3, 8)).requests == 2


def test_rolling_up_a_day_twice_gives_the_same_rows(traffic):
    roll_up_day(date(2026, 12, 1))
    first = rollup_table(date(2026, 12, 1))
    roll_up_day(date(2026, 12, 1))
    assert rollup_table(date(2026, 12, 1)) == first
    assert UsageRollup.objects.filter(day=date(2026, 12, 1)).count() == len(first)


def test_rolling_up_again_replaces_the_days_rows_with_the_new_totals(traffic):
    roll_up_day(date(2026, 12, 1))
    add_usage(ny(2026, 12, 1, 18), traffic["acme"], cost="0.5")
    roll_up_day(date(2026, 12, 1))
    assert rollup_table(date(2026, 12, 1)) == expected_from_raw(ny(2026, 12, 1), ny(2026, 12, 2))
    assert UsageRollup.objects.filter(day=date(2026, 12, 2)).count() == 0  # other days untouched


def test_the_days_rollup_records_when_and_how_many_rows(traffic):
    with freeze_time("2026-12-02T16:00:00Z"):
        roll_up_day(date(2026, 12, 1))
    marker = RollupDay.objects.get(day=date(2026, 12, 1))
    assert (marker.rolled_up_at, marker.rows) == (datetime.fromisoformat("2026-12-02T16:00:00+00:00"), 5)


def test_a_day_without_usage_is_rolled_up_to_no_rows(clean):
    assert roll_up_day(date(2026, 6, 1)) == 0
    assert RollupDay.objects.get(day=date(2026, 6, 1)).rows == 0
    assert not UsageRollup.objects.exists()


def test_two_concurrent_rollups_of_a_day_do_not_duplicate_rows(live_db, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL; SQLite runs one writer at a time anyway")
    day = date(2031, 7, 14)  # committed for the threads to see: a day no other test uses
    key = new_key()
    try:
        for hour in range(6):
            add_usage(ny(2031, 7, 14, hour), key, model=f"m{hour % 3}")
        roll_up_day(day)  # the day's row exists: only its lock keeps the next two apart
        totals = rollups._totals

        def slow_totals(day):
            rows = totals(day)
            threading.Event().wait(0.3)  # both rollups are inside their transactions at once
            return rows

        monkeypatch.setattr(rollups, "_totals", slow_totals)
        start, errors = threading.Barrier(2), []

        def roll():
            try:
                start.wait()
                roll_up_day(day)
            except Exception as error:  # reported below
                errors.append(error)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=roll) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert UsageRollup.objects.filter(day=day).count() == 3
        assert sum(r.requests for r in UsageRollup.objects.filter(day=day)) == 6
        assert RollupDay.objects.filter(day=day).count() == 1
    finally:
        UsageRecord.objects.filter(api_key=key).delete()
        UsageRollup.objects.filter(day=day).delete()
        RollupDay.objects.filter(day=day).delete()


def test_the_beat_rollup_rebuilds_yesterday_and_today(traffic):
    add_usage(ny(2026, 11, 28, 12), traffic["acme"])
    with freeze_time("2026-12-02T15:00:00Z"):  # 10:00 in New York
        rows = roll_up_recent()
    assert set(RollupDay.objects.values_list("day", flat=True)) == {date(2026, 12, 1), date(2026, 12, 2)}
    assert rows == UsageRollup.objects.count() == 6
    assert rollup_table(date(2026, 12, 2)) == expected_from_raw(ny(2026, 12, 2), ny(2026, 12, 3))


def test_ensure_fresh_rolls_today_up_again_only_once_its_rollup_is_older_than_the_max_age(traffic):
    acme = traffic["acme"]
    with freeze_time("2026-12-02T15:00:00Z") as clock:
        assert ensure_fresh(60) == 1
        add_usage(timezone.now(), acme, cost="0.25")
        clock.tick(timedelta(seconds=30))
        assert ensure_fresh(60) == 0
        assert sum(r.requests for r in UsageRollup.objects.filter(day=date(2026, 12, 2))) == 1
        clock.tick(timedelta(seconds=31))
        assert ensure_fresh(60) == 1
        assert sum(r.requests for r in UsageRollup.objects.filter(day=date(2026, 12, 2))) == 2


def test_ensure_fresh_fills_the_days_of_a_range_that_were_never_rolled_up(traffic):
    with freeze_time("2026-12-02T15:00:00Z"):
        assert ensure_fresh(60, since=date(2026, 11, 1), until=date(2026, 12, 31)) == 3  # 30 Nov (first usage) .. today
        assert set(RollupDay.objects.values_list("day", flat=True)) == {
            date(2026, 11, 30), date(2026, 12, 1), date(2026, 12, 2)
        }  # fmt: skip
        assert ensure_fresh(60, since=date(2026, 11, 1), until=date(2026, 12, 31)) == 0


def test_a_day_rolled_up_before_all_its_rows_were_in_is_rolled_up_again_later(traffic):
    with freeze_time("2026-12-01T23:00:00Z"):  # 18:00 in New York: 1 December is still filling
        roll_up_day(date(2026, 12, 1))
    late = add_usage(ny(2026, 12, 1, 20), traffic["acme"], cost="3")
    with freeze_time("2026-12-02T15:00:00Z"):
        assert ensure_fresh(60, since=date(2026, 12, 1), until=date(2026, 12, 1)) == 1
        assert ensure_fresh(60, since=date(2026, 12, 1), until=date(2026, 12, 1)) == 0  # complete now
    assert UsageRollup.objects.filter(day=date(2026, 12, 1), cost_usd__gte=late.cost_usd).exists()


def test_a_rollup_someone_else_just_finished_is_not_redone(traffic):
    with freeze_time("2026-12-02T15:00:00Z"):
        roll_up_day(date(2026, 12, 2))
        add_usage(timezone.now(), traffic["acme"])
        # A report that waited for that rollup's lock finds it fresh enough and keeps it.
        roll_up_day(date(2026, 12, 2), unless_rolled_up_since=timezone.now() - timedelta(seconds=60))
    assert sum(r.requests for r in UsageRollup.objects.filter(day=date(2026, 12, 2))) == 1


def test_the_rollup_command_backfills_a_range_of_days(traffic, capsys):
    with freeze_time("2026-12-02T15:00:00Z"):
        call_command("rollup_usage", "--since", "2026-11-29", "--days", "3")
    assert set(RollupDay.objects.values_list("day", flat=True)) == {
        date(2026, 11, 29), date(2026, 11, 30), date(2026, 12, 1)
    }  # fmt: skip
    assert "Rolled up 3 day(s) from 2026-11-29 to 2026-12-01: 6 rollup row(s)." in capsys.readouterr().out


def test_the_rollup_command_does_yesterday_and_today_by_default_and_the_last_n_days_with_days(traffic):
    with freeze_time("2026-12-02T15:00:00Z"):
        call_command("rollup_usage")
        assert set(RollupDay.objects.values_list("day", flat=True)) == {date(2026, 12, 1), date(2026, 12, 2)}
        call_command("rollup_usage", "--days", "4")
    assert RollupDay.objects.filter(day__gte=date(2026, 11, 29)).count() == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "yesterday"], "is not a date"),
        (["--since", "2027-01-01"], "is in the future"),
        (["--days", "0"], "at least 1"),
    ],
)
def test_the_rollup_command_refuses_bad_arguments(clean, args, message):
    with freeze_time("2026-12-02T15:00:00Z"), pytest.raises(CommandError, match=message):
        call_command("rollup_usage", *args)
