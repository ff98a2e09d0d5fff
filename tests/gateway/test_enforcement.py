"""Every refusal, in the documented order, with its OpenAI-shaped error and one audit record each."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.waiting import until

CHAT = "/v1/chat/completions"


def chat_body(model="gpt-4o-mini", text="hello", **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def assert_error(response, status, code, error_type=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert error["message"]
    if error_type:
        assert error["type"] == error_type
    return error


def test_it_refuses_a_request_without_a_key(gateway, audit_of):
    response = gateway.client().post(CHAT, json=chat_body())
    assert_error(response, 401, "missing_api_key", "authentication_error")
    record = audit_of(response)
    assert (record.status, record.error_type, record.path) == (401, "missing_api_key", CHAT)


def test_it_refuses_an_unknown_key(gateway, audit_of):
    response = gateway.client("agk_not-a-real-key").post(CHAT, json=chat_body())
    assert_error(response, 401, "invalid_api_key")
    assert audit_of(response).status == 401


def test_it_accepts_the_key_as_x_api_key(gateway, make_key):
    raw, _ = make_key()
    response = gateway.client().post(CHAT, json=chat_body(), headers={"X-API-Key": raw})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"is_active": False}, "key_disabled"),
        ({"revoked_at": timezone.now()}, "key_revoked"),
        ({"expires_at": timezone.now() - timedelta(seconds=1)}, "key_expired"),
    ],
)
def test_it_refuses_an_unusable_key(gateway, make_key, audit_for, change, code):
    raw, key = make_key(**change)
    response = gateway.client(raw).post(CHAT, json=chat_body())
    assert_error(response, 403, code, "permission_error")
    assert audit_for(key)[0].error_type == code


def test_it_refuses_a_key_of_a_disabled_client(gateway, make_key):
    raw, key = make_key()
    key.client.is_active = False
    key.client.save()
    assert_error(gateway.client(raw).post(CHAT, json=chat_body()), 403, "client_disabled")


def test_it_stops_accepting_a_revoked_key_within_a_second(gateway, make_key):
    from keys.services import revoke_key

    raw, key = make_key()
    client = gateway.client(raw)
    assert client.post(CHAT, json=chat_body()).status_code == 200  # the gateway has the key cached now
    revoked_at, accepted_late = time.monotonic(), []
    revoke_key(key)

    def refused():
        sent = time.monotonic() - revoked_at
        response = client.post(CHAT, json=chat_body())
        if response.status_code == 200 and sent >= 1.0:
            accepted_late.append(round(sent, 2))
        return response.status_code != 200 and response

    assert_error(until(refused, "the revoked key was refused"), 403, "key_revoked")
    assert not accepted_late, f"requests sent this many seconds after the revocation were accepted: {accepted_late}"


def test_it_checks_the_key_before_the_body_size(gateway, make_key):
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 70_000}]}
    assert gateway.client("agk_unknown").post(CHAT, json=big).status_code == 401
    raw, _ = make_key()
    response = gateway.client(raw).post(CHAT, json=big)
    assert_error(response, 413, "request_too_large")


def test_it_refuses_malformed_json(gateway, make_key, audit_for):
    raw, key = make_key()
    response = gateway.client(raw).post(CHAT, content=b"{not json", headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_json", "invalid_request_error")
    assert audit_for(key)[0].status == 400


@pytest.mark.parametrize(
    "body",
    [{"messages": [{"role": "user", "content": "x"}]}, {"model": "gpt-4o"}, {"model": "gpt-4o", "messages": []}, []],
)
def test_it_refuses_a_chat_request_missing_fields(gateway, make_key, body):
    raw, _ = make_key()
    response = gateway.client(raw).post(CHAT, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_it_refuses_an_invoke_without_input(gateway, make_key):
    raw, _ = make_key()
    assert_error(gateway.client(raw).post("/v1/agent/invoke", json={"agent": "research"}), 400, "missing_field")


def test_it_refuses_a_bad_max_tokens(gateway, make_key):
    raw, _ = make_key()
    response = gateway.client(raw).post(CHAT, json=chat_body(max_tokens=-5))
    assert_error(response, 400, "invalid_request")


def test_it_answers_404_for_an_unknown_model_and_agent(gateway, make_key):
    raw, _ = make_key()
    client = gateway.client(raw)
    assert_error(client.post(CHAT, json=chat_body(model="no-such-model")), 404, "model_not_found", "not_found_error")
    assert_error(client.post("/v1/agent/invoke", json={"input": "x", "agent": "nobody"}), 404, "agent_not_found")
    assert_error(client.get("/agents/nobody/x"), 404, "agent_not_found")
    assert_error(client.get("/v1/nothing-here"), 404, "unknown_endpoint")


def test_it_refuses_an_agent_outside_the_keys_scopes(gateway, make_key, audit_for):
    raw, key = make_key(agents=["research"])
    client = gateway.client(raw)
    assert_error(client.post(CHAT, json=chat_body(model="gpt-4o")), 403, "agent_not_allowed")
    assert_error(client.post("/v1/agent/invoke", json={"input": "x", "agent": "code"}), 403, "agent_not_allowed")
    assert_error(client.get("/agents/writing/anything"), 403, "agent_not_allowed")
    assert client.post(CHAT, json=chat_body(model="research")).status_code == 200
    records = audit_for(key, 4)
    assert [r.status for r in records] == [403, 403, 403, 200]


def test_it_refuses_a_model_outside_the_keys_scopes(gateway, make_key):
    raw, _ = make_key(agents=["openai"], models=["gpt-4o-mini"])
    client = gateway.client(raw)
    assert client.post(CHAT, json=chat_body(model="gpt-4o-mini")).status_code == 200
    assert_error(client.post(CHAT, json=chat_body(model="gpt-4o")), 403, "model_not_allowed")


def test_it_limits_requests_per_minute_with_retry_after(gateway, make_key, audit_for):
    raw, key = make_key(rpm=3)
    client = gateway.client(raw)
    statuses = [client.post(CHAT, json=chat_body()).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    refused = client.post(CHAT, json=chat_body())
    assert_error(refused, 429, "rate_limit_requests", "rate_limit_error")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert audit_for(key, 4)[-1].error_type == "rate_limit_requests"


def test_it_limits_requests_per_day(gateway, make_key, audit_for):
    raw, key = make_key(rpm=100, requests_per_day=3)
    client = gateway.client(raw)
    assert [client.post(CHAT, json=chat_body()).status_code for _ in range(3)] == [200, 200, 200]
    refused = client.post(CHAT, json=chat_body())
    assert_error(refused, 429, "rate_limit_requests_per_day", "rate_limit_error")
    assert "3 requests per day" in refused.json()["error"]["message"]
    assert 3600 < int(refused.headers["retry-after"]) <= 86_400  # a slot frees every 8 hours
    assert audit_for(key, 4)[-1].error_type == "rate_limit_requests_per_day"


def test_it_limits_tokens_per_minute(gateway, make_key):
    raw, _ = make_key(tpm=200)
    client = gateway.client(raw)
    assert client.post(CHAT, json=chat_body(max_tokens=50)).status_code == 200
    refused = client.post(CHAT, json=chat_body(max_tokens=190))
    assert_error(refused, 429, "rate_limit_tokens")
    assert int(refused.headers["retry-after"]) >= 1


def second_key(key, **fields):
    """Another key of ``key``'s client."""
    from keys.services import issue_key

    other, raw = issue_key(key.client, allowed_agents=["*"], allowed_models=["*"], **fields)
    return raw, other


