"""The console's policy pages: the rules with their last day's counts, the form's checks, the tester."""

from __future__ import annotations

import json
import uuid

from django.utils import timezone

from audit.models import AuditRecord
from keys.models import PolicyRule


def record(**policy):
    AuditRecord.objects.create(
        request_id=uuid.uuid4().hex, created_at=timezone.now(), method="POST", path="/v1/agent/invoke", status=403,
        details={"policy": policy},
    )  # fmt: skip


def test_the_rules_page_lists_rules_in_order_with_what_they_did_in_the_last_day(compliance, nobody, db):
    PolicyRule.objects.create(name="second", effect="deny", position=20, condition="false")
    PolicyRule.objects.create(name="first", effect="deny", position=10, condition="true", dry_run=True)
    record(denied_by="second")
    record(denied_by="second", failed=["second"])
    record(would_deny=["first"])
    page = compliance.get("/console/policies/").content.decode()
    assert page.index('data-rule="first"') < page.index('data-rule="second"')
    second = page[page.index('data-rule="second"') :]
    cells = [c.split("<")[0] for c in second.split('<td class="num">')[1:5]]
    assert cells == ["20", "2", "0", "1"]
    assert "dry run" in page
    assert nobody.get("/console/policies/").status_code == 403


def test_a_rule_is_saved_from_the_form_and_a_bad_condition_is_shown_with_its_position(operator, db):
    data = {"name": "office only", "position": "10", "effect": "deny", "is_active": "on",
            "condition": "!ip_in(request.ip, ['10.0.0.0/8'])"}  # fmt: skip
    assert operator.post("/console/policies/new/", data).status_code == 302
    assert PolicyRule.objects.get().name == "office only"
    bad = operator.post("/console/policies/new/", {**data, "name": "broken", "condition": "request.agent =="})
    assert bad.status_code == 400
    assert "Line 1, column 17" in bad.content.decode()
    final_deny = operator.post("/console/policies/new/", {**data, "name": "final deny", "final": "on"})
    assert final_deny.status_code == 400
    assert "Only an allow rule can be final." in final_deny.content.decode()
    assert PolicyRule.objects.count() == 1


def test_the_tester_shows_the_deciding_rule_and_each_outcome(compliance, db):
    PolicyRule.objects.create(name="finance only", effect="deny",
                              condition="request.agent == 'ledger' && !('finance' in client.tags)")  # fmt: skip
    form = compliance.get("/console/policies/test/")
    assert form.status_code == 200 and b"ledger" in form.content  # the example context
    context = {"request": {"agent": "ledger"}, "client": {"tags": ["ops"]}}
    page = compliance.post("/console/policies/test/", {"context": json.dumps(context)}).content.decode()
    assert "refused" in page and "finance only" in page
    assert 'data-outcome="finance only"' in page
    allowed = compliance.post("/console/policies/test/", {"context": json.dumps({"client": {"tags": ["finance"]}})})
    assert "allowed" in allowed.content.decode()
    broken = compliance.post("/console/policies/test/", {"context": "{not json"})
    assert broken.status_code == 400
    assert "Not JSON" in broken.content.decode()


def test_client_and_key_tags_are_edited_as_comma_separated_text(operator, acme):
    from keys.services import issue_key

    data = {"name": "Acme", "slug": "acme", "tags": "finance, eu", "is_active": "on"}
    response = operator.post(f"/console/clients/{acme.pk}/edit/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    acme.refresh_from_db()
    assert acme.tags == ["finance", "eu"]
    assert 'value="finance, eu"' in operator.get(f"/console/clients/{acme.pk}/edit/").content.decode()
    key, _ = issue_key(acme, allowed_agents=["*"])
    assert operator.post(f"/console/keys/{key.pk}/roles/", {"tags": "ci, batch"}).status_code == 302
    key.refresh_from_db()
    assert key.tags == ["ci", "batch"]
    too_long = operator.post(f"/console/keys/{key.pk}/roles/", {"tags": "x" * 60})
    assert too_long.status_code == 400


def test_the_tester_refuses_json_nested_too_deeply(compliance, db):
    response = compliance.post("/console/policies/test/", {"context": "[" * 50_000 + "]" * 50_000})
    assert response.status_code == 400
    assert "nested too deeply" in response.content.decode()
