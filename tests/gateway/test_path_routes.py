"""Path routes on live traffic: matching, upstream paths, their own timeout, auth, rate, SSE and deprecation."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from django.conf import settings

from tests.servers import Gateway
from tests.waiting import DEADLINE_SECONDS, in_thread, until, wait_for


@pytest.fixture
def make_route(live_db):
    """``make_route(prefix_suffix, agent, **fields) -> (PathRoute, prefix)``; routes are deleted after the test."""
    from routing.models import Agent, PathRoute

    made = []

    def make(agent="research", suffix="", **fields):
        prefix = f"/api/t{uuid.uuid4().hex[:10]}{suffix}"
        route = PathRoute.objects.create(prefix=prefix, agent=Agent.objects.get(slug=agent), **fields)
        made.append(route.pk)
        return route, prefix

    yield make
    PathRoute.objects.filter(pk__in=made).delete()


def served(client: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
    """Wait until the gateway's routing table has the route (the proxy answers with X-Request-Id), then answer."""
    response = None

    def routed():
        nonlocal response
        response = client.request(method, path, **kwargs)
        return "x-request-id" in response.headers

    assert wait_for(routed, seconds=10, interval=0.1), f"{path} never reached the proxy: {response.status_code}"
    return response


def test_a_route_forwards_to_its_agent_under_its_upstream_path_with_the_query(gateway, make_key, make_route, audit_of):
    raw, _ = make_key()
    _, prefix = make_route(methods=["POST"], upstream_path="/search/v2")
    client = gateway.client(raw)
    response = served(client, "POST", f"{prefix}/deep/er?q=otters&n=3", content=b'{"query": "otters"}')
    assert response.status_code == 200
    echo = response.json()
    assert (echo["method"], echo["path"], echo["query"]) == ("POST", "/search/v2/deep/er", "q=otters&n=3")
    assert echo["body"] == '{"query": "otters"}'
    assert "authorization" not in echo["headers"]  # the caller's key never goes upstream
    assert echo["headers"]["x-request-id"] == response.headers["x-request-id"]
    assert client.post(prefix).json()["path"] == "/search/v2"  # the prefix itself
    record = audit_of(response)
    assert (record.agent, record.status, record.path) == ("research", 200, f"{prefix}/deep/er")
    assert record.details["path_route"] == prefix
    assert record.client_slug and record.input_tokens > 0


def test_the_longest_prefix_wins_on_a_segment_boundary(gateway, make_key, make_route, live_db):
    from routing.models import Agent, PathRoute

    raw, _ = make_key()
    outer, prefix = make_route(agent="code")  # no upstream path: the request's own path goes upstream
    inner = PathRoute.objects.create(
        prefix=f"{prefix}/search", agent=Agent.objects.get(slug="research"), upstream_path="/inner"
    )
    try:
        client = gateway.client(raw)
        served(client, "GET", f"{prefix}/search/x")
        assert wait_for(lambda: client.get(f"{prefix}/search/x").json()["path"] == "/inner/x", seconds=10)
        assert client.get(f"{prefix}/searchx").json()["path"] == f"{prefix}/searchx"  # not a segment boundary
        assert client.get(f"{prefix}/other").json()["path"] == f"{prefix}/other"
        unrouted = client.get(f"/api/u{uuid.uuid4().hex[:8]}")
        assert unrouted.status_code == 404 and "x-request-id" not in unrouted.headers  # Django's own 404
    finally:
        inner.delete()
    del outer


def test_a_method_the_route_does_not_take_is_a_405_with_allow(gateway, make_key, make_route):
    raw, _ = make_key()
    _, prefix = make_route(methods=["POST", "PUT"])
    client = gateway.client(raw)
    served(client, "POST", prefix)
    response = client.get(prefix)
    assert response.status_code == 405
    assert response.headers["allow"] == "PUT, POST" or response.headers["allow"] == "POST, PUT"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_the_routes_own_timeout_gives_504(gateway, make_key, make_route, audit_of):
    raw, _ = make_key()
    _, prefix = make_route(timeout_seconds=0.3, max_retries=0)
    client = gateway.client(raw)
    served(client, "GET", prefix)
    response = client.get(prefix, headers={"X-Mock-Delay-Ms": "3000"})
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert "0.3 seconds" in response.json()["error"]["message"]
    assert audit_of(response).error_type == "upstream_timeout"