def test_a_clients_limits_are_shared_by_all_its_keys(gateway, make_key, audit_for):
    """More keys are not more capacity: a client's requests per minute hold across its keys."""
    raw, key = make_key(rpm=100)
    key.client.requests_per_minute = 3
    key.client.save()
    other_raw, other = second_key(key, requests_per_minute=100)
    one, two = gateway.client(raw), gateway.client(other_raw)
    assert [c.post(CHAT, json=chat_body()).status_code for c in (one, two, one)] == [200, 200, 200]
    refused = two.post(CHAT, json=chat_body())
    assert_error(refused, 429, "client_rate_limit_requests", "rate_limit_error")
    assert "3 requests per minute for this client" in refused.json()["error"]["message"]
    assert audit_for(other, 2)[-1].error_type == "client_rate_limit_requests"
    stranger, _ = make_key(rpm=100)
    assert gateway.client(stranger).post(CHAT, json=chat_body()).status_code == 200  # another client's own


def test_a_clients_tokens_per_minute_are_shared_by_all_its_keys(gateway, make_key):
    raw, key = make_key(tpm=100_000)
    key.client.tokens_per_minute = 300
    key.client.save()
    other_raw, _ = second_key(key, tokens_per_minute=100_000)
    assert gateway.client(raw).post(CHAT, json=chat_body(max_tokens=150)).status_code == 200
    refused = gateway.client(other_raw).post(CHAT, json=chat_body(max_tokens=295))  # the first used about 8
    assert_error(refused, 429, "client_rate_limit_tokens")


