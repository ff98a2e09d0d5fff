"""The console says when the gateway does not serve an agent: its stored URL, or an enabled target's, no longer
passes the outbound address policy (the allow-list shrank since it was saved), so the routing table leaves it out.

The console is not the gateway's process: it applies the same check the table load applies (``refusal_of``), so
what the pages say is what the table does, which the last test holds them to."""

from __future__ import annotations

import re

import pytest

from routing.models import Agent, Target
from routing.table import load_table


@pytest.fixture
def agents(db):
    """Four active agents and an inactive one, all saved while 10.0.0.0/8 and 192.168.0.0/16 were allowed."""
    made = {
        "t-private": Agent.objects.create(slug="t-private", name="Private", upstream_url="http://10.0.0.5:9000"),
        "t-public": Agent.objects.create(slug="t-public", name="Public", upstream_url="https://llm.example.com/v1"),
        "t-canary": Agent.objects.create(slug="t-canary", name="Canary", upstream_url="https://llm.example.com/v1"),
        "t-drained": Agent.objects.create(slug="t-drained", name="Drained", upstream_url="https://llm.example.com/v1"),
        "t-off": Agent.objects.create(slug="t-off", name="Off", upstream_url="http://10.0.0.9:9000", is_active=False),
    }
    Target.objects.create(agent=made["t-canary"], name="v2", url="http://192.168.0.9:9000")
    Target.objects.create(agent=made["t-drained"], name="old", url="http://192.168.0.9:9000", enabled=False)
    return made


@pytest.fixture
def narrowed(settings, agents):
    """The allow-list as it stands after the change: example.com only."""
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = [".example.com"]
    return agents


def row_of(page: str, slug: str) -> str:
    return re.search(rf"<tr><td class=\"mono\">{slug}.*?</tr>", page, re.S).group(0)


def test_the_agent_list_warns_of_each_agent_the_gateway_leaves_out_and_why(compliance, narrowed):
    page = compliance.get("/console/agents/").content.decode()

    private = row_of(page, "t-private")
    assert "not served" in private
    assert "Not served: the gateway leaves it out of its routing table." in private
    assert "10.0.0.5 is private" in private and "GATEWAY_UPSTREAM_ALLOWED_NETWORKS" in private
    canary = row_of(page, "t-canary")
    assert "not served" in canary
    assert "The URL of its target &#x27;v2&#x27; names a non-public address: 192.168.0.9 is private" in canary

    for served in ("t-public", "t-drained"):  # a disabled target is not called, so it does not matter
        assert "not served" not in row_of(page, served).lower() and "badge ok" in row_of(page, served)
    off = row_of(page, "t-off")  # inactive says so already; no policy warning on top
    assert "inactive" in off and "not served" not in off.lower()


def test_the_agent_page_warns_that_the_agent_is_not_served_and_why(operator, narrowed):
    page = operator.get(f"/console/agents/{narrowed['t-private'].pk}/edit/").content.decode()
    banner = re.search(r'<p class="banner" id="not-served-warning" role="alert">(.*?)</p>', page, re.S).group(1)
    assert banner.startswith("Not served: the gateway leaves this agent out of its routing table")
    assert "Its upstream URL names a non-public address: 10.0.0.5 is private" in banner

    page = operator.get(f"/console/agents/{narrowed['t-canary'].pk}/edit/").content.decode()
    assert "target &#x27;v2&#x27; names a non-public address: 192.168.0.9" in page
    for served in ("t-public", "t-drained", "t-off"):
        assert "not-served-warning" not in operator.get(f"/console/agents/{narrowed[served].pk}/edit/").content.decode()


def test_the_warning_goes_once_the_address_is_allowed_again(compliance, narrowed, settings):
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = [".example.com", "10.0.0.0/8", "192.168.0.0/16"]
    page = compliance.get("/console/agents/").content.decode()
    assert "not served" not in page.lower()


def test_the_console_says_not_served_of_exactly_the_agents_the_routing_table_leaves_out(compliance, narrowed):
    page = compliance.get("/console/agents/").content.decode()
    warned = {slug for slug, agent in narrowed.items() if agent.is_active and "not served" in row_of(page, slug)}
    active = {slug for slug, agent in narrowed.items() if agent.is_active}
    assert warned == {"t-private", "t-canary"}
    assert active - set(load_table().agents) == warned
