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


# --- drafts, publishing and what-ifs -----------------------------------------------------------------------------


def test_a_change_is_drafted_from_the_rule_and_the_rule_in_force_is_untouched(operator, db):
    live = PolicyRule.objects.create(name="office only", effect="deny", position=10, condition="false")
    form = operator.get(f"/console/policies/{live.pk}/draft/").content.decode()
    assert "Draft a change to office only" in form and "false</textarea>" in form
    data = {"name": "office only", "position": "10", "effect": "deny", "is_active": "on", "condition": "true"}
    assert operator.post(f"/console/policies/{live.pk}/draft/", data).status_code == 302
    draft = PolicyRule.objects.get(draft=True)
    assert (draft.draft_of_id, draft.condition) == (live.pk, "true")
    live.refresh_from_db()
    assert live.condition == "false"
    # Asking again opens the draft there is; the list shows it under Drafts, naming the rule it changes.
    assert operator.get(f"/console/policies/{live.pk}/draft/")["Location"] == f"/console/policies/{draft.pk}/edit/"
    page = operator.get("/console/policies/").content.decode()
    drafts = page[page.index('id="draft-table"') :]
    assert 'data-draft="office only"' in drafts and "Publish 1 draft" in page
    assert operator.get(f"/console/policies/{draft.pk}/edit/").content.decode().count('name="draft"') == 0


def test_a_new_rule_saved_as_a_draft_is_published_with_the_others(operator, db):
    data = {"name": "no code", "position": "10", "effect": "deny", "is_active": "on", "draft": "on",
            "condition": "request.agent == 'code'"}  # fmt: skip
    assert operator.post("/console/policies/new/", data).status_code == 302
    assert PolicyRule.objects.get().draft is True
    confirm = operator.get("/console/policies/publish/").content.decode()
    assert 'data-draft="no code"' in confirm
    assert operator.post("/console/policies/publish/").status_code == 302
    assert PolicyRule.objects.get().draft is False


def test_what_ifs_are_asked_for_by_managers_and_read_by_every_role(operator, compliance, nobody, db,
                                                                   django_capture_on_commit_callbacks):  # fmt: skip
    from keys.models import PolicyWhatIf

    AuditRecord.objects.create(
        request_id="r-ledger", created_at=timezone.now(), method="POST", path="/v1/agent/invoke", status=200,
        client_slug="acme", details={"context": {"agent": "ledger", "minute": int(timezone.now().timestamp()) // 60}},
    )  # fmt: skip
    PolicyRule.objects.create(name="no ledger", effect="deny", condition="request.agent == 'ledger'", draft=True)
    assert compliance.post("/console/policies/what-if/", {"window": "hour"}).status_code == 403
    bad = operator.post("/console/policies/what-if/", {"window": "", "start": "2026-01-02 00:00", "end": "2026-01-01"})
    assert bad.status_code == 400 and "must start before it ends" in bad.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        asked = operator.post("/console/policies/what-if/", {"window": "day"})
    job = PolicyWhatIf.objects.get()
    assert asked["Location"] == f"/console/policies/what-if/{job.pk}/"
    page = compliance.get(asked["Location"]).content.decode()
    assert 'data-fact="newly_denied"><strong>1</strong>' in page
    assert "r-ledger" in page and 'http-equiv="refresh"' not in page
    assert "no ledger" in page[page.index('id="by-rule"') :]
    assert job.pk.hex[:8] in compliance.get("/console/policies/what-if/").content.decode().replace("-", "")
    assert nobody.get(asked["Location"]).status_code == 403


def test_what_ifs_asked_in_the_console_count_against_the_users_export_rate(operator, db, monkeypatch):
    from django.core.cache import cache

    from gateway_project.throttles import ActionRateThrottle
    from keys.models import PolicyWhatIf

    monkeypatch.setattr(ActionRateThrottle, "THROTTLE_RATES", {**ActionRateThrottle.THROTTLE_RATES, "export": "1/hour"})
    cache.clear()
    try:
        assert operator.post("/console/policies/what-if/", {"window": "hour"}).status_code == 302
        refused = operator.post("/console/policies/what-if/", {"window": "hour"})
        assert refused.status_code == 429 and "try again in" in refused.content.decode()
        assert PolicyWhatIf.objects.count() == 1
    finally:
        cache.clear()


def test_a_running_what_if_page_refreshes_itself(compliance, db):
    from keys.models import PolicyWhatIf

    job = PolicyWhatIf.objects.create(window_start=timezone.now(), window_end=timezone.now(), status="running",
                                      records_total=200, records_scanned=50)  # fmt: skip
    page = compliance.get(f"/console/policies/what-if/{job.pk}/").content.decode()
    assert 'http-equiv="refresh"' in page and "25% · 50 of 200 records read" in page


# --- guardrails --------------------------------------------------------------------------------------------------


def test_a_guardrail_is_made_on_the_console_and_the_list_counts_its_decisions(operator, compliance, db):
    from keys.models import Guardrail

    data = {"name": "no pii", "position": "10", "stage": "both", "detectors": ["email", "card"],
            "national_ids": ["us_ssn"], "injection_threshold": "50", "action": "redact", "clients": "acme, beta",
            "cost_centers": "", "agents": "", "hook_url": "", "hook_timeout_ms": "2000", "is_active": "on"}  # fmt: skip
    bad = operator.post("/console/guardrails/new/", {**data, "detectors": [], "name": "nothing"})
    assert bad.status_code == 400 and "Choose a detector, or give a hook." in bad.content.decode()
    assert operator.post("/console/guardrails/new/", data).status_code == 302
    made = Guardrail.objects.get()
    assert (made.detectors, made.clients, made.stage) == (["email", "card"], ["acme", "beta"], "both")
    for action in ("redact", "redact", "block"):
        AuditRecord.objects.create(
            request_id=uuid.uuid4().hex, created_at=timezone.now(), method="POST", path="/v1/agent/invoke",
            status=200, details={"guardrails": [{"guardrail": "no pii", "stage": "input", "action": action}]},
        )  # fmt: skip
    page = compliance.get("/console/guardrails/").content.decode()
    row = page[page.index('data-guardrail="no pii"') :]
    cells = [c.split("<")[0] for c in row.split('<td class="num">')[2:5]]
    assert cells == ["1", "2", "0"]


def test_the_guardrail_tester_is_open_to_every_reader(compliance, db):
    from keys.models import Guardrail

    Guardrail.objects.create(name="no cards", detectors=["card"], action="block")
    page = compliance.post("/console/guardrails/test/", {"text": "pay 4111 1111 1111 1111", "stage": "input"})
    text = page.content.decode()
    assert page.status_code == 200 and 'data-result="no cards"' in text and "card \u00d7 1" in text
    assert "4111 1111" not in text.split('id="guardrail-results"')[1]