def test_it_reports_remaining_limits_on_success(gateway, make_key):
    raw, _ = make_key(rpm=10, tpm=5000)
    response = gateway.client(raw).post(CHAT, json=chat_body())
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    assert 0 < int(response.headers["x-ratelimit-remaining-tokens"]) < 5000
    assert len(response.headers["x-request-id"]) == 32
    assert float(response.headers["x-response-time-ms"]) > 0


def test_it_refuses_once_the_monthly_budget_is_spent(gateway, make_key, audit_for):
    raw, key = make_key(budget="0.14")
    client = gateway.client(raw)
    # 40,000 characters are 10,000 input tokens as the mock counts them: $0.025 at gpt-4o's $2.50 per million. The
    # worst case reserved is a token a byte and 4,096 more ($0.110), and the default 1,024-token answer cap
    # ($0.010): $0.121 fits once, and not again after $0.025 was spent.
    big = chat_body(model="gpt-4o", text="x" * 40_000)
    assert client.post(CHAT, json=big).status_code == 200
    refused = client.post(CHAT, json=big)
    assert_error(refused, 402, "budget_exceeded", "insufficient_quota")
    assert audit_for(key, 2)[-1].status == 402
    assert client.post(CHAT, json=chat_body(model="gpt-4o-mini", max_tokens=10)).status_code == 200  # a small one fits


def test_the_refusal_names_the_budget_that_refused(gateway, make_key):
    from billing.models import Budget

    raw, key = make_key(budget="100")  # the client's monthly budget is far away
    Budget.objects.create(scope=Budget.KEY, api_key=key, period=Budget.DAILY, limit_usd=Decimal("0.0001"))
    client = gateway.client(raw)
    # Gateways re-read budgets within GATEWAY_CONFIG_REFRESH_SECONDS (0.2 s in tests).
    refused = until(lambda: (r := client.post(CHAT, json=chat_body())).status_code != 200 and r, "a refusal")
    assert_error(refused, 402, "budget_exceeded")
    assert "API key" in refused.json()["error"]["message"] and "daily budget" in refused.json()["error"]["message"]


def test_a_zero_budget_refuses_at_once(gateway, make_key):
    raw, _ = make_key(budget="0")
    assert_error(gateway.client(raw).post(CHAT, json=chat_body()), 402, "budget_exceeded")


def test_it_answers_502_when_the_upstream_is_unreachable(gateway, make_key, audit_for):
    raw, key = make_key()
    response = gateway.client(raw).post("/v1/agent/invoke", json={"input": "hello", "agent": "dead"})
    assert_error(response, 502, "upstream_unreachable", "upstream_error")
    assert audit_for(key)[0].error_type == "upstream_unreachable"


def test_it_answers_502_when_the_upstream_fails(gateway, make_key):
    raw, _ = make_key()
    response = gateway.client(raw).post(CHAT, json=chat_body(mock={"status": 503}))
    assert_error(response, 502, "upstream_error")


def test_it_passes_an_upstream_client_error_through(gateway, make_key):
    raw, _ = make_key()
    response = gateway.client(raw).post(CHAT, json=chat_body(mock={"status": 422}))
    assert_error(response, 422, "upstream_rejected")


def test_it_answers_504_when_the_upstream_is_too_slow(gateway, make_key, audit_for, seeded):
    raw, key = make_key()
    client = gateway.client(raw)
    with seeded.hold() as hold:  # the upstream answers only after the test: the 504 is the agent's 0.5 s timeout
        started = time.monotonic()
        response = client.post("/agents/slow/work", content=b"{}", headers={"x-mock-hold": hold})
        assert_error(response, 504, "upstream_timeout", "timeout_error")
        assert time.monotonic() - started < 10  # the agent's own timeout, not a longer default (60 s)
        response = client.post(CHAT, json=chat_body(model="slow-model", mock={"hold": hold}))
        assert_error(response, 504, "upstream_timeout")
    assert [r.status for r in audit_for(key, 2)] == [504, 504]


def test_refusals_do_not_use_up_the_rate_limit_of_later_steps(gateway, make_key):
    raw, _ = make_key(rpm=2)
    client = gateway.client(raw)
    for _ in range(3):
        assert client.post(CHAT, json=chat_body(model="missing")).status_code == 404
    assert client.post(CHAT, json=chat_body()).status_code == 200
