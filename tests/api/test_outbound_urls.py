"""Outbound URLs over the management API: agent, target and budget-webhook URLs that would make the gateway call
internal addresses are refused when saved, saying why; rows that got past (saved before the policy, or after the
allow-list shrank) are left out of the routing table when it loads."""

from __future__ import annotations

import socket
from unittest import mock

import pytest

from billing.models import Budget
from routing.models import Agent, Target
from routing.table import load_table

AGENT = {"slug": "research", "name": "Research", "kind": "agent", "upstream_url": "http://10.0.0.5:9000"}
REAL_GETADDRINFO = socket.getaddrinfo


def resolving(names: dict[str, str]):
    """``socket.getaddrinfo`` answering ``names`` from the table (no DNS leaves the machine); others as before."""

    def getaddrinfo(host, port, *args, **kwargs):
        if host in names:
            return [(socket.AF_INET6 if ":" in names[host] else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (names[host], port or 0))]  # fmt: skip
        if host in ("127.0.0.1", "::1") or host.replace(".", "").isdigit():
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    return mock.patch("socket.getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is cloud metadata"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254 is cloud metadata"),
        ("http://169.254.10.10:9000", "169.254.10.10 is link-local"),
        ("http://[fe80::1]:9000", "fe80::1 is link-local"),
        ("http://[::ffff:169.254.169.254]/", "inside an IPv6 address"),
        ("http://192.168.1.10:9000", "192.168.1.10 is private"),
        ("http://100.64.0.1:9000", "100.64.0.1 is shared (CGNAT)"),
        ("http://metadata.google.internal/", "cloud metadata service"),
        ("http://admin:pw@10.0.0.5:9000", "must not carry credentials"),
    ],
)
def test_an_agent_url_the_gateway_must_not_call_is_refused_saying_why(api, url, message):
    response = api.post("/api/v1/agents/", {**AGENT, "upstream_url": url}, format="json")
    assert response.status_code == 400, response.json()
    assert message in str(response.json()["upstream_url"])
    assert "GATEWAY_UPSTREAM_ALLOWED_NETWORKS" in str(response.json()["upstream_url"]) or "credentials" in message
    assert not Agent.objects.exists()


def test_a_target_on_an_embedded_metadata_address_is_refused(api):
    Agent.objects.create(slug="coder", name="Coder", upstream_url="http://10.0.0.5:9000")
    response = api.post(
        "/api/v1/targets/", {"agent": "coder", "name": "v2", "url": "http://[2002:a9fe:a9fe::]:9000"}, format="json"
    )
    assert response.status_code == 400
    assert "cloud metadata (169.254.169.254), inside an IPv6 address" in str(response.json()["url"])
    assert not Target.objects.exists()


def test_an_agent_name_is_resolved_when_saved_and_every_address_must_pass(api, settings):
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    with resolving({"coder.internal": "10.0.0.7", "sneaky.internal": "169.254.169.254"}):
        ok = api.post("/api/v1/agents/", {**AGENT, "upstream_url": "http://coder.internal:9000"}, format="json")
        sneaky = api.post(
            "/api/v1/agents/", {**AGENT, "slug": "s", "upstream_url": "http://sneaky.internal/"}, format="json"
        )
        nowhere = api.post(
            "/api/v1/agents/", {**AGENT, "slug": "n", "upstream_url": "http://nowhere.internal/"}, format="json"
        )
    assert ok.status_code == 201, ok.json()
    assert sneaky.status_code == 400
    assert "resolves to a non-public address: 169.254.169.254 is cloud metadata" in str(sneaky.json()["upstream_url"])
    assert nowhere.status_code == 400 and "does not resolve" in str(nowhere.json()["upstream_url"])


