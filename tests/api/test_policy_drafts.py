"""Draft policy rules and what-ifs over the management API: drafts checked like rules, one draft a rule, publishing all
or none with each change in the trail, what-ifs read by every role and asked for by managers."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from audit.models import AdminAction, AuditRecord
from keys.models import PolicyRule
from keys.policy import compile_rules
from keys.policy_drafts import draft_set, live_rules

URL = "/api/v1/policy-rules/"


def rule(**fields):
    return {"name": "office only", "effect": "deny", "condition": "!ip_in(request.ip, ['10.0.0.0/8'])", **fields}


def test_a_draft_is_not_in_force_and_the_draft_set_replaces_its_rule(api, db):
    live = api.post(URL, rule(position=10), format="json").json()
    new = api.post(URL, rule(name="no code", condition="request.agent == 'code'", draft=True), format="json")
    assert new.status_code == 201, new.json()
    change = api.post(URL, rule(draft=True, draft_of=live["id"], condition="true", position=5), format="json")
    assert change.status_code == 201, change.json()
    assert [r.name for r in live_rules()] == ["office only"]
    assert [(r.name, r.condition) for r in draft_set()] == [
        ("office only", "true"),
        ("no code", "request.agent == 'code'"),
    ]
    assert [r.name for r in compile_rules(PolicyRule.objects.filter(draft=False)).rules] == ["office only"]
    assert api.get(URL, {"draft": "true"}).json()["count"] == 2


def test_drafts_are_checked_like_rules_and_each_rule_has_one(api, db):
    live = api.post(URL, rule(), format="json").json()
    other = api.post(URL, rule(name="other"), format="json").json()
    first = api.post(URL, rule(draft=True, draft_of=live["id"]), format="json")
    assert first.status_code == 201
    cases = [
        (rule(draft=True, draft_of=live["id"]), "draft_of"),  # a second draft of it
        (rule(draft_of=other["id"]), "draft_of"),  # not marked a draft
        (rule(name="x", draft=True, draft_of=first.json()["id"]), "draft_of"),  # a draft of a draft
        (rule(name="other", draft=True, draft_of=live["id"] + 100), "draft_of"),  # no such rule
        (rule(draft=True), "name"),  # a new draft with a rule's name
        (rule(name="x", draft=True, condition="request.nope"), "condition"),
        (rule(name="x", draft=True, final=True), "final"),
    ]
    for body, field in cases:
        answer = api.post(URL, body, format="json")
        assert answer.status_code == 400, (body, answer.json())
        assert field in answer.json() or field in str(answer.json()), (body, answer.json())
    # A draft of "other" renamed to the name of "office only" would clash once published.
    clash = api.post(URL, rule(name="office only", draft=True, draft_of=other["id"]), format="json")
    assert clash.status_code == 400 and "name" in clash.json()
    draft_url = f"{URL}{first.json()['id']}/"
    assert api.patch(draft_url, {"draft": False}, format="json").status_code == 400
    assert api.patch(draft_url, {"draft_of": other["id"]}, format="json").status_code == 400
    assert api.patch(draft_url, {"condition": "false"}, format="json").status_code == 200


def test_publishing_puts_every_draft_in_force_in_one_step_and_the_trail_says_so(api, db):
    live = api.post(URL, rule(), format="json").json()
    api.post(URL, rule(draft=True, draft_of=live["id"], condition="false", message="changed"), format="json")
    api.post(URL, rule(name="new one", condition="true", draft=True, dry_run=True), format="json")
    published = api.post(f"{URL}publish/")
    assert published.status_code == 200, published.json()
    assert sorted(r["name"] for r in published.json()["published"]) == ["new one", "office only"]
    assert not PolicyRule.objects.filter(draft=True).exists()
    kept = PolicyRule.objects.get(pk=live["id"])  # the rule keeps its id (and its history)
    assert (kept.condition, kept.message) == ("false", "changed")
    actions = list(AdminAction.objects.filter(action="publish").values_list("object_repr", flat=True))
    assert sorted(actions) == ["new one", "office only"]
    assert api.post(f"{URL}publish/").json() == {"published": []}


def test_a_rule_deleted_takes_its_draft_with_it(api, db):
    live = api.post(URL, rule(), format="json").json()
    api.post(URL, rule(draft=True, draft_of=live["id"]), format="json")
    assert api.delete(f"{URL}{live['id']}/").status_code == 204
    assert not PolicyRule.objects.exists()


def test_compliance_staff_read_what_ifs_but_only_managers_ask_for_them(
    api, compliance_api, operator_api, django_capture_on_commit_callbacks, db
):
    AuditRecord.objects.create(
        request_id="r1", created_at=timezone.now() - timedelta(minutes=5), method="POST", path="/v1/agent/invoke",
        status=200, client_slug="acme",
        details={"context": {"agent": "ledger", "minute": int(timezone.now().timestamp()) // 60}},
    )  # fmt: skip
    AuditRecord.objects.create(request_id="r0", created_at=timezone.now() - timedelta(minutes=6), method="GET",
                               path="/v1/models", status=200, details={})  # fmt: skip
    api.post(URL, rule(name="no ledger", condition="request.agent == 'ledger'", draft=True), format="json")
    assert compliance_api.post("/api/v1/policy-what-ifs/", {"window": "hour"}, format="json").status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        asked = operator_api.post("/api/v1/policy-what-ifs/", {"window": "hour"}, format="json")
    assert asked.status_code == 202, asked.json()
    job = compliance_api.get(f"/api/v1/policy-what-ifs/{asked.json()['id']}/").json()
    assert job["status"] == "done" and job["requester"]
    results = job["results"]
    assert (results["replayed"], results["without_context"], results["newly_denied"]) == (1, 1, 1)
    assert results["newly_by_rule"] == [["no ledger", 1]] and results["newly_by_agent"] == [["ledger", 1]]
    assert results["examples"][0]["request_id"] == "r1"
    assert [r["name"] for r in job["draft_rules"]] == ["no ledger"] and job["live_rules"] == []
    assert AdminAction.objects.filter(action="what-if").count() == 1


def test_the_tester_runs_the_drafts_when_asked(api, db):
    api.post(URL, rule(name="no ledger", condition="request.agent == 'ledger'", draft=True), format="json")
    context = {"request": {"agent": "ledger"}}
    live = api.post(f"{URL}test/", {"context": context}, format="json").json()
    drafted = api.post(f"{URL}test/", {"context": context, "drafts": True}, format="json").json()
    assert (live["allowed"], drafted["allowed"], drafted["denied_by"]) == (True, False, "no ledger")


def test_compliance_staff_try_the_rules_but_change_none(compliance_api, api, db):
    api.post(URL, rule(name="no ledger", condition="request.agent == 'ledger'"), format="json")
    tried = compliance_api.post(f"{URL}test/", {"context": {"request": {"agent": "ledger"}}}, format="json")
    assert tried.status_code == 200 and tried.json()["denied_by"] == "no ledger"
    assert compliance_api.post(f"{URL}publish/").status_code == 403
    assert compliance_api.post(URL, rule(name="x"), format="json").status_code == 403
