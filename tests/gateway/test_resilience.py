"""Targets, retries, fallbacks and circuit breakers against mock upstreams told to fail, hang or drop."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings
from django.db import transaction

from tests.gateway.test_enforcement import assert_error
from tests.gateway.test_proxy import sse_events
from tests.servers import Gateway, MockUpstream
from tests.waiting import DEADLINE_SECONDS, in_thread, until

CHAT = "/v1/chat/completions"
INVOKE = "/v1/agent/invoke"
needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="gateway processes share hot state through Redis")


class Mock:
    """A mock upstream of the module's own, scripted per test."""

    def __init__(self, server: MockUpstream):
        self.server, self.url = server, server.url

    def reset(self):
        httpx.post(f"{self.url}/__mock__/reset").raise_for_status()
        self.server.configure(delay_ms=0, status=200, chunk_delay_ms=0)

    def faults(self, *faults, always=None):
        httpx.post(f"{self.url}/__mock__/faults", json={"faults": list(faults), "always": always or {}})

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/__mock__/stats").json()

    @property
    def requests(self) -> int:
        return self.stats()["requests"]


@pytest.fixture(scope="module")
def mocks():
    servers = [MockUpstream(), MockUpstream()]
    yield [Mock(server) for server in servers]
    for server in servers:
        server.stop()


@pytest.fixture
def upstreams(mocks):
    for mock in mocks:
        mock.reset()
    return mocks


@pytest.fixture
def make_agent(live_db, gateway, wait_for_agent):
    """``make_agent(targets=[(url, weight, max_concurrent)], **fields)``: a fresh agent the gateways have loaded."""
    from routing.models import Agent, Target

    def make(upstream_url="http://127.0.0.1:9", targets=(), kind="agent", servers=(), wait_on=None, **fields):
        slug = f"res-{uuid.uuid4().hex[:8]}"
        fields.setdefault("timeout_seconds", 10)
        with transaction.atomic():
            agent = Agent.objects.create(
                slug=slug, name=slug, kind=kind, upstream_url=upstream_url, served_models=list(servers), **fields
            )
            for i, (url, weight, max_concurrent) in enumerate(targets):
                Target.objects.create(agent=agent, name=f"t{i}", url=url, weight=weight, max_concurrent=max_concurrent)
        for server in wait_on or (gateway,):
            wait_for_agent(slug, server)
        return agent

    return make


@pytest.fixture
def ops(live_db):
    """``ops(server)``: a management API client of an admin, on a gateway process (which holds its hot state)."""
    from django.contrib.auth import get_user_model

    from keys.api_tokens import issue_token

    user = get_user_model().objects.create_user(f"ops-{uuid.uuid4().hex[:8]}", is_superuser=True)
    token = issue_token(user)[1]
    return lambda server: httpx.Client(base_url=server.url, headers={"Authorization": f"Token {token}"}, timeout=30)


@pytest.fixture
def health(ops):
    """``health(server, agent)``: the agent's live target states, read from the gateway's management API."""

    def read(server, agent) -> dict:
        response = ops(server).get(f"/api/v1/agents/{agent.pk}/health/")
        assert response.status_code == 200, response.text
        return {t["target"]: t for t in response.json()["targets"]}

    return read


def invoke(client, agent, **headers):
    return client.post(INVOKE, json={"input": "hello there", "agent": agent.slug}, headers=headers)


# --- retries ------------------------------------------------------------------


def test_a_failing_upstream_is_retried_until_it_answers(upstreams, make_agent, make_key, gateway, audit_of):
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=2)
    mock.faults({"status": 503}, {"status": 503})
    response = invoke(gateway.client(make_key()[0]), agent)
    assert response.status_code == 200, response.text
    assert mock.requests == 3
    assert response.headers["x-gateway-target"] == f"{agent.slug}/upstream"
    record = audit_of(response)
    assert (record.status, record.agent, record.target) == (200, agent.slug, mock.url)
    attempts = record.details["attempts"]
    assert [(a["outcome"], a["status"]) for a in attempts] == [("upstream_error", 503)] * 2 + [("ok", 200)]
    assert all(a["agent"] == agent.slug and a["ms"] >= 0 for a in attempts)


