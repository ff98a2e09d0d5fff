"""Browser clients (CORS) under both servers: preflights, the origins each client allows, and what is never sent."""

from __future__ import annotations

import uuid

import pytest

from tests.waiting import until

INVOKE = "/v1/agent/invoke"


@pytest.fixture(scope="module")
def server(either_server):
    return either_server


@pytest.fixture
def browser_client(make_key):
    """``browser_client(*origins)``: a key whose client allows those origins (raw key, key); the client allows none
    again after the test (an origin any client allows is answered to every preflight)."""
    clients = []

    def make(*origins):
        raw, key = make_key()
        client = key.client
        client.allowed_origins = list(origins)
        client.save()
        clients.append(client)
        return raw, key

    yield make
    for client in clients:
        client.allowed_origins = []
        client.save()


def origin() -> str:
    return f"https://app-{uuid.uuid4().hex[:8]}.example.com"


def preflight(server, site: str, headers="authorization, content-type"):
    with server.client() as client:
        return client.options(INVOKE, headers={
            "Origin": site, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers,
        })  # fmt: skip


def test_a_preflight_from_an_origin_a_client_allows_is_answered_and_others_are_refused(server, browser_client):
    site = origin()
    browser_client(site)
    answer = until(lambda: (r := preflight(server, site)).status_code == 204 and r, "the origin loaded")
    assert answer.headers["access-control-allow-origin"] == site
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert answer.headers["access-control-allow-headers"] == "authorization, content-type"
    assert answer.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in answer.headers
    assert answer.content == b""
    refused = until(lambda: (r := preflight(server, origin())).status_code == 403 and r, "other tests' origins gone")
    assert refused.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in refused.headers
    odd = preflight(server, site, headers="x-ok, bad header; x=1")  # not header names: not echoed
    assert "access-control-allow-headers" not in odd.headers


def test_an_answer_names_the_origin_its_client_allows_and_never_allows_credentials(server, browser_client):
    site = origin()
    raw, _ = browser_client(site)
    with server.client(raw) as client:
        answer = until(
            lambda: (
                (
                    r := client.post(INVOKE, json={"agent": "research", "input": "hi"}, headers={"Origin": site})
                ).status_code
                == 200
                and r
            ),
            "the key's client's origins read",
        )
    assert answer.headers["access-control-allow-origin"] == site
    assert answer.headers["access-control-expose-headers"] == "*"
    assert "Origin" in answer.headers["vary"]
    assert "access-control-allow-credentials" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_browser_on_an_origin_its_client_does_not_allow_is_refused_before_anything_is_spent(
    server, browser_client, audit_of, live_db
):
    from billing.models import UsageRecord

    raw, key = browser_client(origin())
    elsewhere = origin()
    with server.client(raw) as client:
        refused = client.post(INVOKE, json={"agent": "research", "input": "hi"}, headers={"Origin": elsewhere})
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "origin_not_allowed" and elsewhere in error["message"]
    assert "access-control-allow-origin" not in refused.headers
    assert audit_of(refused).error_type == "origin_not_allowed"
    assert not UsageRecord.objects.filter(api_key=key).exists()


def test_a_client_that_allows_no_origin_is_served_as_before_without_cors_headers(server, make_key):
    raw, _ = make_key()
    with server.client(raw) as client:
        answer = client.post(INVOKE, json={"agent": "research", "input": "hi"}, headers={"Origin": origin()})
    assert answer.status_code == 200, answer.text
    assert "access-control-allow-origin" not in answer.headers


def test_any_origin_is_answered_with_a_star_and_an_error_before_the_key_is_read_too(server, browser_client):
    raw, _ = browser_client("*")
    site = origin()
    with server.client(raw) as client:
        answer = until(
            lambda: (r := client.get("/v1/models", headers={"Origin": site})).status_code == 200 and r, "the client"
        )
    assert answer.headers["access-control-allow-origin"] == "*"
    with server.client() as anonymous:  # no key: any active client's origins decide, so the 401 is readable
        unauthenticated = until(
            lambda: (
                (r := anonymous.get("/v1/models", headers={"Origin": site})).headers.get("access-control-allow-origin")
                and r
            ),
            "the origins loaded",
        )
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["access-control-allow-origin"] == "*"
