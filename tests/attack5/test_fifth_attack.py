"""The fifth attack's probes (issue 12): each asserts a promise of the README and failed on 2543ba6."""

from __future__ import annotations

import json

import pytest

from tests.attack.helpers import Answering, anthropic_answer, chat_answer
from tests.servers import free_port, scripted_upstreams

CHAT = "/v1/chat/completions"


@pytest.fixture
def answering():
    with scripted_upstreams(Answering) as make:
        yield make


def _sent_bodies(upstream) -> list[dict]:
    return [json.loads(body) for _, body in upstream.requests if body]


# --- 1. a fallback is sent what only its unmetered primary may be sent ----------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {"service_tier": "priority"},
        {"web_search_options": {}},
        {"tools": [{"type": "web_search_preview"}]},
        {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    ],
    ids=["priority-tier", "web-search", "server-tool", "audio"],
)
def test_a_metered_fallback_is_never_sent_unpriced_options(extra, answering, provider_at, gateway, make_key, audit_of):
    """``refuse_unpriced`` is asked of the agent named only: an unmetered primary that fails hands the options it
    was allowed to a metered fallback, which then bills priority tiers, searches or audio nobody reserved."""
    fallback_upstream = answering(lambda head, body: chat_answer(prompt_tokens=9))
    fallback = provider_at(fallback_upstream.url)  # metered (the default)
    primary = provider_at(
        f"http://127.0.0.1:{free_port()}", fallbacks=[fallback.slug], unmetered_pass_through=True
    )  # refuses connections: the fallback answers
    raw, _ = make_key()
    body = {"model": primary.slug, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **extra}
    with gateway.client(raw) as client:
        response = client.post(CHAT, json=body)
    sent = _sent_bodies(fallback_upstream)
    leaked = [b for b in sent if any(b.get(name) == value for name, value in extra.items())]
    assert not leaked, (
        f"the metered fallback {fallback.slug} was sent {extra} (status {response.status_code}, "
        f"details {audit_of(response).details})"
    )


def test_a_metered_fallback_of_messages_is_never_sent_server_tools(answering, provider_at, gateway, make_key):
    """The same through ``/v1/messages``: Anthropic's web search is billed per search, beyond any token."""
    usage = {"input_tokens": 10, "output_tokens": 5}
    fallback_upstream = answering(lambda head, body: anthropic_answer(usage))
    fallback = provider_at(
        fallback_upstream.url, kind="anthropic", served_models=["claude-sonnet"], default_model="claude-sonnet"
    )
    primary = provider_at(
        f"http://127.0.0.1:{free_port()}", kind="anthropic", served_models=["claude-sonnet"],
        default_model="claude-sonnet", fallbacks=[fallback.slug], unmetered_pass_through=True,
    )  # fmt: skip
    raw, _ = make_key()
    body = {
        "model": primary.slug,
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "search the web"}],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 50}],
    }
    with gateway.client(raw) as client:
        response = client.post("/v1/messages", json=body)
    leaked = [b for b in _sent_bodies(fallback_upstream) if b.get("tools")]
    assert not leaked, f"metered fallback sent the web search tool (status {response.status_code})"


# --- 2. a one-hour cache write of a dense prompt is charged less than it bills --------------------------------------


def test_a_dense_prompt_cached_for_an_hour_is_charged_what_it_bills(
    answering, provider_at, gateway, make_key, audit_of
):
    """Text is reserved at most a token a byte (``input_bound``), but a one-hour cache write bills each of those
    tokens twice: an honest upstream's bill for a prompt of byte-fallback characters (a token a byte, the bound's
    own assumption) is cut to the bound and flagged ``usage_over_reservation`` as if the upstream lied."""
    text = "\U0001d54f" * 12_000  # 48 kB of UTF-8, 4 bytes a character; byte-fallback tokens: about a token a byte
    text_bytes = len(text.encode())

    def answer(head, body):
        usage = {
            "input_tokens": 20,
            "cache_creation_input_tokens": text_bytes,  # a token a byte: the gateway's own bound for text
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": text_bytes},
            "output_tokens": 1,
        }
        return anthropic_answer(usage)

    upstream = answering(answer)
    agent = provider_at(upstream.url, kind="anthropic", served_models=["claude-sonnet"], default_model="claude-sonnet")
    raw, _ = make_key()
    body = {
        "model": "claude-sonnet",
        "max_tokens": 1,
        "system": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    content = json.dumps(body, ensure_ascii=False).encode()
    with gateway.client(raw) as client:
        response = client.post(
            f"/agents/{agent.slug}/v1/messages", content=content, headers={"content-type": "application/json"}
        )
    assert response.status_code == 200, response.text
    record = audit_of(response)
    billed = 20 + 2 * text_bytes  # what Anthropic charges in input-price tokens
    assert "usage_over_reservation" not in record.details, (len(content), record.details)
    assert record.input_tokens >= billed, (record.input_tokens, billed)