def test_retries_stop_at_the_agents_max_retries(upstreams, make_agent, make_key, gateway, audit_of):
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=1)
    mock.faults(always={"status": 529})
    response = invoke(gateway.client(make_key()[0]), agent)
    assert_error(response, 502, "upstream_error")
    assert mock.requests == 2
    assert len(audit_of(response).details["attempts"]) == 2


def test_a_status_not_in_retry_statuses_is_not_retried(upstreams, make_agent, make_key, gateway):
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=3, retry_statuses=[503])
    mock.faults(always={"status": 500})
    assert_error(invoke(gateway.client(make_key()[0]), agent), 502, "upstream_error")
    assert mock.requests == 1


def test_an_upstream_refusal_is_passed_on_and_not_retried(upstreams, make_agent, make_key, gateway):
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=3)
    mock.faults(always={"status": 422})
    assert_error(invoke(gateway.client(make_key()[0]), agent), 422, "upstream_rejected")
    assert mock.requests == 1


def test_retries_and_their_backoff_stay_within_the_total_timeout(upstreams, make_agent, make_key, gateway, audit_of):
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=5, timeout_seconds=1.5)
    with mock.server.hold() as hold:  # after one failure the upstream answers nothing until the test is done
        mock.faults({"status": 503}, always={"hold": hold})
        started = time.monotonic()
        response = invoke(gateway.client(make_key()[0]), agent)
        error = assert_error(response, 504, "upstream_timeout")
    assert "within 1.5 seconds" in error["message"]  # the agent's whole time, though the retry had less left
    assert time.monotonic() - started < 7  # one budget of 1.5 s: five more attempts of 1.5 s would take 7.5 s
    assert mock.requests == 2  # the retry used what was left of the budget: no third attempt
    assert [a["outcome"] for a in audit_of(response).details["attempts"]] == ["upstream_error", "upstream_timeout"]


def test_a_dropped_connection_is_retried_on_the_other_target(upstreams, make_agent, make_key, gateway, audit_for):
    broken, healthy = upstreams
    agent = make_agent(targets=[(broken.url, 100, 0), (healthy.url, 100, 0)], max_retries=1, breaker_failures=100)
    broken.faults(always={"drop": True})
    raw, key = make_key()
    client = gateway.client(raw)
    statuses = [invoke(client, agent).status_code for _ in range(8)]
    assert statuses == [200] * 8
    records = audit_for(key, 8)
    assert {r.target for r in records} == {healthy.url}
    retried = [r for r in records if "attempts" in r.details]
    assert retried and len(retried) == broken.requests  # each request that met the broken target went on
    for record in retried:
        assert [(a["target"], a["outcome"]) for a in record.details["attempts"]] == [
            ("t0", "upstream_unreachable"),
            ("t1", "ok"),
        ]


def test_nothing_is_retried_once_the_answer_began(upstreams, make_agent, make_key, gateway, audit_of):
    mock = upstreams[0]
    agent = make_agent(mock.url, kind="openai", servers=["res-model"], default_model="res-model", max_retries=3)
    mock.faults({"drop_mid_stream": True})
    body = {"model": agent.slug, "messages": [{"role": "user", "content": "tell me a long story"}], "stream": True}
    with gateway.client(make_key()[0]).stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        try:
            text = response.read().decode()
        except httpx.HTTPError:
            text = ""  # the gateway ended the broken answer; what arrived before is all there is
    assert "[DONE]" not in text
    assert mock.requests == 1
    record = audit_of(response)
    assert record.status == 200 and record.error_type.startswith("upstream_")
    assert [a["target"] for a in record.details["attempts"]] == ["upstream"]


# --- fallbacks ----------------------------------------------------------------


