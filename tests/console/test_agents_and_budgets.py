"""The console's agent, budget and price pages and actions, per role."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.test import Client as Browser
from django.utils import timezone

from audit.models import AdminAction
from audit.trail import mask
from billing.models import Budget, ModelPrice, UsageRecord
from keys.models import Client
from routing.models import Agent

SECRET = "sk-upstream-very-secret-0123456789"


@pytest.fixture
def research(db):
    return Agent.objects.create(
        slug="t-research", name="Research", kind="agent", upstream_url="http://10.0.0.5:9000",
        upstream_api_key=SECRET, capabilities=["papers", "search"], timeout_seconds=30, cost_center="R&D",
    )  # fmt: skip


@pytest.fixture
def budget(acme):
    return Budget.objects.create(client=acme, limit_usd=Decimal("100.00"))


def agent_data(**fields):
    data = {"slug": "t-writer", "name": "Writer", "kind": "openai", "upstream_url": "https://llm.example.com/v1",
            "upstream_api_key": "", "served_models": "gpt-x, gpt-x-mini", "default_model": "gpt-x",
            "capabilities": "prose, editing", "timeout_seconds": "45", "cost_center": "Content",
            "is_active": "on"}  # fmt: skip
    return {**data, **fields}


def edit_data(agent: Agent, **fields):
    """The edit form as a browser would submit it unchanged (the key field is always empty)."""
    data = {"slug": agent.slug, "name": agent.name, "kind": agent.kind, "upstream_url": agent.upstream_url,
            "upstream_api_key": "", "served_models": ", ".join(agent.served_models),
            "default_model": agent.default_model, "capabilities": ", ".join(agent.capabilities),
            "timeout_seconds": str(agent.timeout_seconds), "cost_center": agent.cost_center}  # fmt: skip
    if agent.is_active:
        data["is_active"] = "on"
    return {**data, **fields}


def spend(client, usd: str, when=None):
    return UsageRecord.objects.create(
        request_id=f"u-{usd}", created_at=when or timezone.now(), client=client, agent="t-research",
        model="gpt-x", input_tokens=10, output_tokens=10, cost_usd=Decimal(usd),
    )  # fmt: skip


def bar_of(page: str, client: Client) -> re.Match:
    """The spend bar in the budgets page row of ``client``."""
    row = re.search(rf'<tr><td><a href="/console/clients/{client.pk}/">.*?</tr>', page, re.S).group(0)
    return re.search(r'<div class="bar( over)?"[^>]*><span style="width:(\d+)%">', row)


# --- access -------------------------------------------------------------------------------------------------------

READ_PAGES = ["/console/agents/", "/console/budgets/", "/console/prices/"]


@pytest.mark.parametrize("url", READ_PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(db, url):
    response = Browser().get(url)
    assert response.status_code == 302 and response["Location"].startswith("/console/login/")


@pytest.mark.parametrize("url", READ_PAGES)
def test_every_role_reads_the_lists_and_a_user_without_a_role_gets_403(admin, operator, compliance, nobody, url):
    for browser in (admin, operator, compliance):
        assert browser.get(url).status_code == 200
    assert nobody.get(url).status_code == 403


def test_the_navigation_links_agents_and_budgets_for_readers(compliance):
    page = compliance.get("/console/").content.decode()
    assert 'href="/console/agents/"' in page and 'href="/console/budgets/"' in page


def test_only_managing_roles_see_the_change_buttons(operator, compliance, research, budget):
    assert f"/console/agents/{research.pk}/edit/" in operator.get("/console/agents/").content.decode()
    assert f"/console/agents/{research.pk}/edit/" not in compliance.get("/console/agents/").content.decode()
    assert "/delete/" not in compliance.get("/console/budgets/").content.decode()


@pytest.mark.parametrize("who", ["compliance", "nobody"])
def test_compliance_staff_and_users_without_a_role_cannot_change_anything(request, who, acme, research, budget):
    browser = request.getfixturevalue(who)
    price = ModelPrice.objects.get(model="default")
    for url in ["/console/agents/new/", f"/console/agents/{research.pk}/edit/", f"/console/budgets/{acme.pk}/edit/",
                "/console/prices/new/", f"/console/prices/{price.pk}/edit/"]:  # fmt: skip
        assert browser.get(url).status_code == 403, url
    posts = {
        "/console/agents/new/": agent_data(),
        f"/console/agents/{research.pk}/edit/": edit_data(research, name="Hacked"),
        f"/console/agents/{research.pk}/toggle/": {},
        f"/console/budgets/{acme.pk}/edit/": {"limit_usd": "1"},
        f"/console/budgets/{acme.pk}/delete/": {},
        "/console/prices/new/": {"model": "t-new", "input_per_million": "1", "output_per_million": "2"},
        f"/console/prices/{price.pk}/edit/": {"model": "default", "input_per_million": "0", "output_per_million": "0"},
    }
    for url, data in posts.items():
        assert browser.post(url, data).status_code == 403, url
    research.refresh_from_db()
    budget.refresh_from_db()
    price.refresh_from_db()
    assert not Agent.objects.filter(slug="t-writer").exists()
    assert research.name == "Research" and research.is_active
    assert budget.limit_usd == Decimal("100.00")
    assert not ModelPrice.objects.filter(model="t-new").exists() and price.input_per_million > 0
    assert not AdminAction.objects.exists()


def test_anonymous_changes_are_sent_to_sign_in_and_save_nothing(research):
    response = Browser().post(f"/console/agents/{research.pk}/toggle/")
    assert response.status_code == 302 and response["Location"].startswith("/console/login/")
    research.refresh_from_db()
    assert research.is_active


# --- agents -------------------------------------------------------------------------------------------------------


def test_the_agent_list_shows_kind_url_capabilities_timeout_cost_center_and_status(compliance, research):
    Agent.objects.create(slug="t-old", name="Old", upstream_url="http://old:1", is_active=False)
    page = compliance.get("/console/agents/?q=t-").content.decode()
    for text in ["t-research", "Agent service", "http://10.0.0.5:9000", "papers, search", "30 s", "R&amp;D"]:
        assert text in page
    assert '<span class="badge ok">active</span>' in page and '<span class="badge bad">inactive</span>' in page


def test_the_agent_list_sorts_by_slug_kind_and_name(operator, db):
    Agent.objects.create(slug="t-b", name="Zed", kind="agent", upstream_url="http://b:1")
    Agent.objects.create(slug="t-a", name="Yan", kind="openai", upstream_url="http://a:1")

    def order(sort):
        page = operator.get(f"/console/agents/?q=t-&sort={sort}").content.decode()
        return re.findall(r'<td class="mono">(t-[ab])</td>', page)

    assert order("slug") == ["t-a", "t-b"] and order("-slug") == ["t-b", "t-a"]
    assert order("kind") == ["t-b", "t-a"]  # agent < openai
    assert order("name") == ["t-a", "t-b"]


def test_an_operator_creates_an_agent_and_the_trail_masks_its_key(operator):
    response = operator.post("/console/agents/new/", agent_data(upstream_api_key=SECRET))
    assert response.status_code == 302 and response["Location"] == "/console/agents/"
    agent = Agent.objects.get(slug="t-writer")
    assert agent.kind == "openai" and agent.upstream_api_key == SECRET and agent.timeout_seconds == 45
    assert agent.served_models == ["gpt-x", "gpt-x-mini"] and agent.capabilities == ["prose", "editing"]
    assert agent.cost_center == "Content" and agent.is_active
    action = AdminAction.objects.get()
    assert (action.actor, action.via, action.action, action.object_type) == (
        "olga",
        "console",
        "create",
        "routing.agent",
    )
    assert action.changes["slug"] == [None, "t-writer"] and action.changes["upstream_api_key"] == [None, mask(SECRET)]
    assert SECRET not in str(action.changes)


def test_an_operator_edits_an_agent_and_the_trail_records_the_changes(operator, research):
    response = operator.post(
        f"/console/agents/{research.pk}/edit/", edit_data(research, name="Research 2", capabilities="papers")
    )
    assert response.status_code == 302
    research.refresh_from_db()
    assert research.name == "Research 2" and research.capabilities == ["papers"]
    action = AdminAction.objects.get()
    assert action.action == "update" and action.object_id == str(research.pk)
    assert action.changes["name"] == ["Research", "Research 2"]
    assert action.changes["capabilities"] == [["papers", "search"], ["papers"]]
    assert "upstream_api_key" not in action.changes


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"upstream_url": "not a url"}, "Enter a valid URL."),
        ({"upstream_url": "ftp://files.example.com/"}, "must start with http:// or https://"),
        ({"timeout_seconds": "0"}, "Must be above zero."),
        ({"timeout_seconds": "-5"}, "Must be above zero."),
        ({"slug": "t-research"}, "Agent with this Slug already exists."),
        ({"slug": "has spaces"}, "Enter a valid “slug”"),
        ({"name": ""}, "This field is required."),
        ({"kind": "telepathy"}, "Select a valid choice."),
    ],
)
def test_a_bad_agent_form_shows_the_error_and_saves_nothing(operator, research, fields, message):
    response = operator.post("/console/agents/new/", agent_data(**fields))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Agent.objects.filter(slug__startswith="t-").count() == 1
    assert not AdminAction.objects.exists()


def test_a_bad_edit_changes_nothing(operator, research):
    response = operator.post(f"/console/agents/{research.pk}/edit/", edit_data(research, timeout_seconds="0"))
    assert response.status_code == 400 and "Must be above zero." in response.content.decode()
    research.refresh_from_db()
    assert research.timeout_seconds == 30 and not AdminAction.objects.exists()


def test_the_upstream_key_never_appears_in_any_page(admin, research):
    pages = [
        admin.get("/console/agents/"),
        admin.get(f"/console/agents/{research.pk}/edit/"),
        # A rejected form that carried the key must not echo it back either.
        admin.post(f"/console/agents/{research.pk}/edit/", edit_data(research, upstream_api_key=SECRET + "-2",
                                                                         timeout_seconds="0")),
        admin.post(f"/console/agents/{research.pk}/edit/", edit_data(research, name="R2"), follow=True),
        admin.get("/console/admin-actions/"),
    ]  # fmt: skip
    for response in pages:
        assert response.status_code in (200, 400)
        html = response.content.decode()
        assert SECRET not in html
    edit_page = pages[1].content.decode()
    assert re.search(r'<input type="password" name="upstream_api_key"[^>]*>', edit_page)
    assert 'value="' not in re.search(r'<input type="password" name="upstream_api_key"[^>]*>', edit_page).group(0)
    assert "A credential is set" in edit_page


def test_leaving_the_key_empty_on_edit_keeps_it(operator, research):
    operator.post(f"/console/agents/{research.pk}/edit/", edit_data(research, name="Research 2"))
    research.refresh_from_db()
    assert research.name == "Research 2" and research.upstream_api_key == SECRET


def test_typing_a_new_key_replaces_it_and_the_trail_says_so_without_the_value(operator, research):
    operator.post(f"/console/agents/{research.pk}/edit/", edit_data(research, upstream_api_key="sk-new-one"))
    research.refresh_from_db()
    assert research.upstream_api_key == "sk-new-one"
    action = AdminAction.objects.get()
    assert action.changes["upstream_api_key"] == [mask(SECRET), mask("sk-new-one")]
    assert "sk-new-one" not in str(action.changes) and SECRET not in str(action.changes)


def test_the_clear_box_removes_the_key(operator, research):
    operator.post(f"/console/agents/{research.pk}/edit/", edit_data(research, clear_upstream_api_key="on"))
    research.refresh_from_db()
    assert research.upstream_api_key == ""
    assert AdminAction.objects.get().changes["upstream_api_key"] == [mask(SECRET), ""]
    assert "clear_upstream_api_key" not in operator.get(f"/console/agents/{research.pk}/edit/").content.decode()


def test_a_new_key_and_the_clear_box_together_are_refused(operator, research):
    data = edit_data(research, upstream_api_key="sk-new-one", clear_upstream_api_key="on")
    response = operator.post(f"/console/agents/{research.pk}/edit/", data)
    assert response.status_code == 400 and "not both" in response.content.decode()
    research.refresh_from_db()
    assert research.upstream_api_key == SECRET


def test_deactivating_and_activating_an_agent_toggles_it_and_the_trail_says_so(operator, research):
    response = operator.post(f"/console/agents/{research.pk}/toggle/")
    assert response.status_code == 302 and response["Location"] == "/console/agents/"
    research.refresh_from_db()
    assert not research.is_active
    operator.post(f"/console/agents/{research.pk}/toggle/")
    research.refresh_from_db()
    assert research.is_active
    actions = list(AdminAction.objects.order_by("id").values_list("action", "changes__is_active"))
    assert actions == [("deactivate", [True, False]), ("activate", [False, True])]


def test_toggling_needs_a_post(operator, research):
    assert operator.get(f"/console/agents/{research.pk}/toggle/").status_code == 405
    research.refresh_from_db()
    assert research.is_active


def test_agents_cannot_be_deleted_from_the_console(operator, research):
    assert "/delete/" not in operator.get("/console/agents/").content.decode()
    assert operator.post(f"/console/agents/{research.pk}/delete/").status_code == 404
    assert Agent.objects.filter(pk=research.pk).exists()


# --- budgets ------------------------------------------------------------------------------------------------------


def test_the_budget_list_shows_every_client_and_those_without_a_budget(compliance, acme, budget):
    other = Client.objects.create(name="Aardvark Ltd", slug="aardvark")
    spend(acme, "12.5")
    page = compliance.get("/console/budgets/?q=a").content.decode()
    acme_row = re.search(rf'<tr><td><a href="/console/clients/{acme.pk}/">.*?</tr>', page, re.S).group(0)
    other_row = re.search(rf'<tr><td><a href="/console/clients/{other.pk}/">.*?</tr>', page, re.S).group(0)
    assert "$100.00" in acme_row and "$12.5000" in acme_row and "12%" in acme_row
    assert "no budget" in other_row and 'class="bar' not in other_row


def test_the_bar_is_green_below_the_alert_share_and_red_past_it(operator, acme, budget):
    spend(acme, "50")
    bar = bar_of(operator.get("/console/budgets/?q=acme").content.decode(), acme)
    assert bar.group(1) is None and bar.group(2) == "50"
    spend(acme, "40")  # 90% of the limit
    bar = bar_of(operator.get("/console/budgets/?q=acme").content.decode(), acme)
    assert bar.group(1) == " over" and bar.group(2) == "90"


def test_the_bar_is_capped_when_the_limit_is_exceeded(operator, acme, budget):
    spend(acme, "150")
    page = operator.get("/console/budgets/?q=acme").content.decode()
    bar = bar_of(page, acme)
    assert bar.group(1) == " over" and bar.group(2) == "100"
    assert "150%" in page and "limit reached" in page


def test_spend_from_last_month_does_not_count(operator, acme, budget):
    spend(acme, "95", when=timezone.now() - timezone.timedelta(days=40))
    bar = bar_of(operator.get("/console/budgets/?q=acme").content.decode(), acme)
    assert bar.group(1) is None and bar.group(2) == "0"


def test_a_zero_limit_shows_as_spent(operator, acme):
    Budget.objects.create(client=acme, limit_usd=Decimal(0))
    bar = bar_of(operator.get("/console/budgets/?q=acme").content.decode(), acme)
    assert bar.group(1) == " over" and bar.group(2) == "100"


def test_an_operator_sets_edits_and_removes_a_budget_and_the_trail_says_so(operator, acme):
    assert operator.get(f"/console/budgets/{acme.pk}/edit/").status_code == 200
    response = operator.post(f"/console/budgets/{acme.pk}/edit/", {"limit_usd": "100"})
    assert response.status_code == 302 and response["Location"] == "/console/budgets/"
    budget = Budget.objects.get(client=acme)
    assert budget.limit_usd == Decimal("100.00")

    operator.post(f"/console/budgets/{acme.pk}/edit/", {"limit_usd": "250.50"})
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("250.50") and Budget.objects.filter(client=acme).count() == 1

    response = operator.post(f"/console/budgets/{acme.pk}/delete/")
    assert response.status_code == 302 and not Budget.objects.filter(client=acme).exists()

    created, updated, deleted = AdminAction.objects.order_by("id")
    assert {a.object_type for a in (created, updated, deleted)} == {"billing.budget"}
    assert {a.object_id for a in (created, updated, deleted)} == {str(budget.pk)}
    assert created.action == "create" and created.actor == "olga"
    assert created.changes["client"] == [None, acme.pk] and created.changes["limit_usd"] == [None, "100.00"]
    assert updated.action == "update" and updated.changes["limit_usd"] == ["100.00", "250.50"]
    assert deleted.action == "delete" and deleted.changes["limit_usd"] == ["250.50", None]


def test_the_client_page_links_to_its_budget(operator, acme):
    assert f"/console/budgets/{acme.pk}/edit/" in operator.get(f"/console/clients/{acme.pk}/").content.decode()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "greater than or equal to 0"),
        ("", "This field is required."),
        ("ten", "Enter a number."),
        ("1.005", "no more than 2 decimal places"),
    ],
)
def test_a_bad_budget_shows_the_error_and_saves_nothing(operator, acme, value, message):
    response = operator.post(f"/console/budgets/{acme.pk}/edit/", {"limit_usd": value})
    assert response.status_code == 400 and message in response.content.decode()
    assert not Budget.objects.filter(client=acme).exists() and not AdminAction.objects.exists()


def test_removing_a_budget_that_does_not_exist_is_a_404(operator, acme):
    assert operator.post(f"/console/budgets/{acme.pk}/delete/").status_code == 404
    assert not AdminAction.objects.exists()


def test_the_budget_of_an_unknown_client_is_a_404(operator, db):
    assert operator.get("/console/budgets/999999/edit/").status_code == 404
    assert operator.post("/console/budgets/999999/edit/", {"limit_usd": "1"}).status_code == 404


# --- prices -------------------------------------------------------------------------------------------------------


def test_the_price_list_shows_the_seeded_prices(compliance):
    page = compliance.get("/console/prices/").content.decode()
    assert "gpt-4o-mini" in page and "$0.150000" in page and "unlisted models" in page


def test_an_operator_creates_and_edits_a_price_and_the_trail_says_so(operator):
    response = operator.post(
        "/console/prices/new/", {"model": "t-model", "input_per_million": "1.5", "output_per_million": "6"}
    )
    assert response.status_code == 302 and response["Location"] == "/console/prices/"
    price = ModelPrice.objects.get(model="t-model")
    assert price.input_per_million == Decimal("1.5") and price.output_per_million == Decimal(6)
    operator.post(
        f"/console/prices/{price.pk}/edit/", {"model": "t-model", "input_per_million": "2", "output_per_million": "6"}
    )
    price.refresh_from_db()
    assert price.input_per_million == Decimal(2)
    created, updated = AdminAction.objects.order_by("id")
    assert created.action == "create" and created.changes["input_per_million"] == [None, "1.500000"]
    assert updated.action == "update" and updated.changes["input_per_million"] == ["1.500000", "2.000000"]
    assert "output_per_million" not in updated.changes


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_per_million": "-0.01"}, "greater than or equal to 0"),
        ({"output_per_million": "-3"}, "greater than or equal to 0"),
        ({"model": ""}, "This field is required."),
        ({"model": "gpt-4o"}, "Model price with this Model already exists."),
        ({"input_per_million": "abc"}, "Enter a number."),
    ],
)
def test_a_bad_price_shows_the_error_and_saves_nothing(operator, fields, message):
    before = ModelPrice.objects.count()
    data = {"model": "t-model", "input_per_million": "1", "output_per_million": "2", **fields}
    response = operator.post("/console/prices/new/", data)
    assert response.status_code == 400 and message in response.content.decode()
    assert ModelPrice.objects.count() == before and not AdminAction.objects.exists()


def test_the_default_price_keeps_its_name(operator):
    price = ModelPrice.objects.get(model="default")
    data = {"model": "renamed", "input_per_million": "1", "output_per_million": "2"}
    response = operator.post(f"/console/prices/{price.pk}/edit/", data)
    assert response.status_code == 400 and "keeps its name" in response.content.decode()
    price.refresh_from_db()
    assert price.model == "default"
