"""API keys over the management API: issued once, stored as a hash, revoked on demand, limited by their plan."""

import hashlib
import logging
from decimal import Decimal

import pytest

from audit.models import AdminAction
from billing.models import Budget
from keys.models import ApiKey, Plan
from keys.services import issue_key


@pytest.fixture
def key(acme):
    key, _raw = issue_key(acme, name="ci", allowed_agents=["research"], allowed_models=["*"])
    return key


def issue(api, **fields):
    return api.post("/api/v1/keys/", {"allowed_agents": ["*"], "allowed_models": ["*"], **fields}, format="json")


def test_it_returns_the_raw_key_once(api, acme):
    response = issue(api, client=acme.pk, name="ci")
    assert response.status_code == 201
    body = response.json()
    raw = body["key"]
    assert raw.startswith("agk_")
    assert body["prefix"] == raw[:12]
    assert body["status"] == "active"
    assert body["client_slug"] == "acme"

    retrieved = api.get(f"/api/v1/keys/{body['id']}/").json()
    listed = api.get("/api/v1/keys/").json()["results"]
    assert "key" not in retrieved
    assert all("key" not in item for item in listed)
    assert raw not in str(retrieved) + str(listed)


def test_it_stores_only_the_sha256_of_the_raw_key(api, acme):
    body = issue(api, client=acme.pk).json()
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.key_hash == hashlib.sha256(body["key"].encode()).hexdigest()
    assert body["key"] not in str(ApiKey.objects.filter(pk=stored.pk).values().get())


def test_it_never_logs_the_raw_key(api, acme, caplog):
    with caplog.at_level(logging.DEBUG):
        raw = issue(api, client=acme.pk).json()["key"]
    assert raw not in caplog.text


def test_it_never_exposes_the_key_hash(api, key):
    assert "key_hash" not in api.get(f"/api/v1/keys/{key.pk}/").json()
    assert "key_hash" not in api.get("/api/v1/keys/").json()["results"][0]
    assert key.key_hash not in api.get("/api/v1/keys/").content.decode()


def test_it_issues_a_key_with_scopes_and_limits(api, acme):
    body = issue(
        api,
        client=acme.pk,
        allowed_agents=["research", "coder"],
        allowed_models=["*"],
        requests_per_minute=5,
        tokens_per_minute=1000,
        max_concurrent=0,
    ).json()
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.allowed_agents == ["research", "coder"]
    assert stored.allowed_models == ["*"]
    assert (stored.requests_per_minute, stored.tokens_per_minute, stored.max_concurrent) == (5, 1000, 0)


def test_it_ignores_read_only_fields_on_create(api, acme):
    body = issue(
        api,
        client=acme.pk,
        prefix="agk_chosen",
        key_hash="0" * 64,
        revoked_at="2020-01-01T00:00:00Z",
        last_used_at="2020-01-01T00:00:00Z",
        status="revoked",
    ).json()
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.prefix == body["key"][:12]
    assert stored.key_hash != "0" * 64
    assert stored.revoked_at is None
    assert stored.last_used_at is None
    assert body["status"] == "active"


def test_it_revokes_a_key(api, key):
    response = api.post(f"/api/v1/keys/{key.pk}/revoke/")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert response.json()["revoked_at"] is not None
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert "key" not in response.json()


def test_revoking_twice_keeps_the_first_revocation_time(api, key):
    first = api.post(f"/api/v1/keys/{key.pk}/revoke/").json()["revoked_at"]
    assert api.post(f"/api/v1/keys/{key.pk}/revoke/").json()["revoked_at"] == first