@pytest.fixture
def claude_with_fallback(upstreams, make_agent):
    """An Anthropic agent (failing) that falls back to an OpenAI one (healthy)."""
    failing, healthy = upstreams
    backup = make_agent(healthy.url, kind="openai", servers=["res-gpt"], default_model="res-gpt")
    model = f"res-claude-{uuid.uuid4().hex[:6]}"
    primary = make_agent(
        failing.url, kind="anthropic", servers=[model], default_model=model, max_retries=1, fallbacks=[backup.slug]
    )
    failing.faults(always={"status": 503})
    return primary, backup, model


def test_a_failing_provider_falls_back_to_another_kind(claude_with_fallback, upstreams, make_key, gateway, audit_of):
    primary, backup, model = claude_with_fallback
    response = gateway.client(make_key()[0]).post(
        CHAT, json={"model": model, "messages": [{"role": "user", "content": "hello"}]}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "res-gpt"
    assert answer["choices"][0]["message"]["content"].startswith("Mock answer to:")
    assert response.headers["x-gateway-fallback"] == primary.slug
    assert response.headers["x-gateway-target"] == f"{backup.slug}/upstream"
    record = audit_of(response)
    assert (record.agent, record.model, record.target) == (backup.slug, "res-gpt", upstreams[1].url)
    assert record.input_tokens > 0 and record.cost_usd >= 0
    assert record.details["fallback"] == {"requested": primary.slug, "answered": backup.slug}
    assert [(a["agent"], a["outcome"]) for a in record.details["attempts"]] == [
        (primary.slug, "upstream_error"),
        (primary.slug, "upstream_error"),
        (backup.slug, "ok"),
    ]
    assert upstreams[0].requests == 2


def test_a_stream_falls_back_before_anything_was_sent(claude_with_fallback, make_key, gateway, audit_of):
    _, backup, model = claude_with_fallback
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": True}
    with gateway.client(make_key()[0]).stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert text == "Mock answer to: hello"
    assert audit_of(response).agent == backup.slug


def test_messages_fall_back_and_answer_in_anthropics_shape(upstreams, make_agent, make_key, gateway, audit_of):
    failing, healthy = upstreams
    backup = make_agent(healthy.url, kind="anthropic", servers=["res-haiku"], default_model="res-haiku")
    primary = make_agent(
        failing.url, kind="openai", servers=["res-4o"], default_model="res-4o", max_retries=0, fallbacks=[backup.slug]
    )
    failing.faults(always={"drop": True})
    body = {"model": "res-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]}
    response = gateway.client(make_key()[0]).post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message" and response.json()["model"] == "res-haiku"
    record = audit_of(response)
    assert (record.agent, record.model) == (backup.slug, "res-haiku")
    assert record.details["attempts"][0] == {**record.details["attempts"][0], "agent": primary.slug}


def test_a_fallback_outside_the_keys_scopes_is_skipped(claude_with_fallback, make_key, gateway, audit_of):
    primary, backup, model = claude_with_fallback
    response = gateway.client(make_key(agents=[primary.slug])[0]).post(
        CHAT, json={"model": model, "messages": [{"role": "user", "content": "hello"}]}
    )
    assert_error(response, 502, "upstream_error")
    record = audit_of(response)
    assert record.agent == primary.slug
    assert record.details["fallbacks_skipped"] == [
        {"agent": backup.slug, "reason": "outside the key's scopes or roles"}
    ]


def test_invoke_falls_back_and_says_which_agent_answered(upstreams, make_agent, make_key, gateway):
    failing, healthy = upstreams
    backup = make_agent(healthy.url)
    primary = make_agent(failing.url, max_retries=0, fallbacks=[backup.slug], timeout_seconds=0.5)
    with failing.server.hold() as hold:  # the primary never answers in time
        failing.faults(always={"hold": hold})
        response = invoke(gateway.client(make_key()[0]), primary)
    assert response.status_code == 200, response.text
    assert response.json()["agent_used"] == backup.slug


# --- circuit breaker ----------------------------------------------------------


def test_a_circuit_opens_fails_fast_lets_one_probe_through_and_closes(
    upstreams, make_agent, make_key, gateway, audit_of, health
):
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=0, breaker_failures=2, breaker_cooldown_seconds=1.5)
    client = gateway.client(make_key()[0])
    mock.faults(always={"status": 503})
    assert [invoke(client, agent).status_code for _ in range(2)] == [502, 502]
    assert health(gateway, agent)["upstream"]["circuit"] == "open"

    refused = invoke(client, agent)
    error = assert_error(refused, 503, "circuit_open")
    assert agent.slug in error["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 2
    assert mock.requests == 2  # failed fast, the upstream never saw it
    assert audit_of(refused).error_type == "circuit_open"

    mock.reset()
    until(lambda: health(gateway, agent)["upstream"]["circuit"] == "half_open", "the circuit is half open")
    with mock.server.hold() as hold:  # the probe is held, so a second request meets the half-open circuit
        mock.faults({"hold": hold})
        probe = in_thread(lambda: invoke(gateway.client(make_key()[0]), agent))
        until(lambda: mock.server.held(hold) == 1, "the probe reached the upstream")
        assert_error(invoke(client, agent), 503, "circuit_open")  # only one probe at a time
    assert probe.result(timeout=DEADLINE_SECONDS).status_code == 200
    assert health(gateway, agent)["upstream"]["circuit"] == "closed"
    assert invoke(client, agent).status_code == 200


def test_a_failed_probe_opens_the_circuit_again(upstreams, make_agent, make_key, gateway, health):
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=0, breaker_failures=1, breaker_cooldown_seconds=1.0)
    client = gateway.client(make_key()[0])
    mock.faults(always={"status": 503})
    assert invoke(client, agent).status_code == 502
    assert_error(invoke(client, agent), 503, "circuit_open")
    until(lambda: health(gateway, agent)["upstream"]["circuit"] == "half_open", "the circuit is half open")
    assert invoke(client, agent).status_code == 502  # the probe, failing
    state = health(gateway, agent)["upstream"]
    assert state["circuit"] == "open" and state["open_for_seconds"] > 0
    assert mock.requests == 2


def test_an_open_circuit_goes_straight_to_the_fallback(upstreams, make_agent, make_key, gateway, audit_of):
    failing, healthy = upstreams
    backup = make_agent(healthy.url)
    primary = make_agent(
        failing.url, max_retries=0, breaker_failures=1, breaker_cooldown_seconds=60, fallbacks=[backup.slug]
    )
    failing.faults(always={"status": 503})
    client = gateway.client(make_key()[0])
    assert invoke(client, primary).status_code == 200  # failed once (opening the circuit), fell back
    response = invoke(client, primary)
    assert response.status_code == 200
    assert failing.requests == 1
    attempts = audit_of(response).details["attempts"]
    assert [(a["agent"], a["outcome"]) for a in attempts] == [(primary.slug, "circuit_open"), (backup.slug, "ok")]


def test_a_reset_closes_the_circuit_and_is_in_the_trail(upstreams, make_agent, make_key, gateway, ops):
    from audit.models import AdminAction

    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=0, breaker_failures=1, breaker_cooldown_seconds=60)
    client = gateway.client(make_key()[0])
    mock.faults({"status": 503})
    assert invoke(client, agent).status_code == 502
    assert_error(invoke(client, agent), 503, "circuit_open")
    reset = ops(gateway).post(f"/api/v1/agents/{agent.pk}/reset-circuit/", json={})
    assert reset.status_code == 200, reset.text
    assert reset.json()["targets"][0]["circuit"] == "closed"
    assert invoke(client, agent).status_code == 200
    action = AdminAction.objects.filter(action="reset_circuit", object_id=str(agent.pk)).get()
    assert action.changes == {"targets": ["upstream"]}


