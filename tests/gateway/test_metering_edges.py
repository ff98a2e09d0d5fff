"""Metering that cannot be sidestepped: the priced model is decided once, and pass-through is scoped and metered.

Each test here failed on ee0d162 (issue 12, items 2 and 3).
"""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from tests.waiting import until, wait_for

CHAT = "/v1/chat/completions"


@pytest.fixture
def dear_model(live_db, gateway, wait_for_price):
    """A model priced far above everything else, for an upstream to answer with."""
    from billing.models import ModelPrice

    name = f"dear-{uuid.uuid4().hex[:8]}"
    price = ModelPrice.objects.create(model=name, input_per_million=Decimal("500"), output_per_million=Decimal("2000"))
    wait_for_price(name, gateway)
    yield name
    price.delete()


@pytest.fixture
def make_agent(live_db, seeded, gateway, wait_for_agent):
    from routing.models import Agent

    made = []

    def make(**fields):
        slug = f"a-{uuid.uuid4().hex[:8]}"
        defaults = dict(name=slug, kind="openai", upstream_url=seeded.url, timeout_seconds=10)
        agent = Agent.objects.create(slug=slug, **{**defaults, **fields})
        made.append(agent)
        wait_for_agent(slug, gateway)
        return agent

    yield make
    for agent in made:
        agent.delete()


def spend_of(client_id) -> Decimal:
    from billing.models import UsageRecord

    return sum((row.cost_usd for row in UsageRecord.objects.filter(client_id=client_id)), Decimal(0))


def test_an_agent_asked_by_slug_reserves_what_its_upstream_may_answer_with(
    gateway, make_key, make_agent, dear_model, audit_for
):
    """No default model: the upstream picks the model, so the reservation is the dearest it could charge."""
    agent = make_agent(served_models=[], default_model="")
    raw, key = make_key(budget="2.50")
    # Each answer bills its whole length (50 tokens at $2,000/M: $0.10); each reserves the most input it may be
    # charged too (4,196 tokens at $500/M: $2.10), so a few are answered, one at a time.
    mock = {"answer_model": dear_model, "usage_output_tokens": 50}
    body = {"model": agent.slug, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], "mock": mock}

    def call(_):
        return gateway.client(raw).post(CHAT, json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(call, range(32)))
    answered = statuses.count(200)
    assert answered >= 1 and set(statuses) <= {200, 402}, statuses
    records = audit_for(key, len(statuses))
    assert wait_for(lambda: len([r for r in records if r.status == 200]) == answered)
    wait_for(lambda: spend_of(key.client_id) > 0)
    assert spend_of(key.client_id) <= Decimal("2.50")
    assert all("priced_over_reservation" not in r.details for r in audit_for(key, len(statuses)))


def test_an_answer_from_a_dearer_model_is_charged_flagged_and_not_repeated(
    gateway, make_key, make_agent, dear_model, audit_of
):
    from routing.models import Agent

    agent = make_agent(served_models=["gpt-4o-mini"], default_model="gpt-4o-mini")
    raw, _ = make_key(budget="1.00")
    body = {"model": agent.slug, "messages": [{"role": "user", "content": "hi"}], "mock": {"answer_model": dear_model}}
    first = gateway.client(raw).post(CHAT, json=body)
    assert first.status_code == 200
    record = audit_of(first)
    assert record.model == dear_model
    assert record.details["priced_over_reservation"] == {"reserved_model": "gpt-4o-mini", "answered_model": dear_model}
    usage = first.json()["usage"]
    expected = (Decimal(500) * usage["prompt_tokens"] + Decimal(2000) * usage["completion_tokens"]) / 10**6
    assert record.cost_usd == expected  # charged at the real price
    # The agent learnt the model: its next reservation prices it in (1,024 tokens at $2,000/M > $1).
    assert wait_for(lambda: dear_model in Agent.objects.get(pk=agent.pk).dearer_models)
    second = gateway.client(raw).post(CHAT, json=body)
    assert second.status_code == 402, second.text


def test_pass_through_checks_the_bodys_model_against_the_keys_scopes(gateway, make_key):
    raw, _ = make_key(agents=["openai"], models=["gpt-4o-mini"])
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    refused = gateway.client(raw).post("/agents/openai/v1/chat/completions", json=body)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    allowed = gateway.client(raw).post("/agents/openai/v1/chat/completions", json={**body, "model": "gpt-4o-mini"})
    assert allowed.status_code == 200


def test_a_streamed_pass_through_is_metered_from_its_usage_event(gateway, make_key, audit_of):
    raw, _ = make_key()
    text = " ".join(f"word{i}" for i in range(300))
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": text}]}
    with gateway.client(raw).stream(
        "POST", "/agents/openai/v1/chat/completions", json=body, headers={"accept-encoding": "gzip"}
    ) as response:
        assert response.status_code == 200
        content = response.read().decode()
    events = [line[5:].strip() for line in content.splitlines() if line.startswith("data:")]
    # The client did not ask for the usage chunk: the gateway asked for it and kept it to itself.
    assert all(event == "[DONE]" or json.loads(event)["choices"] for event in events)
    record = audit_of(response)
    assert record.model == "gpt-4o"
    assert record.input_tokens > 300 and record.output_tokens > 0
    assert record.cost_usd > 0


def test_a_pass_through_the_gateway_cannot_meter_is_refused_unless_the_admin_allows_it(gateway, make_key, live_db):
    from routing.models import Agent

    raw, _ = make_key()
    refused = gateway.client(raw).post("/agents/openai/v1/files", content=b"upload")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "unmetered_pass_through"
    assert gateway.client(raw).get("/agents/openai/v1/models").status_code == 200  # reading costs no tokens
    Agent.objects.filter(slug="openai").update(unmetered_pass_through=True)
    client = gateway.client(raw)

    def upload():
        return client.post("/agents/openai/v1/files", content=b"upload")

    try:
        # Allowed once the gateway has re-read the agent (every 0.2 s in the tests).
        allowed = until(lambda: (a := upload()).status_code != 403 and a, "the gateway allows the upload")
        assert allowed.status_code == 200 and allowed.json()["path"] == "/v1/files"
    finally:
        Agent.objects.filter(slug="openai").update(unmetered_pass_through=False)
        until(lambda: upload().status_code == 403, "the gateway refuses the upload again")  # as the next tests expect


def test_an_answer_without_max_tokens_is_capped_at_what_was_reserved(gateway, make_key, make_agent, seeded):
    """What is reserved is what is asked for: the agent's default answer length goes upstream when the client
    sets none, on the composed API and through pass-through alike."""
    agent = make_agent(
        upstream_url=f"{seeded.url}/echo", served_models=[], default_model="", default_max_output_tokens=77
    )
    raw, _ = make_key()
    body = {"model": agent.slug, "messages": [{"role": "user", "content": "one two three"}]}
    composed = gateway.client(raw).post(CHAT, json=body).json()
    assert json.loads(composed["body"])["max_tokens"] == 77
    passed = gateway.client(raw).post(f"/agents/{agent.slug}/v1/chat/completions", json=body).json()
    assert json.loads(passed["body"])["max_tokens"] == 77
    own = gateway.client(raw).post(f"/agents/{agent.slug}/v1/chat/completions", json={**body, "max_tokens": 5}).json()
    assert json.loads(own["body"])["max_tokens"] == 5
    echo = gateway.client(raw).post("/agents/research/echo", json=body).json()
    assert "max_tokens" not in json.loads(echo["body"])  # agent services get their body as it came
