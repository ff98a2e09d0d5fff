"""The console's agent roles: the roles page, a key's roles, an agent's required role, per role of the user."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from keys.models import AgentRole, ApiKey
from keys.services import issue_key
from routing.models import Agent


@pytest.fixture
def analyst(db):
    return AgentRole.objects.create(slug="analyst", name="Analyst", description="Reads the ledgers")


def key_data(**fields):
    data = {"name": "ci", "all_agents": "on", "models_text": "*", "plan": "", "requests_per_minute": "",
            "requests_per_day": "", "tokens_per_minute": "", "max_concurrent": ""}  # fmt: skip
    return {**data, **fields}


def test_every_console_role_reads_the_roles_page_and_only_managers_change_it(admin, operator, compliance, nobody,
                                                                                 analyst):  # fmt: skip
    for browser in (admin, operator, compliance):
        page = browser.get("/console/roles/")
        assert page.status_code == 200
        assert b'data-role="analyst"' in page.content
    assert nobody.get("/console/roles/").status_code == 403
    assert compliance.post("/console/roles/new/", {"slug": "x", "name": "X"}).status_code == 403
    assert not AgentRole.objects.filter(slug="x").exists()


def test_an_operator_creates_a_role_and_its_slug_is_fixed_after(operator):
    response = operator.post("/console/roles/new/", {"slug": "finance", "name": "Finance", "description": ""})
    assert response.status_code == 302
    role = AgentRole.objects.get(slug="finance")
    edited = operator.post(f"/console/roles/{role.pk}/edit/", {"slug": "other", "name": "Finance team"})
    assert edited.status_code == 302
    role.refresh_from_db()
    assert (role.slug, role.name) == ("finance", "Finance team")  # a disabled field keeps its stored value
    bad = operator.post("/console/roles/new/", {"slug": "not a slug", "name": "X"})
    assert bad.status_code == 400
    assert b"slug" in bad.content.lower()


def test_a_new_key_takes_the_roles_ticked_on_its_form(operator, acme, analyst):
    response = operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(roles=["analyst"]))
    assert response.status_code == 302
    assert ApiKey.objects.get(client=acme).roles == ["analyst"]
    unknown = operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(roles=["auditor"]))
    assert unknown.status_code == 400
    assert b"auditor" in unknown.content


def test_a_keys_roles_are_changed_on_its_roles_page_and_the_trail_says_so(operator, acme, analyst):
    key, _ = issue_key(acme, allowed_agents=["*"])
    assert b"analyst (Analyst)" in operator.get(f"/console/keys/{key.pk}/roles/").content
    response = operator.post(f"/console/keys/{key.pk}/roles/", {"roles": ["analyst"]})
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.roles == ["analyst"]
    detail = operator.get(f"/console/clients/{acme.pk}/").content.decode()
    assert f'data-roles="{key.pk}">analyst<' in detail
    change = AdminAction.objects.get(object_type="keys.apikey", action="update", object_id=str(key.pk))
    assert change.changes["roles"] == [[], ["analyst"]]
    assert operator.post(f"/console/keys/{key.pk}/roles/", {}).status_code == 302
    key.refresh_from_db()
    assert key.roles == []


def test_an_agent_is_given_a_required_role_on_its_form(admin, analyst):
    data = {
        "slug": "ledger", "name": "Ledger", "kind": "agent", "upstream_url": "http://10.0.0.5:9000",
        "timeout_seconds": "30", "required_role": str(analyst.pk), "is_active": "on",
    }  # fmt: skip
    response = admin.post("/console/agents/new/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Agent.objects.get(slug="ledger").required_role == analyst
    assert b"No role required" in admin.get("/console/agents/new/").content


def test_a_role_agents_require_is_not_deleted_and_one_they_do_not_leaves_its_keys(operator, acme, analyst):
    key, _ = issue_key(acme, allowed_agents=["*"], roles=["analyst"])
    agent = Agent.objects.create(slug="ledger", name="Ledger", upstream_url="http://10.0.0.5:9000",
                                 required_role=analyst)  # fmt: skip
    refused = operator.post(f"/console/roles/{analyst.pk}/delete/")
    assert refused.status_code == 400
    assert b"ledger" in refused.content
    agent.required_role = None
    agent.save()
    assert b"1 key" in operator.get(f"/console/roles/{analyst.pk}/delete/").content
    assert operator.post(f"/console/roles/{analyst.pk}/delete/").status_code == 302
    key.refresh_from_db()
    assert key.roles == []
    assert AdminAction.objects.filter(object_type="keys.apikey", action="update", object_id=str(key.pk)).exists()
