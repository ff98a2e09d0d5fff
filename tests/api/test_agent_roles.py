"""Agent roles over the management API: the roles, the keys that hold them and the agents that require them."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from keys.models import AgentRole, ApiKey
from keys.services import issue_key
from routing.models import Agent


@pytest.fixture
def analyst(db):
    return AgentRole.objects.create(slug="analyst", name="Analyst", description="Reads the ledgers")


@pytest.fixture
def ledger(db, analyst):
    return Agent.objects.create(
        slug="ledger", name="Ledger", upstream_url="http://10.0.0.5:9000", required_role=analyst
    )


@pytest.mark.parametrize("persona", ["api", "operator_api"])
def test_admins_and_operators_manage_roles_and_each_change_is_in_the_trail(request, persona):
    api = request.getfixturevalue(persona)
    created = api.post("/api/v1/agent-roles/", {"slug": "finance", "name": "Finance"}, format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["slug"], body["agents"], body["key_count"]) == ("finance", [], 0)
    url = f"/api/v1/agent-roles/{body['id']}/"
    assert api.patch(url, {"description": "Month-end close"}, format="json").json()["description"] == "Month-end close"
    assert api.delete(url).status_code == 204
    trail = AdminAction.objects.filter(object_type="keys.agentrole").order_by("id")
    assert [a.action for a in trail] == ["create", "update", "delete"]


def test_compliance_staff_read_roles_but_may_not_change_them(compliance_api, analyst):
    assert compliance_api.get("/api/v1/agent-roles/").json()["results"][0]["slug"] == "analyst"
    assert compliance_api.post("/api/v1/agent-roles/", {"slug": "x", "name": "X"}, format="json").status_code == 403


def test_a_roles_slug_cannot_change_once_keys_and_agents_name_it(api, analyst):
    response = api.patch(f"/api/v1/agent-roles/{analyst.pk}/", {"slug": "analysts"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()
    assert AgentRole.objects.get(pk=analyst.pk).slug == "analyst"


def test_a_key_is_given_roles_that_exist_and_refused_ones_that_do_not(api, acme, analyst):
    created = api.post(
        "/api/v1/keys/", {"client": acme.pk, "allowed_agents": ["*"], "roles": ["analyst"]}, format="json"
    )
    assert created.status_code == 201, created.json()
    assert created.json()["roles"] == ["analyst"]
    key_url = f"/api/v1/keys/{created.json()['id']}/"

    unknown = api.patch(key_url, {"roles": ["analyst", "auditor"]}, format="json")
    assert unknown.status_code == 400
    assert "auditor" in unknown.json()["detail"]
    repeated = api.patch(key_url, {"roles": ["analyst", "analyst"]}, format="json")
    assert repeated.status_code == 400
    not_text = api.patch(key_url, {"roles": [7]}, format="json")
    assert not_text.status_code == 400
    assert ApiKey.objects.get(pk=created.json()["id"]).roles == ["analyst"]

    refused_at_issue = api.post("/api/v1/keys/", {"client": acme.pk, "allowed_agents": ["*"], "roles": ["nope"]},
                                format="json")  # fmt: skip
    assert refused_at_issue.status_code == 400
    assert "nope" in refused_at_issue.json()["detail"]

    assert api.patch(key_url, {"roles": []}, format="json").json()["roles"] == []


def test_an_agent_requires_a_role_by_its_slug(api, analyst):
    created = api.post(
        "/api/v1/agents/",
        {"slug": "ledger", "name": "Ledger", "upstream_url": "http://10.0.0.5:9000", "required_role": "analyst"},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json()["required_role"] == "analyst"
    url = f"/api/v1/agents/{created.json()['id']}/"
    assert api.patch(url, {"required_role": "auditor"}, format="json").status_code == 400
    assert api.patch(url, {"required_role": None}, format="json").json()["required_role"] is None
    listed = api.get(f"/api/v1/agent-roles/{analyst.pk}/").json()
    assert listed["agents"] == []


def test_a_role_agents_require_is_not_deleted_and_nothing_changes(api, acme, analyst, ledger):
    key, _ = issue_key(acme, allowed_agents=["*"], roles=["analyst"])
    response = api.delete(f"/api/v1/agent-roles/{analyst.pk}/")
    assert response.status_code == 400
    assert "ledger" in response.json()["detail"]
    assert AgentRole.objects.filter(pk=analyst.pk).exists()
    key.refresh_from_db()
    assert key.roles == ["analyst"]


def test_deleting_a_role_takes_it_from_the_keys_that_held_it(api, acme, analyst):
    AgentRole.objects.create(slug="analyst-senior", name="Senior analyst")
    holder, _ = issue_key(acme, allowed_agents=["*"], roles=["analyst", "analyst-senior"])
    other, _ = issue_key(acme, allowed_agents=["*"], roles=["analyst-senior"])
    assert api.get(f"/api/v1/agent-roles/{analyst.pk}/").json()["key_count"] == 1
    assert api.delete(f"/api/v1/agent-roles/{analyst.pk}/").status_code == 204
    holder.refresh_from_db()
    other.refresh_from_db()
    assert (holder.roles, other.roles) == (["analyst-senior"], ["analyst-senior"])
    updates = AdminAction.objects.filter(object_type="keys.apikey", action="update", object_id=str(holder.pk))
    assert [a.changes["roles"] for a in updates] == [[["analyst", "analyst-senior"], ["analyst-senior"]]]


def test_a_rotated_key_keeps_its_roles(api, acme, analyst):
    key, _ = issue_key(acme, allowed_agents=["*"], roles=["analyst"])
    rotated = api.post(f"/api/v1/keys/{key.pk}/rotate/", {"grace_hours": 1}, format="json")
    assert rotated.status_code == 201
    assert rotated.json()["successor"]["roles"] == ["analyst"]
