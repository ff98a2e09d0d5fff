"""Rotating a key over the management API: a successor shown once, the old key working through a bounded grace."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client as Browser
from django.utils import timezone

from audit.models import AdminAction
from billing.models import Budget
from keys.models import ApiKey, Plan, hash_key
from keys.services import issue_key
from tests.api.conftest import user_with_role


@pytest.fixture
def key(acme):
    key, _raw = issue_key(
        acme, name="ci", allowed_agents=["research"], allowed_models=["gpt-4o"], requests_per_minute=7,
        tokens_per_minute=900, max_concurrent=3,
    )  # fmt: skip
    return key


def rotate(api, key, **body):
    return api.post(f"/api/v1/keys/{key.pk}/rotate/", body, format="json")


def test_it_issues_a_successor_with_the_same_scopes_and_limits_shown_once(api, key):
    response = rotate(api, key, grace_hours=2)
    assert response.status_code == 201, response.content
    successor = response.json()["successor"]
    raw = successor["key"]
    assert raw.startswith("agk_") and successor["prefix"] == raw[:12]
    stored = ApiKey.objects.get(pk=successor["id"])
    assert stored.key_hash == hash_key(raw)
    assert (stored.allowed_agents, stored.allowed_models) == (["research"], ["gpt-4o"])
    assert (stored.requests_per_minute, stored.tokens_per_minute, stored.max_concurrent) == (7, 900, 3)
    assert "key" not in api.get(f"/api/v1/keys/{stored.pk}/").json()
    assert raw not in api.get("/api/v1/keys/").content.decode()


def test_the_old_key_works_through_the_grace_then_expires(api, key):
    rotated = rotate(api, key, grace_hours=2).json()["rotated"]
    key.refresh_from_db()
    assert abs(key.expires_at - (timezone.now() + timedelta(hours=2))) < timedelta(minutes=1)
    assert key.status == "active" and key.revoked_at is None
    assert rotated["replaced_by"] == key.replaced_by_id and rotated["status"] == "active"


def test_the_grace_defaults_to_24_hours(api, key):
    assert rotate(api, key).status_code == 201
    key.refresh_from_db()
    assert abs(key.expires_at - (timezone.now() + timedelta(hours=24))) < timedelta(minutes=1)


def test_a_zero_grace_ends_the_old_key_now(api, key):
    assert rotate(api, key, grace_hours=0).status_code == 201
    key.refresh_from_db()
    assert key.status == "expired"


@pytest.mark.parametrize("grace", [-1, 721, "a day", 1.5, None, True])
def test_it_refuses_a_grace_out_of_bounds_with_a_clear_400(api, key, grace):
    response = rotate(api, key, grace_hours=grace)
    assert response.status_code == 400
    assert "grace_hours" in response.json() and response.json()["detail"].startswith("grace_hours: ")
    key.refresh_from_db()
    assert key.replaced_by is None and ApiKey.objects.count() == 1
    assert not AdminAction.objects.exists()


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"revoked_at": timezone.now()}, "revoked"),
        ({"expires_at": timezone.now() - timedelta(minutes=1)}, "expired"),
        ({"is_active": False}, "disabled"),
    ],
)
def test_it_refuses_to_rotate_a_key_that_no_longer_works(api, key, state, message):
    ApiKey.objects.filter(pk=key.pk).update(**state)
    response = rotate(api, key)
    assert response.status_code == 400 and message in response.json()["detail"]
    assert ApiKey.objects.count() == 1


def test_it_refuses_to_rotate_a_key_twice(api, key):
    successor = rotate(api, key).json()["successor"]
    again = rotate(api, key)
    assert again.status_code == 400 and successor["prefix"] in again.json()["detail"]
    assert ApiKey.objects.count() == 2
    assert rotate(api, ApiKey.objects.get(pk=successor["id"])).status_code == 201  # the successor may rotate


def test_a_rotation_is_recorded_in_the_trail(api, key):
    successor = rotate(api, key, grace_hours=1).json()["successor"]
    trail = list(AdminAction.objects.order_by("id").values_list("action", "object_type", "object_id", "via"))
    assert trail == [
        ("rotate", "keys.apikey", str(key.pk), "api"),
        ("create", "keys.apikey", str(successor["id"]), "api"),
    ]
    rotated = AdminAction.objects.get(action="rotate")
    assert set(rotated.changes) == {"expires_at", "replaced_by"}
    assert successor["key"] not in str(AdminAction.objects.values_list("changes", flat=True))


def test_a_successor_on_a_plan_with_a_budget_gets_its_own_and_the_trail_says_so(api, acme):
    plan = Plan.objects.create(name="Pro", slug="pro", monthly_budget_usd=Decimal("50"))
    key, _ = issue_key(acme, plan=plan, allowed_agents=["*"])
    successor = rotate(api, key).json()["successor"]
    assert Budget.objects.filter(api_key_id=successor["id"]).exists()
    assert AdminAction.objects.filter(action="create", object_type="billing.budget").count() == 1


def test_only_managers_rotate_keys(compliance_api, operator_api, key):
    assert rotate(compliance_api, key).status_code == 403
    assert rotate(operator_api, key).status_code == 201


def test_the_schema_declares_the_rotation(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/keys/{id}/rotate/"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    grace = schema["components"]["schemas"][body]["properties"]["grace_hours"]
    assert (grace["minimum"], grace["maximum"], grace["default"]) == (0, 720, 24)
    answer = operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][answer]["properties"]) == {"successor", "rotated"}
    assert "400" in operation["responses"]


def test_the_console_refuses_the_same_keys_with_a_form_error(key):
    browser = Browser()
    browser.force_login(user_with_role("otto", "operator"))
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now())
    page = browser.post(f"/console/keys/{key.pk}/rotate/", {"grace_hours": 2})
    assert page.status_code == 400 and "This key is revoked" in page.content.decode()
    assert ApiKey.objects.count() == 1 and not AdminAction.objects.exists()
