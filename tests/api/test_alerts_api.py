"""Budget alerts over the management API: read by every role, acknowledged by admins and operators."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AdminAction
from billing.models import Budget, BudgetAlert
from billing.periods import period_of
from keys.models import CostCenter


@pytest.fixture
def budgets(acme):
    platform = CostCenter.objects.create(name="Platform", slug="platform")
    return {
        "client": Budget.objects.create(scope="client", client=acme, limit_usd=Decimal("100")),
        "cost_center": Budget.objects.create(scope="cost_center", cost_center=platform, limit_usd=Decimal("500")),
    }


def raise_alert(budget, threshold, *, ago=timedelta(0), **fields):
    month = period_of("monthly")
    alert = BudgetAlert.objects.create(
        budget=budget,
        period_key=month.key,
        period_start=month.start,
        period_end=month.end,
        threshold_percent=threshold,
        spent_usd=budget.limit_usd * threshold / 100,
        limit_usd=budget.limit_usd,
        **fields,
    )
    BudgetAlert.objects.filter(pk=alert.pk).update(created_at=timezone.now() - ago)
    alert.refresh_from_db()
    return alert


@pytest.fixture
def alerts(budgets):
    return {
        "client_80": raise_alert(budgets["client"], 80, ago=timedelta(days=2), email_status="delivered"),
        "client_100": raise_alert(budgets["client"], 100, ago=timedelta(hours=1), webhook_status="failed"),
        "center_80": raise_alert(budgets["cost_center"], 80, acknowledged_at=timezone.now()),
    }


def alert_ids(api, **params):
    response = api.get("/api/v1/alerts/", params)
    assert response.status_code == 200
    return [row["id"] for row in response.json()["results"]]


@pytest.mark.parametrize("persona", ["api", "operator_api", "compliance_api"])
def test_every_role_lists_alerts_newest_first(request, persona, alerts):
    api = request.getfixturevalue(persona)
    assert alert_ids(api) == [alerts["center_80"].pk, alerts["client_100"].pk, alerts["client_80"].pk]


def test_an_alert_says_which_budget_crossed_what_and_how_it_was_delivered(api, alerts, budgets):
    body = api.get(f"/api/v1/alerts/{alerts['client_100'].pk}/").json()
    assert (body["budget"], body["scope"], body["target"]) == (budgets["client"].pk, "client", "Client Acme")
    assert (body["threshold_percent"], body["spent_usd"], body["limit_usd"]) == (100, "100.000000000", "100.00")
    assert body["period_key"] == period_of("monthly").key
    assert (body["email_status"], body["webhook_status"], body["webhook_attempts"]) == ("none", "failed", 0)
    assert (body["acknowledged"], body["acknowledged_at"]) == (False, None)


def test_it_filters_alerts(api, alerts, budgets):
    now = timezone.now()
    assert alert_ids(api, budget=budgets["client"].pk) == [alerts["client_100"].pk, alerts["client_80"].pk]
    assert alert_ids(api, scope="cost_center") == [alerts["center_80"].pk]
    assert alert_ids(api, acknowledged="true") == [alerts["center_80"].pk]
    assert alert_ids(api, acknowledged="false") == [alerts["client_100"].pk, alerts["client_80"].pk]
    assert alert_ids(api, threshold_percent=100) == [alerts["client_100"].pk]
    assert alert_ids(api, created_after=(now - timedelta(days=1)).isoformat()) == [
        alerts["center_80"].pk,
        alerts["client_100"].pk,
    ]
    assert alert_ids(api, created_before=(now - timedelta(days=1)).isoformat()) == [alerts["client_80"].pk]


@pytest.mark.parametrize("persona", ["api", "operator_api"])
def test_admins_and_operators_acknowledge_an_alert_in_the_trail(request, persona, alerts):
    api = request.getfixturevalue(persona)
    alert = alerts["client_100"]
    response = api.post(f"/api/v1/alerts/{alert.pk}/acknowledge/")
    assert response.status_code == 200
    assert response.json()["acknowledged"] is True
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None
    action = AdminAction.objects.get()
    assert (action.action, action.via, action.object_type, action.object_id) == (
        "acknowledge",
        "api",
        "billing.budgetalert",
        str(alert.pk),
    )
    assert action.changes["acknowledged_at"][0] is None and action.changes["acknowledged_at"][1]


def test_acknowledging_again_keeps_the_first_time_and_records_nothing_more(api, alerts):
    url = f"/api/v1/alerts/{alerts['client_80'].pk}/acknowledge/"
    first = api.post(url).json()["acknowledged_at"]
    assert api.post(url).json()["acknowledged_at"] == first
    assert AdminAction.objects.count() == 1


def test_compliance_staff_cannot_acknowledge(compliance_api, alerts):
    alert = alerts["client_80"]
    assert compliance_api.post(f"/api/v1/alerts/{alert.pk}/acknowledge/").status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    assert not AdminAction.objects.exists()


def test_alerts_are_made_by_the_gateway_not_through_the_api(api, alerts):
    url = f"/api/v1/alerts/{alerts['client_80'].pk}/"
    assert api.post("/api/v1/alerts/", {}, format="json").status_code == 405
    assert api.patch(url, {"acknowledged_at": None}, format="json").status_code == 405
    assert api.delete(url).status_code == 405
    assert BudgetAlert.objects.count() == 3


def test_acknowledging_a_missing_alert_is_a_404(api, db):
    assert api.post("/api/v1/alerts/999999/acknowledge/").status_code == 404
