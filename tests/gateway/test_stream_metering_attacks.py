"""The second attacker's stream findings (issue 12), each a regression test through a real gateway process.

The upstream is a raw TCP server on loopback that plays a scripted stream: bytes to
send, events to wait for (so a test decides when the upstream goes on), and pauses
(an upstream that dribbles). Clients hang up, streams outlast the deadline,
upstreams answer with a dearer model or with JSON of any shape: each request is
still charged within its reservation, never nothing, and gives back its slots.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.servers import Gateway, ScriptedUpstream, scripted_upstreams
from tests.waiting import wait_for

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def event(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def chat_chunk(text: str, model: str = "gpt-4o-mini") -> bytes:
    return event({"model": model, "choices": [{"index": 0, "delta": {"content": text}}]})


USAGE = event({"model": "gpt-4o-mini", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
DONE = b"data: [DONE]\n\n"


class ScriptedStream(ScriptedUpstream):
    """A scripted upstream that answers with an event stream's head first."""

    def __init__(self, *script):
        super().__init__(HEAD, *script)


@pytest.fixture
def upstream():
    with scripted_upstreams(ScriptedStream) as make:
        yield make


def usage_row(record):
    from billing.models import UsageRecord

    return wait_for(lambda: UsageRecord.objects.filter(request_id=record.request_id).first(), 10)


def read_events_then_leave(client: httpx.Client, path: str, body: dict, events: int) -> httpx.Response:
    """Stream ``path``, read ``events`` events, and hang up (the response is closed under the gateway's feet)."""
    with client.stream("POST", path, json=body) as response:
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data:") or line.startswith("event:"):
                seen += line.startswith("data:")
                if seen >= events:
                    break
    return response


# --- a client that hangs up before the usage event -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/agents/{slug}/v1/chat/completions"])
def test_a_stream_the_client_cuts_before_its_usage_pays_its_input_and_what_it_was_sent(
    path, upstream, provider_at, gateway, make_key, audit_of
):
    never = threading.Event()
    server = upstream(*(chat_chunk(f"word{i} ") for i in range(6)), never, USAGE, DONE)
    agent = provider_at(server.url)
    raw, _ = make_key()
    body = {
        "model": agent.slug if path.startswith("/v1/") else "gpt-4o-mini",  # its default model, gpt-4o-mini
        "stream": True,
        "max_tokens": 500,
        "messages": [{"role": "user", "content": "x" * 400}],
    }
    response = read_events_then_leave(gateway.client(raw), path.format(slug=agent.slug), body, events=6)
    record = audit_of(response)
    never.set()
    assert record.details.get("usage_partial") is True, record.details
    assert record.input_tokens >= 100  # the whole body went upstream: about four bytes a token
    assert 6 <= record.output_tokens <= 500  # at least a token an event it relayed, never past its cap
    assert record.cost_usd > 0
    assert usage_row(record).cost_usd > 0


