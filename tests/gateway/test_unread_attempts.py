"""Attempts whose prompt went upstream and whose answer was never read are charged (issue 12, third attack).

An upstream bills a prompt it was sent whether or not the gateway reads the answer:
a client that hangs up before a long non-streamed answer arrives, an answer slower
than the agent's timeout or larger than the gateway reads, each used to cost the
client nothing. Now such an attempt is charged its worst case (a stream that never
began, its input), before a fallback that answers is charged on top, and a further
attempt must fit a hard budget of its own. An attempt that never reached the
upstream (connection refused) or that the upstream refused (an error status) is
not charged.
"""

from __future__ import annotations

import json
import socket
import threading
from decimal import Decimal

import pytest

from tests.servers import Gateway, free_port, json_answer, scripted_upstreams
from tests.waiting import wait_for

CHAT = "/v1/chat/completions"
MAX_TOKENS = 100_000  # gpt-4o-mini: $0.06 of output at most


ANSWER = json_answer(
    {
        "id": "x",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
)


@pytest.fixture
def upstream():
    with scripted_upstreams() as make:
        yield make


@pytest.fixture(scope="module")
def small_reads(seeded):
    """A gateway on httpx's transport (its own way of knowing a prompt was sent) that reads answers of 4 KiB."""
    server = Gateway(GATEWAY_HTTP_TRANSPORT="httpx", GATEWAY_MAX_UPSTREAM_ANSWER_BYTES="4096")
    yield server
    server.stop()


def chat(model: str, stream: bool = False) -> dict:
    return {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "stream": stream,
        "messages": [{"role": "user", "content": "x" * 400}],
    }


def record_of(key):
    from audit.models import AuditRecord

    return wait_for(lambda: AuditRecord.objects.filter(api_key_id=key.pk).first(), 15)


def usage_rows(record, count: int):
    from billing.models import UsageRecord

    def rows():
        found = list(UsageRecord.objects.filter(request_id=record.request_id).order_by("id"))
        return found if len(found) >= count else None

    found = wait_for(rows, 10)
    assert len(found) == count, found
    return found


def assert_charged_worst_case(record, agent):
    charged = record.details["unread_attempts_charged"]
    assert [(c["agent"], c["model"], c["output_tokens"]) for c in charged] == [(agent.slug, "gpt-4o-mini", MAX_TOKENS)]
    assert charged[0]["input_tokens"] >= 100  # about four bytes a token of what was sent
    (row,) = usage_rows(record, 1)
    assert (row.agent, row.output_tokens) == (agent.slug, MAX_TOKENS)
    assert row.cost_usd == record.cost_usd >= Decimal("0.06")


@pytest.fixture(scope="module")
def uvicorn_gateway(seeded):
    server = Gateway(server="uvicorn")
    yield server
    server.stop()


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
@pytest.mark.parametrize("path", [CHAT, "/agents/{slug}/v1/chat/completions"])
def test_a_client_that_hangs_up_before_a_non_streamed_answer_pays_its_worst_case(
    server, path, upstream, provider_at, gateway, make_key, request
):
    """Under both servers the hang-up reaches the request at once (the server's protocol reports it: no task
    waits for it), while the upstream still holds the answer."""
    on = gateway if server == "daphne" else request.getfixturevalue("uvicorn_gateway")
    never = threading.Event()
    held = upstream(never, ANSWER)
    agent = provider_at(held.url, on=on, timeout_seconds=30)
    raw, key = make_key()
    body = json.dumps(chat(agent.slug if path == CHAT else "gpt-4o-mini")).encode()
    with socket.create_connection(("127.0.0.1", on.port), timeout=10) as conn:
        conn.sendall(
            f"POST {path.format(slug=agent.slug)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {raw}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert held.arrived.wait(10)  # the upstream has the prompt, and will bill it
    record = record_of(key)  # the client is gone
    never.set()
    assert record.error_type == "client_disconnected"
    assert_charged_worst_case(record, agent)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_an_answer_slower_than_the_timeout_is_charged_its_worst_case(
    transport, upstream, provider_at, gateway, small_reads, make_key
):
    on = gateway if transport == "aiohttp" else small_reads
    never = threading.Event()
    agent = provider_at(upstream(never, ANSWER).url, on=on, timeout_seconds=1)
    raw, key = make_key()
    response = on.client(raw).post(CHAT, json=chat(agent.slug))
    never.set()
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    record = record_of(key)
    assert_charged_worst_case(record, agent)
    assert record.details["attempts"][0]["charged"] == "worst_case"


def test_an_answer_too_large_to_read_is_charged_its_worst_case(upstream, provider_at, small_reads, make_key):
    huge = json_answer({"model": "gpt-4o-mini", "choices": [], "pad": "x" * 10_000})
    agent = provider_at(upstream(huge).url, on=small_reads)
    raw, key = make_key()
    response = small_reads.client(raw).post(CHAT, json=chat(agent.slug))
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_too_large"
    assert_charged_worst_case(record_of(key), agent)


def test_a_stream_that_never_began_is_charged_its_input_only(upstream, provider_at, gateway, make_key):
    never = threading.Event()
    agent = provider_at(upstream(never).url, timeout_seconds=1)
    raw, key = make_key()
    response = gateway.client(raw).post(CHAT, json=chat(agent.slug, stream=True))
    never.set()
    assert response.status_code == 504
    record = record_of(key)
    (charged,) = record.details["unread_attempts_charged"]
    assert charged["output_tokens"] == 0 and charged["input_tokens"] >= 100
    assert usage_rows(record, 1)[0].cost_usd > 0


# --- with a fallback ----------------------------------------------------------------------------------------------


def test_a_timed_out_attempt_and_the_fallback_that_answered_are_both_charged(upstream, provider_at, gateway, make_key):
    never = threading.Event()
    fallback = provider_at(upstream(ANSWER).url)
    primary = provider_at(upstream(never, ANSWER).url, timeout_seconds=1, fallbacks=[fallback.slug])
    raw, key = make_key()
    response = gateway.client(raw).post(CHAT, json=chat(primary.slug))
    never.set()
    assert response.status_code == 200, response.text
    record = record_of(key)
    rows = usage_rows(record, 2)
    by_agent = {row.agent: row for row in rows}
    assert by_agent[primary.slug].output_tokens == MAX_TOKENS
    assert (by_agent[fallback.slug].input_tokens, by_agent[fallback.slug].output_tokens) == (9, 3)
    assert record.cost_usd == sum(row.cost_usd for row in rows)
    assert record.input_tokens == by_agent[primary.slug].input_tokens + 9


@pytest.mark.parametrize("refusal", ["connection_refused", "error_status"])
def test_an_attempt_the_upstream_never_took_is_not_charged(refusal, upstream, provider_at, gateway, make_key):
    fallback = provider_at(upstream(ANSWER).url)
    if refusal == "connection_refused":
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    else:
        url = upstream(json_answer({"error": {"message": "overloaded"}}, b"500 Internal Server Error")).url
    primary = provider_at(url, fallbacks=[fallback.slug])
    raw, key = make_key()
    response = gateway.client(raw).post(CHAT, json=chat(primary.slug))
    assert response.status_code == 200, response.text
    record = record_of(key)
    (row,) = usage_rows(record, 1)
    assert (row.agent, row.input_tokens, row.output_tokens) == (fallback.slug, 9, 3)
    assert "unread_attempts_charged" not in record.details
    assert record.cost_usd == row.cost_usd


def test_a_hard_budget_that_cannot_cover_another_attempt_stops_the_fallback(upstream, provider_at, gateway, make_key):
    never = threading.Event()
    fallback_server = upstream(ANSWER)
    fallback = provider_at(fallback_server.url)
    primary = provider_at(upstream(never, ANSWER).url, timeout_seconds=1, fallbacks=[fallback.slug])
    raw, key = make_key(budget="0.10")  # one worst case ($0.06 and its input) fits, two do not
    response = gateway.client(raw).post(CHAT, json=chat(primary.slug))
    never.set()
    assert response.status_code == 504, response.text  # the failure it had, not a fallback's answer
    record = record_of(key)
    assert "budget" in record.details["attempts_stopped"]
    assert fallback_server.connections == 0
    (row,) = usage_rows(record, 1)
    assert row.agent == primary.slug and Decimal("0.06") <= row.cost_usd <= Decimal("0.10")
    # The budget is not overspent, and the next request is refused for what is left.
    assert gateway.client(raw).post(CHAT, json=chat(primary.slug)).status_code == 402
