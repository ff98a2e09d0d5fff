"""GET /v1/usage through a live gateway: the key's client's usage by period, agent and model, and its budgets."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import RollupDay, UsageRecord
from billing.rollups import roll_up_day
from tests.billing.usage_rows import add_usage

CHAT = "/v1/chat/completions"


def chat(client, model="gpt-4o-mini"):
    response = client.post(CHAT, json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    return response


def noon(day) -> datetime:
    return timezone.make_aware(datetime.combine(day, time(12)))


def test_the_default_is_this_month_and_periods_pick_the_current_day_or_week(gateway, make_key):
    raw, key = make_key(budget="20")
    client = gateway.client(raw)
    chat(client)
    chat(client, "gpt-4o")
    today = timezone.localdate()
    month = client.get("/v1/usage").json()
    assert month["period"]["kind"] == "month"
    assert month["period"]["month"] == f"{today:%Y-%m}"
    assert month["period"]["since"] == today.replace(day=1).isoformat()
    assert (month["requests"], month["client"]) == (2, key.client.slug)
    assert {row["model"] for row in month["by_model"]} == {"gpt-4o", "gpt-4o-mini"}
    assert [row["agent"] for row in month["by_agent"]] == ["openai"]
    [budget] = [b for b in month["budgets"] if b["scope"] == "client"]  # others' organization budgets may apply too
    assert (budget["limit_usd"], budget["spent_usd"]) == ("20.00", month["cost_usd"])
    day = client.get("/v1/usage", params={"period": "day"}).json()
    assert (day["period"]["kind"], day["period"]["since"], day["period"]["until"]) == (
        "day", today.isoformat(), today.isoformat(),
    )  # fmt: skip
    assert (day["requests"], day["cost_usd"]) == (2, month["cost_usd"])
    week = client.get("/v1/usage", params={"period": "week", "group_by": "day"}).json()
    monday = today - timedelta(days=today.weekday())
    assert week["period"]["since"] == monday.isoformat()
    assert [row["day"] for row in week["by_day"]] == [
        (monday + timedelta(days=i)).isoformat() for i in range(today.weekday() + 1)
    ]
    assert week["by_day"][-1]["requests"] == 2


def test_a_range_grouped_by_day_joins_finished_rollups_with_live_usage(gateway, make_key, live_db):
    raw, key = make_key()
    today = timezone.localdate()
    rolled, unrolled = today - timedelta(days=3), today - timedelta(days=2)
    add_usage(noon(rolled), key, agent="research", model="gpt-4o", cost="1.5", input_tokens=7, output_tokens=3)
    roll_up_day(rolled)  # after the day ended: its rollup is complete and is read instead of its rows
    UsageRecord.objects.filter(client_id=key.client_id, created_at__date=rolled).delete()
    RollupDay.objects.filter(day=unrolled).delete()  # never rolled up: read from its rows
    add_usage(noon(unrolled), key, agent="writing", model="gpt-4o-mini", cost="0.25", input_tokens=5, output_tokens=1)
    client = gateway.client(raw)
    live = chat(client)
    since = today - timedelta(days=4)
    report = client.get("/v1/usage", params={"since": since.isoformat(), "group_by": "day"}).json()
    assert report["period"] == {
        "kind": "range",
        "since": since.isoformat(),
        "until": today.isoformat(),
        "start": f"{since.isoformat()}T00:00:00+00:00",
        "end": f"{today + timedelta(days=1)}T00:00:00+00:00",
    }
    by_day = {row["day"]: (row["requests"], Decimal(row["cost_usd"])) for row in report["by_day"]}
    assert list(by_day) == [(since + timedelta(days=i)).isoformat() for i in range(5)]
    live_cost = UsageRecord.objects.get(request_id=live.headers["x-request-id"]).cost_usd.quantize(Decimal("1e-6"))
    assert live_cost > 0
    assert by_day == {
        since.isoformat(): (0, Decimal(0)),
        rolled.isoformat(): (1, Decimal("1.5")),
        unrolled.isoformat(): (1, Decimal("0.25")),
        (today - timedelta(days=1)).isoformat(): (0, Decimal(0)),
        today.isoformat(): (1, live_cost),
    }
    assert report["requests"] == 3
    assert Decimal(report["cost_usd"]) == Decimal("1.75") + live_cost
    assert {row["agent"]: row["input_tokens"] for row in report["by_agent"]}["research"] == 7
    assert isinstance(report["budgets"], list)


@pytest.mark.parametrize(
    "query, message",
    [
        ("period=year", "period must be one of day, week, month, not “year”."),
        ("since=yesterday", "since must be a date (YYYY-MM-DD), not “yesterday”."),
        ("since=2026-12-02&until=2026-12-01", "since must not be after until."),
        ("until=2026-12-01", "until needs since."),
        ("period=day&since=2026-12-01", "Give either period or since/until, not both."),
        ("since=2024-01-01&until=2026-01-01", "A range covers at most 366 days."),
        ("group_by=hour", "group_by must be one of day, week, month, not “hour”."),
    ],
)
def test_bad_query_values_are_a_400_in_the_gateways_error_shape(gateway, make_key, query, message):
    raw, _key = make_key()
    response = gateway.client(raw).get(f"/v1/usage?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["message"]) == ("invalid_request_error", "invalid_request", message)
    assert error["request_id"] == response.headers["x-request-id"]


def test_without_a_key_the_usage_endpoint_is_a_401_before_the_query_is_read(gateway):
    response = gateway.client().get("/v1/usage?period=year")
    assert response.status_code == 401
