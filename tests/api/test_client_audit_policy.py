"""What the audit log keeps of a client (previews, retention) is changed by admins only, through the API."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from keys.models import Client


@pytest.mark.parametrize("change", [{"audit_previews": False}, {"audit_retention_days": 7}])
def test_an_operator_changing_the_audit_policy_gets_403_and_nothing_changes(operator_api, acme, change):
    response = operator_api.patch(f"/api/v1/clients/{acme.pk}/", change, format="json")
    assert response.status_code == 403
    assert "Only admins may change" in response.json()["detail"] and next(iter(change)) in response.json()["detail"]
    acme.refresh_from_db()
    assert (acme.audit_previews, acme.audit_retention_days) == (True, None)
    assert not AdminAction.objects.filter(object_type="keys.client").exists()


def test_an_operator_creating_a_client_with_an_audit_policy_gets_403(operator_api):
    body = {"name": "Beta", "slug": "beta", "audit_retention_days": 1}
    assert operator_api.post("/api/v1/clients/", body, format="json").status_code == 403
    assert not Client.objects.filter(slug="beta").exists()


def test_an_operator_may_send_the_audit_fields_back_unchanged(operator_api, acme):
    current = operator_api.get(f"/api/v1/clients/{acme.pk}/").json()
    answer = operator_api.put(f"/api/v1/clients/{acme.pk}/", {**current, "name": "Acme Ltd"}, format="json")
    assert answer.status_code == 200 and answer.json()["name"] == "Acme Ltd"
    created = operator_api.post("/api/v1/clients/", {"name": "Beta", "slug": "beta"}, format="json")
    assert created.status_code == 201 and created.json()["audit_previews"] is True


def test_an_admin_changes_the_audit_policy(api, acme):
    answer = api.patch(f"/api/v1/clients/{acme.pk}/", {"audit_previews": False, "audit_retention_days": 7},
                       format="json")  # fmt: skip
    assert answer.status_code == 200
    acme.refresh_from_db()
    assert (acme.audit_previews, acme.audit_retention_days) == (False, 7)


def test_the_schema_says_the_audit_fields_are_for_admins(api):
    schema = api.get("/api/schema/?format=json").json()
    fields = schema["components"]["schemas"]["Client"]["properties"]
    assert fields["audit_previews"]["description"].endswith("Admins only.")