# --- balancing ----------------------------------------------------------------


def test_a_weight_of_zero_gets_no_traffic(upstreams, make_agent, make_key, gateway):
    drained, live = upstreams
    agent = make_agent(targets=[(drained.url, 0, 0), (live.url, 100, 0)])
    client = gateway.client(make_key()[0])
    assert Counter(invoke(client, agent).status_code for _ in range(20)) == Counter({200: 20})
    assert (drained.requests, live.requests) == (0, 20)


def test_equal_weights_share_the_traffic(upstreams, make_agent, make_key, gateway, audit_for):
    a, b = upstreams
    agent = make_agent(targets=[(a.url, 50, 0), (b.url, 50, 0)])
    raw, key = make_key()
    client = gateway.client(raw)
    assert Counter(invoke(client, agent).status_code for _ in range(60)) == Counter({200: 60})
    assert a.requests + b.requests == 60
    assert 12 <= a.requests <= 48  # 50/50 over 60, far outside the binomial's tails
    targets = Counter(r.target for r in audit_for(key, 60))
    assert targets == Counter({a.url: a.requests, b.url: b.requests})


def test_a_stream_the_client_leaves_releases_its_target(upstreams, make_agent, make_key, gateway, audit_for, health):
    mock = upstreams[0]
    agent = make_agent(
        targets=[(mock.url, 100, 1)], kind="openai", servers=["res-slow"], default_model="res-slow", max_retries=0
    )
    raw, key = make_key()
    body = {"model": "res-slow", "messages": [{"role": "user", "content": " ".join(["word"] * 60)}], "stream": True}
    with (
        mock.server.hold() as hold,  # the answer stops after its first chunk until the test is done
        httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {raw}"}, timeout=30) as client,
    ):
        with client.stream("POST", CHAT, json={**body, "mock": {"hold_stream": hold}}) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()  # held: a dropped generator would close the response at once
            next(chunks)
            assert health(gateway, agent)["t0"]["in_flight"] == 1
            assert_error(invoke(gateway.client(make_key()[0]), agent, **{}), 503, "targets_busy")
        # The client went away mid-stream: its target is free again and the request is audited as such.
        until(lambda: health(gateway, agent)["t0"]["in_flight"] == 0, "the target was released")
    assert gateway.client(make_key()[0]).post(CHAT, json={**body, "stream": False}).status_code == 200
    record = audit_for(key)[0]
    assert record.error_type == "client_disconnected"
    assert record.target == mock.url


