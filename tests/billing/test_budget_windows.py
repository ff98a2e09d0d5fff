"""Budgets on the hot path under a controlled clock: windows reset at their boundary, every scope must fit.

These drive the gateway's own admission and settle code (``routing.admission``) against
both hot-state stores, with the database as the gateway uses it (committed, other threads).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.test import override_settings
from freezegun import freeze_time

from billing import status
from billing.budgets import budget_table, counter_key, rule_of
from billing.models import Budget, UsageRecord
from billing.periods import clock
from billing.pricing import prices
from billing.status import budget_status
from gateway_project.errors import GatewayError
from gateway_project.hotstate import MemoryHotState, RedisHotState
from gateway_project.writer import writer
from keys.access import snapshot_for
from keys.models import Client, CostCenter
from keys.services import issue_key
from routing import admission
from routing.facts import Demand, RequestFacts

NEW_YORK = ZoneInfo("America/New_York")
STORES = ["memory"] + (["redis"] if settings.REDIS_URL else [])
# 10,000 input tokens of gpt-4o ($2.50/M) and the default 1,024-token answer cap ($10/M): $0.03524 reserved.
INPUT_TOKENS = 10_000
ANSWER_TOKENS = 34  # what the answer really used: $0.02534 in all


@pytest.fixture(params=STORES)
def store(request, live_db, monkeypatch):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    with override_settings(TIME_ZONE="America/New_York", GATEWAY={**settings.GATEWAY, "REDIS_PREFIX": prefix}):
        chosen = MemoryHotState() if request.param == "memory" else RedisHotState(settings.REDIS_URL)
        monkeypatch.setattr(admission, "get_hot_state", lambda: chosen)
        monkeypatch.setattr(status, "get_hot_state", lambda: chosen)
        clock.clear()
        yield chosen
        clock.clear()


def new_client(cost_center=None):
    return Client.objects.create(name="Windows", slug=f"w-{uuid.uuid4().hex[:10]}", cost_center=cost_center)


def budget(limit, scope=Budget.CLIENT, period=Budget.DAILY, **target):
    return Budget.objects.create(scope=scope, period=period, limit_usd=Decimal(limit), **target)


def call(key, *, model="gpt-4o", input_tokens=INPUT_TOKENS, output_tokens=ANSWER_TOKENS, default_output=None):
    """Admit and settle one request of ``key`` the way the gateway does; return None or the refusal."""

    async def scenario():
        budget_table.expire()
        await prices.reload()
        ex = SimpleNamespace(
            model=model, agent="openai", request_id=uuid.uuid4().hex, extra_headers=[],
            input_tokens=0, output_tokens=0, cost_nanos=0, details={}, output_text="", output_estimate=0,
            defers_hang_up=False,  # no proxy consumer serves it: the admission runs shielded, as a job's would
        )  # fmt: skip
        # The body's estimate whose bound (a token a byte, and the slack) is ``input_tokens``: that much is reserved.
        estimate = (input_tokens - admission.INPUT_CHARGE_SLACK) // admission.INPUT_CHARGE_FACTOR
        demand = Demand(estimate, None, default_output, 60)
        facts = RequestFacts(ex.request_id, snapshot_for(key), requested=model, demand=demand)
        try:
            ticket = await admission.admit(ex, facts)
        except GatewayError as refusal:
            return refusal
        ex.input_tokens, ex.output_tokens = input_tokens, output_tokens
        await admission.settle(ex, ticket)
        await writer.flush()
        return None

    async def closing_connections():
        try:
            return await scenario()
        finally:  # the gateway's database thread keeps its connection; a test must not
            await sync_to_async(connections.close_all)()

    return asyncio.run(closing_connections())


def at(*args):
    return datetime(*args, tzinfo=NEW_YORK)


def test_a_spent_daily_budget_opens_again_at_local_midnight_and_keeps_yesterdays_record(store):
    client = new_client()
    daily = budget("0.05", client=client)
    key, _ = issue_key(client, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 2, 23, 59, 0)) as frozen:
        assert call(key) is None
        refusal = call(key)
        assert refusal is not None and (refusal.status, refusal.code) == (402, "budget_exceeded")
        frozen.move_to(at(2026, 12, 2, 23, 59, 59))
        assert call(key) is not None  # still the same day
        frozen.move_to(at(2026, 12, 3, 0, 0, 1))
        assert call(key) is None  # a new window: no restart, no job, the counter is simply new
        assert budget_status(daily, at=at(2026, 12, 2, 12))["spent_usd"] == Decimal("0.025340")
        assert budget_status(daily)["spent_usd"] == Decimal("0.025340")
    assert UsageRecord.objects.filter(api_key_id=key.pk).count() == 2  # refusals spend nothing


def test_a_monthly_budget_counts_across_the_daily_boundary_and_resets_with_the_month(store):
    client = new_client()
    budget("1.00", client=client)  # daily: never the one that refuses here
    budget("0.10", client=client, period=Budget.MONTHLY)
    key, _ = issue_key(client, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 2, 23, 59)) as frozen:
        assert call(key) is None
        frozen.move_to(at(2026, 12, 3, 0, 0, 1))  # a new day, the same month
        assert call(key) is None
        assert call(key) is None
        refusal = call(key)  # $0.07602 of $0.10 spent this month: the worst case no longer fits
        assert refusal is not None and "monthly budget" in refusal.message
        frozen.move_to(at(2027, 1, 1, 0, 0, 1))
        assert call(key) is None


def test_a_weekly_budget_resets_on_monday(store):
    client = new_client()
    budget("0.05", client=client, period=Budget.WEEKLY)
    key, _ = issue_key(client, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 6, 22)) as frozen:  # Sunday
        assert call(key) is None
        assert call(key) is not None
        frozen.move_to(at(2026, 12, 7, 0, 0, 1))  # Monday
        assert call(key) is None


def test_a_custom_period_resets_at_the_end_of_its_cycle(store):
    client = new_client()
    budget("0.05", client=client, period=Budget.CUSTOM, period_days=3, period_anchor=datetime(2026, 11, 30).date())
    key, _ = issue_key(client, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 2, 23, 0)) as frozen:  # day 3 of the cycle that began Nov 30
        assert call(key) is None
        assert call(key) is not None
        frozen.move_to(at(2026, 12, 3, 0, 0, 1))
        assert call(key) is None


def test_every_scope_must_fit_and_a_cost_centers_budget_is_shared_by_its_clients(store):
    team = CostCenter.objects.create(name="Research", slug=f"r-{uuid.uuid4().hex[:8]}")
    budget("0.08", scope=Budget.COST_CENTER, period=Budget.MONTHLY, cost_center=team)
    first, second = new_client(team), new_client(team)
    budget("10", client=first, period=Budget.MONTHLY)
    key_one, _ = issue_key(first, allowed_agents=["*"])
    key_two, _ = issue_key(second, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 2, 12)):
        assert call(key_one) is None
        assert call(key_two) is None  # $0.05068 of the team's $0.08 spent
        refusal = call(key_one)
        assert refusal is not None and "Cost center" in refusal.message  # the client's own $10 was not the limit
    rows = UsageRecord.objects.filter(api_key_id__in=[key_one.pk, key_two.pk])
    assert set(rows.values_list("cost_center_id", flat=True)) == {team.pk}  # spend is attributed to the team


def test_a_key_budget_and_a_soft_budget(store):
    client = new_client()
    soft = Budget.objects.create(
        scope=Budget.CLIENT, client=client, period=Budget.DAILY, limit_usd=Decimal("0.01"), mode=Budget.SOFT
    )
    key, _ = issue_key(client, allowed_agents=["*"])
    budget("0.05", scope=Budget.KEY, api_key=key)
    other_key, _ = issue_key(client, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 2, 12)):
        assert call(key) is None  # past the soft $0.01 already: allowed
        assert call(key) is not None  # the key's own hard $0.05 refuses
        assert call(other_key) is None  # a sibling key has no key budget
        assert budget_status(soft)["spent_usd"] == Decimal("0.050680")


def test_an_emptied_counter_is_rebuilt_from_the_database_before_it_is_used(store):
    client = new_client()
    budget("0.05", client=client)
    key, _ = issue_key(client, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 2, 12)):
        assert call(key) is None
        if isinstance(store, RedisHotState):
            store._sync.delete(*store._sync.keys(f"{settings.GATEWAY['REDIS_PREFIX']}:spend:*"))
        else:
            store._values.clear()  # a restarted embedded gateway starts empty
        refusal = call(key)
        assert refusal is not None and refusal.code == "budget_exceeded"


def test_a_price_applies_from_its_effective_date_and_unknown_models_are_flagged(store):
    from billing.models import ModelPrice

    model = f"m-{uuid.uuid4().hex[:6]}"
    ModelPrice.objects.create(
        model=model, effective_from=at(2026, 1, 1), input_per_million=Decimal(1), output_per_million=Decimal(1)
    )
    ModelPrice.objects.create(
        model=model, effective_from=at(2026, 12, 3), input_per_million=Decimal(2), output_per_million=Decimal(2)
    )
    key, _ = issue_key(new_client(), allowed_agents=["*"], tokens_per_minute=10_000_000)
    with freeze_time(at(2026, 12, 2, 23, 59)) as frozen:
        assert call(key, model=model, input_tokens=1_000_000, output_tokens=0) is None
        frozen.move_to(at(2026, 12, 3, 0, 0, 1))
        assert call(key, model=model, input_tokens=1_000_000, output_tokens=0) is None
        assert call(key, model="never-priced", input_tokens=1_000_000, output_tokens=0) is None
    rows = UsageRecord.objects.filter(api_key=key).order_by("created_at")
    assert [(r.model, r.cost_usd, r.default_priced) for r in rows] == [
        (model, Decimal(1), False),  # the old price stays on the old usage
        (model, Decimal(2), False),
        ("never-priced", Decimal("2.5"), True),  # priced with the default row, and flagged
    ]


def test_an_agents_default_answer_length_sets_the_worst_case_reserved(store):
    client = new_client()
    budget("0.06", client=client)
    key, _ = issue_key(client, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 2, 12)):
        assert call(key) is None
        assert call(key) is not None  # $0.02534 spent + $0.03524 reserved (1,024-token cap) > $0.06
        assert call(key, default_output=100) is None  # the agent expects short answers: $0.026 reserved


def test_the_status_of_the_current_window_is_the_gateways_own_counter(store):
    client = new_client()
    daily = budget("1.00", client=client)
    key, _ = issue_key(client, allowed_agents=["*"])
    with freeze_time(at(2026, 12, 2, 12)):
        assert budget_status(daily)["spent_usd"] == Decimal(0)  # no counter yet: counted from the rows
        assert call(key) is None
        counter = counter_key(store, rule_of(daily), rule_of(daily).window())
        assert store.get_int_now(counter) == 25_340_000
        UsageRecord.objects.filter(api_key_id=key.pk).delete()  # rows not written yet, say: the counter knows
        assert budget_status(daily)["spent_usd"] == Decimal("0.025340")
        assert budget_status(daily, at=at(2026, 12, 2, 12))["spent_usd"] == Decimal(0)  # a given moment: the rows
