"""Attack 7's probes of the response cache: each asserts a promise of the README."""

from __future__ import annotations

import gzip
import json
import threading
import uuid

import pytest

from tests.attack.helpers import Answering, chat_answer
from tests.servers import json_answer, scripted_upstreams
from tests.waiting import until


@pytest.fixture
def answering():
    with scripted_upstreams(Answering) as make:
        yield make


def gzipped_json(obj) -> bytes:
    body = gzip.compress(json.dumps(obj).encode())
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def test_a_compressed_pass_through_answer_is_never_replayed_without_its_encoding(
    answering, provider_at, gateway, make_key
):
    """An upstream may answer gzip though the gateway asked for identity. Kept, its bytes were replayed with only
    their content type: every later client got undecodable bytes labelled JSON."""
    upstream = answering(lambda head, body: gzipped_json({"answer": "Paris"}))
    agent = provider_at(upstream.url, kind="agent", served_models=[], default_model="", cache_enabled=True)
    raw, _ = make_key()
    with gateway.client(raw) as client:
        answers = [client.post(f"/agents/{agent.slug}/ask", json={"q": "capital of France?"}) for _ in range(2)]
    assert answers[0].status_code == answers[1].status_code == 200
    assert answers[0].json() == {"answer": "Paris"}
    second = answers[1]  # httpx decodes what its Content-Encoding says
    assert second.json() == {"answer": "Paris"}, (second.headers, second.content[:40])


def test_an_answer_in_flight_when_the_cache_is_forgotten_is_not_kept_past_it(
    answering, provider_at, gateway, make_key, admin_api
):
    """README: invalidation makes old entries "unreachable at once". An answer asked before the invalidation and
    finished after it was stored under the new generation: the forgotten answer came back."""
    gate = threading.Event()
    upstream = Answering(lambda head, body: chat_answer(10, 5), gate=gate)
    agent = provider_at(upstream.url, cache_enabled=True)
    raw, _ = make_key()
    body = {"model": agent.slug, "temperature": 0, "messages": [{"role": "user", "content": "hello?"}]}
    result = {}

    def first():
        with gateway.client(raw) as client:
            result["first"] = client.post("/v1/chat/completions", json=body)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        import time

        deadline = time.time() + 10
        while not upstream.requests and time.time() < deadline:
            time.sleep(0.02)
        assert upstream.requests, "the first request reached the upstream"
        with admin_api(gateway) as api:
            forgot = api.post("/api/v1/response-cache/invalidate/", json={"agent": agent.slug})
        assert forgot.status_code in (200, 202, 204), forgot.text
    finally:
        gate.set()
        thread.join(15)
        upstream.stop()
    assert result["first"].status_code == 200 and result["first"].headers["x-gateway-cache"] == "miss"
    with gateway.client(raw) as client:
        again = client.post("/v1/chat/completions", json=body)
    assert again.headers["x-gateway-cache"] == "miss", "an answer asked for before the invalidation came back"


def _per_user(head: bytes, body: bytes) -> bytes:
    user = b"nobody"
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"x-end-user":
            user = value.strip()
    payload = json.dumps({"profile_of": user.decode()}).encode()
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nVary: X-End-User\r\n"
        + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )


def test_a_pass_through_answer_that_varies_on_a_request_header_is_not_served_to_another_value(
    answering, provider_at, gateway, make_key
):
    """A pass-through request is keyed on method, path, query, content type, accepted type and body, but every
    other header is forwarded too: an agent that answers per end user (and says so, ``Vary: X-End-User``) had one
    user's answer replayed to the next."""
    upstream = answering(_per_user)
    agent = provider_at(upstream.url, kind="agent", served_models=[], default_model="", cache_enabled=True)
    raw, _ = make_key()
    with gateway.client(raw) as client:
        alice = client.get(f"/agents/{agent.slug}/me", headers={"X-End-User": "alice"})
        bob = client.get(f"/agents/{agent.slug}/me", headers={"X-End-User": "bob"})
    assert alice.json() == {"profile_of": "alice"}
    assert bob.json() == {"profile_of": "bob"}, f"bob got alice's answer ({bob.headers.get('x-gateway-cache')})"


