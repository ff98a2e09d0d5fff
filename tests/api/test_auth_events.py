"""Sign-in events in the management API: read-only, admins only; refused API credentials are events too."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from gateway_project.models import AuthEvent

EVENTS = "/api/v1/auth-events/"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


def event(outcome=AuthEvent.FAILED, username="mallory", **fields):
    defaults = {"created_at": timezone.now(), "via": AuthEvent.CONSOLE, "address": "203.0.113.5"}
    return AuthEvent.objects.create(outcome=outcome, username=username, **{**defaults, **fields})


def test_admins_read_the_events_and_nobody_changes_them(api, operator_api, compliance_api, outsider_api, admin_user):
    event(user=admin_user, username=admin_user.username, outcome=AuthEvent.SIGNED_IN, user_agent="curl/8")
    rows = api.get(EVENTS).json()["results"]
    assert rows[0] | {"id": None, "created_at": None} == {
        "id": None, "created_at": None, "outcome": "signed_in", "via": "console", "username": "admin",
        "user": admin_user.pk, "user_username": "admin", "address": "203.0.113.5", "user_agent": "curl/8",
        "detail": "",
    }  # fmt: skip
    for other in (operator_api, compliance_api, outsider_api):
        assert other.get(EVENTS).status_code == 403
    assert api.post(EVENTS, {"outcome": "signed_in"}, format="json").status_code == 405
    assert api.delete(f"{EVENTS}{rows[0]['id']}/").status_code == 405


def test_the_events_filter_by_outcome_username_address_and_time(api):
    event(username="mallory")
    event(username="eve", address="2001:db8::1")
    event(outcome=AuthEvent.THROTTLED, username="eve", created_at=timezone.now() - timedelta(days=2))
    names = lambda query: [row["username"] for row in api.get(EVENTS, query).json()["results"]]  # noqa: E731
    assert names({"outcome": "failed", "username": "eve"}) == ["eve"]
    assert names({"address": "203.0.113.5", "outcome": "failed"}) == ["mallory"]
    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert sorted(names({"since": since, "via": "console"})) == ["eve", "mallory"]
    assert api.get(EVENTS, {"outcome": "guessed"}).status_code == 400


def test_a_refused_api_token_is_an_event_without_the_token(db):
    bogus = "0123456789abcdef0123456789abcdef01234567"
    client = APIClient(REMOTE_ADDR="198.51.100.23", HTTP_USER_AGENT="robot/1.0")
    client.credentials(HTTP_AUTHORIZATION=f"Token {bogus}")
    assert client.get("/api/v1/clients/").status_code == 401
    assert client.get("/api/v1/clients/").status_code == 401  # the same minute, same address: one event
    event = AuthEvent.objects.get()
    assert (event.outcome, event.via, event.address, event.user_agent) == (
        AuthEvent.TOKEN_FAILED,
        AuthEvent.API,
        "198.51.100.23",
        "robot/1.0",
    )
    assert event.detail and bogus not in json.dumps(list(AuthEvent.objects.values()), default=str)


def test_a_request_without_credentials_is_not_an_event(db, anonymous_api):
    assert anonymous_api.get("/api/v1/clients/").status_code == 401
    assert not AuthEvent.objects.exists()


@pytest.mark.parametrize("address", ["Rotate the key", "10.0.0.300"])
def test_the_address_filter_refuses_what_is_no_address(api, address):
    event(address="203.0.113.5")
    response = api.get(EVENTS, {"address": address})
    assert response.status_code == 400 and "address" in response.json()
    assert [row["address"] for row in api.get(EVENTS, {"address": "203.0.113.5"}).json()["results"]] == ["203.0.113.5"]


def test_an_event_of_no_account_has_no_username_and_the_schema_says_so(api):
    event(username="nobody-here")
    [row] = api.get(EVENTS).json()["results"]
    assert (row["user"], row["user_username"]) == (None, None)
    declared = api.get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]["AuthEvent"]["properties"]
    assert declared["user_username"]["nullable"] and declared["user"]["nullable"]
