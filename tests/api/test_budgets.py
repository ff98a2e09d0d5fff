"""Budgets over the management API: four scopes, several periods, validation, and where each stands."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AdminAction
from billing.models import Budget, UsageRecord
from billing.periods import period_of
from keys.models import CostCenter
from keys.services import issue_key


@pytest.fixture
def platform(db):
    return CostCenter.objects.create(name="Platform", slug="platform", code="CC-100")


@pytest.fixture
def key(acme):
    key, _raw = issue_key(acme, name="ci", allowed_agents=["*"], allowed_models=["*"])
    return key


def create(api, **fields):
    return api.post("/api/v1/budgets/", {"limit_usd": "100.00", **fields}, format="json")


# Creating, changing, deleting


@pytest.mark.parametrize("persona", ["api", "operator_api"])
def test_admins_and_operators_create_update_and_delete_a_budget(request, persona, acme):
    api = request.getfixturevalue(persona)
    created = create(api, scope="client", client=acme.pk, period="daily", mode="soft", alert_percent=50)
    assert created.status_code == 201
    body = created.json()
    assert (body["scope"], body["client"], body["period"], body["mode"]) == ("client", acme.pk, "daily", "soft")
    assert body["target"] == "Client Acme"
    url = f"/api/v1/budgets/{body['id']}/"

    assert api.patch(url, {"limit_usd": "250", "name": "Acme daily"}, format="json").status_code == 200
    assert Budget.objects.get(pk=body["id"]).limit_usd == Decimal("250")

    assert api.delete(url).status_code == 204
    assert not Budget.objects.filter(pk=body["id"]).exists()
    trail = AdminAction.objects.filter(object_type="billing.budget").order_by("id")
    assert [a.action for a in trail] == ["create", "update", "delete"]
    assert trail[1].changes["limit_usd"] == ["100.00", "250.00"]
    assert trail[1].changes["name"] == ["", "Acme daily"]


def test_compliance_staff_read_budgets_but_change_none(compliance_api, acme):
    budget = Budget.objects.create(scope="client", client=acme, limit_usd=Decimal("10"))
    assert compliance_api.get("/api/v1/budgets/").status_code == 200
    assert compliance_api.get(f"/api/v1/budgets/{budget.pk}/").status_code == 200
    assert compliance_api.get(f"/api/v1/budgets/{budget.pk}/status/").status_code == 200
    assert compliance_api.get("/api/v1/budgets/status/").status_code == 200
    assert create(compliance_api, scope="organization").status_code == 403
    assert compliance_api.patch(f"/api/v1/budgets/{budget.pk}/", {"limit_usd": "1"}, format="json").status_code == 403
    assert compliance_api.delete(f"/api/v1/budgets/{budget.pk}/").status_code == 403
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("10")
    assert Budget.objects.count() == 1
    assert not AdminAction.objects.exists()


def test_it_stores_every_field_of_a_budget(api, platform):
    body = create(
        api,
        name="Platform weekly",
        scope="cost_center",
        cost_center=platform.pk,
        period="weekly",
        limit_usd="500.5",
        mode="hard",
        alert_percent=90,
        alert_emails="finance@example.com, lead@example.com",
        alert_webhook_url="https://hooks.example.com/budget",
        is_active=False,
    ).json()
    stored = Budget.objects.get(pk=body["id"])
    assert (stored.name, stored.scope, stored.cost_center, stored.period) == (
        "Platform weekly",
        "cost_center",
        platform,
        "weekly",
    )
    assert (stored.limit_usd, stored.mode, stored.alert_percent) == (Decimal("500.50"), "hard", 90)
    assert stored.alert_addresses == ["finance@example.com", "lead@example.com"]
    assert (stored.alert_webhook_url, stored.is_active) == ("https://hooks.example.com/budget", False)
    assert body["limit_usd"] == "500.50"
    assert body["target"] == "Cost center Platform"


def test_a_budget_starts_monthly_hard_and_alerting_at_80_percent(api):
    body = create(api, scope="organization").json()
    assert (body["period"], body["mode"], body["alert_percent"], body["is_active"]) == ("monthly", "hard", 80, True)
    assert body["target"] == "Organization"


def test_several_budgets_may_apply_to_one_client(api, acme):
    assert create(api, scope="client", client=acme.pk, period="daily", limit_usd="5").status_code == 201
    assert create(api, scope="client", client=acme.pk, period="monthly", limit_usd="100").status_code == 201
    assert Budget.objects.filter(client=acme).count() == 2


def test_a_budget_for_every_scope(api, platform, acme, key):
    targets = {"organization": {}, "cost_center": {"cost_center": platform.pk}, "client": {"client": acme.pk}}
    targets["key"] = {"api_key": key.pk}
    for scope, target in targets.items():
        response = create(api, scope=scope, **target)
        assert response.status_code == 201, response.json()
    assert sorted(Budget.objects.values_list("scope", flat=True)) == sorted(targets)
    assert Budget.objects.get(scope="key").target == key


def test_a_custom_period_gets_its_length_and_starts_today_by_default(api):
    body = create(api, scope="organization", period="custom", period_days=14).json()
    assert (body["period_days"], body["period_anchor"]) == (14, timezone.localdate().isoformat())
    anchored = create(api, scope="organization", period="custom", period_days=10, period_anchor="2026-01-05").json()
    assert anchored["period_anchor"] == "2026-01-05"


def test_a_calendar_period_drops_a_custom_length(api):
    body = create(api, scope="organization", period="monthly", period_days=14, period_anchor="2026-01-05").json()
    assert (body["period_days"], body["period_anchor"]) == (None, None)


def test_switching_scope_needs_the_new_target_and_drops_the_old(api, acme, platform):
    budget = create(api, scope="client", client=acme.pk).json()
    url = f"/api/v1/budgets/{budget['id']}/"
    keeps_client = api.patch(url, {"scope": "cost_center", "cost_center": platform.pk}, format="json")
    assert keeps_client.status_code == 400
    assert "client" in keeps_client.json()

    switched = api.patch(url, {"scope": "cost_center", "cost_center": platform.pk, "client": None}, format="json")
    assert switched.status_code == 200
    assert (switched.json()["cost_center"], switched.json()["client"]) == (platform.pk, None)


# Validation: the model's rules, each error under its field, nothing saved


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"scope": "client"}, "client"),
        ({"scope": "cost_center"}, "cost_center"),
        ({"scope": "key"}, "api_key"),
        ({"scope": "organization", "client": "ACME"}, "client"),
        ({"scope": "cost_center", "cost_center": "PLATFORM", "client": "ACME"}, "client"),
        ({"scope": "client", "client": "ACME", "api_key": "KEY"}, "api_key"),
        ({"scope": "organization", "period": "custom"}, "period_days"),
        ({"scope": "organization", "period": "custom", "period_days": 0}, "period_days"),
        ({"scope": "organization", "period": "fortnightly"}, "period"),
        ({"scope": "galaxy"}, "scope"),
        ({"scope": "organization", "limit_usd": "-1"}, "limit_usd"),
        ({"scope": "organization", "limit_usd": "lots"}, "limit_usd"),
        ({"scope": "organization", "mode": "strict"}, "mode"),
        ({"scope": "organization", "alert_percent": 0}, "alert_percent"),
        ({"scope": "organization", "alert_percent": 101}, "alert_percent"),
        ({"scope": "organization", "alert_emails": "finance@example.com, not-an-address"}, "alert_emails"),
        ({"scope": "organization", "alert_webhook_url": "not a url"}, "alert_webhook_url"),
        ({"scope": "client", "client": 999_999}, "client"),
    ],
)
def test_it_refuses_an_invalid_budget_under_the_field_at_fault(api, acme, platform, key, fields, field):
    ids = {"ACME": acme.pk, "PLATFORM": platform.pk, "KEY": key.pk}
    response = create(api, **{name: ids.get(value, value) for name, value in fields.items()})
    assert response.status_code == 400
    assert field in response.json()
    assert response.json()["detail"].startswith(f"{field}:")
    assert not Budget.objects.exists()
    assert not AdminAction.objects.filter(object_type="billing.budget").exists()


def test_it_names_what_a_scope_needs(api):
    body = create(api, scope="client").json()
    assert body["client"] == ["A client budget needs one."]


def test_an_invalid_change_leaves_the_budget_as_it_was(api, acme):
    budget = Budget.objects.create(scope="client", client=acme, limit_usd=Decimal("10"))
    response = api.patch(f"/api/v1/budgets/{budget.pk}/", {"limit_usd": "20", "period": "custom"}, format="json")
    assert response.status_code == 400
    assert "period_days" in response.json()
    budget.refresh_from_db()
    assert (budget.limit_usd, budget.period) == (Decimal("10"), "monthly")


# Filters


def test_it_filters_budgets(api, acme, globex, platform, key):
    org = Budget.objects.create(scope="organization", limit_usd=1, period="daily", mode="soft")
    center = Budget.objects.create(scope="cost_center", cost_center=platform, limit_usd=1)
    acme_budget = Budget.objects.create(scope="client", client=acme, limit_usd=1, is_active=False)
    globex_budget = Budget.objects.create(scope="client", client=globex, limit_usd=1, period="weekly")
    key_budget = Budget.objects.create(scope="key", api_key=key, limit_usd=1)

    def ids(**params):
        response = api.get("/api/v1/budgets/", params)
        assert response.status_code == 200
        return {b["id"] for b in response.json()["results"]}

    assert ids() == {org.pk, center.pk, acme_budget.pk, globex_budget.pk, key_budget.pk}
    assert ids(scope="client") == {acme_budget.pk, globex_budget.pk}
    assert ids(client=globex.pk) == {globex_budget.pk}
    assert ids(cost_center=platform.pk) == {center.pk}
    assert ids(api_key=key.pk) == {key_budget.pk}
    assert ids(period="weekly") == {globex_budget.pk}
    assert ids(mode="soft") == {org.pk}
    assert ids(is_active="false") == {acme_budget.pk}


# Where a budget stands: counted from the usage rows of its current window


def spend(cents, *, at, **fields):
    return UsageRecord.objects.create(
        request_id=f"r-{UsageRecord.objects.count()}",
        created_at=at,
        agent="research",
        model="gpt-4o",
        cost_usd=Decimal(cents) / 100,
        **fields,
    )


@pytest.fixture
def month():
    return period_of("monthly")


def test_a_budget_shows_its_spend_in_the_current_window(api, acme, globex, month):
    budget = Budget.objects.create(scope="client", client=acme, limit_usd=Decimal("10"), alert_percent=50)
    spend(300, at=month.start, client=acme)
    spend(325, at=month.end - timedelta(seconds=1), client=acme)
    spend(999, at=month.start - timedelta(seconds=1), client=acme)  # last month
    spend(999, at=month.start + timedelta(hours=1), client=globex)  # someone else

    status = api.get(f"/api/v1/budgets/{budget.pk}/").json()["status"]
    assert status["spent_usd"] == "6.250000"
    assert status["remaining_usd"] == "3.750000"
    assert status["percent"] == 62
    assert (status["alerting"], status["exhausted"]) == (True, False)
    assert status["period_key"] == month.key
    assert datetime.fromisoformat(status["period_start"]) == month.start
    assert datetime.fromisoformat(status["period_end"]) == month.end


def test_the_status_action_matches_the_detail(api, acme, month):
    budget = Budget.objects.create(scope="client", client=acme, limit_usd=Decimal("5"), name="Acme monthly")
    spend(500, at=month.start + timedelta(minutes=1), client=acme)
    spend(1, at=month.start + timedelta(minutes=2), client=acme)

    status = api.get(f"/api/v1/budgets/{budget.pk}/status/").json()
    assert status["spent_usd"] == "5.010000"
    assert status["remaining_usd"] == "0.000000"
    assert status["percent"] == 100
    assert status["exhausted"] is True
    assert (status["id"], status["name"], status["scope"], status["client"]) == (
        budget.pk,
        "Acme monthly",
        "client",
        acme.pk,
    )
    assert (status["target"], status["limit_usd"], status["mode"]) == ("Client Acme", "5.00", "hard")
    detail = api.get(f"/api/v1/budgets/{budget.pk}/").json()["status"]
    assert {name: status[name] for name in detail} == detail


def test_each_scope_counts_its_own_usage(api, acme, globex, platform, key):
    day = period_of("daily")
    at = day.start + timedelta(minutes=1)
    spend(100, at=at, client=acme, api_key=key, cost_center=platform)
    spend(200, at=at, client=acme, cost_center=platform)
    spend(400, at=at, client=globex)
    budgets = {
        "organization": Budget.objects.create(scope="organization", period="daily", limit_usd=100),
        "cost_center": Budget.objects.create(scope="cost_center", cost_center=platform, period="daily", limit_usd=100),
        "client": Budget.objects.create(scope="client", client=globex, period="daily", limit_usd=100),
        "key": Budget.objects.create(scope="key", api_key=key, period="daily", limit_usd=100),
    }
    spent = {scope: api.get(f"/api/v1/budgets/{b.pk}/status/").json()["spent_usd"] for scope, b in budgets.items()}
    assert spent == {"organization": "7.000000", "cost_center": "3.000000", "client": "4.000000", "key": "1.000000"}


def test_the_status_report_lists_every_active_budget(api, acme, globex, month):
    acme_budget = Budget.objects.create(scope="client", client=acme, limit_usd=Decimal("10"))
    org = Budget.objects.create(scope="organization", limit_usd=Decimal("1000"))
    Budget.objects.create(scope="client", client=globex, limit_usd=Decimal("10"), is_active=False)
    spend(250, at=month.start + timedelta(minutes=1), client=acme)

    body = api.get("/api/v1/budgets/status/").json()
    assert body["count"] == 2
    rows = {row["id"]: row for row in body["results"]}
    assert set(rows) == {acme_budget.pk, org.pk}
    assert (rows[acme_budget.pk]["spent_usd"], rows[acme_budget.pk]["percent"]) == ("2.500000", 25)
    assert rows[org.pk]["spent_usd"] == "2.500000"
    assert rows[org.pk]["target"] == "Organization"


def test_the_status_report_filters_by_scope_and_target(api, acme, globex):
    acme_budget = Budget.objects.create(scope="client", client=acme, limit_usd=1)
    globex_budget = Budget.objects.create(scope="client", client=globex, limit_usd=1, period="daily")
    Budget.objects.create(scope="organization", limit_usd=1)

    def ids(**params):
        return {row["id"] for row in api.get("/api/v1/budgets/status/", params).json()["results"]}

    assert ids(scope="client") == {acme_budget.pk, globex_budget.pk}
    assert ids(client=globex.pk) == {globex_budget.pk}
    assert ids(scope="client", period="monthly") == {acme_budget.pk}


def test_the_status_report_costs_one_spend_query_per_budget(api, acme, platform):
    def queries_for_report():
        with CaptureQueriesContext(connection) as queries:
            assert api.get("/api/v1/budgets/status/").status_code == 200
        return len(queries)

    Budget.objects.create(scope="client", client=acme, limit_usd=1)
    one = queries_for_report()
    key, _raw = issue_key(acme, allowed_agents=["*"], allowed_models=["*"])
    Budget.objects.create(scope="key", api_key=key, limit_usd=1)
    Budget.objects.create(scope="cost_center", cost_center=platform, limit_usd=1)
    Budget.objects.create(scope="organization", limit_usd=1)
    Budget.objects.create(scope="client", client=acme, limit_usd=1, period="daily")
    assert queries_for_report() == one + 4


def test_the_budget_list_does_not_query_per_budget(api, acme, platform):
    def queries_for_list():
        with CaptureQueriesContext(connection) as queries:
            assert api.get("/api/v1/budgets/").status_code == 200
        return len(queries)

    key, _raw = issue_key(acme, allowed_agents=["*"], allowed_models=["*"])
    Budget.objects.create(scope="key", api_key=key, limit_usd=1)
    one = queries_for_list()
    Budget.objects.create(scope="cost_center", cost_center=platform, limit_usd=1)
    Budget.objects.create(scope="client", client=acme, limit_usd=1)
    Budget.objects.create(scope="organization", limit_usd=1)
    assert queries_for_list() == one


def test_a_missing_budget_has_no_status(api):
    assert api.get("/api/v1/budgets/999999/status/").status_code == 404