def _answers(text: str):
    def answer(head: bytes, body: bytes) -> bytes:
        return json_answer({"answer": text})

    return answer


def test_an_agent_made_again_under_a_deleted_ones_slug_does_not_answer_with_its_cache(
    answering, gateway, make_key, wait_for_agent, wait_for_reload
):
    """Entries and their generation counters were keyed by the agent's slug alone: an agent deleted and made again
    under the same slug, at another upstream, answered with the deleted agent's answers until they expired (up
    to 30 days); so did an agent pointed at another upstream."""
    from routing.models import Agent

    first, second, third = answering(_answers("old")), answering(_answers("new")), answering(_answers("moved"))
    slug = f"again-{uuid.uuid4().hex[:8]}"
    agent = Agent.objects.create(
        slug=slug, name="first", kind="agent", upstream_url=first.url, served_models=[], default_model="",
        timeout_seconds=5, max_retries=0, cache_enabled=True,
    )  # fmt: skip
    wait_for_agent(slug, gateway)
    raw, _ = make_key()

    def ask():
        with gateway.client(raw) as client:
            return client.post(f"/agents/{slug}/ask", json={"q": "same question"})

    assert ask().json() == {"answer": "old"}
    assert ask().headers["x-gateway-cache"] == "hit"
    agent.delete()
    Agent.objects.create(
        slug=slug, name="again", kind="agent", upstream_url=second.url, served_models=[], default_model="",
        timeout_seconds=5, max_retries=0, cache_enabled=True,
    )  # fmt: skip
    wait_for_reload(gateway)  # the table has the new agent, not the deleted one under its slug
    assert ask().json() == {"answer": "new"}, "the deleted agent's answer"
    Agent.objects.filter(slug=slug).update(upstream_url=third.url)
    until(lambda: ask().json() == {"answer": "moved"}, "the agent's new upstream answers")
    Agent.objects.filter(slug=slug).delete()


def test_the_in_process_cache_counts_what_its_entries_really_take(settings):
    """``GATEWAY_CACHE_MEMORY_BYTES`` counted the values' bytes alone: many small answers (a key holder's many
    different short questions) took several times the budget in keys, tuples and the dictionary's slots."""
    import asyncio
    import tracemalloc

    from gateway_project.hotstate import MemoryHotState

    budget = 400_000
    settings.GATEWAY = {**settings.GATEWAY, "CACHE": {**settings.GATEWAY["CACHE"], "MEMORY_BYTES": budget}}
    store = MemoryHotState()
    scope = "gw:cache:an-agent:0123456789abcdef:42"

    async def fill():
        for n in range(20_000):
            digest = f"{n:064x}"
            await store.cache(["gen"], lambda generations, d=digest: f"{scope}:{generations}:{d}", b"x" * 40, 60)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        asyncio.run(fill())
        taken = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert taken < 1.5 * budget, f"{taken} bytes for a budget of {budget}"


def _must_revalidate(head: bytes, body: bytes) -> bytes:
    payload = b'{"balance": 17}'
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, max-age=0\r\n"
        + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )


def test_a_pass_through_answer_its_upstream_says_must_not_be_reused_unchecked_is_not_kept(
    answering, provider_at, gateway, make_key
):
    """``Cache-Control: no-cache`` (or ``max-age=0``) from an upstream: a cache may not reuse the answer without
    asking again (RFC 9111 5.2.2.4). Only ``no-store`` and ``private`` were read: such answers were replayed."""
    upstream = answering(_must_revalidate)
    agent = provider_at(upstream.url, kind="agent", served_models=[], default_model="", cache_enabled=True)
    raw, _ = make_key()
    with gateway.client(raw) as client:
        first = client.get(f"/agents/{agent.slug}/balance")
        second = client.get(f"/agents/{agent.slug}/balance")
    assert first.status_code == second.status_code == 200
    assert second.headers["x-gateway-cache"] == "miss" and len(upstream.requests) == 2