def test_a_route_retries_a_failing_upstream_by_its_own_policy(gateway, seeded, make_key, make_route, audit_of):
    _, prefix = make_route(methods=["POST"], max_retries=1)
    client = gateway.client(make_key()[0])
    served(client, "POST", prefix, content=b"{}")
    httpx.post(f"{seeded.url}/__mock__/faults", json={"faults": [{"status": 503}]}).raise_for_status()
    response = client.post(prefix, content=b'{"q": 1}')
    assert response.status_code == 200, response.text  # the 503 was retried, not relayed
    attempts = audit_of(response).details["attempts"]
    assert [(a["outcome"], a["status"]) for a in attempts] == [("upstream_error", 503), ("ok", 200)]
    # With no retries of its own the route relays the upstream's failing status as it is.
    _, strict = make_route(methods=["POST"], max_retries=0)
    served(client, "POST", strict, content=b"{}")
    httpx.post(f"{seeded.url}/__mock__/faults", json={"faults": [{"status": 503}]}).raise_for_status()
    assert client.post(strict, content=b"{}").status_code == 503


def test_a_route_without_auth_needs_no_key_and_is_audited_as_anonymous(gateway, make_route, audit_of):
    _, prefix = make_route(auth_required=False)
    client = gateway.client()
    response = served(client, "POST", prefix, content=b"hello")
    assert response.status_code == 200
    assert response.json()["headers"]["x-client-id"] == ""
    record = audit_of(response)
    assert record.client_id is None and record.api_key_id is None and record.client_slug == ""
    assert record.details["anonymous"] is True and record.agent == "research"


def test_a_route_with_auth_checks_the_key_and_its_scopes(gateway, make_key, make_route):
    _, prefix = make_route(agent="code")
    served(gateway.client(), "GET", prefix)
    missing = gateway.client().get(prefix)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
    other_raw, _ = make_key(agents=["research"])
    refused = gateway.client(other_raw).get(prefix)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "agent_not_allowed"
    raw, _ = make_key(agents=["code"])
    assert gateway.client(raw).get(prefix).status_code == 200


def test_the_routes_rate_limit_is_shared_by_every_caller(gateway, make_key, make_route):
    _, prefix = make_route(auth_required=False, requests_per_minute=3)
    anonymous = gateway.client()
    raw, _ = make_key()
    keyed = gateway.client(raw)
    served(anonymous, "GET", prefix)  # the first of the three
    answers = [keyed.get(prefix), anonymous.get(prefix), keyed.get(prefix), anonymous.get(prefix)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]
    refusal = answers[2]
    assert refusal.json()["error"]["code"] == "route_rate_limit"
    assert int(refusal.headers["retry-after"]) >= 1


@pytest.mark.skipif(not settings.REDIS_URL, reason="processes share limits through Redis")
def test_the_routes_rate_limit_holds_across_two_gateway_processes(seeded, make_route, make_key):
    _, prefix = make_route(requests_per_minute=6)  # one more every 10 s
    raw, _ = make_key()
    first, second = Gateway(), Gateway()
    try:
        clients = [first.client(raw), second.client(raw)]
        assert served(clients[0], "OPTIONS", prefix).status_code == 200
        started = time.monotonic()
        assert served(clients[1], "OPTIONS", prefix).status_code == 200
        # Those two took two of the six; the other four are shared between the processes.
        statuses = [clients[i % 2].get(prefix).status_code for i in range(10)]
        regained = int((time.monotonic() - started) / 10)
        assert 4 <= statuses.count(200) <= 4 + regained and set(statuses) == {200, 429}
        assert statuses[:4] == [200] * 4
    finally:
        first.stop()
        second.stop()


