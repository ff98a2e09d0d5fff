"""What an attacker found after the first round of hardening (issue 12), each now a regression test.

A hostile upstream is a raw TCP server on loopback that answers whatever bytes a test gives it.
"""

from __future__ import annotations

import json
import socket
import uuid
from decimal import Decimal

import pytest

from tests.gateway.test_path_routes import served
from tests.servers import Gateway, LoopbackServer

CHAT = "/v1/chat/completions"


class RawUpstream(LoopbackServer):
    """Answers every connection with ``answer`` (bytes), whatever was asked."""

    def __init__(self, answer: bytes):
        self.answer = answer
        super().__init__(timeout=2)

    def handle(self, conn):
        conn.recv(65536)
        conn.sendall(self.answer)


@pytest.fixture
def agent_at(live_db, seeded, gateway, wait_for_agent):
    from routing.models import Agent

    made = []

    def make(url, kind="agent", **fields):
        agent = Agent.objects.create(
            slug=f"h-{uuid.uuid4().hex[:8]}", name="h", kind=kind, upstream_url=url, max_retries=0,
            timeout_seconds=5, **fields,
        )  # fmt: skip
        made.append(agent)
        wait_for_agent(agent.slug, gateway)
        return agent

    yield make
    for agent in made:
        agent.delete()


BROKEN_ANSWERS = {
    "status 999": b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\n{}",
    "length and chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad header token": b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 2\r\n\r\n{}",
    "control character in a value": b"HTTP/1.1 200 OK\r\nX-Usage-Model: a\x01b\r\nContent-Length: 2\r\n\r\n{}",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    "not HTTP at all": b"hello there\r\n\r\n",
}


@pytest.mark.parametrize("case", BROKEN_ANSWERS)
def test_a_broken_upstream_is_a_502_never_a_500(case, gateway, make_key, agent_at, audit_of):
    upstream = RawUpstream(BROKEN_ANSWERS[case])
    try:
        agent = agent_at(upstream.url)
        raw, _ = make_key()
        for path, body in (
            (f"/agents/{agent.slug}/x", None),
            ("/v1/agent/invoke", {"agent": agent.slug, "input": "hi"}),
        ):
            answer = gateway.client(raw).post(path, json=body) if body else gateway.client(raw).get(path)
            assert answer.status_code == 502 or (case == "control character in a value" and answer.status_code == 200)
            assert audit_of(answer) is not None
            if answer.status_code == 502:
                assert answer.json()["error"]["request_id"] == answer.headers["x-request-id"]
    finally:
        upstream.stop()


@pytest.mark.parametrize(
    "answer",
    [
        {"content": "plain string", "model": "m", "usage": {"input_tokens": 1, "output_tokens": 1}},
        {"content": [1, None, {"type": "text", "text": 5}], "stop_reason": ["x"]},
        {"output": [{"text": 1}]},
        {"choices": "none"},
    ],
)
def test_odd_answer_shapes_are_read_as_far_as_they_go(answer, gateway, make_key, agent_at, seeded):
    body = json.dumps(answer).encode()
    upstream = RawUpstream(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                           % (len(body), body))  # fmt: skip
    try:
        raw, _ = make_key()
        for kind in ("anthropic", "openai", "agent"):
            agent = agent_at(upstream.url, kind=kind, default_model="m")
            chat = gateway.client(raw).post(
                CHAT, json={"model": agent.slug, "messages": [{"role": "user", "content": "x"}]}
            )
            assert chat.status_code in (200, 502), chat.text
            invoke = gateway.client(raw).post("/v1/agent/invoke", json={"agent": agent.slug, "input": "x"})
            assert invoke.status_code in (200, 502), invoke.text
    finally:
        upstream.stop()


def test_headers_that_act_on_the_gateways_origin_are_not_relayed(gateway, make_key):
    raw, _ = make_key()
    hostile = {
        "clear-site-data": '"*"', "refresh": "0;url=https://evil.example/", "location": "https://evil.example/",
        "access-control-allow-origin": "*", "access-control-allow-credentials": "true",
        "strict-transport-security": "max-age=0", "x-gateway-target": "spoofed",
        "x-ratelimit-remaining-requests": "12345",
    }  # fmt: skip
    answer = gateway.client(raw).get("/agents/research/page", headers={"x-mock-answer-headers": json.dumps(hostile)})
    for name in hostile:
        if name.startswith(("x-gateway", "x-ratelimit")):
            assert hostile[name] not in answer.headers.get_list(name), name
        else:
            assert name not in answer.headers, name
    relative = gateway.client(raw).get(
        "/agents/research/page", headers={"x-mock-answer-headers": '{"location": "/next"}'}
    )
    assert relative.headers["location"] == "/next"


def test_a_stream_flag_that_is_not_a_boolean_is_refused(gateway, make_key):
    raw, _ = make_key()
    body = {"model": "gpt-4o-mini", "stream": "true", "messages": [{"role": "user", "content": "hi"}]}
    for path in (CHAT, "/agents/openai/v1/chat/completions"):
        answer = gateway.client(raw).post(path, json=body)
        assert answer.status_code == 400 and "stream" in answer.json()["error"]["message"], path


