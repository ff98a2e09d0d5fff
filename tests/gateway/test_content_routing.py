"""Content routing on live traffic: the keyword map, capacity, the least-loaded fallback and the reason given."""

from __future__ import annotations

import uuid

import pytest

from tests.waiting import DEADLINE_SECONDS, in_thread, until, wait_for

NO_WORDS = "least_loaded; no capability keywords"


@pytest.fixture
def capability(live_db):
    """``capability(*keywords, agents=n, max_concurrent=0)`` -> (capability, [agent slugs]); all removed after."""
    from routing.models import Agent, CapabilityKeyword

    made_agents, made_words = [], []
    upstream = Agent.objects.get(slug="research").upstream_url

    def make(*keywords, agents=1, max_concurrent=0, capable=True):
        name = f"cap{uuid.uuid4().hex[:8]}"
        for word in keywords:
            made_words.append(CapabilityKeyword.objects.create(keyword=word, capability=name).pk)
        slugs = []
        for _ in range(agents):
            slug = f"ag{uuid.uuid4().hex[:8]}"
            Agent.objects.create(
                slug=slug, name=slug, upstream_url=upstream, capabilities=[name] if capable else [],
                max_concurrent=max_concurrent,
            )  # fmt: skip
            made_agents.append(slug)
            slugs.append(slug)
        return name, slugs

    yield make
    CapabilityKeyword.objects.filter(pk__in=made_words).delete()
    Agent.objects.filter(slug__in=made_agents).delete()


def invoke(client, text, strict=True):
    """The answer of a content-routed call; with ``strict`` off, {} while the gateway has not loaded the agents."""
    response = client.post("/v1/agent/invoke", json={"input": text})
    if not strict and response.status_code == 403:
        return {}
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["route_reason"] == response.headers["x-gateway-route-reason"]
    return answer


def test_the_keyword_map_picks_the_agent_with_that_capability(gateway, make_key, capability, audit_of):
    word = f"otterology{uuid.uuid4().hex[:6]}"
    name, (slug,) = capability(word)
    raw, _ = make_key()
    client = gateway.client(raw)
    assert wait_for(lambda: invoke(client, f"Teach me {word.upper()} today")["agent_used"] == slug, seconds=10)
    answer = invoke(client, f"teach me {word}, then more {word}")
    assert answer["route_reason"] == f"capability={name}; keywords={word}"
    assert set(answer) >= {"request_id", "output", "agent_used", "model", "tokens_used", "usage", "cost_usd"}
    record = audit_of(client.post("/v1/agent/invoke", json={"input": word}))
    assert record.agent == slug and record.details["route_reason"] == f"capability={name}; keywords={word}"


def test_a_capabilitys_own_name_is_a_keyword_and_most_hits_win(gateway, make_key, capability):
    first, (one,) = capability()
    second, (two,) = capability(f"w{uuid.uuid4().hex[:6]}", f"x{uuid.uuid4().hex[:6]}")
    from routing.models import CapabilityKeyword

    w, x = CapabilityKeyword.objects.filter(capability=second).order_by("keyword").values_list("keyword", flat=True)
    raw, _ = make_key(agents=[one, two])
    client = gateway.client(raw)
    # Both agents and the second's keywords are in the gateway's table (a refresh may fall between them).
    assert wait_for(lambda: invoke(client, f"please {first}", False).get("agent_used") == one, seconds=10)
    assert wait_for(lambda: invoke(client, f"please {w}", False).get("agent_used") == two, seconds=10)
    answer = invoke(client, f"{first} or {w} and {x}")
    assert answer["agent_used"] == two
    assert answer["route_reason"] == f"capability={second}; keywords={w},{x}"


def test_a_full_capable_agent_sends_the_request_to_the_least_loaded_one(gateway, make_key, capability, seeded):
    word = f"gadget{uuid.uuid4().hex[:6]}"
    _, (busy,) = capability(word, max_concurrent=1)
    _, (spare,) = capability(capable=False)
    raw, _ = make_key(agents=[busy, spare])
    client = gateway.client(raw)
    assert wait_for(lambda: invoke(client, f"fix my {word}", False).get("agent_used") == busy, seconds=10)
    # Hold the busy agent's one slot with a call its upstream answers only when the test lets it go: once the
    # call has reached the upstream, the gateway has counted it in flight, and nothing else is left to chance.
    with seeded.hold() as hold:
        held = in_thread(lambda: client.get(f"/agents/{busy}/slow", headers={"X-Mock-Hold": hold}))
        until(lambda: seeded.held(hold) == 1, "the call holding the busy agent's slot reached its upstream")
        rerouted = invoke(client, f"fix my {word}")
        assert rerouted["agent_used"] == spare
        assert rerouted["route_reason"] == f"least_loaded; capable agents full: {busy}"
    assert held.result(timeout=DEADLINE_SECONDS).status_code == 200
    # Its answer may reach the test a moment before the gateway has settled it and freed the slot.
    until(lambda: invoke(client, f"fix my {word}")["agent_used"] == busy, "the request went back to the capable agent")


def test_no_capable_agent_means_the_least_loaded_allowed_one(gateway, make_key, capability):
    name, _ = capability(f"widget{uuid.uuid4().hex[:6]}", capable=False)
    raw, _ = make_key(agents=["writing", "code"])
    client = gateway.client(raw)
    answer = wait_for(lambda: (a := invoke(client, f"the {name} please"))["route_reason"] != NO_WORDS and a, seconds=10)
    assert answer["agent_used"] in ("writing", "code")
    assert answer["route_reason"] == f"least_loaded; no allowed agent has: {name}"


def test_an_agent_filled_between_the_choice_and_the_admission_is_replaced_by_one_with_room(
    live_db, seeded, make_key, capability, monkeypatch
):
    """Content routing reads loads, then admission takes a slot: a request that fills the chosen agent in between
    used to get 429 while another capable agent had room. Here the read is made stale (it always sees room), in
    this process, and the first agent's one slot is held."""
    import asyncio

    import httpx

    from gateway_project.asgi import application
    from gateway_project.hotstate import ConcurrencySlot, get_hot_state
    from gateway_project.writer import writer
    from routing import content_routing, upstream
    from routing.table import routing_table

    word = f"walrusology{uuid.uuid4().hex[:6]}"
    _, slugs = capability(word, agents=2, max_concurrent=1)
    first = min(slugs)  # equal hits: the first by slug is chosen
    raw, _ = make_key(agents=slugs)

    async def stale(store, slug):
        return 0

    monkeypatch.setattr(content_routing, "_in_flight", stale)

    async def scenario():
        await routing_table.reload()
        store = get_hot_state()
        slot = ConcurrencySlot("agent_concurrency", store.key("agent-conc", first), 1)
        assert (await store.admit([], [slot], [])).ok  # another request holds the first agent's one slot
        try:
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return await client.post(
                    "/v1/agent/invoke", json={"input": f"about {word}"}, headers={"Authorization": f"Bearer {raw}"}
                )
        finally:
            await store.settle([], [slot.key], [], 0)
            await writer.flush()  # this process's audit and usage rows, while the test database is there
            for pool in upstream._transports.values():
                await pool.aclose()
            upstream._transports.clear()

    response = asyncio.run(scenario())
    assert response.status_code == 200, response.text
    assert response.json()["agent_used"] == max(slugs)
