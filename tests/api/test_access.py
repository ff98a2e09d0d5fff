"""Who may call the management API: a token of a user with a role, and what each role may do."""

import pytest

LIST_URLS = [
    "/api/v1/cost-centers/",
    "/api/v1/plans/",
    "/api/v1/clients/",
    "/api/v1/keys/",
    "/api/v1/agents/",
    "/api/v1/prices/",
    "/api/v1/budgets/",
    "/api/v1/budgets/status/",
    "/api/v1/alerts/",
    "/api/v1/usage/",
    "/api/v1/audit/",
]


# Append-only collections page by cursor (no count, a ``next`` link); the others by limit and offset.
CURSOR_LISTS = {"/api/v1/alerts/", "/api/v1/usage/", "/api/v1/audit/"}


@pytest.mark.parametrize("url", LIST_URLS)
def test_it_lists_for_an_admin_token(api, url):
    response = api.get(url)
    assert response.status_code == 200
    assert set(response.json()) >= ({"next", "results"} if url in CURSOR_LISTS else {"count", "results"})


@pytest.mark.parametrize("url", LIST_URLS)
def test_it_refuses_an_anonymous_caller_with_401(anonymous_api, url):
    response = anonymous_api.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "detail" in response.json()


@pytest.mark.parametrize("url", LIST_URLS)
def test_it_refuses_a_user_without_a_role_with_403(outsider_api, url):
    response = outsider_api.get(url)
    assert response.status_code == 403
    assert "detail" in response.json()


def test_it_refuses_a_user_without_a_role_before_any_write(outsider_api, acme):
    response = outsider_api.post("/api/v1/keys/", {"client": acme.pk}, format="json")
    assert response.status_code == 403
    assert not acme.api_keys.exists()


def test_it_refuses_an_unknown_token(db, anonymous_api):
    anonymous_api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anonymous_api.get("/api/v1/clients/").status_code == 401


def test_the_root_lists_every_resource(api):
    body = api.get("/api/v1/").json()
    assert set(body) >= {
        "cost-centers",
        "plans",
        "clients",
        "keys",
        "agents",
        "prices",
        "budgets",
        "alerts",
        "usage",
        "audit",
        "admin-actions",
    }


@pytest.mark.parametrize("url", LIST_URLS)
def test_operators_and_compliance_staff_can_read(operator_api, compliance_api, url):
    assert operator_api.get(url).status_code == 200
    assert compliance_api.get(url).status_code == 200


def test_an_operator_manages_cost_centers_plans_clients_keys_and_budgets(operator_api):
    center = operator_api.post("/api/v1/cost-centers/", {"name": "Ops team", "slug": "ops-team"}, format="json")
    assert center.status_code == 201
    plan = operator_api.post("/api/v1/plans/", {"name": "Pro", "slug": "pro"}, format="json")
    assert plan.status_code == 201
    client = operator_api.post(
        "/api/v1/clients/", {"name": "Ops", "slug": "ops", "cost_center": center.json()["id"]}, format="json"
    )
    assert client.status_code == 201
    key = operator_api.post(
        "/api/v1/keys/",
        {"client": client.json()["id"], "plan": plan.json()["id"], "allowed_agents": ["*"], "allowed_models": ["*"]},
        format="json",
    )
    assert key.status_code == 201
    budget = operator_api.post(
        "/api/v1/budgets/", {"scope": "client", "client": client.json()["id"], "limit_usd": "10.00"}, format="json"
    )
    assert budget.status_code == 201


def test_compliance_staff_change_nothing(compliance_api, acme):
    assert compliance_api.post("/api/v1/clients/", {"name": "X", "slug": "x"}, format="json").status_code == 403
    assert compliance_api.post("/api/v1/cost-centers/", {"name": "X", "slug": "x"}, format="json").status_code == 403
    assert compliance_api.post("/api/v1/plans/", {"name": "X", "slug": "x"}, format="json").status_code == 403
    assert compliance_api.post("/api/v1/budgets/", {"scope": "organization", "limit_usd": "1"}).status_code == 403
    assert compliance_api.patch(f"/api/v1/clients/{acme.pk}/", {"name": "Y"}, format="json").status_code == 403
    assert compliance_api.delete(f"/api/v1/clients/{acme.pk}/").status_code == 403
    acme.refresh_from_db()
    assert acme.name == "Acme"


def test_each_user_is_throttled(api):
    from django.core.cache import cache
    from rest_framework.throttling import UserRateThrottle

    cache.clear()
    original = UserRateThrottle.THROTTLE_RATES
    UserRateThrottle.THROTTLE_RATES = {**original, "user": "3/min"}
    try:
        responses = [api.get("/api/v1/clients/") for _ in range(4)]
    finally:
        UserRateThrottle.THROTTLE_RATES = original
        cache.clear()
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert int(responses[-1]["Retry-After"]) >= 1
