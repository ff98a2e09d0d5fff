"""Agents (upstreams) over the management API."""

import pytest

from routing.models import Agent

AGENT = {
    "slug": "research",
    "name": "Research agent",
    "kind": "agent",
    "upstream_url": "http://10.0.0.5:9000",
    "upstream_api_key": "sk-upstream-secret",
    "served_models": ["research-1"],
    "default_model": "research-1",
    "capabilities": ["search", "cite"],
    "timeout_seconds": 30,
    "cost_center": "r-and-d",
}


@pytest.fixture
def agent(db):
    return Agent.objects.create(slug="coder", name="Coder", upstream_url="http://coder:9000", upstream_api_key="sk-x")


def test_it_creates_an_agent_without_echoing_its_upstream_key(api):
    response = api.post("/api/v1/agents/", AGENT, format="json")
    assert response.status_code == 201
    body = response.json()
    assert "upstream_api_key" not in body
    assert body["has_upstream_api_key"] is True
    assert body["capabilities"] == ["search", "cite"]
    assert Agent.objects.get(slug="research").upstream_api_key == "sk-upstream-secret"


def test_it_never_reads_back_the_upstream_key(api, agent):
    assert "sk-x" not in api.get(f"/api/v1/agents/{agent.pk}/").content.decode()
    assert "sk-x" not in api.get("/api/v1/agents/").content.decode()


def test_it_updates_and_deletes_an_agent(api, agent):
    url = f"/api/v1/agents/{agent.pk}/"
    response = api.patch(url, {"timeout_seconds": 5.5, "is_active": False}, format="json")
    assert response.status_code == 200
    agent.refresh_from_db()
    assert (agent.timeout_seconds, agent.is_active, agent.upstream_api_key) == (5.5, False, "sk-x")

    assert api.delete(url).status_code == 204
    assert not Agent.objects.filter(pk=agent.pk).exists()


def test_it_refuses_a_duplicate_slug(api, agent):
    response = api.post("/api/v1/agents/", {**AGENT, "slug": "coder"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()


def test_it_refuses_a_timeout_longer_than_a_request_may_take(api, settings):
    """A request's slots are counted ``GATEWAY_MAX_ANSWER_SECONDS`` (and a minute): no agent may take longer."""
    settings.GATEWAY = {**settings.GATEWAY, "MAX_ANSWER_SECONDS": 600.0}
    response = api.post("/api/v1/agents/", {**AGENT, "timeout_seconds": 601}, format="json")
    assert response.status_code == 400
    assert "GATEWAY_MAX_ANSWER_SECONDS" in str(response.json()["timeout_seconds"])
    assert api.post("/api/v1/agents/", {**AGENT, "timeout_seconds": 600}, format="json").status_code == 201


@pytest.mark.parametrize("timeout", [-1, 0, "NaN"])
def test_it_refuses_a_timeout_that_is_not_positive(api, timeout):
    response = api.post("/api/v1/agents/", {**AGENT, "timeout_seconds": timeout}, format="json")
    assert response.status_code == 400
    assert "timeout_seconds" in response.json()


@pytest.mark.parametrize("field", ["served_models", "capabilities"])
@pytest.mark.parametrize("value", ["search", [""], [" "], [3], [None]])
def test_it_refuses_list_fields_that_are_not_lists_of_names(api, field, value):
    response = api.post("/api/v1/agents/", {**AGENT, field: value}, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_it_refuses_an_unknown_kind(api):
    response = api.post("/api/v1/agents/", {**AGENT, "kind": "carrier-pigeon"}, format="json")
    assert response.status_code == 400
    assert "kind" in response.json()


def test_it_filters_agents_by_kind(api, agent):
    Agent.objects.create(slug="gpt", name="OpenAI", kind="openai", upstream_url="https://api.openai.test")
    body = api.get("/api/v1/agents/", {"kind": "openai"}).json()
    assert [a["slug"] for a in body["results"]] == ["gpt"]


def test_an_agents_capacity_is_set_and_checked(api, agent):
    response = api.patch(
        f"/api/v1/agents/{agent.pk}/", {"max_concurrent": 20, "requests_per_minute": 600}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["max_concurrent"], response.json()["requests_per_minute"]) == (20, 600)
    refused = api.patch(f"/api/v1/agents/{agent.pk}/", {"max_concurrent": -1}, format="json")
    assert refused.status_code == 400 and "max_concurrent" in refused.json()