def _chat(text="tell me about otters, with a long answer please", **extra):
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def test_an_sse_route_streams_as_the_upstream_sends_and_meters_the_final_usage(
    gateway, make_key, make_route, audit_of, seeded
):
    raw, _ = make_key()
    _, prefix = make_route(agent="openai", upstream_path="/v1/chat/completions", protocol="sse", methods=["POST"])
    client = gateway.client(raw)
    served(client, "POST", prefix, json=_chat())
    with seeded.hold() as hold:
        with client.stream("POST", prefix, json=_chat(), headers={"X-Mock-Hold-Stream": hold}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            chunks = response.iter_raw()
            # The upstream sent its first chunk and waits for the test: a gateway that buffered would send nothing.
            body = next(chunks)
            assert body.startswith(b"data:")
            seeded.release(hold)
            body += b"".join(chunks)
    events = [block[5:].strip() for block in body.decode().split("\n\n") if block.startswith("data:")]
    assert events[-1] == "[DONE]"
    usage = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")][-1]
    record = audit_of(response)
    assert (record.input_tokens, record.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert record.output_preview.startswith("Mock answer") and record.cost_usd > 0


def test_a_client_leaving_an_sse_route_cancels_the_upstream_call(gateway, make_key, make_route, audit_for, seeded):
    raw, key = make_key()
    _, prefix = make_route(agent="openai", upstream_path="/v1/chat/completions", protocol="sse")
    client = gateway.client(raw)
    served(client, "POST", prefix, json=_chat(text="hi"))
    # The upstream holds its answer after the first chunk until the test is done: the call ends (and is
    # audited) only if the gateway gives it up when the client leaves.
    with seeded.hold() as hold:
        with client.stream("POST", prefix, json=_chat(text="otters"), headers={"X-Mock-Hold-Stream": hold}) as s:
            next(s.iter_raw())
        records = audit_for(key, count=2, seconds=DEADLINE_SECONDS)
    assert len(records) == 2
    assert records[-1].error_type == "client_disconnected"


def test_a_deprecated_route_says_so_with_its_sunset_even_on_errors(gateway, make_key, make_route):
    sunset = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
    route, prefix = make_route(deprecated=True, sunset_at=sunset)
    raw, _ = make_key()
    response = served(gateway.client(raw), "GET", prefix)
    assert response.status_code == 200
    assert response.headers["deprecation"] == f"@{int(route.updated_at.timestamp())}"
    assert response.headers["sunset"] == "Mon, 01 Mar 2027 12:00:00 GMT"
    refused = gateway.client().get(prefix)
    assert refused.status_code == 401 and refused.headers["sunset"] == "Mon, 01 Mar 2027 12:00:00 GMT"
    assert refused.headers["deprecation"].startswith("@")


def test_a_deprecated_agent_says_so_on_every_endpoint_that_used_it(gateway, make_key, live_db):
    from routing.models import Agent

    slug = f"old-{uuid.uuid4().hex[:8]}"
    agent = Agent.objects.create(
        slug=slug, name=slug, upstream_url=gateway_upstream(), deprecated=True, served_models=[f"{slug}-model"]
    )
    try:
        raw, _ = make_key()
        client = gateway.client(raw)
        assert wait_for(
            lambda: client.post("/v1/agent/invoke", json={"input": "hi", "agent": slug}).status_code == 200, seconds=10
        )
        invoke = client.post("/v1/agent/invoke", json={"input": "hi", "agent": slug})
        assert invoke.headers["deprecation"] == f"@{int(agent.updated_at.timestamp())}"
        assert "sunset" not in invoke.headers
        chat = client.post("/v1/chat/completions", json={"model": slug, "messages": [{"role": "user", "content": "x"}]})
        assert chat.status_code == 200 and chat.headers["deprecation"].startswith("@")
        passed = client.get(f"/agents/{slug}/anything")
        assert passed.status_code == 200 and passed.headers["deprecation"].startswith("@")
        fresh = client.post("/v1/agent/invoke", json={"input": "hi", "agent": "research"})
        assert "deprecation" not in fresh.headers
    finally:
        agent.delete()


def gateway_upstream() -> str:
    from routing.models import Agent

    return Agent.objects.get(slug="research").upstream_url


def test_a_route_saved_while_the_gateway_runs_is_served_and_a_deactivated_one_is_not(gateway, make_key, make_route):
    raw, _ = make_key()
    route, prefix = make_route()
    client = gateway.client(raw)
    assert served(client, "GET", prefix).status_code == 200
    route.is_active = False
    route.save()
    assert wait_for(lambda: "x-request-id" not in client.get(prefix).headers, seconds=10)


def test_held_capacity_is_released_when_a_route_is_slow(gateway, make_key, make_route, seeded):
    """An anonymous route still respects its agent's capacity, and gives the slot back after the answer."""
    from routing.models import Agent

    slug = f"cap-{uuid.uuid4().hex[:8]}"
    Agent.objects.create(slug=slug, name=slug, upstream_url=gateway_upstream(), max_concurrent=1)
    try:
        _, prefix = make_route(agent=slug, auth_required=False)
        client = gateway.client()
        served(client, "GET", prefix)
        with seeded.hold() as hold:
            slow = in_thread(lambda: client.get(prefix, headers={"X-Mock-Hold": hold}))
            until(lambda: seeded.held(hold) == 1, "the slow call holds the agent's one slot")
            assert client.get(prefix).status_code == 429
        assert slow.result(timeout=DEADLINE_SECONDS).status_code == 200
        # The slot comes back when the gateway settles the answer, which may be a moment after the client has it.
        until(lambda: client.get(prefix).status_code == 200, "the slot came back")
    finally:
        Agent.objects.filter(slug=slug).delete()