def test_private_upstreams_need_the_allow_list(api, settings):
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = []
    refused = api.post("/api/v1/agents/", AGENT, format="json")
    assert refused.status_code == 400 and "10.0.0.5 is private" in str(refused.json()["upstream_url"])
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["10.0.0.0/24"]
    assert api.post("/api/v1/agents/", AGENT, format="json").status_code == 201


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/api/v1/keys/", "http://[::ffff:127.0.0.1]:8000/", "http://localhost:8000/"]
)
def test_an_alert_webhook_to_loopback_is_refused_when_saved(api, url):
    response = api.post(
        "/api/v1/budgets/", {"scope": "organization", "limit_usd": "100", "alert_webhook_url": url}, format="json"
    )
    assert response.status_code == 400
    assert "non-public address" in str(response.json()["alert_webhook_url"])
    assert "GATEWAY_WEBHOOK_ALLOWED_HOSTS" in str(response.json()["alert_webhook_url"])
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_the_routing_table_leaves_out_agents_whose_stored_urls_no_longer_pass(settings):
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    Agent.objects.create(slug="fine", name="Fine", upstream_url="http://10.0.0.5:9000")
    Agent.objects.create(slug="named", name="Named", upstream_url="http://coder:9000")  # checked when saved
    Agent.objects.create(slug="metadata", name="Metadata", upstream_url="http://169.254.169.254/")
    Agent.objects.create(slug="mapped", name="Mapped", upstream_url="http://[::ffff:127.0.0.1]:9000/")
    canary = Agent.objects.create(slug="canary", name="Canary", upstream_url="http://10.0.0.6:9000")
    Target.objects.create(agent=canary, name="v2", url="http://192.168.0.9:9000")
    drained = Agent.objects.create(slug="drained", name="Drained", upstream_url="http://10.0.0.8:9000")
    Target.objects.create(agent=drained, name="old", url="http://192.168.0.9:9000", enabled=False)
    assert sorted(load_table().agents) == ["drained", "fine", "named"]

    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["10.0.0.0/8", "192.168.0.0/16"]
    assert sorted(load_table().agents) == ["canary", "drained", "fine", "named"]


def test_the_api_says_which_agents_the_gateway_does_not_serve_and_why(api, settings):
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["10.0.0.0/8", "192.168.0.0/16"]
    private = Agent.objects.create(slug="private", name="Private", upstream_url="http://10.0.0.5:9000")
    canary = Agent.objects.create(slug="canary", name="Canary", upstream_url="http://llm.example.com")
    Target.objects.create(agent=canary, name="v2", url="http://192.168.0.9:9000")
    Agent.objects.create(slug="public", name="Public", upstream_url="http://llm.example.com")
    Agent.objects.create(slug="off", name="Off", upstream_url="http://llm.example.com", is_active=False)
    listed = {a["slug"]: (a["served"], a["not_served_reason"]) for a in api.get("/api/v1/agents/").json()["results"]}
    served = (True, "")
    assert listed == {"private": served, "canary": served, "public": served, "off": (False, "The agent is inactive.")}

    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = []  # the allow-list shrank after they were saved
    listed = {a["slug"]: (a["served"], a["not_served_reason"]) for a in api.get("/api/v1/agents/").json()["results"]}
    assert listed["public"] == (True, "")
    assert listed["private"] == (
        False,
        "Its upstream URL names a non-public address: 10.0.0.5 is private (an admin may allow it in "
        "GATEWAY_UPSTREAM_ALLOWED_NETWORKS).",
    )
    assert listed["canary"][0] is False
    assert "The URL of its target 'v2' names a non-public address: 192.168.0.9 is private" in listed["canary"][1]
    assert listed["off"] == (False, "The agent is inactive.")
    detail = api.get(f"/api/v1/agents/{private.pk}/").json()
    assert (detail["served"], detail["not_served_reason"]) == listed["private"]
    # What the API says is what the routing table does.
    assert {slug for slug, (served, _) in listed.items() if served} == set(load_table().agents)


def test_served_is_read_only(api):
    agent = Agent.objects.create(slug="private", name="Private", upstream_url="http://10.0.0.5:9000")
    response = api.patch(
        f"/api/v1/agents/{agent.pk}/", {"served": False, "not_served_reason": "made up", "name": "P"}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["served"], response.json()["not_served_reason"], response.json()["name"]) == (True, "", "P")
    created = api.post("/api/v1/agents/", {**AGENT, "slug": "other", "served": False}, format="json")
    assert created.status_code == 201 and created.json()["served"] is True


def test_the_schema_documents_served_and_its_reason_as_read_only(api):
    schemas = api.get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]
    properties = schemas["Agent"]["properties"]
    assert properties["served"]["type"] == "boolean" and properties["served"]["readOnly"] is True
    assert properties["not_served_reason"]["type"] == "string" and properties["not_served_reason"]["readOnly"] is True
    assert {"served", "not_served_reason"} <= set(schemas["Agent"]["required"])
    for request in ("AgentRequest", "PatchedAgentRequest"):
        assert not {"served", "not_served_reason"} & set(schemas[request]["properties"])