def test_a_target_taken_with_the_admission_is_given_back_on_a_refusal_and_after_an_answer(
    upstreams, make_agent, make_key, gateway, health
):
    mock = upstreams[0]
    agent = make_agent(targets=[(mock.url, 100, 1)], max_retries=0)
    client = gateway.client(make_key(rpm=1)[0])
    assert invoke(client, agent).status_code == 200  # its target's release went with the settle
    assert_error(invoke(client, agent), 429, "rate_limit_requests")  # took the target with the admission
    assert health(gateway, agent)["t0"]["in_flight"] == 0
    # Had either request kept the target (max 1 at once), this one would find it busy.
    assert invoke(gateway.client(make_key()[0]), agent).status_code == 200


# --- shared by gateway processes (PostgreSQL + Redis) ------------------------


@pytest.fixture(scope="module")
def two_gateways(seeded):
    first, second = Gateway(), Gateway()
    yield first, second
    first.stop()
    second.stop()


@needs_redis
def test_a_circuit_opened_by_one_process_fails_fast_on_the_other(upstreams, make_agent, make_key, two_gateways, health):
    first, second = two_gateways
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=0, breaker_failures=2, breaker_cooldown_seconds=2, wait_on=two_gateways)
    raw = make_key()[0]
    mock.faults(always={"status": 503})
    assert [invoke(first.client(raw), agent).status_code for _ in range(2)] == [502, 502]
    assert_error(invoke(second.client(raw), agent), 503, "circuit_open")
    assert mock.requests == 2
    assert health(second, agent)["upstream"]["circuit"] == "open"

    # Half-open: one probe in the whole fleet. It is slow, and the other process meanwhile fails fast.
    mock.reset()
    until(lambda: health(first, agent)["upstream"]["circuit"] == "half_open", "the circuit is half open")
    with mock.server.hold() as hold:
        mock.faults({"hold": hold})
        probe = in_thread(lambda: invoke(first.client(raw), agent))
        until(lambda: mock.server.held(hold) == 1, "the probe reached the upstream")
        assert_error(invoke(second.client(raw), agent), 503, "circuit_open")
    assert probe.result(timeout=DEADLINE_SECONDS).status_code == 200
    assert invoke(second.client(raw), agent).status_code == 200
    assert health(second, agent)["upstream"]["circuit"] == "closed"