def test_an_anthropic_stream_cut_after_message_start_pays_the_output_it_relayed(
    upstream, provider_at, gateway, make_key, audit_of
):
    start = {
        "type": "message_start",
        "message": {"model": "claude-haiku", "usage": {"input_tokens": 50, "output_tokens": 1}},
    }
    deltas = [{"type": "content_block_delta", "delta": {"type": "text_delta", "text": f"w{i} "}} for i in range(8)]
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 8}}
    never = threading.Event()
    server = upstream(event(start), *(event(d) for d in deltas), never, event(end), event({"type": "message_stop"}))
    agent = provider_at(server.url, kind="anthropic", served_models=["claude-haiku"], default_model="claude-haiku")
    raw, _ = make_key()
    body = {"model": agent.slug, "max_tokens": 300, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    response = read_events_then_leave(gateway.client(raw), "/v1/messages", body, events=9)
    record = audit_of(response)
    never.set()
    assert record.agent == agent.slug
    assert record.input_tokens == 50  # as message_start told it
    assert 8 <= record.output_tokens <= 300  # not the one token message_start counted
    assert usage_row(record).output_tokens == record.output_tokens


# --- a stream that never ends ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deadline_gateway(seeded):
    server = Gateway(GATEWAY_MAX_ANSWER_SECONDS="2")
    yield server
    server.stop()


def test_a_stream_that_outlasts_the_deadline_is_cut_and_charged(
    upstream, provider_at, deadline_gateway, make_key, audit_of
):
    """Each byte comes within the agent's read timeout, so only a deadline on the whole answer can end it, before
    its reservation (held for the deadline and a margin) lapses and lets other requests spend the same money."""
    dribble = [step for i in range(60) for step in (chat_chunk(f"w{i} "), 0.2)]  # 12 s of answer
    server = upstream(*dribble, USAGE, DONE)
    agent = provider_at(server.url, timeout_seconds=1, on=deadline_gateway)
    raw, _ = make_key()
    body = {"model": agent.slug, "stream": True, "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}]}
    started = time.monotonic()
    with deadline_gateway.client(raw).stream("POST", "/v1/chat/completions", json=body) as response:
        text = b"".join(response.iter_bytes())
    assert time.monotonic() - started < 8  # cut at about 2 s, not after the upstream's 12
    assert response.status_code == 200 and text.count(b"data:") >= 1
    record = audit_of(response)
    assert record.error_type == "answer_deadline"
    assert record.details.get("usage_partial") is True
    assert 1 <= record.output_tokens <= 200 and record.cost_usd > 0


# --- a stream from a dearer model than reserved ------------------------------------------------------------------


def test_a_stream_from_a_dearer_model_is_stopped_at_its_first_event_and_the_next_one_reserves_for_it(
    upstream, provider_at, gateway, make_key, audit_of
):
    dear = [chat_chunk(f"w{i} ", model="gpt-4o") for i in range(5)]
    usage = event({"model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}})
    server = upstream(*dear, usage, DONE)
    agent = provider_at(server.url)
    raw, _ = make_key()
    body = {"model": agent.slug, "stream": True, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client(raw).stream("POST", "/v1/chat/completions", json=body) as stopped:
        text = b"".join(stopped.iter_bytes())
    assert b"w1" not in text  # nothing of the dearer answer was relayed
    error = json.loads(text.split(b"data: ", 1)[1].split(b"\n\n")[0])["error"]
    assert "gpt-4o" in error["message"] and agent.slug in error["message"]
    record = audit_of(stopped)
    assert record.error_type == "dearer_model_stopped"
    assert record.details["stopped_dearer_model"] == {"reserved_model": "gpt-4o-mini", "answered_model": "gpt-4o"}

    with gateway.client(raw).stream("POST", "/v1/chat/completions", json=body) as second:
        text = b"".join(second.iter_bytes())
    assert b"w4" in text and b"[DONE]" in text  # reserved at gpt-4o's price now: it goes through
    again = audit_of(second)
    assert again.error_type == "" and again.model == "gpt-4o"
    assert "priced_over_reservation" not in again.details


# --- answers of any shape ----------------------------------------------------------------------------------------


HOSTILE_EVENTS = [
    event({"model": ["not", "a", "string"], "choices": 5}),
    event({"model": {"a": 1}, "choices": [{"delta": "a string", "finish_reason": ["x"]}]}),
    event({"choices": [{"delta": {"content": 7}}], "usage": "lots"}),
    event({"choices": "none", "usage": {"prompt_tokens": "9", "completion_tokens": -3}}),
    event([1, 2, 3]),
]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/agents/{slug}/v1/chat/completions"])
def test_a_stream_of_odd_shapes_is_relayed_charged_and_gives_its_slot_back(
    path, upstream, provider_at, gateway, make_key, audit_of
):
    server = upstream(*HOSTILE_EVENTS, chat_chunk("fine"), USAGE, DONE)
    agent = provider_at(server.url, max_concurrent=1)
    raw, _ = make_key()
    model = agent.slug if path.startswith("/v1/") else "gpt-4o-mini"
    body = {"model": model, "stream": True, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):  # the agent has one slot: the second request needs the first's back
        with gateway.client(raw).stream("POST", path.format(slug=agent.slug), json=body) as response:
            b"".join(response.iter_bytes())
        assert response.status_code == 200
        record = audit_of(response)
        assert record.status == 200 and record.model == "gpt-4o-mini"
        assert record.output_tokens == 3 and record.cost_usd > 0
