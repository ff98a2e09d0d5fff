"""An agent that requires a role serves only keys holding it, on every way in, under both servers."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.waiting import DEADLINE_SECONDS, until, wait_for

INVOKE = "/v1/agent/invoke"


@pytest.fixture(scope="module")
def server(either_server):
    return either_server


@pytest.fixture
def roled(live_db, seeded, server, wait_for_agent):
    """A fresh role and an agent service on the mock that requires it (both gone after the test)."""
    from keys.models import AgentRole
    from routing.models import Agent

    role = AgentRole.objects.create(slug=f"role-{uuid.uuid4().hex[:8]}", name="Ledger readers")
    agent = Agent.objects.create(
        slug=f"ledger-{uuid.uuid4().hex[:8]}", name="Ledger", upstream_url=seeded.url, required_role=role,
        capabilities=[f"ledgerwork{uuid.uuid4().hex[:6]}"],
    )  # fmt: skip
    wait_for_agent(agent.slug, server)
    yield agent
    agent.delete()
    role.delete()


def error_of(response) -> dict:
    error = response.json()["error"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_a_key_without_the_role_is_refused_on_every_http_way_in_and_audited(server, roled, make_key, audit_for):
    raw, key = make_key()
    role = roled.required_role.slug
    with server.client(raw) as client:
        invoked = client.post(INVOKE, json={"agent": roled.slug, "input": "balance?"})
        passed = client.post(f"/agents/{roled.slug}/invoke", json={"input": "balance?"})
        listed = client.get("/v1/models").json()["data"]
    for response in (invoked, passed):
        assert response.status_code == 403, response.text
        error = error_of(response)
        assert (error["type"], error["code"]) == ("permission_error", "role_required")
        assert role in error["message"] and roled.slug in error["message"]
    assert roled.slug not in {entry["id"] for entry in listed}
    records = audit_for(key, 3)
    refused = [(r.status, r.error_type, r.agent) for r in records if r.status == 403]
    assert refused == [(403, "role_required", roled.slug)] * 2
    assert all(r.cost_usd == 0 and r.input_tokens == 0 for r in records)


def test_a_key_holding_the_role_is_served_and_losing_it_is_refused_within_a_second(server, roled, make_key):
    raw, key = make_key(roles=[roled.required_role.slug])
    with server.client(raw) as client:
        served = client.post(INVOKE, json={"agent": roled.slug, "input": "balance?"})
        assert served.status_code == 200, served.text
        assert roled.slug in {entry["id"] for entry in client.get("/v1/models").json()["data"]}
        key.roles = []
        key.save()
        until(
            lambda: client.post(INVOKE, json={"agent": roled.slug, "input": "again"}).status_code == 403,
            "the key's lost role refused",
            seconds=DEADLINE_SECONDS,
        )


def test_content_routing_never_picks_an_agent_whose_role_the_key_lacks(server, roled, make_key, live_db):
    from routing.models import CapabilityKeyword

    word = roled.capabilities[0]
    CapabilityKeyword.objects.create(keyword=word, capability=word)
    try:
        raw, _ = make_key()
        holder, _ = make_key(roles=[roled.required_role.slug])
        with server.client(holder) as client:
            chosen = until(
                lambda: (
                    client.post(INVOKE, json={"input": f"please do {word} now"}).json().get("agent_used") == roled.slug
                ),
                "the keyword routes to the roled agent",
            )
        assert chosen
        with server.client(raw) as client:
            answer = client.post(INVOKE, json={"input": f"please do {word} now"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["agent_used"] != roled.slug
    finally:
        CapabilityKeyword.objects.filter(keyword=word).delete()


def test_a_fallback_whose_role_the_key_lacks_is_skipped_and_the_record_says_why(
    server, roled, make_key, audit_for, live_db, wait_for_reload
):
    from routing.models import Agent

    broken = Agent.objects.create(
        slug=f"broken-{uuid.uuid4().hex[:8]}", name="Broken", upstream_url="http://127.0.0.1:9", max_retries=0,
        fallbacks=[roled.slug],
    )  # fmt: skip
    try:
        wait_for_reload(server)
        raw, key = make_key()
        with server.client(raw) as client:
            response = client.post(INVOKE, json={"agent": broken.slug, "input": "hi"})
        assert response.status_code == 502, response.text
        record = audit_for(key)[0]
        assert record.details["fallbacks_skipped"] == [
            {"agent": roled.slug, "reason": "outside the key's scopes or roles"}
        ]
    finally:
        broken.delete()


def ws_url(server, slug: str) -> str:
    return server.url.replace("http://", "ws://") + f"/agents/{slug}/ws"


def test_a_websocket_session_needs_the_role_and_ends_when_the_key_loses_it(server, roled, make_key, audit_for,
                                                                            admin_api):  # fmt: skip
    raw, _ = make_key()
    headers = {"Authorization": f"Bearer {raw}"}
    if server.server == "uvicorn":
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(server, roled.slug), additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 403
        assert json.loads(refused.value.response.body)["error"]["code"] == "role_required"
    else:  # Daphne accepts, sends the error, closes with 4000 + status
        with connect(ws_url(server, roled.slug), additional_headers=headers, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["error"]["code"] == "role_required"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 4403

    holder_raw, holder = make_key(roles=[roled.required_role.slug])
    with connect(
        ws_url(server, roled.slug), additional_headers={"Authorization": f"Bearer {holder_raw}"}, open_timeout=10
    ) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"
        taken = admin_api(server).patch(f"/api/v1/keys/{holder.pk}/", json={"roles": []})
        assert taken.status_code == 200, taken.text
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=DEADLINE_SECONDS)
    assert closed.value.rcvd.code in (1008, 4008)
    record = wait_for(lambda: next(iter(audit_for(holder)), None))
    assert (record.status, record.error_type) == (101, "role_required")


def test_an_anonymous_path_route_to_an_agent_that_requires_a_role_asks_for_a_key(server, roled, live_db,
                                                                                    wait_for_reload):  # fmt: skip
    from routing.models import PathRoute

    prefix = f"/open-{uuid.uuid4().hex[:8]}"
    route = PathRoute.objects.create(prefix=prefix, methods=["POST"], agent=roled, auth_required=False)
    try:
        wait_for_reload(server)
        response = httpx.post(f"{server.url}{prefix}/invoke", json={"input": "hi"}, timeout=30)
        assert response.status_code == 401, response.text
        error = error_of(response)
        assert error["code"] == "missing_api_key"
        assert roled.required_role.slug in error["message"]
    finally:
        route.delete()