@needs_redis
def test_only_one_probe_goes_through_however_many_ask_at_once(upstreams, make_agent, make_key, two_gateways, health):
    first, second = two_gateways
    mock = upstreams[0]
    agent = make_agent(mock.url, max_retries=0, breaker_failures=1, breaker_cooldown_seconds=1, wait_on=two_gateways)
    raw = make_key()[0]
    mock.faults({"status": 503})
    assert invoke(first.client(raw), agent).status_code == 502
    until(lambda: health(first, agent)["upstream"]["circuit"] == "half_open", "past the cool-down")
    mock.reset()
    answered = []

    def ask(i):
        answer = invoke((first, second)[i % 2].client(raw), agent)
        answered.append(answer)
        return answer

    with mock.server.hold() as hold, ThreadPoolExecutor(16) as pool:
        mock.faults(always={"hold": hold})  # the probe is held until every other request has been refused
        asked = [pool.submit(ask, i) for i in range(16)]
        until(lambda: mock.server.held(hold) + len(answered) == 16, "every request probed or refused")
        mock.server.release(hold)
        answers = [a.result() for a in asked]
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [503] * 15
    assert mock.requests == 1


@needs_redis
def test_a_target_at_its_max_is_skipped_by_every_process(upstreams, make_agent, make_key, two_gateways, health):
    first, second = two_gateways
    a, b = upstreams
    agent = make_agent(
        targets=[(a.url, 100, 2), (b.url, 100, 2)], strategy="least_busy", max_retries=0, wait_on=two_gateways
    )
    raw = make_key()[0]
    with a.server.hold() as hold_a, b.server.hold() as hold_b, ThreadPoolExecutor(4) as pool:
        a.faults(always={"hold": hold_a})
        b.faults(always={"hold": hold_b})
        held = [pool.submit(invoke, (first, second)[i % 2].client(raw), agent) for i in range(4)]
        until(lambda: a.server.held(hold_a) + b.server.held(hold_b) == 4, "four requests reached the targets")
        assert (a.requests, b.requests) == (2, 2)  # never three on one: the counts are shared
        states = health(second, agent)
        assert (states["t0"]["in_flight"], states["t1"]["in_flight"]) == (2, 2)
        assert_error(invoke(first.client(raw), agent), 503, "targets_busy")
        a.server.release(hold_a)
        b.server.release(hold_b)
        assert [f.result(timeout=DEADLINE_SECONDS).status_code for f in held] == [200] * 4
    states = health(first, agent)
    assert (states["t0"]["in_flight"], states["t1"]["in_flight"]) == (0, 0)


@needs_redis
def test_least_busy_avoids_a_slow_target_busy_on_another_process(
    upstreams, make_agent, make_key, two_gateways, wait_for_reload
):
    from routing.models import Target

    first, second = two_gateways
    slow, fast = upstreams
    agent = make_agent(targets=[(slow.url, 100, 0), (fast.url, 100, 0)], strategy="least_busy", wait_on=two_gateways)
    Target.objects.filter(agent=agent, name="t1").update(enabled=False)
    wait_for_reload(first, second)
    raw = make_key()[0]
    with slow.server.hold() as hold:
        slow.faults(always={"hold": hold})
        held = in_thread(lambda: invoke(first.client(raw), agent))
        until(lambda: slow.server.held(hold) == 1, "the slow target holds a request")
        Target.objects.filter(agent=agent, name="t1").update(enabled=True)
        wait_for_reload(first, second)
        statuses = [invoke(second.client(raw), agent).status_code for _ in range(6)]
        assert statuses == [200] * 6
        assert (slow.requests, fast.requests) == (1, 6)  # the other process saw the slow target busy
    assert held.result(timeout=DEADLINE_SECONDS).status_code == 200
