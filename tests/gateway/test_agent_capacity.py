"""An agent's capacity is shared by every client: one client cannot take a popular agent's whole capacity."""

from __future__ import annotations

import uuid

import pytest

from routing.models import Agent
from tests.gateway.test_enforcement import assert_error
from tests.waiting import DEADLINE_SECONDS, in_thread, until, wait_for


@pytest.fixture
def capped_agent(gateway, seeded, make_key, live_db):
    """``capped_agent(**capacity)``: a new agent on the mock upstream, once the gateway's table has it."""

    def make(**capacity):
        slug = f"cap-{uuid.uuid4().hex[:8]}"
        Agent.objects.create(slug=slug, name=slug, upstream_url=seeded.url, timeout_seconds=10, **capacity)
        raw, _ = make_key(agents=["someone-else"])  # asks without being admitted, so it spends no capacity
        client = gateway.client(raw)
        assert wait_for(lambda: client.post(f"/agents/{slug}/work", content=b"{}").status_code == 403)
        return slug

    return make


def test_the_agents_requests_per_minute_are_shared_by_all_clients(gateway, make_key, capped_agent, audit_of):
    slug = capped_agent(requests_per_minute=3)
    first, second = gateway.client(make_key()[0]), gateway.client(make_key()[0])
    assert [c.post(f"/agents/{slug}/work", content=b"{}").status_code for c in (first, first, second)] == [200] * 3
    refused = second.post(f"/agents/{slug}/work", content=b"{}")
    error = assert_error(refused, 429, "agent_rate_limit", "rate_limit_error")
    assert f"'{slug}'" in error["message"] and "shared by all clients" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert audit_of(refused).error_type == "agent_rate_limit"


def test_the_agents_concurrency_is_shared_and_released(gateway, seeded, make_key, capped_agent):
    slug = capped_agent(max_concurrent=1)
    slow, other = gateway.client(make_key()[0]), gateway.client(make_key()[0])
    with seeded.hold() as hold:
        busy = in_thread(lambda: slow.post(f"/agents/{slug}/work", content=b"{}", headers={"x-mock-hold": hold}))
        # Once the upstream holds the slow request, the agent's one slot is taken: the other client is refused.
        until(lambda: seeded.held(hold) == 1, "the slow request reached the upstream")
        assert_error(other.post(f"/agents/{slug}/work", content=b"{}"), 429, "agent_concurrency_limit")
    assert busy.result(timeout=DEADLINE_SECONDS).status_code == 200
    # The slot comes back when the gateway settles the answer, which may be a moment after the client has it.
    until(lambda: other.post(f"/agents/{slug}/work", content=b"{}").status_code == 200, "the slot came back")


def test_the_keys_own_limits_still_apply_below_the_agents(gateway, make_key, capped_agent):
    slug = capped_agent(requests_per_minute=100)
    raw, _ = make_key(rpm=1)
    client = gateway.client(raw)
    assert client.post(f"/agents/{slug}/work", content=b"{}").status_code == 200
    assert_error(client.post(f"/agents/{slug}/work", content=b"{}"), 429, "rate_limit_requests")
