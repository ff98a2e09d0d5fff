"""The console's cost center and plan pages, and plans on the key form, per role."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AdminAction
from billing.models import Budget, UsageRecord
from keys.models import ApiKey, Client, CostCenter, Plan


@pytest.fixture
def research_team(db):
    return CostCenter.objects.create(name="Research team", slug="research-team", code="RT-1")


@pytest.fixture
def pro(db):
    return Plan.objects.create(
        name="Pro", slug="pro", requests_per_minute=600, requests_per_day=10_000, tokens_per_minute=500_000,
        max_concurrent=20, monthly_budget_usd=Decimal("50.00"),
    )  # fmt: skip


def spend(client, usd: str, cost_center=None, when=None):
    return UsageRecord.objects.create(
        request_id=f"u-{usd}", created_at=when or timezone.now(), client=client, cost_center=cost_center,
        agent="t-research", model="gpt-x", input_tokens=1, output_tokens=1, cost_usd=Decimal(usd),
    )  # fmt: skip


def plan_data(**fields):
    data = {"name": "Team", "slug": "team", "requests_per_minute": "120", "requests_per_day": "5000",
            "tokens_per_minute": "200000", "max_concurrent": "8", "monthly_budget_usd": "25"}  # fmt: skip
    return {**data, **fields}


def key_data(**fields):
    """The key form with every limit left blank, as it is first shown."""
    data = {"name": "ci", "all_agents": "on", "models_text": "*", "plan": "", "requests_per_minute": "",
            "requests_per_day": "", "tokens_per_minute": "", "max_concurrent": ""}  # fmt: skip
    return {**data, **fields}


# --- access -------------------------------------------------------------------------------------------------------


def test_every_role_reads_cost_centers_and_plans_and_a_user_without_a_role_gets_403(
    admin, operator, compliance, nobody, research_team, pro
):
    for url in ["/console/cost-centers/", f"/console/cost-centers/{research_team.pk}/", "/console/plans/"]:
        for browser in (admin, operator, compliance):
            assert browser.get(url).status_code == 200, url
        assert nobody.get(url).status_code == 403, url


@pytest.mark.parametrize("who", ["compliance", "nobody"])
def test_only_managing_roles_change_cost_centers_and_plans(request, who, operator, research_team, pro):
    browser = request.getfixturevalue(who)
    center, plan = f"/console/cost-centers/{research_team.pk}", f"/console/plans/{pro.pk}"
    pages = ["/console/cost-centers/new/", f"{center}/edit/", f"{center}/delete/", "/console/plans/new/",
             f"{plan}/edit/", f"{plan}/delete/"]  # fmt: skip
    for url in pages:
        assert operator.get(url).status_code == 200, url
        assert browser.get(url).status_code == 403, url
        assert browser.post(url, {"name": "Hacked", "slug": "hacked"}).status_code == 403, url
    assert CostCenter.objects.get().name == "Research team" and Plan.objects.get().name == "Pro"
    assert not AdminAction.objects.exists()


def test_readers_see_no_change_buttons(compliance, research_team, pro):
    for url in ["/console/cost-centers/", f"/console/cost-centers/{research_team.pk}/", "/console/plans/"]:
        page = compliance.get(url).content.decode()
        assert "/new/" not in page and "/edit/" not in page and "/delete/" not in page, url


# --- cost centers -------------------------------------------------------------------------------------------------


def test_the_cost_center_list_shows_clients_and_this_months_spend(compliance, acme, research_team):
    acme.cost_center = research_team
    acme.save()
    Client.objects.create(name="Globex", slug="globex", cost_center=research_team)
    CostCenter.objects.create(name="Marketing", slug="marketing")
    spend(acme, "12.5", cost_center=research_team)
    spend(acme, "7.5")  # made before acme joined the team: not attributed to it
    spend(acme, "99", cost_center=research_team, when=timezone.now() - timezone.timedelta(days=40))
    page = compliance.get("/console/cost-centers/").content.decode()
    row = re.search(rf'<tr data-cost-center="{research_team.pk}">.*?</tr>', page, re.S).group(0)
    assert "Research team" in row and "RT-1" in row and '<td class="num">2</td>' in row and "$12.5000" in row
    assert "Marketing" in page


def test_an_operator_creates_and_edits_a_cost_center_and_the_trail_says_so(operator):
    response = operator.post("/console/cost-centers/new/", {"name": "Platform", "slug": "platform", "code": "P-9"})
    center = CostCenter.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/console/cost-centers/{center.pk}/"
    operator.post(f"/console/cost-centers/{center.pk}/edit/", {"name": "Platform team", "slug": "platform", "code": ""})
    center.refresh_from_db()
    assert center.name == "Platform team" and center.code == ""
    created, updated = AdminAction.objects.order_by("id")
    assert created.action == "create" and created.object_type == "keys.costcenter"
    assert created.changes["code"] == [None, "P-9"]
    assert updated.changes["name"] == ["Platform", "Platform team"] and updated.changes["code"] == ["P-9", ""]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "This field is required."),
        ({"slug": "research-team"}, "Cost center with this Slug already exists."),
        ({"slug": "has spaces"}, "Enter a valid “slug”"),
    ],
)
def test_a_bad_cost_center_shows_the_error_with_400_and_saves_nothing(operator, research_team, fields, message):
    response = operator.post("/console/cost-centers/new/", {"name": "X", "slug": "x", "code": "", **fields})
    assert response.status_code == 400 and message in response.content.decode()
    assert CostCenter.objects.count() == 1 and not AdminAction.objects.exists()


def test_the_cost_center_page_shows_its_clients_and_budgets(compliance, acme, research_team):
    acme.cost_center = research_team
    acme.save()
    budget = Budget.objects.create(scope=Budget.COST_CENTER, cost_center=research_team, limit_usd=Decimal(40))
    spend(acme, "10", cost_center=research_team)
    page = compliance.get(f"/console/cost-centers/{research_team.pk}/").content.decode()
    assert f'<a href="/console/clients/{acme.pk}/">Acme</a>' in page
    row = re.search(rf'<tr data-budget="{budget.pk}">.*?</tr>', page, re.S).group(0)
    assert "$40.00" in row and "$10.0000" in row and "25%" in row


def test_a_client_is_put_in_a_cost_center_from_its_form(operator, research_team):
    form = operator.get(f"/console/clients/new/?cost_center={research_team.pk}").content.decode()
    assert re.search(rf'<option value="{research_team.pk}" selected>Research team</option>', form)
    data = {"name": "Beta", "slug": "beta", "contact": "", "cost_center": research_team.pk, "is_active": "on"}
    operator.post("/console/clients/new/", data)
    client = Client.objects.get(slug="beta")
    assert client.cost_center == research_team
    assert AdminAction.objects.get().changes["cost_center"] == [None, research_team.pk]
    assert "Research team" in operator.get(f"/console/clients/{client.pk}/").content.decode()
    assert "Research team" in operator.get("/console/clients/").content.decode()


def test_deleting_a_cost_center_keeps_its_clients_without_one_and_the_trail_says_so(operator, acme, research_team):
    acme.cost_center = research_team
    acme.save()
    budget = Budget.objects.create(scope=Budget.COST_CENTER, cost_center=research_team, limit_usd=Decimal(40))
    confirm = operator.get(f"/console/cost-centers/{research_team.pk}/delete/").content.decode()
    assert "keep existing; their cost center becomes empty" in confirm and "1 budget" in confirm
    response = operator.post(f"/console/cost-centers/{research_team.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/console/cost-centers/"
    acme.refresh_from_db()
    assert acme.cost_center is None and not CostCenter.objects.exists() and not Budget.objects.exists()
    actions = {(a.action, a.object_type, a.object_id): a.changes for a in AdminAction.objects.all()}
    assert actions[("delete", "keys.costcenter", str(research_team.pk))]["name"] == ["Research team", None]
    assert actions[("update", "keys.client", str(acme.pk))]["cost_center"] == [research_team.pk, None]
    assert actions[("delete", "billing.budget", str(budget.pk))]["limit_usd"] == ["40.00", None]
    assert len(actions) == 3


# --- plans --------------------------------------------------------------------------------------------------------


def test_the_plan_list_shows_the_defaults_and_the_number_of_keys(compliance, acme, pro):
    from keys.services import issue_key

    issue_key(acme, plan=pro, allowed_agents=["*"])
    page = compliance.get("/console/plans/").content.decode()
    row = re.search(rf'<tr data-plan="{pro.pk}">.*?</tr>', page, re.S).group(0)
    for text in ["Pro", "600", "10000", "500000", "20", "$50.00", '<td class="num">1</td>']:
        assert text in row, text


def test_an_operator_creates_edits_and_deletes_a_plan_and_the_trail_says_so(operator):
    response = operator.post("/console/plans/new/", plan_data())
    assert response.status_code == 302 and response["Location"] == "/console/plans/"
    plan = Plan.objects.get()
    assert (plan.requests_per_minute, plan.requests_per_day, plan.monthly_budget_usd) == (120, 5000, Decimal(25))
    operator.post(f"/console/plans/{plan.pk}/edit/", plan_data(requests_per_minute="240", monthly_budget_usd=""))
    plan.refresh_from_db()
    assert plan.requests_per_minute == 240 and plan.monthly_budget_usd is None
    operator.post(f"/console/plans/{plan.pk}/delete/")
    assert not Plan.objects.exists()
    created, updated, deleted = AdminAction.objects.order_by("id")
    assert created.action == "create" and created.changes["monthly_budget_usd"] == [None, "25.00"]
    assert updated.changes["requests_per_minute"] == [120, 240]
    assert updated.changes["monthly_budget_usd"] == ["25.00", None]
    assert deleted.action == "delete" and deleted.object_type == "keys.plan"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"requests_per_minute": "0"}, "greater than or equal to 1"),
        ({"tokens_per_minute": ""}, "This field is required."),
        ({"requests_per_day": "-1"}, "greater than or equal to 0"),
        ({"monthly_budget_usd": "-5"}, "greater than or equal to 0"),
        ({"slug": ""}, "This field is required."),
    ],
)
def test_a_bad_plan_shows_the_error_with_400_and_saves_nothing(operator, fields, message):
    response = operator.post("/console/plans/new/", plan_data(**fields))
    assert response.status_code == 400 and message in response.content.decode()
    assert not Plan.objects.exists() and not AdminAction.objects.exists()


def test_deleting_a_plan_keeps_its_keys_limits_and_budgets(operator, acme, pro):
    operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(plan=pro.pk))
    key = ApiKey.objects.get()
    AdminAction.objects.all().delete()
    assert "keep their limits and budgets" in operator.get(f"/console/plans/{pro.pk}/delete/").content.decode()
    operator.post(f"/console/plans/{pro.pk}/delete/")
    key.refresh_from_db()
    assert key.plan is None and key.requests_per_minute == 600 and key.requests_per_day == 10_000
    assert Budget.objects.get(api_key=key).limit_usd == Decimal("50.00")
    actions = {(a.action, a.object_type): a.changes for a in AdminAction.objects.all()}
    assert actions[("update", "keys.apikey")]["plan"] == [pro.pk, None]
    assert ("delete", "keys.plan") in actions and len(actions) == 2


# --- the key form -------------------------------------------------------------------------------------------------


def test_a_new_key_on_a_plan_takes_the_limits_left_blank_from_it(operator, acme, pro):
    response = operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(plan=pro.pk))
    assert response.status_code == 302
    key = ApiKey.objects.get()
    assert key.plan == pro
    assert (key.requests_per_minute, key.requests_per_day, key.tokens_per_minute, key.max_concurrent) == (
        600, 10_000, 500_000, 20,
    )  # fmt: skip


def test_limits_typed_on_the_form_override_the_plan(operator, acme, pro):
    data = key_data(plan=pro.pk, requests_per_minute="30", requests_per_day="0", max_concurrent="0")
    operator.post(f"/console/clients/{acme.pk}/keys/new/", data)
    key = ApiKey.objects.get()
    assert (key.requests_per_minute, key.requests_per_day, key.tokens_per_minute, key.max_concurrent) == (
        30, 0, 500_000, 0,
    )  # fmt: skip


def test_a_key_without_a_plan_takes_the_defaults_for_blank_limits(operator, acme):
    operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(requests_per_day="1000"))
    key = ApiKey.objects.get()
    assert key.plan is None and key.requests_per_day == 1000
    assert (key.requests_per_minute, key.tokens_per_minute, key.max_concurrent) == (60, 100_000, 10)
    assert not Budget.objects.exists()


def test_a_plan_with_a_budget_gives_the_new_key_its_own_budget_and_the_trail_says_so(operator, acme, pro):
    page = operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(plan=pro.pk), follow=True).content.decode()
    key = ApiKey.objects.get()
    budget = Budget.objects.get()
    assert (budget.scope, budget.api_key, budget.limit_usd, budget.period, budget.mode) == (
        "key", key, Decimal("50.00"), "monthly", "hard",
    )  # fmt: skip
    assert f"/console/budgets/{budget.pk}/" in page and "Pro" in page
    created = {a.object_type: a for a in AdminAction.objects.filter(action="create")}
    assert created["keys.apikey"].changes["plan"] == [None, pro.pk]
    assert created["billing.budget"].changes["api_key"] == [None, key.pk]


def test_a_bad_limit_on_the_key_form_is_refused_and_nothing_is_made(operator, acme, pro):
    response = operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(plan=pro.pk, requests_per_day="-3"))
    assert response.status_code == 400 and "greater than or equal to 0" in response.content.decode()
    response = operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(plan="999999"))
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert not ApiKey.objects.exists() and not Budget.objects.exists() and not AdminAction.objects.exists()


def test_the_key_form_offers_the_plans_and_their_limits(operator, acme, pro):
    page = operator.get(f"/console/clients/{acme.pk}/keys/new/").content.decode()
    assert f'<option value="{pro.pk}">Pro</option>' in page and 'name="requests_per_day"' in page
    assert '"requests_per_minute": 600' in page  # the placeholders' source


def test_the_clients_key_list_shows_plan_and_requests_per_day(operator, acme, pro):
    operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(plan=pro.pk))
    operator.post(f"/console/clients/{acme.pk}/keys/new/", key_data(name="plain"))
    page = operator.get(f"/console/clients/{acme.pk}/").content.decode()
    on_plan = re.search(r"<tr><td class=\"mono\">[^<]+</td><td>ci</td>.*?</tr>", page, re.S).group(0)
    plain = re.search(r"<tr><td class=\"mono\">[^<]+</td><td>plain</td>.*?</tr>", page, re.S).group(0)
    assert "<td>Pro</td>" in on_plan and '<td class="num">10000</td>' in on_plan
    assert "<td>\u2013</td>" in plain and "no limit" in plain
