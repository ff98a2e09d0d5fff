"""Model auto-routing on live traffic, under Daphne and uvicorn: the model sent upstream, the header, the audit
record, the reservation priced at the chosen model, the key's scopes, and odd or hostile requests."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

CHAT = "/v1/chat/completions"


def chat(model="auto", text="hello", **extra):
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture
def models(agents, seeded):
    """``models(n, **agent_fields)`` -> n new model names, each served by its own OpenAI-compatible agent."""

    def make(n=1, **fields):
        names = [f"m-{uuid.uuid4().hex[:8]}" for _ in range(n)]
        for name in names:
            agents(seeded.url, kind="openai", served_models=[name], default_model=name, **fields)
        return names

    return make


@pytest.fixture
def rules_on(live_db, wait_for_reload):
    """``rules_on(servers, *rules, default=model, agent=None)``: auto-routing rules, once those gateways read them."""
    from routing.models import AutoRouteRule

    made = []

    def make(servers, *rules, default=None, agent=None):
        saved = []
        for position, (name, model, conditions) in enumerate(rules, start=1):
            saved.append(AutoRouteRule.objects.create(name=name, model=model, position=position, agent=agent,
                                                      **conditions))  # fmt: skip
        if default:
            saved.append(AutoRouteRule.objects.create(name="fallback", model=default, is_default=True, agent=agent))
        made.extend(saved)
        wait_for_reload(*servers)
        return saved

    yield make
    AutoRouteRule.objects.filter(pk__in=[rule.pk for rule in made]).delete()


def test_the_first_matching_rule_picks_the_model_sent_upstream(
    either_server, gateway, models, rules_on, make_key, audit_of
):
    coder, cheap = models(2)
    word = f"kw{uuid.uuid4().hex[:6]}"
    rule, default = rules_on({gateway, either_server}, ("code questions", coder, {"keywords": [word, "stack trace"]}),
                             default=cheap)  # fmt: skip
    raw, _ = make_key()
    with either_server.client(raw) as client:
        answer = client.post(CHAT, json=chat(text=f"Why does my {word.upper()} fail?"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == coder  # the mock upstream answers with the model it was sent
        assert answer.headers["x-gateway-route-reason"] == (
            f'rule={rule.pk} "code questions" complexity=0.06 tokens={answer_tokens(answer)} keyword="{word}"'
        )
        record = audit_of(answer)
        assert record.model == coder and record.status == 200
        auto = record.details["auto_route"]
        assert (auto["rule"], auto["model"], auto["keyword"], auto["score"]) == (rule.pk, coder, word, 0.06)
        assert auto["reason"] == answer.headers["x-gateway-route-reason"]

        plain = client.post(CHAT, json=chat(text="hello there"))
        assert plain.status_code == 200 and plain.json()["model"] == cheap
        assert plain.headers["x-gateway-route-reason"].startswith('default "fallback" complexity=')
        assert audit_of(plain).details["auto_route"]["rule"] == default.pk

        messages = client.post("/v1/messages", json={"model": "auto", "max_tokens": 16, "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"my {word} again"}]}]})  # fmt: skip
        assert messages.status_code == 200, messages.text
        assert messages.json()["model"] == coder and messages.headers["x-gateway-route-reason"].startswith("rule=")


def answer_tokens(response) -> int:
    return int(response.headers["x-gateway-route-reason"].split("tokens=")[1].split()[0])


def test_the_reservation_prices_the_chosen_model(gateway, models, rules_on, make_key, wait_for_price, audit_of):
    from billing.models import ModelPrice

    dear, cheap = models(2)
    # Removed after: a price this dear would be the dearest an upstream that picks its own model may answer with,
    # and other tests' reservations for such upstreams price that.
    prices = [
        ModelPrice.objects.create(model=dear, input_per_million=Decimal(1000), output_per_million=Decimal(1000)),
        ModelPrice.objects.create(model=cheap, input_per_million=Decimal("0.01"), output_per_million=Decimal("0.01")),
    ]
    try:
        wait_for_price(dear, gateway)
        rules_on({gateway}, ("hard ones", dear, {"keywords": ["prove"]}), default=cheap)
        raw, _ = make_key(budget="0.01")  # the dear model's worst case (16 tokens out, ~30 in) is over a cent
        with gateway.client(raw) as client:
            refused = client.post(CHAT, json=chat(text="prove it"))
            assert refused.status_code == 402, refused.text
            assert refused.json()["error"]["code"] == "budget_exceeded"
            assert audit_of(refused).model == dear
            cheaply = client.post(CHAT, json=chat(text="say it"))
            assert cheaply.status_code == 200 and cheaply.json()["model"] == cheap
    finally:
        for price in prices:
            price.delete()


def test_a_rule_whose_model_the_key_may_not_use_is_skipped(gateway, models, rules_on, make_key, audit_of):
    big, small = models(2)
    (rule, _) = rules_on({gateway}, ("long", big, {"min_prompt_tokens": 1}), default=small)
    raw, _ = make_key(models=[small])
    with gateway.client(raw) as client:
        answer = client.post(CHAT, json=chat(text="anything"))
        assert answer.status_code == 200 and answer.json()["model"] == small
        skipped = audit_of(answer).details["auto_route"]["skipped"]
        assert skipped == [{"rule": rule.pk, "model": big, "why": "the key may not use the model"}]
        assert "auto" in {entry["id"] for entry in client.get("/v1/models").json()["data"]}
    raw, _ = make_key(models=["some-other-model"])
    with gateway.client(raw) as client:
        refused = client.post(CHAT, json=chat(text="anything"))
        assert "auto" not in {entry["id"] for entry in client.get("/v1/models").json()["data"]}
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "model_not_allowed" and error["request_id"] == refused.headers["x-request-id"]
    assert big in error["message"] and small in error["message"]


def test_a_rule_pointing_at_a_deactivated_model_is_skipped(gateway, models, rules_on, make_key, wait_for_reload):
    from routing.models import Agent

    gone, kept = models(2)
    rules_on({gateway}, ("retired", gone, {}), default=kept)
    Agent.objects.filter(served_models=[gone]).update(is_active=False)
    wait_for_reload(gateway)
    raw, _ = make_key()
    with gateway.client(raw) as client:
        answer = client.post(CHAT, json=chat())
    assert answer.status_code == 200 and answer.json()["model"] == kept


def test_nothing_that_fits_is_a_clear_400(gateway, models, rules_on, make_key, audit_of):
    (plain,) = models(1)
    rules_on({gateway}, ("short only", plain, {"max_prompt_tokens": 50}))
    raw, _ = make_key()
    with gateway.client(raw) as client:
        refused = client.post(CHAT, json=chat(text="long " * 400))
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "no_auto_route"
        record = audit_of(refused)
        assert (record.status, record.error_type, record.model) == (400, "no_auto_route", "auto")
        image = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "http://x/i"}}]
        blind = client.post(CHAT, json={**chat(), "messages": [{"role": "user", "content": image}]})
        assert blind.status_code == 400 and "vision" in blind.json()["error"]["message"]
        long = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "x " * 400}]}
        anthropic = client.post("/v1/messages", json=long)
        assert anthropic.status_code == 400 and anthropic.json()["error"]["code"] == "no_auto_route"


def test_odd_and_huge_prompts_are_routed_never_a_5xx(gateway, models, rules_on, make_key):
    code, other = models(2)
    rules_on({gateway}, ("code", code, {"keywords": ["python"], "min_complexity": 0.1}), default=other)
    raw, _ = make_key()
    fenced = "```python\nprint(1)\n```\n" * 8 + "Why? How? What? "
    with gateway.client(raw) as client:
        content = [{"type": "text", "text": fenced}, {"type": "text", "text": "in python"}]
        parts = client.post(CHAT, json={**chat(), "messages": [{"role": "user", "content": content}]})
        assert parts.status_code == 200 and parts.json()["model"] == code
        for content in (42, None, {"text": "python"}, [None, 1, "python"], ["python"] * 3):
            odd = client.post(CHAT, json={**chat(), "messages": [{"role": "user", "content": content}]})
            assert odd.status_code == 200, (content, odd.text)  # read as no text: the default's model
        huge = client.post(CHAT, json=chat(text="python " + "x" * 60_000))  # near the tests' 64 KB body limit
        assert huge.status_code == 200, huge.text[:300]
        reason = huge.headers["x-gateway-route-reason"]
        assert reason.isascii() and answer_tokens(huge) > 15_000


def test_an_agent_whose_default_model_is_auto_picks_among_its_models(
    gateway, agents, seeded, rules_on, make_key, audit_of
):
    small, large = f"s-{uuid.uuid4().hex[:6]}", f"l-{uuid.uuid4().hex[:6]}"
    agent = agents(seeded.url, kind="openai", served_models=[small, large], default_model="auto",
                   capabilities=["tools"])  # fmt: skip
    rules_on({gateway}, ("big prompts", large, {"min_prompt_tokens": 500}), default=small, agent=agent)
    raw, _ = make_key(agents=[agent.slug])
    with gateway.client(raw) as client:
        short = client.post(CHAT, json=chat(model=agent.slug, text="hi"))
        assert short.status_code == 200 and short.json()["model"] == small
        long = client.post(CHAT, json=chat(model=agent.slug, text="words " * 500))
        assert long.status_code == 200 and long.json()["model"] == large
        assert audit_of(long).details["auto_route"]["scope"] == agent.slug
        invoked = client.post("/v1/agent/invoke", json={"input": "hi", "agent": agent.slug})
        assert invoked.status_code == 200, invoked.text
        assert invoked.json()["model"] == small and invoked.json()["route_reason"].startswith('default "fallback"')


def test_streams_and_invokes_are_auto_routed_too(gateway, models, rules_on, make_key, audit_of):
    fast, deep = models(2)
    (rule, _) = rules_on({gateway}, ("deep", deep, {"keywords": ["explain"]}), default=fast)
    raw, _ = make_key()
    with gateway.client(raw) as client:
        with client.stream("POST", CHAT, json=chat(text="explain this", stream=True)) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["x-gateway-route-reason"].startswith(f'rule={rule.pk} "deep"')
            body = b"".join(streamed.iter_bytes()).decode()
        assert f'"model": "{deep}"' in body or f'"model":"{deep}"' in body
        invoked = client.post("/v1/agent/invoke", json={"input": "please explain", "model": "auto"})
        assert invoked.status_code == 200, invoked.text
        answer = invoked.json()
        assert answer["model"] == deep and answer["route_reason"] == invoked.headers["x-gateway-route-reason"]
        assert answer["route_reason"].startswith(f'rule={rule.pk} "deep"')
        assert audit_of(invoked).details["auto_route"]["model"] == deep
        plain_agent = client.post("/v1/agent/invoke", json={"input": "hi", "model": "auto", "agent": "research"})
        assert plain_agent.status_code == 400 and plain_agent.json()["error"]["code"] == "no_auto_route"
        nobody = client.post("/v1/agent/invoke", json={"input": "hi", "model": "auto", "agent": "no-such-agent"})
        assert nobody.status_code == 404 and nobody.json()["error"]["code"] == "agent_not_found"


def test_content_routing_reaches_an_agent_that_auto_routes_for_a_key_scoped_to_its_models(
    gateway, agents, seeded, rules_on, make_key
):
    from routing.models import CapabilityKeyword

    capability, word = f"cap{uuid.uuid4().hex[:6]}", f"otter{uuid.uuid4().hex[:6]}"
    small, large = f"s-{uuid.uuid4().hex[:6]}", f"l-{uuid.uuid4().hex[:6]}"
    agent = agents(seeded.url, kind="openai", served_models=[small, large], default_model="auto",
                   capabilities=[capability])  # fmt: skip
    keyword = CapabilityKeyword.objects.create(keyword=word, capability=capability)
    try:
        rules_on({gateway}, ("large", large, {"keywords": ["essay"]}), default=small, agent=agent)
        raw, _ = make_key(agents=[agent.slug], models=[small])
        with gateway.client(raw) as client:
            answer = client.post("/v1/agent/invoke", json={"input": f"an {word} essay please"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert (body["agent_used"], body["model"]) == (agent.slug, small)  # large is outside the key's models
            assert body["route_reason"].startswith('default "fallback"')
    finally:
        keyword.delete()
