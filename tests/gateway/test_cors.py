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


def test_a_fresh_process_names_an_allowed_origin_on_its_first_answer_before_any_key(seeded, browser_client):
    from tests.servers import Gateway

    site = origin()
    browser_client(site)
    fresh = Gateway(server="uvicorn")  # no preflight has loaded its origins yet
    try:
        with fresh.client() as client:
            first = client.get("/v1/models", headers={"Origin": site})
        assert first.status_code == 401
        assert first.headers["access-control-allow-origin"] == site
        with fresh.client() as client:
            other = client.get("/v1/models", headers={"Origin": origin()})
        assert "access-control-allow-origin" not in other.headers and "Origin" in other.headers["vary"]
    finally:
        fresh.stop()


def test_a_websocket_session_ends_when_its_client_stops_allowing_its_origin(server, browser_client, admin_api,
                                                                           audit_for):  # fmt: skip
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    site = origin()
    raw, key = browser_client(site)
    url = server.url.replace("http://", "ws://") + "/agents/research/ws"
    with connect(url, additional_headers={"Authorization": f"Bearer {raw}", "Origin": site}, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"
        changed = admin_api(server).patch(f"/api/v1/clients/{key.client_id}/", json={"allowed_origins": [origin()]})
        assert changed.status_code == 200, changed.text
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code in (1008, 4008)
    record = audit_for(key)[0]
    assert (record.status, record.error_type) == (101, "origin_not_allowed")