def test_the_larger_of_two_caps_and_every_choice_are_reserved(gateway, make_key):
    raw, _ = make_key(budget="0.05")
    message = [{"role": "user", "content": "hi"}]
    both = {"model": "gpt-4o", "messages": message, "max_completion_tokens": 1, "max_tokens": 100_000}
    assert gateway.client(raw).post(CHAT, json=both).status_code == 402  # 100,000 tokens at $10/M: $1
    many = {"model": "gpt-4o", "messages": message, "max_tokens": 1_000, "n": 10}
    assert gateway.client(raw).post(CHAT, json=many).status_code == 402  # 10 answers of 1,000 tokens: $0.10
    one = {"model": "gpt-4o", "messages": message, "max_tokens": 1_000}
    assert gateway.client(raw).post(CHAT, json=one).status_code == 200


def test_a_large_pass_through_answer_is_metered_from_its_end(gateway, make_key, audit_of):
    raw, _ = make_key()
    body = {"model": "text-embedding-3-small", "input": "otters " * 100}
    answer = gateway.client(raw).post(
        "/agents/openai/v1/embeddings", json=body, headers={"x-mock-pad-bytes": str(2_000_000)}
    )
    assert answer.status_code == 200 and len(answer.content) > 2_000_000
    record = audit_of(answer)
    assert record.input_tokens == answer.json()["usage"]["input_tokens"] > 0
    assert record.cost_usd > 0 and "usage_unread" not in record.details


def test_a_metered_pass_through_whose_usage_cannot_be_read_is_charged_its_reservation(gateway, make_key, audit_of):
    raw, _ = make_key()
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    answer = gateway.client(raw).post(
        "/agents/openai/v1/completions", json=body, headers={"x-mock-answer-headers": '{"content-type": "text/plain"}'}
    )  # the echo answers, as text: nothing to read usage from
    assert answer.status_code == 200
    record = audit_of(answer)
    assert record.details["usage_unread"] is True
    assert record.output_tokens == 50 and record.cost_usd > 0


def test_an_open_path_route_cannot_spend_a_providers_tokens(gateway, live_db):
    from routing.models import Agent, PathRoute

    route = PathRoute.objects.create(
        prefix=f"/pubai-{uuid.uuid4().hex[:6]}", agent=Agent.objects.get(slug="openai"), auth_required=False,
        upstream_path="/v1",
    )  # fmt: skip
    try:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        answer = served(gateway.client(), "POST", f"{route.prefix}/chat/completions", json=body)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "missing_api_key"
        assert gateway.client().get(f"{route.prefix}/models").status_code == 200  # reading spends nothing
    finally:
        route.delete()


def test_a_blocked_address_is_refused_before_any_look_up_a_right_key_included(seeded, make_key):
    server = Gateway(GATEWAY_AUTH_FAILURES_PER_MINUTE="2", GATEWAY_TRUSTED_PROXIES="1")
    try:
        raw, _ = make_key()
        address = {"X-Forwarded-For": f"198.51.100.{uuid.uuid4().int % 250 + 1}"}
        guesses = [server.client(f"sk-guess-{i}").get("/v1/models", headers=address).status_code for i in range(4)]
        assert guesses[:2] == [401, 401] and guesses[-1] == 429
        assert server.client(raw).get("/v1/models", headers=address).status_code == 429  # no oracle
        assert server.client(raw).get("/v1/models").status_code == 200  # another address is not blocked
    finally:
        server.stop()


@pytest.mark.parametrize("host", [b"gw.example.", b"gw.example.:8000", b"GW.EXAMPLE"])
def test_a_gateway_only_host_cannot_be_dodged_with_a_trailing_dot_or_case(host, seeded):
    server = Gateway(GATEWAY_PROXY_ONLY_HOSTS="gw.example")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /console/ HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 404")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /console/ HTTP/1.0\r\n\r\n")  # no host at all: refused too
            assert sock.recv(65536).split(b"\r\n", 1)[0].endswith(b"404 Not Found")
    finally:
        server.stop()


def test_a_dearer_answer_is_priced_in_by_the_process_at_once(
    gateway, make_key, live_db, wait_for_agent, wait_for_price
):
    """The second request reserves for the dearer model before any table reload could have brought it."""
    from billing.models import ModelPrice
    from routing.models import Agent

    dear = ModelPrice.objects.create(
        model=f"dear-{uuid.uuid4().hex[:8]}", input_per_million=Decimal(500), output_per_million=Decimal(2000)
    )
    mock = Agent.objects.get(slug="openai").upstream_url
    agent = Agent.objects.create(
        slug=f"sub-{uuid.uuid4().hex[:8]}",
        name="s",
        kind="openai",
        upstream_url=mock,
        served_models=[],
        default_model="gpt-4o-mini",
    )
    try:
        wait_for_price(dear.model, gateway)
        wait_for_agent(agent.slug, gateway)
        raw, _ = make_key(budget="1.00")
        body = {
            "model": agent.slug,
            "messages": [{"role": "user", "content": "hi"}],
            "mock": {"answer_model": dear.model},
        }
        assert gateway.client(raw).post(CHAT, json=body).status_code == 200
        assert gateway.client(raw).post(CHAT, json=body).status_code == 402
    finally:
        agent.delete()
        dear.delete()
