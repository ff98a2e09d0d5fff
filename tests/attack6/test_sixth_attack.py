"""The sixth attack's probes (issue 12): each asserts a promise of the README and fails on f32d947."""

from __future__ import annotations

import json

import pytest

from tests.attack.helpers import Answering, anthropic_answer, chat_answer
from tests.servers import json_answer, scripted_upstreams

CHAT = "/v1/chat/completions"


@pytest.fixture
def answering():
    with scripted_upstreams(Answering) as make:
        yield make


# --- 1. an unread answer was charged a quarter of what an honest upstream bills for an alphanumeric prompt --------
# Its probes are the "letters-and-digits" cases of tests/attack5/test_hang_up_input.py.


# --- 2. a document cached for an hour is reserved (and may be charged) once, and billed twice -----------------------


def test_a_document_cached_for_an_hour_is_charged_what_anthropic_bills(
    answering, provider_at, gateway, make_key, audit_of
):
    """README: "A request that caches for an hour reserves its input twice". ``referenced_input_tokens`` adds the
    body's length once more for a one-hour cache, but not the document's allowance (200,000 tokens): a 150,000-token
    PDF written to the one-hour cache bills 300,000 input-price tokens, and is charged the bound (~205,000), flagged
    as if the upstream lied."""
    document_tokens = 150_000
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": document_tokens,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": document_tokens},
        "output_tokens": 5,
    }
    upstream = answering(lambda head, body: anthropic_answer(usage))
    agent = provider_at(upstream.url, kind="anthropic", served_models=["claude-sonnet"], default_model="claude-sonnet")
    raw, _ = make_key()
    document = {
        "type": "document",
        "source": {"type": "url", "url": "https://example.com/annual-report.pdf"},
        "cache_control": {"type": "ephemeral", "ttl": "1h"},
    }
    body = {
        "model": "claude-sonnet",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": [document, {"type": "text", "text": "Summarise it."}]}],
    }
    with gateway.client(raw) as client:
        response = client.post(f"/agents/{agent.slug}/v1/messages", json=body)
    assert response.status_code == 200, response.text
    record = audit_of(response)
    billed = 10 + 2 * document_tokens  # one-hour cache writes cost twice the input price
    assert "usage_over_reservation" not in record.details, record.details
    assert record.input_tokens >= billed, (record.input_tokens, billed)


# --- 3. JSON nested deep enough to parse, but not to re-serialise, is a 500 -----------------------------------------


@pytest.mark.parametrize("path", [CHAT, "/v1/agent/invoke"])
def test_deeply_nested_json_is_never_a_500(path, answering, provider_at, gateway, make_key):
    """README: "JSON nested too deeply is a 400, not a 500". The body is parsed (``exchange.parse_json``) near the
    top of the stack, and re-serialised (``json.dumps`` in the adapter, or the job row's JSON) much deeper: a body
    nested just under the parse's limit passes it and then fails with RecursionError, a 500 internal_error."""
    upstream = answering(lambda head, body: chat_answer(prompt_tokens=9))
    agent = provider_at(upstream.url)
    raw, _ = make_key()
    failures = {}
    with gateway.client(raw) as client:
        for depth in range(900, 1000):
            nested = "[" * depth + "]" * depth
            if path == CHAT:
                payload = {"model": agent.slug, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
            else:
                payload = {"input": "hello", "agent": agent.slug, "async": True}
            body = json.dumps(payload)[:-1] + ', "x": ' + nested + "}"
            response = client.post(path, content=body.encode(), headers={"content-type": "application/json"})
            if response.status_code >= 500:
                failures[depth] = (response.status_code, response.json()["error"]["code"])
    assert not failures, f"nesting depths answered 5xx: {failures}"


# --- 4. a compressed request body hides its size from the body limit, the reservation and the charge ----------------


def _agent_usage_answer(input_tokens: int, output_tokens: int = 5) -> bytes:
    body = json.dumps({"output": "ok"}).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        b"X-Usage-Input-Tokens: %d\r\nX-Usage-Output-Tokens: %d\r\nConnection: close\r\n\r\n"
        % (len(body), input_tokens, output_tokens)
    ) + body


def test_a_gzip_request_body_is_not_a_way_past_the_body_limit_and_the_reservation(
    answering, provider_at, gateway, make_key, audit_of
):
    """Pass-through forwards ``Content-Encoding`` (it is not hop-by-hop), so an agent that inflates request bodies
    (most web frameworks' gzip middleware does) is sent an 8 MB prompt in 20 kB: past ``GATEWAY_MAX_BODY_BYTES``
    (64 kB in the tests), reserved and charged as 20 kB. The agent honestly reports the tokens it processed; the
    gateway charges its bound and flags ``usage_over_reservation`` as if the agent lied."""
    import gzip

    inflated = []

    def answer(head, body):
        if b"content-encoding: gzip" in head.lower():
            body = gzip.decompress(body)
        inflated.append(len(body))
        return _agent_usage_answer(len(body) // 4)  # four bytes a token: what the agent's model billed

    upstream = answering(answer)
    agent = provider_at(upstream.url, kind="agent", served_models=[], default_model="")
    raw, _ = make_key()
    prompt = json.dumps({"input": "Please summarise the following notes. " * 200_000}).encode()  # ~8 MB
    compressed = gzip.compress(prompt, 9)
    assert len(compressed) < 65536 < len(prompt)
    with gateway.client(raw) as client:
        response = client.post(
            f"/agents/{agent.slug}/invoke",
            content=compressed,
            headers={"content-type": "application/json", "content-encoding": "gzip"},
        )
    if response.status_code in (400, 413, 415):
        return  # refused: as the body limit promises
    assert response.status_code == 200, response.text
    record = audit_of(response)
    assert max(inflated) <= 65536, f"the agent was sent a {max(inflated)}-byte body through a 64 kB limit"
    assert "usage_over_reservation" not in record.details, record.details


# --- 5. OpenAI Predicted Outputs bill rejected prediction tokens as output, past the answer's cap --------------------


def test_a_prediction_is_refused_or_reserved_for(answering, provider_at, gateway, make_key, audit_of):
    """OpenAI bills a ``prediction``'s rejected tokens at completion rates (``completion_tokens_details.
    rejected_prediction_tokens``, counted in ``completion_tokens``): a 40 kB prediction with ``max_tokens: 10`` bills
    ~10,000 output tokens. The gateway neither refuses it (``refuse_unpriced``) nor reserves for it, and charges the
    cap (10), flagging ``usage_over_reservation`` as if the upstream lied."""
    rejected = 10_000

    def answer(head, body):
        usage = {
            "prompt_tokens": 20,
            "completion_tokens": 10 + rejected,
            "total_tokens": 30 + rejected,
            "completion_tokens_details": {"accepted_prediction_tokens": 0, "rejected_prediction_tokens": rejected},
        }
        obj = json.loads(chat_answer(20).partition(b"\r\n\r\n")[2])
        return json_answer({**obj, "usage": usage})

    upstream = answering(answer)
    agent = provider_at(upstream.url)
    raw, _ = make_key()
    body = {
        "model": agent.slug,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Rewrite this file."}],
        "prediction": {"type": "content", "content": "line of code\n" * 3_000},
    }
    with gateway.client(raw) as client:
        response = client.post(CHAT, json=body)
    if response.status_code == 400 and response.json()["error"]["code"] == "unpriced_option":
        return  # refused, as other options billed beyond the cap are
    assert response.status_code == 200, response.text
    record = audit_of(response)
    assert record.output_tokens >= 10 + rejected, (record.output_tokens, record.details)
