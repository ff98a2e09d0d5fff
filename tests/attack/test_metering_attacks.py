"""The fourth attack's metering and budget probes (issue 12), kept as regression tests: each failed on the code
before its fix."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from tests.attack.helpers import Answering, anthropic_answer, chat_answer
from tests.gateway.test_metering_edges import spend_of
from tests.servers import free_port, scripted_upstreams
from tests.waiting import wait_for

CHAT = "/v1/chat/completions"


@pytest.fixture
def answering():
    with scripted_upstreams(Answering) as make:
        yield make


def usage_count(client_id) -> int:
    from billing.models import UsageRecord

    return UsageRecord.objects.filter(client_id=client_id).count()


# --- 1. input denser than four bytes a token is reserved at a quarter of what it bills ------------------------------


def test_dense_input_spends_past_a_hard_budget(answering, provider_at, gateway, make_key):
    """A prompt of small numbers (" 0" is one token: two bytes a token) bills twice the body's estimate; the gateway
    reserves the estimate and charges up to four times it, so a hard budget is passed by plain sequential requests
    to an honest upstream."""
    upstream = answering(lambda head, body: chat_answer(len(body) // 2, model="claude-sonnet"))
    agent = provider_at(upstream.url, served_models=["claude-sonnet"], default_model="claude-sonnet")  # $3/M input
    raw, key = make_key(budget="0.16")
    text = "0 " * 29_900  # 60 kB (the tests' body limit is 64 kB): estimated 15k tokens ($0.045), billed 30k ($0.09)
    body = {"model": agent.slug, "max_tokens": 1, "messages": [{"role": "user", "content": text}]}
    statuses = []
    with gateway.client(raw) as client:
        for _ in range(3):
            statuses.append(client.post(CHAT, json=body).status_code)
    wait_for(lambda: usage_count(key.client_id) >= statuses.count(200), 10)
    spent = spend_of(key.client_id)
    assert spent <= Decimal("0.16"), f"hard budget $0.16 spent to ${spent} (statuses {statuses})"


# --- 2. a UTF-16 body hides its referenced documents and images from the allowance ---------------------------------


DOC_TOKENS = 150_000  # what the upstream bills for the referenced PDF


def _doc_chat(model: str) -> dict:
    return {
        "model": model,
        "max_tokens": 1,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Summarise this."},
                    {"type": "file", "file": {"file_id": "file-abc123"}},
                ],
            }
        ],
    }


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
def test_a_referenced_document_is_charged_whatever_the_body_encoding(
    encoding, answering, provider_at, gateway, make_key, audit_of
):
    upstream = answering(lambda head, body: chat_answer(prompt_tokens=DOC_TOKENS))
    agent = provider_at(upstream.url)
    raw, _ = make_key()
    content = json.dumps(_doc_chat(agent.slug)).encode(encoding)
    with gateway.client(raw) as client:
        response = client.post(CHAT, content=content, headers={"content-type": "application/json"})
    if encoding != "utf-8":  # JSON between systems is UTF-8 (RFC 8259): anything else is refused, unread
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json", response.text
        assert not upstream.requests
        return
    assert response.status_code == 200, response.text
    # the upstream got the file part (re-serialised as UTF-8 JSON) and billed it
    assert json.loads(upstream.requests[0][1])["messages"][0]["content"][1]["type"] == "file"
    record = audit_of(response)
    assert record.input_tokens == DOC_TOKENS, (record.input_tokens, record.details)


def test_a_utf16_body_is_not_reserved_for_its_documents(answering, provider_at, gateway, make_key):
    """200,000 tokens are reserved per document (gpt-4o-mini: $0.03); a $0.02 hard budget must refuse it."""
    upstream = answering(lambda head, body: chat_answer(prompt_tokens=DOC_TOKENS))
    agent = provider_at(upstream.url)
    raw, _ = make_key(budget="0.02")
    with gateway.client(raw) as client:
        plain = client.post(CHAT, json=_doc_chat(agent.slug))
        assert plain.status_code == 402, plain.text  # UTF-8: refused, as promised
        hidden = client.post(
            CHAT,
            content=json.dumps(_doc_chat(agent.slug)).encode("utf-16"),
            headers={"content-type": "application/json"},
        )
    assert hidden.status_code in (400, 402), f"UTF-16 body admitted: {hidden.status_code}"


# --- 3. Anthropic's one-hour prompt cache writes bill twice the input price -----------------------------------------


def test_one_hour_cache_writes_are_charged_what_anthropic_bills(answering, provider_at, gateway, make_key, audit_of):
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 4000,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 4000},
        "output_tokens": 5,
    }
    upstream = answering(lambda head, body: anthropic_answer(usage))
    agent = provider_at(upstream.url, kind="anthropic", served_models=["claude-sonnet"], default_model="claude-sonnet")
    raw, _ = make_key()
    body = {
        "model": "claude-sonnet",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "policy " * 2300, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    with gateway.client(raw) as client:
        response = client.post(f"/agents/{agent.slug}/v1/messages", json=body)
    assert response.status_code == 200, response.text
    record = audit_of(response)
    # Anthropic: 1h cache writes cost 2x the base input price (5-minute writes 1.25x): 10 + 2 * 4000
    assert record.input_tokens >= 10 + 2 * 4000, (record.input_tokens, str(record.cost_usd))


# --- 4. a fallback agent's own capacity is never taken -------------------------------------------------------------


def test_fallbacks_respect_the_fallback_agents_max_concurrent(answering, provider_at, gateway, make_key):
    gate = threading.Event()
    fallback_upstream = answering(lambda head, body: chat_answer(prompt_tokens=9), gate)
    fallback = provider_at(fallback_upstream.url, max_concurrent=1)
    primary = provider_at(f"http://127.0.0.1:{free_port()}", fallbacks=[fallback.slug])  # refuses connections
    raw, _ = make_key()
    body = {"model": primary.slug, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(gateway.client(raw).post, CHAT, json=body) for _ in range(3)]
            direct = pool.submit(
                gateway.client(raw).post, CHAT, json={**body, "model": fallback.slug}
            )  # the agent itself, by its slug
            wait_for(lambda: fallback_upstream.in_flight >= 2, 8)
            gate.set()
            statuses = [f.result().status_code for f in futures] + [direct.result().status_code]
    finally:
        gate.set()
    assert fallback_upstream.max_in_flight <= 1, (
        f"agent with max_concurrent=1 served {fallback_upstream.max_in_flight} at once; statuses {statuses}"
    )


# --- 5. pass-through forwards Anthropic beta flags that switch on premium billing ----------------------------------


def test_pass_through_does_not_forward_billing_beta_flags(answering, provider_at, gateway, make_key):
    usage = {"input_tokens": 10, "output_tokens": 5}
    upstream = answering(lambda head, body: anthropic_answer(usage))
    agent = provider_at(upstream.url, kind="anthropic", served_models=["claude-sonnet"], default_model="claude-sonnet")
    raw, _ = make_key()
    body = {"model": "claude-sonnet", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client(raw) as client:
        response = client.post(
            f"/agents/{agent.slug}/v1/messages", json=body, headers={"anthropic-beta": "context-1m-2025-08-07"}
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "unpriced_option"
    assert not upstream.requests
    with gateway.client(raw) as client:  # a beta the gateway meters passes
        passed = client.post(
            f"/agents/{agent.slug}/v1/messages", json=body, headers={"anthropic-beta": "prompt-caching-2024-07-31"}
        )
    assert passed.status_code == 200, passed.text


def test_pass_through_never_lets_a_client_choose_the_paying_account(answering, provider_at, gateway, make_key):
    upstream = answering(lambda head, body: chat_answer(prompt_tokens=9))
    agent = provider_at(upstream.url)
    raw, _ = make_key()
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client(raw) as client:
        response = client.post(
            f"/agents/{agent.slug}/v1/chat/completions", json=body,
            headers={"OpenAI-Organization": "org-other", "OpenAI-Project": "proj_other"},
        )  # fmt: skip
    assert response.status_code == 200, response.text
    head = upstream.requests[0][0].lower()
    assert b"openai-organization" not in head and b"openai-project" not in head
