"""The console's agent pages and actions, per role; who may reach the budget and price pages.

Budgets, prices, cost centers, plans and alerts have their own files (test_budgets.py, test_prices.py, …).
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.test import Client as Browser

from audit.models import AdminAction
from audit.trail import mask
from billing.models import Budget, ModelPrice
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
    return Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal("100.00"))


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
    for url in ["/console/agents/new/", f"/console/agents/{research.pk}/edit/", f"/console/budgets/{budget.pk}/edit/",
                "/console/budgets/new/", "/console/prices/new/", f"/console/prices/{price.pk}/edit/"]:  # fmt: skip
        assert browser.get(url).status_code == 403, url
    posts = {
        "/console/agents/new/": agent_data(),
        f"/console/agents/{research.pk}/edit/": edit_data(research, name="Hacked"),
        f"/console/agents/{research.pk}/toggle/": {},
        "/console/budgets/new/": {"scope": "client", "client": acme.pk, "period": "monthly", "limit_usd": "1"},
        f"/console/budgets/{budget.pk}/edit/": {"scope": "client", "client": acme.pk, "limit_usd": "1"},
        f"/console/budgets/{budget.pk}/delete/": {},
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
    assert budget.limit_usd == Decimal("100.00") and Budget.objects.count() == 1
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
        ({"upstream_url": "http://169.254.169.254/latest/meta-data/"}, "169.254.169.254 is cloud metadata"),
        ({"upstream_url": "http://[fd00:ec2::254]/"}, "fd00:ec2::254 is cloud metadata"),
        ({"upstream_url": "http://[::ffff:169.254.169.254]/"}, "inside an IPv6 address"),
        ({"upstream_url": "http://user:pw@llm.example.com/v1"}, "must not carry credentials"),
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
