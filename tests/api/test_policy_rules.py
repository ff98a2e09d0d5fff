"""Policy rules over the management API: conditions checked on save, order, the tester, tags on clients and keys."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from keys.models import PolicyRule


def rule(**fields):
    return {"name": "office only", "effect": "deny", "condition": "!ip_in(request.ip, ['10.0.0.0/8'])", **fields}


@pytest.mark.parametrize("persona", ["api", "operator_api"])
def test_admins_and_operators_manage_rules_and_the_trail_keeps_each_change(request, persona):
    api = request.getfixturevalue(persona)
    created = api.post("/api/v1/policy-rules/", rule(position=10), format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["effect"], body["final"], body["dry_run"], body["is_active"]) == ("deny", False, False, True)
    url = f"/api/v1/policy-rules/{body['id']}/"
    assert api.patch(url, {"dry_run": True}, format="json").json()["dry_run"] is True
    assert api.delete(url).status_code == 204
    actions = AdminAction.objects.filter(object_type="keys.policyrule").order_by("id")
    assert [a.action for a in actions] == ["create", "update", "delete"]


def test_compliance_staff_read_rules_but_do_not_change_them(compliance_api, db):
    PolicyRule.objects.create(**rule())
    assert compliance_api.get("/api/v1/policy-rules/").json()["results"][0]["name"] == "office only"
    assert compliance_api.post("/api/v1/policy-rules/", rule(name="x"), format="json").status_code == 403


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        ("request.agent ==", "Line 1, column 17"),
        ("request.secret == 'x'", "no field 'secret'"),
        ("env.HOME == 'x'", "Unknown name env"),
        ("system('ls')", "Unknown function system"),
        ("request.body_bytes + 'x' == 1", "fails on a request"),
        ("request.agent", "true or false"),
        ("", "This field may not be blank."),
    ],
)
def test_a_condition_is_checked_on_save_and_a_bad_one_is_a_400_saying_why(api, condition, says):
    response = api.post("/api/v1/policy-rules/", rule(condition=condition), format="json")
    assert response.status_code == 400
    assert says in " ".join(response.json()["condition"])
    assert not PolicyRule.objects.exists()


def test_only_an_allow_rule_is_final(api, db):
    response = api.post("/api/v1/policy-rules/", rule(final=True), format="json")
    assert response.status_code == 400
    assert "final" in response.json()
    allowed = api.post("/api/v1/policy-rules/", rule(effect="allow", final=True), format="json")
    assert allowed.status_code == 201
    flipped = api.patch(f"/api/v1/policy-rules/{allowed.json()['id']}/", {"effect": "deny"}, format="json")
    assert flipped.status_code == 400


def test_the_tester_says_which_rule_decides_and_what_each_made_of_the_request(api, db):
    PolicyRule.objects.create(name="office", effect="allow", final=True, position=1,
                              condition="ip_in(request.ip, ['10.0.0.0/8'])")  # fmt: skip
    PolicyRule.objects.create(name="watch", effect="deny", dry_run=True, position=2, condition="true")
    PolicyRule.objects.create(name="finance only", effect="deny", position=3,
                              condition="request.agent == 'ledger' && !('finance' in client.tags)")  # fmt: skip
    PolicyRule.objects.create(name="after", effect="deny", position=4, condition="false")
    asked = {"context": {"request": {"agent": "ledger", "ip": "192.0.2.1"}, "client": {"tags": ["ops"]}}}
    body = api.post("/api/v1/policy-rules/test/", asked, format="json").json()
    assert (body["allowed"], body["denied_by"]) == (False, "finance only")
    assert body["notes"] == {"denied_by": "finance only", "would_deny": ["watch"]}
    assert [(r["name"], r["outcome"]) for r in body["rules"]] == [
        ("office", "not matched"), ("watch", "matched"), ("finance only", "matched"), ("after", "not reached"),
    ]  # fmt: skip
    office = api.post("/api/v1/policy-rules/test/", {"context": {"request": {"ip": "10.0.0.9"}}}, format="json")
    assert (office.json()["allowed"], office.json()["notes"]) == (True, {"allowed_by": "office"})


@pytest.mark.parametrize(
    ("context", "says"),
    [
        ([], "JSON object"),
        ({"user": {}}, "Unknown name user"),
        ({"request": {"secret": 1}}, "no field 'secret'"),
        ({"request": {"body_bytes": "big"}}, "whole number"),
        ({"client": {"tags": "finance"}}, "list of strings"),
        ({"now": "yesterday"}, "ISO 8601"),
        ({"now": "2026-01-05T09:30:00"}, "offset"),
    ],
)
def test_the_tester_refuses_a_context_that_is_not_one(api, db, context, says):
    response = api.post("/api/v1/policy-rules/test/", {"context": context}, format="json")
    assert response.status_code == 400
    assert says in response.json()["context"][0]


def test_clients_and_keys_carry_tags_checked_like_any_field(api, acme):
    assert api.patch(f"/api/v1/clients/{acme.pk}/", {"tags": ["finance", "eu"]}, format="json").json()["tags"] == [
        "finance", "eu",
    ]  # fmt: skip
    for bad in (["a", "a"], [" padded"], ["x" * 51], ["nul\x00"], "finance", [1]):
        assert api.patch(f"/api/v1/clients/{acme.pk}/", {"tags": bad}, format="json").status_code == 400, bad
    key = api.post("/api/v1/keys/", {"client": acme.pk, "allowed_agents": ["*"], "tags": ["ci"]}, format="json")
    assert key.status_code == 201, key.json()
    assert key.json()["tags"] == ["ci"]
    bad_roles = api.patch(f"/api/v1/keys/{key.json()['id']}/", {"roles": ["nul\x00"]}, format="json")
    assert bad_roles.status_code == 400


def test_json_nested_too_deeply_is_a_400_not_a_500(api, db):
    deep = "[" * 50_000 + "]" * 50_000
    response = api.post("/api/v1/policy-rules/test/", data=deep, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_a_lone_surrogate_quoted_back_in_an_error_is_a_400_not_a_500(api, db):
    body = '{"name": "x", "effect": "\\ud800", "condition": "true"}'
    response = api.post("/api/v1/policy-rules/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert "effect" in response.json()
    assert not PolicyRule.objects.exists()


def test_a_cost_center_or_plan_change_reaches_the_key_snapshots_policy_rules_read(db, acme, monkeypatch):
    from keys import signals
    from keys.models import CostCenter, Plan
    from keys.services import issue_key

    center = CostCenter.objects.create(name="Finance", slug="finance")
    acme.cost_center = center
    acme.save()
    plan = Plan.objects.create(name="Pro", slug="pro")
    key, _ = issue_key(acme, plan=plan, allowed_agents=["*"])
    changed = []
    monkeypatch.setattr(signals, "key_changed", lambda key_id, key_hash: changed.append(key_id))
    center.slug = "finance-eu"
    center.save()
    plan.slug = "pro-2"
    plan.save()
    plan.delete()
    center.delete()
    assert changed == [key.pk] * 4
