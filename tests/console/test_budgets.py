"""The console's budget pages: every scope and period, the bars, the detail page and the trail, per role."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client as Browser
from django.utils import timezone

from audit.models import AdminAction
from billing.models import Budget, BudgetAlert, UsageRecord, UsageRollup
from billing.periods import MONTHLY, period_of, previous
from keys.models import Client, CostCenter
from keys.services import issue_key


@pytest.fixture
def research_team(db):
    return CostCenter.objects.create(name="Research team", slug="research-team", code="RT-1")


@pytest.fixture
def key(acme):
    key, _ = issue_key(acme, name="ci", allowed_agents=["*"], allowed_models=["*"])
    return key


@pytest.fixture
def budget(acme):
    return Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal("100.00"))


def spend(client, usd: str, when=None, key=None, cost_center=None):
    return UsageRecord.objects.create(
        request_id=f"u-{usd}", created_at=when or timezone.now(), client=client, api_key=key, cost_center=cost_center,
        agent="t-research", model="gpt-x", input_tokens=10, output_tokens=10, cost_usd=Decimal(usd),
    )  # fmt: skip


def budget_data(**fields):
    """The budget form as a browser submits it: a hard monthly client budget unless ``fields`` say otherwise."""
    data = {"scope": "client", "cost_center": "", "client": "", "api_key": "", "name": "", "period": "monthly",
            "period_days": "", "period_anchor": "", "limit_usd": "100", "mode": "hard", "alert_percent": "80",
            "alert_emails": "", "alert_webhook_url": "", "is_active": "on"}  # fmt: skip
    return {**data, **fields}


def row_of(page: str, budget: Budget) -> str:
    return re.search(rf'<tr data-budget="{budget.pk}">.*?</tr>', page, re.S).group(0)


def bar_in(html: str) -> tuple[bool, int]:
    """Whether the first spend bar in ``html`` is red, and its width in percent."""
    match = re.search(r'<div class="bar( over)?"[^>]*><span style="width:(\d+)%">', html)
    return match.group(1) is not None, int(match.group(2))


# --- access -------------------------------------------------------------------------------------------------------


def test_every_role_reads_the_budget_pages_and_a_user_without_a_role_gets_403(
    admin, operator, compliance, nobody, budget
):
    for url in ["/console/budgets/", f"/console/budgets/{budget.pk}/"]:
        for browser in (admin, operator, compliance):
            assert browser.get(url).status_code == 200, url
        assert nobody.get(url).status_code == 403, url


def test_anonymous_visitors_are_sent_to_sign_in(budget):
    for url in ["/console/budgets/", f"/console/budgets/{budget.pk}/", "/console/budgets/new/"]:
        response = Browser().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/console/login/")


def test_only_managing_roles_open_the_forms_and_see_the_buttons(admin, operator, compliance, nobody, budget):
    forms = ["/console/budgets/new/", f"/console/budgets/{budget.pk}/edit/", f"/console/budgets/{budget.pk}/delete/"]
    for url in forms:
        assert admin.get(url).status_code == 200 and operator.get(url).status_code == 200, url
        assert compliance.get(url).status_code == 403 and nobody.get(url).status_code == 403, url
    assert f"/console/budgets/{budget.pk}/edit/" in operator.get(f"/console/budgets/{budget.pk}/").content.decode()
    read_only = compliance.get(f"/console/budgets/{budget.pk}/").content.decode()
    assert "/edit/" not in read_only and "/delete/" not in read_only
    assert "/console/budgets/new/" not in compliance.get("/console/budgets/").content.decode()


@pytest.mark.parametrize("who", ["compliance", "nobody"])
def test_compliance_staff_and_users_without_a_role_change_no_budget(request, who, acme, budget):
    browser = request.getfixturevalue(who)
    assert browser.post("/console/budgets/new/", budget_data(client=acme.pk)).status_code == 403
    edit = budget_data(client=acme.pk, limit_usd="1")
    assert browser.post(f"/console/budgets/{budget.pk}/edit/", edit).status_code == 403
    assert browser.post(f"/console/budgets/{budget.pk}/delete/").status_code == 403
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("100.00") and Budget.objects.count() == 1 and not AdminAction.objects.exists()


def test_an_unknown_budget_is_a_404(operator, db):
    assert operator.get("/console/budgets/999999/").status_code == 404
    assert operator.get("/console/budgets/999999/edit/").status_code == 404
    assert operator.post("/console/budgets/999999/delete/").status_code == 404


# --- the list -----------------------------------------------------------------------------------------------------


def test_the_list_shows_target_scope_period_reset_mode_limit_spend_bar_and_state(compliance, acme, budget):
    spend(acme, "12.5")
    row = row_of(compliance.get("/console/budgets/").content.decode(), budget)
    reset = timezone.localtime(period_of(MONTHLY).end).strftime("%Y-%m-%d %H:%M")
    for text in ["Acme", f"/console/clients/{acme.pk}/", "Client", "Monthly", f"resets {reset}", "hard", "$100.00",
                 "$12.5000", "12%", "active"]:  # fmt: skip
        assert text in row, text
    assert bar_in(row) == (False, 12)


def test_the_list_shows_budgets_at_every_scope(operator, acme, key, research_team):
    budgets = [
        Budget.objects.create(scope=Budget.ORGANIZATION, limit_usd=Decimal(1000), period=Budget.WEEKLY),
        Budget.objects.create(scope=Budget.COST_CENTER, cost_center=research_team, limit_usd=Decimal(500)),
        Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(5), period=Budget.DAILY),
        Budget.objects.create(scope=Budget.KEY, api_key=key, limit_usd=Decimal(50), mode=Budget.SOFT, is_active=False),
        Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(70), period=Budget.CUSTOM,
                              period_days=14, period_anchor=timezone.localdate()),
    ]  # fmt: skip
    page = operator.get("/console/budgets/").content.decode()
    rows = [row_of(page, b) for b in budgets]
    assert "Whole organization" in rows[0] and "Weekly" in rows[0]
    assert f"/console/cost-centers/{research_team.pk}/" in rows[1] and "Research team" in rows[1]
    assert "Daily" in rows[2]
    assert key.prefix in rows[3] and "soft" in rows[3] and "inactive" in rows[3]
    assert "Every 14 days" in rows[4]


def test_the_list_filters_by_scope_and_searches_target_names(operator, acme, key, research_team):
    other = Client.objects.create(name="Globex", slug="globex")
    by_client = Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(5))
    by_other = Budget.objects.create(scope=Budget.CLIENT, client=other, limit_usd=Decimal(5))
    by_center = Budget.objects.create(scope=Budget.COST_CENTER, cost_center=research_team, limit_usd=Decimal(5))
    by_key = Budget.objects.create(scope=Budget.KEY, api_key=key, limit_usd=Decimal(5))

    def shown(query):
        page = operator.get(f"/console/budgets/?{query}").content.decode()
        return {int(pk) for pk in re.findall(r'<tr data-budget="(\d+)">', page)}

    assert shown("") == {by_client.pk, by_other.pk, by_center.pk, by_key.pk}
    assert shown("scope=client") == {by_client.pk, by_other.pk}
    assert shown("scope=cost_center") == {by_center.pk}
    assert shown("q=glob") == {by_other.pk}
    assert shown("q=research") == {by_center.pk}
    assert shown("q=acme") == {by_client.pk, by_key.pk}  # a key budget is found by its client's name
    assert shown("scope=key&q=acme") == {by_key.pk}


def test_the_bar_turns_red_at_the_budgets_own_alert_percent(operator, acme):
    budget = Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(100), alert_percent=50)
    spend(acme, "49")
    assert bar_in(row_of(operator.get("/console/budgets/").content.decode(), budget)) == (False, 49)
    spend(acme, "1")
    row = row_of(operator.get("/console/budgets/").content.decode(), budget)
    assert bar_in(row) == (True, 50) and "past 50%" in row


def test_the_bar_is_full_and_red_once_the_limit_is_reached(operator, acme, budget):
    spend(acme, "150")
    row = row_of(operator.get("/console/budgets/").content.decode(), budget)
    assert bar_in(row) == (True, 100) and "150%" in row and "limit reached" in row


def test_a_zero_limit_shows_as_spent(operator, acme):
    budget = Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(0))
    assert bar_in(row_of(operator.get("/console/budgets/").content.decode(), budget)) == (True, 100)


def test_spend_from_an_earlier_window_does_not_count(operator, acme, budget):
    spend(acme, "95", when=period_of(MONTHLY).start - timedelta(hours=1))
    assert bar_in(row_of(operator.get("/console/budgets/").content.decode(), budget)) == (False, 0)


def test_each_scope_counts_its_own_spend(operator, acme, key, research_team):
    acme.cost_center = research_team
    acme.save()
    other = Client.objects.create(name="Globex", slug="globex", cost_center=research_team)
    spend(acme, "10", key=key, cost_center=research_team)
    spend(acme, "20", cost_center=research_team)  # another key of acme's
    spend(other, "30", cost_center=research_team)
    spend(other, "40")  # before globex joined the team: not the team's
    expected = {
        Budget.objects.create(scope=Budget.ORGANIZATION, limit_usd=Decimal(1000)): "$100.0000",
        Budget.objects.create(scope=Budget.COST_CENTER, cost_center=research_team, limit_usd=Decimal(100)): "$60.0000",
        Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(100)): "$30.0000",
        Budget.objects.create(scope=Budget.KEY, api_key=key, limit_usd=Decimal(100)): "$10.0000",
    }
    page = operator.get("/console/budgets/").content.decode()
    for budget, spent in expected.items():
        assert spent in row_of(page, budget), budget.scope


# --- create, edit, delete -----------------------------------------------------------------------------------------


def test_an_operator_creates_edits_and_deletes_a_budget_and_the_trail_says_so(operator, acme):
    response = operator.post("/console/budgets/new/", budget_data(client=acme.pk, alert_emails="fin@example.com"))
    budget = Budget.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/console/budgets/{budget.pk}/"
    assert (budget.scope, budget.client, budget.period, budget.mode) == ("client", acme, "monthly", "hard")
    assert budget.limit_usd == Decimal("100.00") and budget.alert_emails == "fin@example.com" and budget.is_active

    data = budget_data(client=acme.pk, limit_usd="250.50", mode="soft", alert_percent="90", period="daily")
    assert operator.post(f"/console/budgets/{budget.pk}/edit/", data).status_code == 302
    budget.refresh_from_db()
    assert (budget.limit_usd, budget.mode, budget.alert_percent, budget.period) == (Decimal("250.50"), "soft", 90,
                                                                                    "daily")  # fmt: skip

    response = operator.post(f"/console/budgets/{budget.pk}/delete/")
    assert response.status_code == 302 and response["Location"] == "/console/budgets/"
    assert not Budget.objects.exists()

    created, updated, deleted = AdminAction.objects.order_by("id")
    assert {a.object_type for a in (created, updated, deleted)} == {"billing.budget"}
    assert {a.object_id for a in (created, updated, deleted)} == {str(budget.pk)}
    assert {a.actor for a in (created, updated, deleted)} == {"olga"}
    assert created.action == "create" and created.changes["client"] == [None, acme.pk]
    assert created.changes["limit_usd"] == [None, "100.00"] and created.changes["scope"] == [None, "client"]
    assert updated.action == "update" and updated.changes["limit_usd"] == ["100.00", "250.50"]
    assert updated.changes["mode"] == ["hard", "soft"] and updated.changes["period"] == ["monthly", "daily"]
    assert deleted.action == "delete" and deleted.changes["limit_usd"] == ["250.50", None]


def test_the_delete_page_asks_first_and_names_the_budget(operator, budget):
    page = operator.get(f"/console/budgets/{budget.pk}/delete/").content.decode()
    assert "no longer limited by this budget" in page and 'method="post"' in page
    assert Budget.objects.filter(pk=budget.pk).exists()


def test_budgets_at_every_scope_are_created_with_only_the_target_their_scope_needs(operator, acme, key, research_team):
    # The browser sends every target select; the ones the scope does not need are dropped.
    targets = {"cost_center": research_team.pk, "client": acme.pk, "api_key": key.pk}
    for scope in ["organization", "cost_center", "client", "key"]:
        response = operator.post("/console/budgets/new/", budget_data(scope=scope, **targets))
        assert response.status_code == 302, response.content.decode()
    made = {b.scope: (b.cost_center_id, b.client_id, b.api_key_id) for b in Budget.objects.all()}
    assert made == {
        "organization": (None, None, None),
        "cost_center": (research_team.pk, None, None),
        "client": (None, acme.pk, None),
        "key": (None, None, key.pk),
    }
    assert AdminAction.objects.filter(action="create", object_type="billing.budget").count() == 4


def test_a_custom_period_starts_today_unless_an_anchor_is_given(operator, acme):
    operator.post("/console/budgets/new/", budget_data(client=acme.pk, period="custom", period_days="14"))
    first = Budget.objects.get()
    assert first.period_days == 14 and first.period_anchor == timezone.localdate()
    operator.post(
        "/console/budgets/new/",
        budget_data(client=acme.pk, period="custom", period_days="10", period_anchor="2026-01-05"),
    )
    second = Budget.objects.exclude(pk=first.pk).get()
    assert second.period_days == 10 and str(second.period_anchor) == "2026-01-05"


def test_changing_to_a_calendar_period_forgets_the_custom_length(operator, acme):
    budget = Budget.objects.create(
        scope=Budget.CLIENT, client=acme, limit_usd=Decimal(5), period=Budget.CUSTOM, period_days=7,
        period_anchor=timezone.localdate(),
    )  # fmt: skip
    operator.post(f"/console/budgets/{budget.pk}/edit/", budget_data(client=acme.pk, period="weekly", period_days="7"))
    budget.refresh_from_db()
    assert budget.period == "weekly" and budget.period_days is None and budget.period_anchor is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scope": "client", "client": ""}, "A client budget needs one."),
        ({"scope": "cost_center", "client": ""}, "A cost center budget needs one."),
        ({"scope": "key", "client": ""}, "An API key budget needs one."),
        ({"period": "custom", "period_days": ""}, "A custom period needs its length in days."),
        ({"period": "custom", "period_days": "0"}, "greater than or equal to 1"),
        ({"limit_usd": "-1"}, "greater than or equal to 0"),
        ({"limit_usd": ""}, "This field is required."),
        ({"limit_usd": "ten"}, "Enter a number."),
        ({"limit_usd": "1.005"}, "no more than 2 decimal places"),
        ({"alert_emails": "fin@example.com, not-an-address"}, "“not-an-address” is not an e-mail address."),
        ({"alert_webhook_url": "not a url"}, "Enter a valid URL."),
        ({"alert_webhook_url": "http://127.0.0.1:8000/api/v1/keys/"}, "127.0.0.1 is loopback"),
        ({"alert_webhook_url": "http://[::7f00:1]:8000/"}, "inside an IPv6 address"),
        ({"alert_percent": "0"}, "greater than or equal to 1"),
        ({"alert_percent": "101"}, "less than or equal to 100"),
        ({"mode": "maybe"}, "Select a valid choice."),
        ({"scope": "galaxy"}, "Select a valid choice."),
    ],
)
def test_a_bad_budget_shows_the_error_with_400_and_saves_nothing(operator, acme, fields, message):
    response = operator.post("/console/budgets/new/", budget_data(**{"client": acme.pk, **fields}))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Budget.objects.exists() and not AdminAction.objects.exists()


def test_a_bad_edit_changes_nothing_and_the_heading_names_the_stored_budget(operator, acme, budget):
    response = operator.post(f"/console/budgets/{budget.pk}/edit/", budget_data(client=acme.pk, limit_usd="-5"))
    assert response.status_code == 400
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("100.00") and not AdminAction.objects.exists()
    assert "Client Acme" in response.content.decode()


def test_new_budget_links_pre_select_the_scope_and_target(operator, acme, key, research_team):
    def selected(url, field):
        page = operator.get(url).content.decode()
        select = re.search(rf'<select name="{field}".*?</select>', page, re.S).group(0)
        return re.search(r'<option value="([^"]*)"[^>]*selected', select).group(1)

    client_page = operator.get(f"/console/clients/{acme.pk}/").content.decode()
    link = f"/console/budgets/new/?scope=client&amp;client={acme.pk}"
    assert link in client_page
    url = link.replace("&amp;", "&")
    assert selected(url, "scope") == "client" and selected(url, "client") == str(acme.pk)

    center_page = operator.get(f"/console/cost-centers/{research_team.pk}/").content.decode()
    link = f"/console/budgets/new/?scope=cost_center&amp;cost_center={research_team.pk}"
    assert link in center_page
    url = link.replace("&amp;", "&")
    assert selected(url, "scope") == "cost_center" and selected(url, "cost_center") == str(research_team.pk)

    url = f"/console/budgets/new/?scope=key&api_key={key.pk}"
    assert url.replace("&", "&amp;") in client_page  # each key offers a budget of its own
    assert selected(url, "api_key") == str(key.pk)


def test_the_key_select_offers_live_keys_by_prefix_and_client(operator, acme, key):
    revoked, _ = issue_key(acme, name="old", allowed_agents=["*"], allowed_models=["*"], revoked_at=timezone.now())
    page = operator.get("/console/budgets/new/").content.decode()
    select = re.search(r'<select name="api_key".*?</select>', page, re.S).group(0)
    assert f"{key.prefix}… ci (Acme)" in select and revoked.prefix not in select


# --- detail -------------------------------------------------------------------------------------------------------


def test_the_detail_page_shows_the_current_window_alerts_and_past_windows(compliance, acme, budget):
    spend(acme, "85")
    now = period_of(MONTHLY)
    last = previous(MONTHLY, now)
    UsageRollup.objects.create(day=last.days[0], client=acme, agent="a", model="m", requests=3,
                               cost_usd=Decimal("42.5"))  # fmt: skip
    BudgetAlert.objects.create(
        budget=budget, period_key=now.key, period_start=now.start, period_end=now.end, threshold_percent=80,
        spent_usd=Decimal("85"), limit_usd=Decimal(100), email_status=BudgetAlert.DELIVERED,
        webhook_status=BudgetAlert.FAILED, webhook_attempts=5, webhook_error="connection refused",
    )  # fmt: skip
    page = compliance.get(f"/console/budgets/{budget.pk}/").content.decode()
    assert "$85.0000" in page and "$15.0000" in page  # spent and remaining
    assert bar_in(page) == (True, 85)
    assert now.key in page and "delivered" in page and "failed" in page and "connection refused" in page
    history = re.search(r"<h2>Past windows</h2>.*?</table>", page, re.S).group(0)
    assert last.key in history and "$42.5000" in history and "42%" in history
    assert len(re.findall(r'<td class="mono">m\d{6}</td>', history)) == 6


def test_the_detail_page_links_the_target(operator, acme, key, research_team):
    by_center = Budget.objects.create(scope=Budget.COST_CENTER, cost_center=research_team, limit_usd=Decimal(5))
    by_key = Budget.objects.create(scope=Budget.KEY, api_key=key, limit_usd=Decimal(5))
    center_page = operator.get(f"/console/budgets/{by_center.pk}/").content.decode()
    assert f"/console/cost-centers/{research_team.pk}/" in center_page
    assert f"/console/clients/{acme.pk}/" in operator.get(f"/console/budgets/{by_key.pk}/").content.decode()


# --- the client page ----------------------------------------------------------------------------------------------


def test_the_client_page_lists_every_budget_that_applies_with_bars(operator, acme, key, research_team):
    acme.cost_center = research_team
    acme.save()
    other = Client.objects.create(name="Globex", slug="globex")
    applies = [
        Budget.objects.create(scope=Budget.ORGANIZATION, limit_usd=Decimal(1000)),
        Budget.objects.create(scope=Budget.COST_CENTER, cost_center=research_team, limit_usd=Decimal(500)),
        Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(10), period=Budget.DAILY),
        Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal(100)),
        Budget.objects.create(scope=Budget.KEY, api_key=key, limit_usd=Decimal(20), alert_percent=50),
    ]
    elsewhere = Budget.objects.create(scope=Budget.CLIENT, client=other, limit_usd=Decimal(5))
    spend(acme, "12", key=key, cost_center=research_team)
    page = operator.get(f"/console/clients/{acme.pk}/").content.decode()
    section = re.search(r"<h2>Budgets that apply</h2>.*?</table>", page, re.S).group(0)
    shown = [int(pk) for pk in re.findall(r'<tr data-budget="(\d+)">', section)]
    assert shown == [b.pk for b in applies]  # widest scope first, as a request is checked
    assert elsewhere.pk not in shown
    assert bar_in(row_of(section, applies[4])) == (True, 60)  # $12 of $20, past its 50%
    assert bar_in(row_of(section, applies[3])) == (False, 12)


def test_a_client_without_budgets_says_so(operator, acme):
    page = operator.get(f"/console/clients/{acme.pk}/").content.decode()
    assert "No budget limits this client." in page
