"""Every change through the API lands in the admin-action trail; compliance staff read it."""

from audit.models import AdminAction
from keys.models import ApiKey


def test_creating_a_client_is_recorded_with_its_fields(api, admin_user):
    response = api.post("/api/v1/clients/", {"name": "Acme", "slug": "acme", "contact": "ops@acme"}, format="json")
    action = AdminAction.objects.get()
    assert (action.actor, action.via, action.action) == ("admin", "api", "create")
    assert (action.object_type, action.object_id) == ("keys.client", str(response.json()["id"]))
    assert action.changes["slug"] == [None, "acme"]


def test_an_update_records_each_changed_field_from_and_to(api, acme):
    api.patch(f"/api/v1/clients/{acme.pk}/", {"name": "Acme Corp", "is_active": False}, format="json")
    action = AdminAction.objects.get(action="update")
    assert action.changes == {"name": ["Acme", "Acme Corp"], "is_active": [True, False]}


def test_an_update_that_changes_nothing_records_nothing(api, acme):
    api.patch(f"/api/v1/clients/{acme.pk}/", {"name": "Acme"}, format="json")
    assert not AdminAction.objects.filter(action="update").exists()


def test_issuing_and_revoking_a_key_never_records_the_raw_key(api, acme):
    created = api.post(
        "/api/v1/keys/", {"client": acme.pk, "allowed_agents": ["*"], "allowed_models": ["*"]}, format="json"
    ).json()
    api.post(f"/api/v1/keys/{created['id']}/revoke/")
    actions = list(AdminAction.objects.order_by("id"))
    assert [a.action for a in actions] == ["create", "revoke"]
    assert created["key"] not in str([a.changes for a in actions])
    assert ApiKey.objects.get().key_hash not in str([a.changes for a in actions])
    assert actions[0].changes["key_hash"][0] is None and actions[0].changes["key_hash"][1].startswith("(secret ")
    assert actions[1].changes["revoked_at"][0] is None and actions[1].changes["revoked_at"][1]


def test_deleting_is_recorded(api, acme):
    api.delete(f"/api/v1/clients/{acme.pk}/")
    action = AdminAction.objects.get(action="delete")
    assert action.object_repr == "Acme" and action.changes["slug"] == ["acme", None]


def test_agent_secrets_are_masked(api):
    api.post(
        "/api/v1/agents/",
        {"slug": "x", "name": "X", "kind": "openai", "upstream_url": "http://127.0.0.1:9", "upstream_api_key": "sk-1"},
        format="json",
    )
    before, after = AdminAction.objects.get().changes["upstream_api_key"]
    assert before is None and after.startswith("(secret ") and "sk-1" not in after


def test_compliance_reads_the_trail_and_operators_do_not(api, compliance_api, operator_api, acme):
    api.patch(f"/api/v1/clients/{acme.pk}/", {"name": "Renamed"}, format="json")
    listing = compliance_api.get("/api/v1/admin-actions/?action=update")
    assert listing.status_code == 200 and len(listing.json()["results"]) == 1
    assert operator_api.get("/api/v1/admin-actions/").status_code == 403
    assert compliance_api.post("/api/v1/admin-actions/", {}, format="json").status_code == 403
