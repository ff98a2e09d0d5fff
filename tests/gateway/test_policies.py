"""Policy rules on live traffic, under both servers: what they refuse, what they only record, and what a refusal
does not cost."""

from __future__ import annotations

import uuid

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.waiting import until, wait_for

INVOKE = "/v1/agent/invoke"


@pytest.fixture(scope="module")
def server(either_server):
    return either_server


@pytest.fixture
def rules(live_db):
    """``rules(*(name, effect, condition[, options]))``: active rules, deleted after the test. Each test's rules name
    its own client, so no other test's requests meet them."""
    from keys.models import PolicyRule

    made = []

    def make(name, effect, condition, **options):
        rule = PolicyRule.objects.create(
            name=f"{name} {uuid.uuid4().hex[:6]}", effect=effect, condition=condition, **options
        )
        made.append(rule)
        return rule

    yield make
    PolicyRule.objects.filter(pk__in=[rule.pk for rule in made]).delete()


def invoke(server, raw, agent="research", text="hello", **options):
    with server.client(raw) as client:
        return client.post(INVOKE, json={"agent": agent, "input": text}, **options)


def refused_by(response, rule) -> dict:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "policy_denied")
    assert rule.name in error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


def test_an_ip_allow_list_refuses_other_addresses_and_a_refusal_costs_no_quota(
    server, rules, make_key, audit_for, live_db
):
    from billing.models import UsageRecord
    from keys.services import issue_key

    waiter_raw, waiter = make_key()  # waits for the rule to come and go, so its answers cost the other key nothing
    key, raw = issue_key(waiter.client, allowed_agents=["*"], requests_per_minute=2)
    rule = rules("office only", "deny", f"client.slug == '{key.client.slug}' && !ip_in(request.ip, ['10.0.0.0/8'])",
                 message="Call from the office network.")  # fmt: skip
    until(lambda: invoke(server, waiter_raw).status_code == 403, "the rule in force")
    for _ in range(3):
        error = refused_by(invoke(server, raw), rule)
    assert "Call from the office network." in error["message"]
    records = audit_for(key, 3)
    assert [(r.status, r.error_type) for r in records] == [(403, "policy_denied")] * 3
    assert all(r.details["policy"] == {"denied_by": rule.name} for r in records)
    rule.delete()
    until(lambda: invoke(server, waiter_raw).status_code == 200, "the rule gone")
    # Two a minute, and none taken by the three refusals: both pass.
    assert [invoke(server, raw).status_code for _ in range(2)] == [200, 200]
    assert wait_for(lambda: UsageRecord.objects.filter(api_key=key).count() == 2 or None)


def test_only_the_finance_department_calls_the_ledger_agent(server, rules, make_key, live_db):
    raw, key = make_key()
    finance_raw, finance_key = make_key()
    finance = finance_key.client
    finance.tags = ["finance"]
    finance.save()  # announced: the key's snapshot is read again with its client's tags
    slugs = f"['{key.client.slug}', '{finance_key.client.slug}']"
    rule = rules("ledger is finance's", "deny",
                 f"client.slug in {slugs} && request.agent == 'research' && !('finance' in client.tags)")  # fmt: skip
    until(lambda: invoke(server, raw).status_code == 403, "the rule in force")
    refused_by(invoke(server, raw), rule)
    until(lambda: invoke(server, finance_raw).status_code == 200, "the finance client's tags read")


def test_a_dry_run_rule_refuses_nothing_and_the_record_says_what_it_would_have_done(server, rules, make_key, audit_of):
    raw, key = make_key()
    rule = rules("watch", "deny", f"client.slug == '{key.client.slug}'", dry_run=True)

    def noted():
        answer = invoke(server, raw)
        assert answer.status_code == 200, answer.text
        record = audit_of(answer)
        return record if record.details.get("policy") else None

    record = wait_for(noted)
    assert record.details["policy"] == {"would_deny": [rule.name]}
    assert record.status == 200


def test_a_final_allow_lets_through_what_a_later_deny_would_refuse(server, rules, make_key, audit_of):
    raw, key = make_key()
    allow = rules("trusted", "allow", f"client.slug == '{key.client.slug}' && request.agent == 'research'",
                  final=True, position=1)  # fmt: skip
    deny = rules("no one", "deny", f"client.slug == '{key.client.slug}'", position=2)
    until(lambda: invoke(server, raw, agent="writing").status_code == 403, "the rules in force")
    refused_by(invoke(server, raw, agent="writing"), deny)
    answer = invoke(server, raw, agent="research")
    assert answer.status_code == 200, answer.text
    assert audit_of(answer).details["policy"] == {"allowed_by": allow.name}


