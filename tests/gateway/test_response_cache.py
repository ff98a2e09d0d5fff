"""The exact response cache over real HTTP on both servers: a request made again word for word is answered from
the cache at no cost (still counted against requests per minute), audited as a hit with what it saved; the
client's Cache-Control is honoured; answers are kept per client unless shared, within a size cap and a TTL, and
forgotten on request through the management API."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import pytest

from billing.models import UsageRecord
from tests.gateway.conftest import Canned
from tests.waiting import until, wait_for

CHAT = "/v1/chat/completions"


def answer(text: str, prompt_tokens: int = 1000, completion_tokens: int = 500) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": 1500},
    }  # fmt: skip


@pytest.fixture(scope="module")
def upstream():
    made = Canned()
    yield made
    made.server.shutdown()
    made.server.server_close()


@pytest.fixture
def caching_agent(live_db, either_server, upstream, wait_for_agent):
    """``caching_agent(**cache_fields)``: an OpenAI-kind agent at the canned upstream with its cache on."""
    from routing.models import Agent

    made = []

    def make(**fields):
        fields = {"cache_enabled": True, **fields}
        agent = Agent.objects.create(
            slug=f"cache-{uuid.uuid4().hex[:8]}", name="cache", kind="openai", upstream_url=upstream.url,
            served_models=[], default_model="gpt-4o-mini", timeout_seconds=5, max_retries=0, **fields,
        )  # fmt: skip
        made.append(agent)
        wait_for_agent(agent.slug, either_server)
        return agent

    yield make
    for agent in made:
        agent.delete()


def ask(server, raw: str, agent, content="What is the capital of France?", headers=None, **fields):
    body = {"model": agent.slug, "messages": [{"role": "user", "content": content}], "temperature": 0, **fields}
    with server.client(raw) as client:
        return settled(client.post(CHAT, json=body, headers=headers or {}))


def settled(response):
    """``response`` once the gateway is done with it: an answer is kept after it is sent (its audit record is
    written after that), so a request made again at once may still miss."""
    if response.headers.get("x-gateway-cache") == "miss":
        from audit.models import AuditRecord

        request_id = response.headers["x-request-id"]
        wait_for(lambda: AuditRecord.objects.filter(request_id=request_id).exists())
    return response


def calls(upstream: Canned) -> int:
    return sum(1 for path, _ in upstream.seen if path == CHAT)


def test_a_request_made_again_is_answered_from_the_cache_at_no_cost(
    either_server, caching_agent, upstream, make_key, audit_of
):
    agent = caching_agent()
    upstream.set(CHAT, answer("Paris."))
    raw, _ = make_key()
    before = calls(upstream)
    first = ask(either_server, raw, agent)
    second = ask(either_server, raw, agent)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-gateway-cache"] == "miss" and second.headers["x-gateway-cache"] == "hit"
    assert second.content == first.content and second.headers["content-type"] == "application/json"
    assert int(second.headers["age"]) >= 0
    assert calls(upstream) == before + 1, "the second answer came from the cache"
    missed, hit = audit_of(first), audit_of(second)
    assert missed.details["cache"] == {"status": "miss", "stored": True} and missed.cost_usd > 0
    assert hit.cost_usd == 0 and hit.details["cache"]["status"] == "hit"
    assert Decimal(hit.details["cache"]["saved_usd"]) == missed.cost_usd  # the same tokens at the same price
    assert (hit.input_tokens, hit.output_tokens) == (missed.input_tokens, missed.output_tokens) == (1000, 500)
    assert hit.details["cache"]["first_answered"] == missed.request_id
    # Nothing is billed for the hit: no usage row.
    assert wait_for(lambda: UsageRecord.objects.filter(request_id=missed.request_id).exists())
    assert not UsageRecord.objects.filter(request_id=hit.request_id).exists()
    # A different request (another question, another parameter) is not the same answer.
    assert ask(either_server, raw, agent, content="And of Spain?").headers["x-gateway-cache"] == "miss"
    assert ask(either_server, raw, agent, max_tokens=7).headers["x-gateway-cache"] == "miss"
    # Fields that do not change the answer do not change the key.
    assert ask(either_server, raw, agent, user="someone-else").headers["x-gateway-cache"] == "hit"


def test_a_hit_still_counts_against_requests_per_minute(either_server, caching_agent, upstream, make_key):
    agent = caching_agent()
    upstream.set(CHAT, answer("Paris."))
    raw, _ = make_key(rpm=3)
    statuses = [ask(either_server, raw, agent) for _ in range(4)]
    assert [r.headers.get("x-gateway-cache") for r in statuses[:3]] == ["miss", "hit", "hit"]
    assert statuses[3].status_code == 429 and statuses[3].json()["error"]["code"] == "rate_limit_requests"


def test_the_clients_cache_control_is_honoured(either_server, caching_agent, upstream, make_key, audit_of):
    agent = caching_agent()
    raw, _ = make_key()
    upstream.set(CHAT, answer("first"))
    assert ask(either_server, raw, agent).headers["x-gateway-cache"] == "miss"
    before = calls(upstream)
    fresh = ask(either_server, raw, agent, headers={"Cache-Control": "no-store"})
    assert fresh.headers["x-gateway-cache"] == "bypass" and calls(upstream) == before + 1
    assert audit_of(fresh).details["cache"] == {"status": "bypass"}
    upstream.set(CHAT, answer("second"))
    # no-cache: asked upstream, and its answer replaces the kept one.
    renewed = ask(either_server, raw, agent, headers={"Cache-Control": "max-age=0, No-Cache"})
    assert (
        renewed.headers["x-gateway-cache"] == "miss" and renewed.json()["choices"][0]["message"]["content"] == "second"
    )
    again = ask(either_server, raw, agent)
    assert again.headers["x-gateway-cache"] == "hit" and again.json()["choices"][0]["message"]["content"] == "second"


def test_in_a_shared_cache_no_client_chooses_what_the_others_are_served(
    either_server, caching_agent, upstream, make_key
):
    agent = caching_agent(cache_shared=True)
    (first_raw, _), (second_raw, _) = make_key(), make_key()
    upstream.set(CHAT, answer("the first sample"))
    assert ask(either_server, first_raw, agent).headers["x-gateway-cache"] == "miss"
    upstream.set(CHAT, answer("a sample someone liked better"))
    rerolled = ask(either_server, second_raw, agent, headers={"Cache-Control": "no-cache"})
    assert rerolled.json()["choices"][0]["message"]["content"] == "a sample someone liked better"
    kept = ask(either_server, first_raw, agent)
    assert kept.headers["x-gateway-cache"] == "hit"
    assert kept.json()["choices"][0]["message"]["content"] == "the first sample"


def test_answers_are_each_clients_own_unless_the_agent_shares_them(either_server, caching_agent, upstream, make_key):
    upstream.set(CHAT, answer("Paris."))
    own, shared = caching_agent(), caching_agent(cache_shared=True)
    (first_raw, _), (second_raw, _) = make_key(), make_key()
    assert ask(either_server, first_raw, own).headers["x-gateway-cache"] == "miss"
    assert ask(either_server, second_raw, own).headers["x-gateway-cache"] == "miss"
    assert ask(either_server, first_raw, shared).headers["x-gateway-cache"] == "miss"
    assert ask(either_server, second_raw, shared).headers["x-gateway-cache"] == "hit"


def test_hot_requests_large_answers_and_failures_are_not_kept(either_server, caching_agent, upstream, make_key):
    raw, _ = make_key()
    agent = caching_agent(cache_max_entry_bytes=2000)
    upstream.set(CHAT, answer("Paris."))
    assert ask(either_server, raw, agent, temperature=1.5).headers["x-gateway-cache"] == "bypass"
    assert ask(either_server, raw, agent, temperature=1.5).headers["x-gateway-cache"] == "bypass"
    hot = caching_agent(cache_any_temperature=True)
    assert ask(either_server, raw, hot, temperature=1.5).headers["x-gateway-cache"] == "miss"
    assert ask(either_server, raw, hot, temperature=1.5).headers["x-gateway-cache"] == "hit"

    upstream.set(CHAT, answer("x" * 3000))
    big = ask(either_server, raw, agent, content="a long one")
    assert big.status_code == 200 and len(big.content) > 2000
    assert ask(either_server, raw, agent, content="a long one").headers["x-gateway-cache"] == "miss"

    upstream.set(CHAT, {"error": {"message": "overloaded", "type": "server_error"}}, status=500)
    assert ask(either_server, raw, agent, content="fails").status_code == 502
    upstream.set(CHAT, answer("recovered"))
    again = ask(either_server, raw, agent, content="fails")
    assert (
        again.headers["x-gateway-cache"] == "miss" and again.json()["choices"][0]["message"]["content"] == "recovered"
    )


def test_a_kept_answer_expires_with_its_ttl(either_server, caching_agent, upstream, make_key):
    raw, _ = make_key()
    agent = caching_agent(cache_ttl_seconds=1)
    upstream.set(CHAT, answer("Paris."))
    assert ask(either_server, raw, agent).headers["x-gateway-cache"] == "miss"
    assert ask(either_server, raw, agent).headers["x-gateway-cache"] == "hit"
    time.sleep(1.3)
    assert ask(either_server, raw, agent).headers["x-gateway-cache"] == "miss"


def sse(*events: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events) + b"data: [DONE]\n\n"


def test_streamed_answers_are_replayed_as_the_same_stream(either_server, caching_agent, upstream, make_key, audit_of):
    raw, _ = make_key()
    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    upstream.set(
        CHAT,
        sse(
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Pa"}}]},
            {**chunk, "choices": [{"index": 0, "delta": {"content": "ris."}, "finish_reason": "stop"}]},
            {**chunk, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}},
        ),
        content_type="text/event-stream",
    )
    plain = caching_agent()
    streamed = {"stream": True, "stream_options": {"include_usage": True}}
    assert ask(either_server, raw, plain, **streamed).headers["x-gateway-cache"] == "bypass"
    agent = caching_agent(cache_streams=True)
    first = ask(either_server, raw, agent, **streamed)
    second = ask(either_server, raw, agent, **streamed)
    assert first.headers["x-gateway-cache"] == "miss" and second.headers["x-gateway-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream")
    assert second.content == first.content and b"data: [DONE]" in second.content
    hit = audit_of(second)
    assert (hit.input_tokens, hit.output_tokens, hit.cost_usd) == (12, 3, 0)
    # The stream and the whole answer to the same question are different answers.
    assert ask(either_server, raw, agent).headers["x-gateway-cache"] == "miss"


def test_cached_answers_are_forgotten_through_the_management_api(
    either_server, caching_agent, upstream, make_key, admin_api
):
    from keys.models import ApiKey

    upstream.set(CHAT, answer("Paris."))
    agent, shared = caching_agent(), caching_agent(cache_shared=True)
    raw, key = make_key()
    client_id = ApiKey.objects.get(pk=key.pk).client_id
    for target in (agent, shared):
        assert ask(either_server, raw, target).headers["x-gateway-cache"] == "miss"
        assert ask(either_server, raw, target).headers["x-gateway-cache"] == "hit"
    with admin_api(either_server) as api:
        refused = api.post("/api/v1/response-cache/invalidate/", json={"agent": agent.slug, "client": client_id})
        assert refused.status_code == 400
        assert api.post("/api/v1/response-cache/invalidate/", json={"agent": "no-such"}).status_code == 400
        assert api.post("/api/v1/response-cache/invalidate/", json={"client": client_id}).status_code == 204
        assert ask(either_server, raw, agent).headers["x-gateway-cache"] == "miss"
        assert ask(either_server, raw, shared).headers["x-gateway-cache"] == "hit"  # shared: the agent's, not his
        assert api.post("/api/v1/response-cache/invalidate/", json={"agent": shared.slug}).status_code == 204
        assert ask(either_server, raw, shared).headers["x-gateway-cache"] == "miss"
        # Hit, hit after the client's entries went (the shared cache is the agent's), and two misses, in the audit log.
        stats = until(lambda: _stats(api, shared.slug, hits=2, misses=2), "the audit log has every request")
    assert stats["hit_rate"] == 0.5 and stats["bypassed"] == 0
    assert Decimal(stats["saved_usd"]) > 0


def _stats(api, slug: str, **figures):
    row = next(row for row in api.get("/api/v1/response-cache/").json() if row["agent"] == slug)
    return row if all(row[name] == value for name, value in figures.items()) else None


def test_cache_settings_are_validated_by_the_api(either_server, admin_api, upstream, live_db):
    with admin_api(either_server) as api:
        base = {"slug": f"v-{uuid.uuid4().hex[:8]}", "name": "v", "kind": "openai", "upstream_url": upstream.url}
        for bad in ({"cache_ttl_seconds": 0}, {"cache_ttl_seconds": 10**9}, {"cache_max_entry_bytes": 10**9},
                    {"cache_enabled": "maybe"}):  # fmt: skip
            answer_ = api.post("/api/v1/agents/", json={**base, **bad})
            assert answer_.status_code == 400, bad
            assert set(bad) <= set(answer_.json()), answer_.json()
        made = api.post("/api/v1/agents/", json={**base, "cache_enabled": True, "cache_ttl_seconds": 60})
        assert made.status_code == 201 and made.json()["cache_ttl_seconds"] == 60
        assert api.get("/api/v1/response-cache/?hours=0").status_code == 400
        api.delete(f"/api/v1/agents/{made.json()['id']}/")


def test_an_unreadable_entry_is_a_miss_not_a_failure(either_server, caching_agent, upstream, make_key):
    """A request whose JSON spells what the cache might misread (control characters, a NUL, non-ASCII keys) is kept
    and read back whole."""
    raw, _ = make_key()
    agent = caching_agent()
    upstream.set(CHAT, answer("ü\n\u0000\u2028 done"))
    tricky = "line\nbreak\u0000 and \u2028 and ümlaut"
    first = ask(either_server, raw, agent, content=tricky)
    second = ask(either_server, raw, agent, content=tricky)
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "hit")
    assert second.json() == first.json()


def test_an_agent_without_a_cache_says_nothing_about_one(either_server, seeded, make_key):
    raw, _ = make_key()
    with either_server.client(raw) as client:
        answered = client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert answered.status_code == 200 and "x-gateway-cache" not in answered.headers


def test_a_path_route_caches_with_its_own_settings(
    either_server, caching_agent, upstream, make_key, wait_for_reload, audit_of
):
    from routing.models import PathRoute

    agent = caching_agent()  # its own cache does not apply through the routes
    name = uuid.uuid4().hex[:8]
    shared = PathRoute.objects.create(prefix=f"/catalog-{name}", agent=agent, upstream_path="/catalog",
                                      auth_required=False, cache_enabled=True, cache_shared=True)  # fmt: skip
    own = PathRoute.objects.create(prefix=f"/mine-{name}", agent=agent, upstream_path="/catalog",
                                   auth_required=False, cache_enabled=True)  # fmt: skip
    plain = PathRoute.objects.create(prefix=f"/plain-{name}", agent=agent, upstream_path="/catalog")
    upstream.set("/catalog", {"items": [1, 2, 3]})
    wait_for_reload(either_server)
    raw, _ = make_key()
    with either_server.client() as anonymous, either_server.client(raw) as keyed:
        before = sum(1 for path, _ in upstream.seen if path.startswith("/catalog"))
        first = settled(anonymous.get(f"/catalog-{name}?page=1"))
        second = keyed.get(f"/catalog-{name}?page=1")
        assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "hit")
        assert second.json() == {"items": [1, 2, 3]} and audit_of(second).details["cache"]["status"] == "hit"
        assert anonymous.get(f"/catalog-{name}?page=2").headers["x-gateway-cache"] == "miss"  # another query
        assert sum(1 for path, _ in upstream.seen if path.startswith("/catalog")) == before + 2
        # Per client, a keyless caller has no client to keep an answer for.
        assert anonymous.get(f"/mine-{name}").headers["x-gateway-cache"] == "bypass"
        # No cache of its own: the agent's does not answer through the route.
        assert "x-gateway-cache" not in keyed.get(f"/plain-{name}").headers
        assert "x-gateway-cache" not in keyed.get(f"/plain-{name}").headers
    for route in (shared, own, plain):
        route.delete()


def test_an_upstream_that_forbids_storing_its_answer_is_not_cached(either_server, caching_agent, upstream, make_key):
    agent = caching_agent()
    raw, _ = make_key()
    upstream.set("/private", {"me": "alice"}, **{"cache-control": "private, max-age=0"})
    with either_server.client(raw) as client:
        assert settled(client.get(f"/agents/{agent.slug}/private")).headers["x-gateway-cache"] == "miss"
        assert client.get(f"/agents/{agent.slug}/private").headers["x-gateway-cache"] == "miss"
        upstream.set("/public", {"all": True})
        assert settled(client.get(f"/agents/{agent.slug}/public")).headers["x-gateway-cache"] == "miss"
        assert client.get(f"/agents/{agent.slug}/public").headers["x-gateway-cache"] == "hit"
