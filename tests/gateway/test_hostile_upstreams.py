"""Upstreams that lie or flood: the gateway still answers, meters within bounds, and keeps its log going."""

from __future__ import annotations

import uuid

import pytest

from tests.servers import Gateway

CHAT = "/v1/chat/completions"
MAX_TOKENS_COLUMN = 2**31 - 1


@pytest.fixture(scope="module")
def small_gateway(seeded):
    server = Gateway(GATEWAY_MAX_UPSTREAM_ANSWER_BYTES="4096")
    yield server
    server.stop()


def test_an_upstream_reporting_billions_of_tokens_is_charged_what_was_reserved(small_gateway, make_key, audit_of):
    """It was asked for at most 1,024 tokens (the default cap, sent upstream): it is charged that, and its report is
    kept in the audit record, clamped to the columns' range."""
    from billing.models import UsageRecord

    raw, _ = make_key()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}],
            "mock": {"usage_output_tokens": 3_000_000_000}}  # fmt: skip
    lying = small_gateway.client(raw).post(CHAT, json=body)
    assert lying.status_code == 200
    record = audit_of(lying)
    assert record.output_tokens == 1024
    assert record.details["usage_over_reservation"]["reported"][1] == MAX_TOKENS_COLUMN
    assert UsageRecord.objects.get(request_id=record.request_id).output_tokens == 1024
    honest = small_gateway.client(raw).post(CHAT, json={**body, "mock": {}})
    assert audit_of(honest) is not None  # the log goes on


def test_an_answer_larger_than_the_gateway_reads_is_a_502(
    small_gateway, make_key, live_db, seeded, audit_of, wait_for_agent
):
    from routing.models import Agent

    agent = Agent.objects.create(
        slug=f"big-{uuid.uuid4().hex[:8]}", name="big", kind="openai", upstream_url=f"{seeded.url}/echo",
        served_models=[], default_model="", max_retries=0,
    )  # fmt: skip
    try:
        wait_for_agent(agent.slug, small_gateway)
        raw, _ = make_key()
        body = {"model": agent.slug, "messages": [{"role": "user", "content": "x" * 6000}]}  # the echo repeats it
        answer = small_gateway.client(raw).post(CHAT, json=body)
        assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_too_large"
        assert audit_of(answer).error_type == "upstream_too_large"
        small = small_gateway.client(raw).post(CHAT, json={**body, "messages": [{"role": "user", "content": "x"}]})
        assert small.status_code == 200
    finally:
        agent.delete()
