"""Inputs that must be a 400, never a 500 ("no input may cost a 5xx"): the fourth attack's probes (issue 12)."""

from __future__ import annotations

import pytest

from tests.attack.helpers import Answering, anthropic_answer, chat_answer

CHAT = "/v1/chat/completions"


@pytest.fixture
def upstream():
    server = Answering(lambda head, body: anthropic_answer({"input_tokens": 3, "output_tokens": 1}))
    yield server
    server.stop()


@pytest.mark.parametrize("stop", [5, 1.5, True])
def test_a_non_list_stop_sent_to_an_anthropic_model_is_a_400(stop, upstream, provider_at, gateway, make_key, audit_of):
    agent = provider_at(upstream.url, kind="anthropic", served_models=["claude-sonnet"], default_model="claude-sonnet")
    raw, _ = make_key()
    body = {"model": agent.slug, "max_tokens": 5, "stop": stop, "messages": [{"role": "user", "content": "hi"}]}
    with gateway.client(raw) as client:
        response = client.post(CHAT, json=body)
    assert response.status_code == 400, (response.status_code, response.text)
    assert not upstream.requests


@pytest.mark.parametrize("tier", [["priority"], {"tier": "priority"}])
def test_a_service_tier_that_is_not_a_string_is_a_400(tier, provider_at, gateway, make_key):
    server = Answering(lambda head, body: chat_answer(3))
    try:
        agent = provider_at(server.url)
        raw, _ = make_key()
        body = {
            "model": agent.slug,
            "max_tokens": 5,
            "service_tier": tier,
            "messages": [{"role": "user", "content": "hi"}],
        }
        with gateway.client(raw) as client:
            response = client.post(CHAT, json=body)
            passed = client.post(f"/agents/{agent.slug}/v1/chat/completions", json={**body, "model": "gpt-4o-mini"})
    finally:
        server.stop()
    assert response.status_code == 400, (response.status_code, response.text)
    assert passed.status_code == 400, (passed.status_code, passed.text)
