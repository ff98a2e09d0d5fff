"""The console's budget alerts page, acknowledging alerts, the dashboard's banner and the Budgets navigation."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client as Browser

from audit.models import AdminAction
from billing.models import Budget, BudgetAlert
from billing.periods import DAILY, MONTHLY, period_of, previous
from keys.models import CostCenter


@pytest.fixture
def budget(acme):
    return Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(100), alert_emails="f@x.org")


@pytest.fixture
def team_budget(db):
    team = CostCenter.objects.create(name="Research team", slug="research-team")
    return Budget.objects.create(scope=Budget.COST_CENTER, cost_center=team, limit_usd=Decimal(10), period=DAILY)


def alert(budget, threshold=80, period=None, **fields):
    period = period or period_of(budget.period)
    made = BudgetAlert.objects.create(
        budget=budget, period_key=period.key, period_start=period.start, period_end=period.end,
        threshold_percent=threshold, spent_usd=budget.limit_usd * threshold / 100, limit_usd=budget.limit_usd,
        **fields,
    )  # fmt: skip
    return made


def shown(browser, query="") -> list[int]:
    page = browser.get(f"/console/alerts/?{query}").content.decode()
    return [int(pk) for pk in re.findall(r'<tr data-alert="(\d+)">', page)]


# --- access -------------------------------------------------------------------------------------------------------


def test_every_role_reads_the_alerts_and_a_user_without_a_role_gets_403(admin, operator, compliance, nobody):
    for browser in (admin, operator, compliance):
        assert browser.get("/console/alerts/").status_code == 200
    assert nobody.get("/console/alerts/").status_code == 403
    response = Browser().get("/console/alerts/")
    assert response.status_code == 302 and response["Location"].startswith("/console/login/")


@pytest.mark.parametrize("who", ["compliance", "nobody"])
def test_only_managing_roles_acknowledge(request, who, budget):
    browser = request.getfixturevalue(who)
    raised = alert(budget)
    assert browser.post(f"/console/alerts/{raised.pk}/acknowledge/").status_code == 403
    raised.refresh_from_db()
    assert raised.acknowledged_at is None and not AdminAction.objects.exists()
    assert "/acknowledge/" not in request.getfixturevalue("compliance").get("/console/alerts/").content.decode()


# --- the list -----------------------------------------------------------------------------------------------------


def test_the_list_shows_threshold_spend_limit_window_and_delivery(compliance, budget):
    month = period_of(MONTHLY)
    alert(budget, 100, email_status=BudgetAlert.DELIVERED, webhook_status=BudgetAlert.FAILED, webhook_attempts=5,
          webhook_error="HTTP 500 from the receiver")  # fmt: skip
    page = compliance.get("/console/alerts/").content.decode()
    row = re.search(r'<tr data-alert="\d+">.*?</tr>', page, re.S).group(0)
    for text in [f"/console/budgets/{budget.pk}/", "Acme", month.key, ">100%<", "$100.0000", "$100.00", "delivered",
                 "failed", "5 attempts", "HTTP 500 from the receiver", "open"]:  # fmt: skip
        assert text in row, text


def test_the_list_is_newest_first_and_filters_by_scope_state_and_budget(operator, budget, team_budget):
    first = alert(budget, 80)
    second = alert(team_budget, 80)
    third = alert(budget, 100, acknowledged_at=first.created_at)
    BudgetAlert.objects.filter(pk=first.pk).update(created_at=first.created_at - timedelta(hours=2))
    BudgetAlert.objects.filter(pk=second.pk).update(created_at=first.created_at - timedelta(hours=1))
    assert shown(operator) == [third.pk, second.pk, first.pk]
    assert shown(operator, "scope=cost_center") == [second.pk]
    assert shown(operator, "acknowledged=no") == [second.pk, first.pk]
    assert shown(operator, "acknowledged=yes") == [third.pk]
    assert shown(operator, f"budget={budget.pk}") == [third.pk, first.pk]
    assert shown(operator, f"budget={budget.pk}&acknowledged=no") == [first.pk]


def test_a_bad_filter_is_reported_not_a_500(operator, budget):
    alert(budget)
    response = operator.get("/console/alerts/?budget=abc&scope=galaxy")
    assert response.status_code == 200 and "Enter a whole number." in response.content.decode()


def test_the_budget_page_lists_its_own_alerts(operator, budget, team_budget):
    mine = alert(budget, 80, period=previous(MONTHLY, period_of(MONTHLY)))
    alert(team_budget, 80)
    page = operator.get(f"/console/budgets/{budget.pk}/").content.decode()
    assert re.findall(r'<tr data-alert="(\d+)">', page) == [str(mine.pk)]
    assert f"/console/alerts/?budget={budget.pk}" in page


# --- acknowledging ------------------------------------------------------------------------------------------------


def test_an_operator_acknowledges_an_alert_once_and_the_trail_says_so(operator, budget):
    raised = alert(budget)
    response = operator.post(f"/console/alerts/{raised.pk}/acknowledge/", {"next": "/console/alerts/?acknowledged=no"})
    assert response.status_code == 302 and response["Location"] == "/console/alerts/?acknowledged=no"
    raised.refresh_from_db()
    first = raised.acknowledged_at
    assert first is not None
    action = AdminAction.objects.get()
    assert (action.actor, action.action, action.object_type, action.object_id) == (
        "olga", "acknowledge", "billing.budgetalert", str(raised.pk),
    )  # fmt: skip
    assert action.changes["acknowledged_at"] == [None, first.isoformat()]

    operator.post(f"/console/alerts/{raised.pk}/acknowledge/")
    raised.refresh_from_db()
    assert raised.acknowledged_at == first and AdminAction.objects.count() == 1
    page = operator.get("/console/alerts/").content.decode()
    assert "/acknowledge/" not in page


def test_acknowledging_never_redirects_off_site(operator, budget):
    raised = alert(budget)
    response = operator.post(f"/console/alerts/{raised.pk}/acknowledge/", {"next": "https://evil.example.com/"})
    assert response["Location"] == "/console/alerts/"


def test_acknowledging_needs_a_post_and_an_existing_alert(operator, budget):
    raised = alert(budget)
    assert operator.get(f"/console/alerts/{raised.pk}/acknowledge/").status_code == 405
    assert operator.post("/console/alerts/999999/acknowledge/").status_code == 404


# --- dashboard and navigation -------------------------------------------------------------------------------------


def test_the_dashboard_shows_a_banner_with_the_open_alerts(compliance, budget):
    assert 'id="alerts-banner"' not in compliance.get("/console/").content.decode()
    alert(budget, 80)
    alert(budget, 100)
    alert(budget, 90, acknowledged_at=budget.created_at)
    page = compliance.get("/console/").content.decode()
    banner = re.search(r'<a class="banner" id="alerts-banner" href="([^"]+)">([^<]+)</a>', page)
    assert banner.group(1) == "/console/alerts/?acknowledged=no"
    assert banner.group(2).startswith("2 budget alerts not acknowledged")


def test_the_budgets_area_links_its_pages(compliance):
    for url in ["/console/budgets/", "/console/alerts/", "/console/cost-centers/", "/console/plans/",
                "/console/prices/"]:  # fmt: skip
        page = compliance.get(url).content.decode()
        subnav = re.search(r'<nav class="subnav".*?</nav>', page, re.S).group(0)
        for link in ["/console/budgets/", "/console/alerts/", "/console/cost-centers/", "/console/plans/",
                     "/console/prices/"]:  # fmt: skip
            assert f'href="{link}"' in subnav, (url, link)
        assert re.search(rf'href="{url}" class="active"', subnav), url
        assert re.search(r'href="/console/budgets/" class="active">Spend</a>', page)  # the top navigation
    clients = compliance.get("/console/clients/").content.decode()  # another area, its own pages
    subnav = re.search(r'<nav class="subnav".*?</nav>', clients, re.S).group(0)
    assert 'href="/console/roles/"' in subnav and "/console/budgets/" not in subnav