def test_a_body_size_cap_on_one_path(server, rules, make_key):
    raw, key = make_key()
    rule = rules("small bodies", "deny", f"client.slug == '{key.client.slug}' && "
                 "request.path.startsWith('/agents/research/') && request.body_bytes > 2000")  # fmt: skip
    with server.client(raw) as client:
        big = {"input": "x" * 5000}
        until(lambda: client.post("/agents/research/invoke", json=big).status_code == 403, "the rule in force")
        refused_by(client.post("/agents/research/invoke", json=big), rule)
        assert client.post("/agents/research/invoke", json={"input": "small"}).status_code == 200
        assert client.post(INVOKE, json={"agent": "research", "input": "x" * 5000}).status_code == 200


def test_a_condition_that_fails_on_a_request_refuses_it(server, rules, make_key, audit_of):
    raw, key = make_key()
    rule = rules("numeric models", "deny", f"client.slug == '{key.client.slug}' && int(request.model) > 3")
    until(lambda: invoke(server, raw).status_code == 403, "the rule in force")
    refused = invoke(server, raw)
    refused_by(refused, rule)
    assert audit_of(refused).details["policy"] == {"denied_by": rule.name, "failed": [rule.name]}


def test_a_websocket_handshake_meets_the_rules_as_method_ws(server, rules, make_key):
    raw, key = make_key()
    rules("no sessions", "deny", f"client.slug == '{key.client.slug}' && request.method == 'WS'")
    url = server.url.replace("http://", "ws://") + "/agents/research/ws"
    headers = {"Authorization": f"Bearer {raw}"}

    def refused_code():
        if server.server == "uvicorn":
            try:
                with connect(url, additional_headers=headers, open_timeout=10):
                    return None
            except InvalidStatus as refused:
                return refused.response.status_code
        with connect(url, additional_headers=headers, open_timeout=10) as ws:
            try:
                message = ws.recv(timeout=2)
            except TimeoutError:
                return None
            assert "policy_denied" in message
            try:
                ws.recv(timeout=10)
            except ConnectionClosed as closed:
                return closed.rcvd.code - 4000
        return None

    assert until(lambda: refused_code() == 403, "the handshake refused by the rule")


@pytest.fixture
def any_model_provider(live_db, seeded, server, wait_for_agent):
    """An OpenAI-compatible agent on the mock that serves any model: a pass-through body names the model."""
    from routing.models import Agent

    provider = Agent.objects.create(slug=f"any-model-{uuid.uuid4().hex[:6]}", name="any", kind="openai",
                                    upstream_url=seeded.url)  # fmt: skip
    wait_for_agent(provider.slug, server)
    yield f"/agents/{provider.slug}/v1/chat/completions"
    provider.delete()


def chat(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def test_a_value_the_rules_cannot_read_is_refused_by_a_deny_that_reads_it_never_a_500(
    server, rules, make_key, audit_of, any_model_provider
):
    raw, key = make_key()
    rule = rules("no mini models", "deny", f"client.slug == '{key.client.slug}' && "
                 "request.model.startsWith('gpt-4o-mini')")  # fmt: skip
    # JSON may escape a lone surrogate, which no UTF-8 string holds: the CEL library refuses such a value.
    body = '{"model": "gpt-4o-mini\\ud800", "messages": [{"role": "user", "content": "hi"}]}'
    with server.client(raw) as client:
        until(lambda: client.post(any_model_provider, json=chat("gpt-4o-mini")).status_code == 403, "the rule")
        response = client.post(any_model_provider, content=body, headers={"content-type": "application/json"})
    refused_by(response, rule)
    assert audit_of(response).details["policy"] == {"denied_by": rule.name, "failed": [rule.name]}


def test_a_model_name_longer_than_the_rules_read_fails_a_deny_that_reads_it(
    server, rules, make_key, audit_of, any_model_provider
):
    raw, key = make_key()
    rule = rules("no preview", "deny", f"client.slug == '{key.client.slug}' && "
                 "request.model.matches('.*-preview$')")  # fmt: skip
    with server.client(raw) as client:
        until(lambda: client.post(any_model_provider, json=chat("gpt-4o-preview")).status_code == 403, "the rule")
        response = client.post(any_model_provider, json=chat("x" * 5000 + "-preview"))
    refused_by(response, rule)
    assert audit_of(response).details["policy"] == {"denied_by": rule.name, "failed": [rule.name]}
