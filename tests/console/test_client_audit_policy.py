"""What the audit log keeps of a client (previews, retention) is changed by admins only, in the console."""

from __future__ import annotations

from audit.models import AdminAction
from keys.models import Client


def edit(browser, client, **fields):
    data = {"name": client.name, "slug": client.slug, "is_active": "on", **fields}
    return browser.post(f"/console/clients/{client.pk}/edit/", data)


def test_an_operator_sees_the_audit_fields_read_only_and_cannot_change_them(operator, acme):
    form = operator.get(f"/console/clients/{acme.pk}/edit/").content.decode()
    assert 'name="audit_previews"' in form and "Only admins change this." in form
    assert form.count(" disabled") >= 2
    # Previews left unticked and a retention posted anyway: both kept as they were; the rest is saved.
    assert edit(operator, acme, name="Acme Ltd", audit_retention_days="7").status_code == 302
    acme.refresh_from_db()
    assert (acme.name, acme.audit_previews, acme.audit_retention_days) == ("Acme Ltd", True, None)
    change = AdminAction.objects.get(object_type="keys.client", object_id=str(acme.pk))
    assert set(change.changes) == {"name"}


def test_an_operator_creating_a_client_gets_the_default_audit_policy(operator):
    data = {"name": "Beta", "slug": "beta", "is_active": "on", "audit_retention_days": "1"}
    assert operator.post("/console/clients/new/", data).status_code == 302
    beta = Client.objects.get(slug="beta")
    assert (beta.audit_previews, beta.audit_retention_days) == (True, None)


def test_an_admin_changes_previews_and_retention(admin, acme):
    form = admin.get(f"/console/clients/{acme.pk}/edit/").content.decode()
    assert "Only admins change this." not in form
    assert edit(admin, acme, audit_retention_days="7").status_code == 302
    acme.refresh_from_db()
    assert (acme.audit_previews, acme.audit_retention_days) == (False, 7)
