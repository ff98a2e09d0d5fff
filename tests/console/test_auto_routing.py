"""The console's Auto-routing page: list, create, edit, reorder and delete rules, per role, with validation."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from routing.models import Agent, AutoRouteRule


@pytest.fixture
def provider(db):
    return Agent.objects.create(slug="t-openai", name="OpenAI", kind="openai", upstream_url="http://10.0.0.5:9000",
                                served_models=["gpt-4o", "gpt-4o-mini"], capabilities=["tools"])  # fmt: skip


def rule_data(**fields):
    data = {"name": "code questions", "position": "10", "enabled": "on", "agent": "", "model": "gpt-4o",
            "min_prompt_tokens": "", "max_prompt_tokens": "", "min_complexity": "0.3", "max_complexity": "",
            "keywords": "python, stack trace", "asks_for": ["tools"], "max_input_per_million": "",
            "max_output_per_million": "20"}  # fmt: skip
    return {**data, **fields}


def test_every_role_reads_the_rules_and_only_managers_change_them(compliance, nobody, provider):
    AutoRouteRule.objects.create(name="long prompts", position=10, model="gpt-4o", min_prompt_tokens=2000)
    page = compliance.get("/console/auto-routing/").content.decode()
    assert "long prompts" in page and "gpt-4o" in page and "New rule" not in page
    assert 'href="/console/auto-routing/"' in page  # in the Routing area's navigation
    assert "not served" not in page
    provider.is_active = False
    provider.save()
    assert "not served" in compliance.get("/console/auto-routing/").content.decode()
    assert nobody.get("/console/auto-routing/").status_code == 403
    assert compliance.post("/console/auto-routing/new/", rule_data()).status_code == 403
    assert AutoRouteRule.objects.count() == 1


def test_an_operator_creates_a_rule_and_the_trail_records_it(operator, provider):
    response = operator.post("/console/auto-routing/new/", rule_data())
    assert response.status_code == 302 and response["Location"] == "/console/auto-routing/"
    rule = AutoRouteRule.objects.get()
    assert (rule.model, rule.keywords, rule.asks_for, rule.min_complexity) == (
        "gpt-4o", ["python", "stack trace"], ["tools"], 0.3,
    )  # fmt: skip
    action = AdminAction.objects.get()
    assert (action.via, action.action, action.object_type) == ("console", "create", "routing.autorouterule")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"model": "auto"}, "not “auto”"),
        ({"model": "nope"}, "No agent lists this model"),
        ({"keywords": "c++"}, "letters, digits"),
        ({"min_complexity": "2"}, "less than or equal to 1"),
        ({"min_prompt_tokens": "900", "max_prompt_tokens": "10"}, "at least the minimum"),
        ({"is_default": "on"}, "no conditions"),
        ({"agent": "t-openai"}, "default model must be"),
    ],
)
def test_bad_input_shows_the_forms_errors(admin, provider, fields, message):
    response = admin.post("/console/auto-routing/new/", rule_data(**fields))
    assert response.status_code == 400 or (response.status_code == 200 and "errorlist" in response.content.decode())
    assert message in response.content.decode()
    assert not AutoRouteRule.objects.exists()


def test_an_admin_edits_reorders_and_deletes_rules(admin, provider):
    first = AutoRouteRule.objects.create(name="first", position=10, model="gpt-4o")
    second = AutoRouteRule.objects.create(name="second", position=10, model="gpt-4o-mini")  # same position
    page = admin.get(f"/console/auto-routing/{first.pk}/edit/").content.decode()
    assert 'value="first"' in page
    edited = admin.post(f"/console/auto-routing/{first.pk}/edit/", rule_data(name="first", keywords="why, how"))
    assert edited.status_code == 302
    first.refresh_from_db()
    assert first.keywords == ["why", "how"]
    assert admin.post(f"/console/auto-routing/{second.pk}/move/up/").status_code == 302
    assert list(AutoRouteRule.objects.values_list("name", flat=True)) == ["second", "first"]
    admin.post(f"/console/auto-routing/{second.pk}/move/up/")  # already first: nothing moves
    assert list(AutoRouteRule.objects.values_list("name", flat=True)) == ["second", "first"]
    assert admin.post(f"/console/auto-routing/{second.pk}/move/sideways/").status_code == 404
    assert admin.get(f"/console/auto-routing/{second.pk}/delete/").status_code == 200
    assert admin.post(f"/console/auto-routing/{second.pk}/delete/").status_code == 302
    assert list(AutoRouteRule.objects.values_list("name", flat=True)) == ["first"]
    actions = list(AdminAction.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["update", "reorder", "delete"]  # the rule that moved down: the other kept its position
