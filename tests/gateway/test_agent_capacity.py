"""An agent's capacity is shared by every client: one client cannot take a popular agent's whole capacity."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from routing.models import Agent
from tests.conftest import wait_for
from tests.gateway.test_enforcement import assert_error


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

    def upstream_requests():
        return httpx.get(f"{seeded.url}/__mock__/stats").json()["requests"]

    before = upstream_requests()
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(slow.post, f"/agents/{slug}/work", content=b"{}", headers={"x-mock-delay-ms": "3000"})
        # Once the upstream holds the slow request, the agent's one slot is taken: the other client is refused.
        assert wait_for(lambda: upstream_requests() > before), "the slow request never reached the upstream"
        assert_error(other.post(f"/agents/{slug}/work", content=b"{}"), 429, "agent_concurrency_limit")
        assert busy.result(timeout=15).status_code == 200
    assert other.post(f"/agents/{slug}/work", content=b"{}").status_code == 200  # the slot came back


def test_the_keys_own_limits_still_apply_below_the_agents(gateway, make_key, capped_agent):
    slug = capped_agent(requests_per_minute=100)
    raw, _ = make_key(rpm=1)
    client = gateway.client(raw)
    assert client.post(f"/agents/{slug}/work", content=b"{}").status_code == 200
    assert_error(client.post(f"/agents/{slug}/work", content=b"{}"), 429, "rate_limit_requests")
