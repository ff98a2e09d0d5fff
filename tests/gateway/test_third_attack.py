"""What the third attack on the hot path found (issue 12), each a regression test.

Scopes checked against the model that answers (an agent named by its slug answers
with its default model); provider agents asked only for the models they serve;
Anthropic's prompt-cache tokens metered; a client that hangs up while it is being
admitted gives back what the admission took; stream events of no end, and request
heads and bodies that never finish, bounded under Daphne and uvicorn alike.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
import uuid

import pytest

from gateway_project.hotstate import ConcurrencySlot, MemoryHotState
from routing import protocols
from routing.admission import admitted
from routing.sse import MAX_EVENT_BYTES, AnthropicStreamScanner, EventTooLarge, OpenAIStreamScanner
from tests.servers import Gateway, json_answer, read_answer, scripted_upstreams

CHAT = "/v1/chat/completions"


@pytest.fixture
def provider(live_db, seeded):
    from routing.models import Agent

    agent = Agent.objects.create(
        slug=f"p-{uuid.uuid4().hex[:8]}", name="p", kind="openai", upstream_url=seeded.url,
        served_models=["gpt-4o-mini", "gpt-4o"], default_model="gpt-4o", max_retries=0,
    )  # fmt: skip
    time.sleep(0.5)  # the gateway's routing table reloads
    yield agent
    agent.delete()


def test_a_key_limited_to_a_model_cannot_reach_another_by_naming_the_agent(provider, gateway, make_key):
    raw, _ = make_key(models=("gpt-4o-mini",))
    client = gateway.client(raw)
    by_slug = client.post(CHAT, json={"model": provider.slug, "messages": [{"role": "user", "content": "hi"}]})
    assert by_slug.status_code == 403 and by_slug.json()["error"]["code"] == "model_not_allowed"
    invoke = client.post("/v1/agent/invoke", json={"agent": provider.slug, "input": "hi"})
    assert invoke.status_code == 403 and invoke.json()["error"]["code"] == "model_not_allowed"
    allowed = client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert allowed.status_code == 200


def test_a_provider_agent_is_asked_only_for_the_models_it_serves(provider, gateway, make_key):
    client = gateway.client(make_key()[0])
    body = {"model": "o1-pro", "messages": [{"role": "user", "content": "hi"}]}
    passed = client.post(f"/agents/{provider.slug}/v1/chat/completions", json=body)
    assert passed.status_code == 404 and passed.json()["error"]["code"] == "model_not_found"
    invoked = client.post("/v1/agent/invoke", json={"agent": provider.slug, "model": "o1-pro", "input": "hi"})
    assert invoked.status_code == 404 and invoked.json()["error"]["code"] == "model_not_found"
    served = client.post(f"/agents/{provider.slug}/v1/chat/completions", json={**body, "model": "gpt-4o-mini"})
    assert served.status_code == 200


# --- Anthropic's prompt cache -------------------------------------------------------------------------------


def test_anthropic_prompt_cache_writes_and_reads_are_metered_as_input():
    usage = {
        "input_tokens": 7,
        "cache_creation_input_tokens": 12_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 12_000, "ephemeral_1h_input_tokens": 0},
        "cache_read_input_tokens": 1_000,
        "output_tokens": 5,
    }
    assert protocols.usage_from_json({"usage": usage}) == (7 + 15_000 + 100, 5)
    scanner = AnthropicStreamScanner("claude")
    start = {"type": "message_start", "message": {"model": "claude", "usage": {**usage, "output_tokens": 1}}}
    end = {"type": "message_delta", "usage": {"output_tokens": 40}}
    scanner.feed(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in (start, end)))
    assert scanner.usage == (15_107, 40) and scanner.complete


@pytest.mark.parametrize(
    ("split", "charged"),
    [
        ({"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 4000}, 8000),  # an hour: twice
        ({"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 3000}, 1250 + 6000),
        (None, 8000),  # no split: the dearer kind
        ({"ephemeral_5m_input_tokens": 9000, "ephemeral_1h_input_tokens": 0}, 5000),  # more than was written
    ],
)
def test_one_hour_cache_writes_are_metered_at_twice_the_input(split, charged):
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 4000, "output_tokens": 5}
    if split is not None:
        usage["cache_creation"] = split
    assert protocols.anthropic_input(usage) == 10 + charged


# --- what a stream's output estimate counts -----------------------------------------------------------------


def test_tool_call_arguments_and_reasoning_count_in_a_cut_streams_output():
    scanner = OpenAIStreamScanner(keep_usage_chunk=False)
    tool = {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "x" * 400}}]}}]}
    thought = {"choices": [{"delta": {"reasoning_content": "y" * 400}}]}
    scanner.feed(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in (tool, thought)))
    assert scanner.output_estimate >= 200 and scanner.text == ""
    anthropic = AnthropicStreamScanner("claude")
    deltas = [{"type": "content_block_delta", "delta": {"type": kind, field: "z" * 400}}
              for kind, field in (("input_json_delta", "partial_json"), ("thinking_delta", "thinking"))]  # fmt: skip
    anthropic.feed(b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in deltas))
    assert anthropic.output_estimate >= 200


def test_a_stream_event_without_an_end_is_refused_past_the_limit_without_holding_it():
    scanner = OpenAIStreamScanner(keep_usage_chunk=False)
    chunk = b"data: " + b"a" * 65_536
    started = time.perf_counter()
    with pytest.raises(EventTooLarge):
        for _ in range(MAX_EVENT_BYTES // len(chunk) + 2):
            scanner.feed(chunk)
    assert time.perf_counter() - started < 5  # linear, not a search of the whole buffer per chunk
    assert len(scanner._buffer) == 0


# --- a client that hangs up while it is admitted ------------------------------------------------------------


class SlowStore(MemoryHotState):
    """Admits at once, then takes a while to answer: a Redis round trip a cancellation can land in."""

    async def admit(self, rates, slots, budgets, acquire=None):
        result = await super().admit(rates, slots, budgets, acquire)
        await asyncio.sleep(0.2)
        return result


def test_an_admission_cancelled_while_it_runs_gives_back_what_it_took():
    store = SlowStore()
    slot = ConcurrencySlot("agent_concurrency", store.key("agent-conc", "a"), 1)

    async def scenario():
        task = asyncio.ensure_future(admitted(store, [], [slot], []))
        await asyncio.sleep(0.05)  # the script has run; its answer is on its way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await MemoryHotState.admit(store, [], [slot], [])

    assert asyncio.run(scenario()).ok  # the one slot is free again


def test_a_proxy_request_whose_client_hangs_up_while_it_is_admitted_gives_back_what_it_took():
    """The proxy's own requests run the admission in their task: the hang-up waits for the script, then the
    request is cancelled with what the script took given back (no task, no shield a request)."""
    from routing.exchange import Exchange

    store = SlowStore()
    slot = ConcurrencySlot("agent_concurrency", store.key("agent-conc", "b"), 1)
    scope = {"method": "POST", "path": CHAT, "raw_path": CHAT.encode(), "headers": [], "client": ("127.0.0.1", 1)}

    async def scenario():
        ex = Exchange(scope, b"", False, None)
        task = asyncio.ensure_future(admitted(store, [], [slot], [], ex=ex))
        ex.serve_in(task)
        await asyncio.sleep(0.05)  # the script has run; its answer is on its way
        ex.hang_up()
        assert not task.cancelled() and ex.hang_up_pending  # not cut in the middle of the round trip
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ex.client_left
        return await MemoryHotState.admit(store, [], [slot], [])

    assert asyncio.run(scenario()).ok  # the one slot is free again


# --- heads and bodies that never finish -------------------------------------------------------------------


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def impatient_gateway(request, seeded):
    server = Gateway(
        server=request.param,
        GATEWAY_BODY_READ_SECONDS="1", GATEWAY_HEAD_READ_SECONDS="1", GATEWAY_MAX_HEAD_BYTES="8192",
    )  # fmt: skip
    yield server
    server.stop()


def assert_refused(conn: socket.socket, answer: bytes, status: int, code: str) -> None:
    """``answer`` is the gateway's JSON error ``code`` with ``status``, and the server then closed the connection."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    assert b"\r\ncontent-type: application/json" in head.lower() and b"\r\nconnection: close" in head.lower(), head
    error = json.loads(body)["error"]
    assert error["code"] == code and error["request_id"] and error["message"], error
    try:
        assert conn.recv(65536) == b""
    except ConnectionResetError:
        pass  # closed too, with bytes of the client's still unread


