"""Through a live gateway, each target is sent its own credential, or the agent's only on the agent's own origin: a
target added on another host gets nothing an operator could not already read."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import pytest

from routing.models import Agent, Target

AGENT_KEY = "sk-agent-only-for-its-host"


@pytest.fixture
def agent_on(live_db, seeded):
    """``agent_on(host)``: an agent whose URL names the mock upstream by ``host``, with a credential of its own."""
    port = urlsplit(seeded.url).port
    made = []

    def make(host: str) -> Agent:
        made.append(
            Agent.objects.create(
                slug=f"cred-{uuid.uuid4().hex[:8]}",
                name="cred",
                kind="agent",
                upstream_url=f"http://{host}:{port}",
                upstream_api_key=AGENT_KEY,
                timeout_seconds=10,
            )
        )
        return made[-1]

    yield make
    for agent in made:
        agent.delete()


def sent_authorization(gateway, make_key, wait_for_agent, agent: Agent) -> str | None:
    """The Authorization header the upstream got for a pass-through call to ``agent`` (None: none was sent)."""
    raw, _ = make_key(agents=[agent.slug])
    wait_for_agent(agent.slug, gateway)
    with gateway.client(raw) as client:
        echo = client.get(f"/agents/{agent.slug}/who")
    assert echo.status_code == 200, echo.text
    assert echo.json()["path"].endswith("/who")
    return echo.json()["headers"].get("authorization")


def test_a_target_on_another_host_is_sent_no_credential(gateway, make_key, wait_for_agent, agent_on, seeded):
    agent = agent_on("localhost")  # the agent's credential was set for localhost
    Target.objects.create(agent=agent, name="elsewhere", url=f"{seeded.url}/svc")  # 127.0.0.1: another host
    assert sent_authorization(gateway, make_key, wait_for_agent, agent) is None


def test_a_target_on_the_agents_own_origin_is_sent_the_agents_credential(
    gateway, make_key, wait_for_agent, agent_on, seeded
):
    agent = agent_on("127.0.0.1")
    Target.objects.create(agent=agent, name="canary", url=f"{seeded.url}/canary")
    assert sent_authorization(gateway, make_key, wait_for_agent, agent) == f"Bearer {AGENT_KEY}"


def test_a_target_with_its_own_credential_is_sent_that(gateway, make_key, wait_for_agent, agent_on, seeded):
    agent = agent_on("localhost")
    Target.objects.create(agent=agent, name="own", url=f"{seeded.url}/own", upstream_api_key="sk-target-own")
    assert sent_authorization(gateway, make_key, wait_for_agent, agent) == "Bearer sk-target-own"
