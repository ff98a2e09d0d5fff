"""Cost centers (and the clients in them) and plans over the management API."""

from decimal import Decimal

import pytest

from audit.models import AdminAction
from billing.models import Budget
from keys.models import Client, CostCenter, Plan


@pytest.fixture
def platform(db):
    return CostCenter.objects.create(name="Platform", slug="platform", code="CC-100")


# Cost centers


@pytest.mark.parametrize("persona", ["api", "operator_api"])
def test_admins_and_operators_manage_cost_centers(request, persona):
    api = request.getfixturevalue(persona)
    created = api.post("/api/v1/cost-centers/", {"name": "Research", "slug": "research", "code": "CC-7"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert (body["name"], body["slug"], body["code"], body["client_count"]) == ("Research", "research", "CC-7", 0)
    url = f"/api/v1/cost-centers/{body['id']}/"

    assert api.patch(url, {"code": "CC-8"}, format="json").json()["code"] == "CC-8"
    assert api.get(url).json()["code"] == "CC-8"
    assert api.delete(url).status_code == 204
    assert not CostCenter.objects.filter(pk=body["id"]).exists()
    trail = AdminAction.objects.filter(object_type="keys.costcenter").order_by("id")
    assert [(a.action, a.changes.get("code")) for a in trail] == [
        ("create", [None, "CC-7"]),
        ("update", ["CC-7", "CC-8"]),
        ("delete", ["CC-8", None]),
    ]


def test_a_cost_center_counts_its_clients(api, platform, acme, globex):
    Client.objects.filter(pk__in=[acme.pk, globex.pk]).update(cost_center=platform)
    CostCenter.objects.create(name="Empty", slug="empty")
    listed = {c["slug"]: c["client_count"] for c in api.get("/api/v1/cost-centers/").json()["results"]}
    assert listed == {"platform": 2, "empty": 0}
    assert api.get(f"/api/v1/cost-centers/{platform.pk}/").json()["client_count"] == 2
    assert (
        api.patch(f"/api/v1/cost-centers/{platform.pk}/", {"name": "Plat"}, format="json").json()["client_count"] == 2
    )


def test_it_searches_cost_centers_by_name_slug_or_code(api, platform):
    CostCenter.objects.create(name="Sales", slug="sales", code="CC-200")
    assert [c["slug"] for c in api.get("/api/v1/cost-centers/", {"search": "CC-1"}).json()["results"]] == ["platform"]
    assert [c["slug"] for c in api.get("/api/v1/cost-centers/", {"search": "sal"}).json()["results"]] == ["sales"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "Other", "slug": "platform"}, "slug"),
        ({"name": "Other", "slug": "not a slug"}, "slug"),
        ({"slug": "other"}, "name"),
        ({"name": "Other", "slug": "other", "code": "x" * 51}, "code"),
    ],
)
def test_it_refuses_an_invalid_cost_center(api, platform, fields, field):
    response = api.post("/api/v1/cost-centers/", fields, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert CostCenter.objects.count() == 1


def test_deleting_a_cost_center_leaves_its_clients_without_one(api, platform, acme):
    acme.cost_center = platform
    acme.save()
    Budget.objects.create(scope="cost_center", cost_center=platform, limit_usd=1)
    assert api.delete(f"/api/v1/cost-centers/{platform.pk}/").status_code == 204
    acme.refresh_from_db()
    assert acme.cost_center is None
    assert not Budget.objects.exists()


def test_compliance_staff_read_cost_centers_but_change_none(compliance_api, platform):
    assert compliance_api.get("/api/v1/cost-centers/").status_code == 200
    assert compliance_api.post("/api/v1/cost-centers/", {"name": "X", "slug": "x"}, format="json").status_code == 403
    url = f"/api/v1/cost-centers/{platform.pk}/"
    assert compliance_api.patch(url, {"name": "Y"}, format="json").status_code == 403
    assert compliance_api.delete(url).status_code == 403
    platform.refresh_from_db()
    assert platform.name == "Platform"
    assert CostCenter.objects.count() == 1


# Clients in cost centers


def test_a_client_is_put_in_a_cost_center_and_taken_out(api, platform, acme):
    url = f"/api/v1/clients/{acme.pk}/"
    assert api.get(url).json()["cost_center"] is None
    assert api.patch(url, {"cost_center": platform.pk}, format="json").json()["cost_center"] == platform.pk
    acme.refresh_from_db()
    assert acme.cost_center == platform
    assert api.patch(url, {"cost_center": None}, format="json").json()["cost_center"] is None
    changes = [a.changes["cost_center"] for a in AdminAction.objects.filter(object_type="keys.client").order_by("id")]
    assert changes == [[None, platform.pk], [platform.pk, None]]


def test_a_client_is_created_in_a_cost_center(api, platform):
    body = api.post(
        "/api/v1/clients/", {"name": "Ops", "slug": "ops", "cost_center": platform.pk}, format="json"
    ).json()
    assert Client.objects.get(pk=body["id"]).cost_center == platform


def test_it_refuses_a_missing_cost_center_for_a_client(api, acme):
    response = api.patch(f"/api/v1/clients/{acme.pk}/", {"cost_center": 999_999}, format="json")
    assert response.status_code == 400
    assert "cost_center" in response.json()


def test_it_filters_clients_by_cost_center(api, platform, acme, globex):
    acme.cost_center = platform
    acme.save()
    assert [c["slug"] for c in api.get("/api/v1/clients/", {"cost_center": platform.pk}).json()["results"]] == ["acme"]


# Plans


PRO = {
    "name": "Pro",
    "slug": "pro",
    "requests_per_minute": 600,
    "requests_per_day": 50_000,
    "tokens_per_minute": 1_000_000,
    "max_concurrent": 20,
    "monthly_budget_usd": "250.00",
}


@pytest.mark.parametrize("persona", ["api", "operator_api"])
def test_admins_and_operators_manage_plans(request, persona):
    api = request.getfixturevalue(persona)
    created = api.post("/api/v1/plans/", PRO, format="json")
    assert created.status_code == 201
    body = created.json()
    assert {name: body[name] for name in PRO} == PRO
    url = f"/api/v1/plans/{body['id']}/"

    assert api.patch(url, {"monthly_budget_usd": None}, format="json").status_code == 200
    assert Plan.objects.get(pk=body["id"]).monthly_budget_usd is None
    assert api.delete(url).status_code == 204
    assert not Plan.objects.filter(pk=body["id"]).exists()
    assert [a.action for a in AdminAction.objects.filter(object_type="keys.plan").order_by("id")] == [
        "create",
        "update",
        "delete",
    ]


def test_a_plan_starts_with_the_default_limits_and_no_budget(api):
    body = api.post("/api/v1/plans/", {"name": "Free", "slug": "free"}, format="json").json()
    assert (body["requests_per_minute"], body["requests_per_day"], body["tokens_per_minute"]) == (60, 0, 100_000)
    assert (body["max_concurrent"], body["monthly_budget_usd"]) == (10, None)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requests_per_minute", 0),
        ("tokens_per_minute", 0),
        ("requests_per_day", -1),
        ("max_concurrent", -1),
        ("monthly_budget_usd", "-5"),
        ("monthly_budget_usd", "cheap"),
        ("slug", "not a slug"),
    ],
)
def test_it_refuses_an_invalid_plan(api, field, value):
    response = api.post("/api/v1/plans/", {**PRO, field: value}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Plan.objects.filter(slug=PRO["slug"]).exists()


def test_it_refuses_a_duplicate_plan_slug(api):
    Plan.objects.create(name="Pro", slug="pro")
    response = api.post("/api/v1/plans/", PRO, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()


def test_compliance_staff_read_plans_but_change_none(compliance_api):
    plan = Plan.objects.create(name="Pro", slug="pro", monthly_budget_usd=Decimal("10"))
    assert compliance_api.get("/api/v1/plans/").json()["results"][0]["slug"] == "pro"
    assert compliance_api.post("/api/v1/plans/", {**PRO, "slug": "pro2"}, format="json").status_code == 403
    assert compliance_api.patch(f"/api/v1/plans/{plan.pk}/", {"name": "X"}, format="json").status_code == 403
    assert compliance_api.delete(f"/api/v1/plans/{plan.pk}/").status_code == 403
    assert list(Plan.objects.values_list("name", flat=True)) == ["Pro"]