def test_it_updates_a_key_partially(api, key):
    response = api.patch(
        f"/api/v1/keys/{key.pk}/", {"requests_per_minute": 7, "is_active": False, "name": "renamed"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "disabled"
    key.refresh_from_db()
    assert (key.requests_per_minute, key.is_active, key.name) == (7, False, "renamed")


def test_it_cannot_unrevoke_a_key_by_patching(api, key):
    api.post(f"/api/v1/keys/{key.pk}/revoke/")
    api.patch(f"/api/v1/keys/{key.pk}/", {"revoked_at": None}, format="json")
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_it_refuses_to_move_a_key_to_another_client(api, key, globex):
    response = api.patch(f"/api/v1/keys/{key.pk}/", {"client": globex.pk}, format="json")
    assert response.status_code == 400
    assert "client" in response.json()


def test_it_does_not_offer_put_on_keys(api, key):
    response = api.put(f"/api/v1/keys/{key.pk}/", {"client": key.client_id}, format="json")
    assert response.status_code == 405


def test_it_deletes_a_key(api, key):
    assert api.delete(f"/api/v1/keys/{key.pk}/").status_code == 204
    assert not ApiKey.objects.filter(pk=key.pk).exists()


def test_it_filters_keys_by_client_slug_and_state(api, acme, globex):
    acme_key, _ = issue_key(acme, allowed_agents=["*"], allowed_models=["*"])
    globex_key, _ = issue_key(globex, allowed_agents=["*"], allowed_models=["*"], is_active=False)

    def ids(**params):
        return [k["id"] for k in api.get("/api/v1/keys/", params).json()["results"]]

    assert ids(client=acme.pk) == [acme_key.pk]
    assert ids(client__slug="globex") == [globex_key.pk]
    assert ids(is_active="false") == [globex_key.pk]
    assert ids(prefix=acme_key.prefix) == [acme_key.pk]


@pytest.mark.parametrize(
    "scope",
    [
        "research",
        [1, 2],
        [],
        [""],
        ["  "],
        [None],
        ["*", "research"],
        {"research": True},
    ],
)
def test_it_refuses_allowed_agents_that_are_not_a_list_of_names(api, acme, scope):
    response = issue(api, client=acme.pk, allowed_agents=scope)
    assert response.status_code == 400
    assert "allowed_agents" in response.json()
    assert not ApiKey.objects.exists()


def test_it_requires_the_agents_scope_to_be_stated(api, acme):
    response = api.post("/api/v1/keys/", {"client": acme.pk}, format="json")
    assert response.status_code == 400
    assert "allowed_agents" in response.json() and "allowed_models" not in response.json()


def test_a_key_issued_without_allowed_models_may_request_every_model(api, acme):
    response = api.post("/api/v1/keys/", {"client": acme.pk, "allowed_agents": ["research"]}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["allowed_models"] == ["*"]
    assert ApiKey.objects.get(pk=response.json()["id"]).allowed_models == ["*"]


def test_allowed_models_if_given_is_never_empty(api, acme):
    response = issue(api, client=acme.pk, allowed_models=[])
    assert response.status_code == 400 and "allowed_models" in response.json()


def test_it_refuses_allowed_models_that_are_not_a_list_of_names(api, acme):
    response = issue(api, client=acme.pk, allowed_models=[["gpt"]])
    assert response.status_code == 400
    assert "allowed_models" in response.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [("requests_per_minute", 0), ("tokens_per_minute", 0), ("max_concurrent", -1), ("requests_per_minute", "many")],
)
def test_it_refuses_limits_out_of_range(api, acme, field, value):
    response = issue(api, client=acme.pk, **{field: value})
    assert response.status_code == 400
    assert field in response.json()
    assert response.json()["detail"].startswith(f"{field}:")


def test_it_refuses_a_key_for_a_missing_client(api):
    response = issue(api, client=999_999)
    assert response.status_code == 400
    assert "client" in response.json()


# Plans and the daily limit


@pytest.fixture
def pro(db):
    return Plan.objects.create(
        name="Pro",
        slug="pro",
        requests_per_minute=600,
        requests_per_day=50_000,
        tokens_per_minute=1_000_000,
        max_concurrent=20,
        monthly_budget_usd=Decimal("250"),
    )


def limits(key: ApiKey) -> tuple:
    return (key.requests_per_minute, key.requests_per_day, key.tokens_per_minute, key.max_concurrent)


def test_a_key_on_a_plan_takes_the_plans_limits(api, acme, pro):
    body = issue(api, client=acme.pk, plan=pro.pk).json()
    assert body["plan"] == pro.pk
    assert (body["requests_per_minute"], body["requests_per_day"]) == (600, 50_000)
    assert limits(ApiKey.objects.get(pk=body["id"])) == (600, 50_000, 1_000_000, 20)
    assert body["key"].startswith("agk_")


def test_limits_given_with_a_plan_override_the_plans(api, acme, pro):
    body = issue(api, client=acme.pk, plan=pro.pk, requests_per_minute=5, requests_per_day=0).json()
    assert limits(ApiKey.objects.get(pk=body["id"])) == (5, 0, 1_000_000, 20)


def test_a_key_on_a_plan_with_a_budget_gets_its_own_monthly_budget(api, acme, pro):
    body = issue(api, client=acme.pk, plan=pro.pk).json()
    budget = Budget.objects.get(api_key_id=body["id"])
    assert (budget.scope, budget.period, budget.mode, budget.limit_usd) == ("key", "monthly", "hard", Decimal("250"))
    trail = AdminAction.objects.order_by("id")
    assert [(a.action, a.object_type) for a in trail] == [("create", "keys.apikey"), ("create", "billing.budget")]
    assert trail[1].changes["limit_usd"] == [None, "250.00"]


def test_a_key_on_a_plan_without_a_budget_gets_none(api, acme, pro):
    pro.monthly_budget_usd = None
    pro.save()
    body = issue(api, client=acme.pk, plan=pro.pk).json()
    assert not Budget.objects.filter(api_key_id=body["id"]).exists()


def test_a_key_without_a_plan_keeps_the_default_limits(api, acme):
    body = issue(api, client=acme.pk).json()
    assert body["plan"] is None
    assert limits(ApiKey.objects.get(pk=body["id"])) == (60, 0, 100_000, 10)
    assert not Budget.objects.exists()


def test_it_sets_and_changes_the_daily_limit(api, acme):
    body = issue(api, client=acme.pk, requests_per_day=1000).json()
    assert body["requests_per_day"] == 1000
    response = api.patch(f"/api/v1/keys/{body['id']}/", {"requests_per_day": 0}, format="json")
    assert response.json()["requests_per_day"] == 0
    assert ApiKey.objects.get(pk=body["id"]).requests_per_day == 0


def test_it_refuses_a_negative_daily_limit(api, acme):
    response = issue(api, client=acme.pk, requests_per_day=-1)
    assert response.status_code == 400
    assert "requests_per_day" in response.json()
    assert not ApiKey.objects.exists()


def test_it_refuses_a_missing_plan(api, acme):
    response = issue(api, client=acme.pk, plan=999_999)
    assert response.status_code == 400
    assert "plan" in response.json()
    assert not ApiKey.objects.exists()


def test_a_keys_plan_is_where_its_limits_came_from_and_stays(api, key, pro):
    response = api.patch(f"/api/v1/keys/{key.pk}/", {"plan": pro.pk}, format="json")
    assert response.status_code == 400
    assert "plan" in response.json()
    key.refresh_from_db()
    assert key.plan is None


def test_it_filters_keys_by_plan(api, acme, pro):
    on_plan, _ = issue_key(acme, plan=pro, allowed_agents=["*"], allowed_models=["*"])
    issue_key(acme, allowed_agents=["*"], allowed_models=["*"])
    assert [k["id"] for k in api.get("/api/v1/keys/", {"plan": pro.pk}).json()["results"]] == [on_plan.pk]