def dripping(conn: socket.socket, byte: bytes, seconds: float = 10) -> bytes:
    """Send ``byte`` every 0.2 s (so no idle timeout fires) until the server answers: its answer, or b"" if none
    came within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([conn], [], [], 0.2)[0]:
            return read_answer(conn)
        try:
            conn.sendall(byte)
        except OSError:
            break  # closed: whatever it answered is already on its way
    return read_answer(conn) if select.select([conn], [], [], 0)[0] else b""


def post_head(raw: str, length: int) -> bytes:
    return (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {raw}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def test_a_body_that_never_finishes_is_a_408_after_the_read_deadline(impatient_gateway, make_key):
    raw, _ = make_key()
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=10) as conn:
        conn.sendall(post_head(raw, 1000) + b'{"model"')
        assert_refused(conn, read_answer(conn), 408, "request_body_timeout")


def test_a_body_sent_a_byte_at_a_time_is_a_408_after_the_read_deadline(impatient_gateway, make_key):
    raw, _ = make_key()
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=15) as conn:
        conn.sendall(post_head(raw, 10_000))
        assert_refused(conn, dripping(conn, b" "), 408, "request_body_timeout")


def test_a_request_head_past_the_size_limit_is_a_431_before_any_key_is_read(impatient_gateway):
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=15) as conn:
        conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(200):  # 6.4 MB of one header, if the server took it all
                conn.sendall(b"X-Flood: " + b"a" * 32_000 + b"\r\n")
        except OSError:
            pass  # the server closed the connection: what it answered is already on its way
        assert_refused(conn, read_answer(conn), 431, "request_head_too_large")


def test_a_request_head_of_many_short_lines_past_the_size_limit_is_a_431(impatient_gateway):
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=15) as conn:
        conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"X-Many: " + b"a" * 100 + b"\r\n") * 200)
        assert_refused(conn, read_answer(conn), 431, "request_head_too_large")


def test_a_request_head_sent_a_byte_at_a_time_is_a_408_after_the_deadline(impatient_gateway):
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=15) as conn:
        conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        # Each byte would reset an idle timeout: the head's deadline counts from its first byte.
        assert_refused(conn, dripping(conn, b"a"), 408, "request_head_timeout")


def test_a_second_head_begun_in_the_same_write_as_a_whole_request_has_the_head_deadline(impatient_gateway):
    """uvicorn's protocol starts the head's timer once a read is parsed, for a head left unfinished: here the read
    held a whole request and the first bytes of the next, which must be timed too (no further byte comes to start
    a timer, and uvicorn's own keep-alive timeout would close the connection unanswered)."""
    whole = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=15) as conn:
        conn.sendall(whole + b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        first = read_answer(conn)
        assert first.startswith(b"HTTP/1.1 401"), first[:300]
        started = time.monotonic()
        assert_refused(conn, read_answer(conn), 408, "request_head_timeout")
    assert time.monotonic() - started < 4


def test_a_keep_alive_connection_may_idle_between_requests_past_the_head_deadline(impatient_gateway, make_key):
    raw, _ = make_key()
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = post_head(raw, len(body)) + body
    with socket.create_connection(("127.0.0.1", impatient_gateway.port), timeout=15) as conn:
        conn.sendall(request)
        assert read_answer(conn).startswith(b"HTTP/1.1 200")
        time.sleep(2.5)  # idle, past the head's and the body's deadlines (within uvicorn's 5 s keep-alive)
        conn.sendall(request)
        answer = read_answer(conn)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


# --- a queued job, after its key changed ------------------------------------------------------------------------


def test_a_queued_job_whose_key_lost_the_agent_model_or_role_does_not_run(make_key):
    from types import SimpleNamespace

    from keys.models import AgentRole
    from routing.jobs import _current_key

    _, key = make_key(agents=("research",), models=("gpt-4o-mini",))
    AgentRole.objects.create(slug="analyst", name="Analyst")
    key.roles = ["analyst"]
    key.save()
    route = SimpleNamespace(slug="research", required_role="analyst")
    job = SimpleNamespace(api_key=key, agent="research", request={"gateway": {"requested": "gpt-4o-mini"}})
    # Named by the agent (or routed by content): nothing requested, the agent's default model is sent.
    by_agent = SimpleNamespace(
        api_key=key, agent="research", request={"gateway": {"requested": "", "model": "gpt-4o-mini"}}
    )
    assert _current_key(job, route).key_id == key.pk and _current_key(by_agent, route).key_id == key.pk
    key.roles = []
    key.save()
    assert _current_key(job, route).code == "role_required"
    key.allowed_models = ["gpt-4o"]
    key.roles = ["analyst"]
    key.save()
    assert _current_key(job, route).code == "model_not_allowed"
    assert _current_key(by_agent, route).code == "model_not_allowed"
    key.allowed_agents = ["writing"]
    key.save()
    assert _current_key(job, route).code == "agent_not_allowed"


# --- what an upstream bills beyond the tokens it reports --------------------------------------------------------


def _openai_answer() -> bytes:
    return json_answer(
        {
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    )


ANTHROPIC_ANSWER = json_answer(
    {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku", "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 5, "output_tokens": 2},
    }
)  # fmt: skip


@pytest.mark.parametrize("path", [CHAT, "/agents/{slug}/v1/chat/completions"])
@pytest.mark.parametrize(
    "extra",
    [
        {"service_tier": "priority"},
        {"service_tier": "scale"},
        {"web_search_options": {}},
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        {
            "messages": [
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}}]}
            ]
        },
    ],
    ids=["priority", "scale", "web_search_options", "audio_output", "audio_input"],
)
def test_what_openai_bills_beyond_its_tokens_is_refused(path, extra, provider_at, gateway, make_key):
    with scripted_upstreams() as upstream:
        server = upstream(_openai_answer())
        agent = provider_at(server.url)
        raw, _ = make_key()
        body = {"model": agent.slug if path == CHAT else "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        response = gateway.client(raw).post(path.format(slug=agent.slug), json={**body, **extra})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "unpriced_option"
        assert server.connections == 0
        flex = gateway.client(raw).post(path.format(slug=agent.slug), json={**body, "service_tier": "flex"})
        assert flex.status_code == 200, flex.text


@pytest.mark.parametrize("path", ["/v1/messages", "/agents/{slug}/v1/messages"])
def test_anthropic_server_tools_are_refused_unless_the_agent_is_unmetered(path, provider_at, gateway, make_key):
    body = {
        "model": "claude-haiku", "max_tokens": 50, "messages": [{"role": "user", "content": "news?"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
    }  # fmt: skip
    raw, _ = make_key()

    def model(agent):  # the composed API routes by the agent's slug; pass-through names the model
        return agent.slug if path == "/v1/messages" else "claude-haiku"

    with scripted_upstreams() as upstream:
        fields = {"served_models": ["claude-haiku"], "default_model": "claude-haiku"}
        metered = provider_at(upstream(ANTHROPIC_ANSWER).url, kind="anthropic", **fields)
        response = gateway.client(raw).post(path.format(slug=metered.slug), json={**body, "model": model(metered)})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "unpriced_option"
        assert "web_search_20250305" in response.json()["error"]["message"]
        allowed = provider_at(upstream(ANTHROPIC_ANSWER).url, kind="anthropic", unmetered_pass_through=True, **fields)
        response = gateway.client(raw).post(path.format(slug=allowed.slug), json={**body, "model": model(allowed)})
        assert response.status_code == 200, response.text


def test_a_read_with_a_body_or_a_method_override_does_not_pass_unpriced(provider_at, gateway, make_key):
    raw, _ = make_key()
    with scripted_upstreams() as upstream:
        server = upstream(json_answer({"object": "list", "data": []}))
        agent = provider_at(server.url)
        client = gateway.client(raw)
        chat = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        refused = client.request("GET", f"/agents/{agent.slug}/v1/chat/completions", content=chat)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "body_not_allowed"
        assert server.connections == 0
        overrides = {"X-HTTP-Method-Override": "POST", "X-Original-URL": "/v1/chat/completions", "X-Rewrite-URL": "/x"}
        read = client.get(f"/agents/{agent.slug}/v1/models", headers={**overrides, "X-Original-Method": "POST"})
        assert read.status_code == 200, read.text
        head = server.bodies[0].lower()
        assert not any(name in head for name in (b"method-override", b"x-original-", b"x-rewrite-url"))
