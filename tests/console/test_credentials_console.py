"""In the console, credentials and webhook secrets are written, never read back: a credential follows the host it was
set for (moving the URL removes it, and the page says so), a webhook's own secret is shown once, and neither ever
appears on a page, in Django admin or in the trail."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from audit.models import AdminAction
from audit.trail import mask
from billing.models import Budget
from routing.models import Agent, Target
from tests.console.test_agent_resilience import targets_data
from tests.console.test_agents_and_budgets import edit_data
from tests.console.test_budgets import budget_data

SECRET = "sk-console-credential-5b8e21"


@pytest.fixture
def research(db):
    return Agent.objects.create(
        slug="t-research", name="Research", kind="agent", upstream_url="http://10.0.0.5:9000",
        upstream_api_key=SECRET, timeout_seconds=30,
    )  # fmt: skip


def messages_of(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else ""


def test_moving_an_agent_to_another_host_removes_its_key_and_says_so(operator, research):
    response = operator.post(
        f"/console/agents/{research.pk}/edit/", edit_data(research, upstream_url="http://10.0.0.66:9000"), follow=True
    )
    assert response.status_code == 200
    assert "stored upstream API key of t-research was removed" in messages_of(response)
    assert Agent.objects.get(pk=research.pk).upstream_api_key == ""
    assert AdminAction.objects.get(object_type="routing.agent").changes["upstream_api_key"] == [mask(SECRET), ""]


def test_a_new_host_and_a_new_key_in_one_save_keep_the_new_key(operator, research):
    data = edit_data(research, upstream_url="http://10.0.0.66:9000", upstream_api_key="sk-typed-again")
    response = operator.post(f"/console/agents/{research.pk}/edit/", data, follow=True)
    assert "was removed" not in messages_of(response)
    assert Agent.objects.get(pk=research.pk).upstream_api_key == "sk-typed-again"


def test_a_new_path_keeps_the_key_without_a_word(operator, research):
    data = edit_data(research, upstream_url="http://10.0.0.5:9000/v2")
    response = operator.post(f"/console/agents/{research.pk}/edit/", data, follow=True)
    assert "was removed" not in messages_of(response)
    assert Agent.objects.get(pk=research.pk).upstream_api_key == SECRET


def test_a_targets_own_key_is_set_kept_and_removed_with_its_host(operator, research):
    row = {"name": "v1", "url": "http://10.0.0.7:9000", "weight": "100", "max_concurrent": "0", "enabled": "on"}
    data = edit_data(research) | targets_data({**row, "upstream_api_key": "sk-target-own"})
    assert operator.post(f"/console/agents/{research.pk}/edit/", data).status_code == 302
    target = Target.objects.get(agent=research)
    assert target.upstream_api_key == "sk-target-own"

    page = operator.get(f"/console/agents/{research.pk}/edit/").content.decode()
    assert "sk-target-own" not in page and SECRET not in page and "sends own key" in page
    field = re.search(r'<input type="password" name="targets-0-upstream_api_key"[^>]*>', page).group(0)
    assert "value=" not in field

    kept = {**row, "id": str(target.pk), "agent": str(research.pk), "upstream_api_key": ""}
    data = edit_data(research) | targets_data({**kept, "url": "http://10.0.0.7:9000/v2"}, initial=1)
    operator.post(f"/console/agents/{research.pk}/edit/", data)
    assert Target.objects.get(pk=target.pk).upstream_api_key == "sk-target-own"

    data = edit_data(research) | targets_data({**kept, "url": "http://10.0.0.70:9000"}, initial=1)
    response = operator.post(f"/console/agents/{research.pk}/edit/", data, follow=True)
    assert "t-research/v1 was removed" in messages_of(response)
    assert Target.objects.get(pk=target.pk).upstream_api_key == ""
    assert "sends no key" in operator.get(f"/console/agents/{research.pk}/edit/").content.decode()


def test_a_target_on_the_agents_own_host_says_it_is_sent_the_agents_key(operator, research):
    Target.objects.create(agent=research, name="v1", url="http://10.0.0.5:9000/canary")
    page = operator.get(f"/console/agents/{research.pk}/edit/").content.decode()
    assert "sends agent&#x27;s key" in page and SECRET not in page


# --- webhook signing secrets -------------------------------------------------------------------------------------


def test_a_budget_webhook_secret_is_shown_once_after_it_is_made(operator, acme):
    data = budget_data(client=acme.pk, alert_webhook_url="https://hooks.example.com/acme")
    response = operator.post("/console/budgets/new/", data)
    budget = Budget.objects.get(client=acme)
    assert response.status_code == 302 and response["Location"] == f"/console/budgets/{budget.pk}/"
    secret = budget.alert_webhook_secret
    assert secret.startswith("whsec_") and secret not in response.content.decode()

    shown = operator.get(f"/console/budgets/{budget.pk}/")
    assert secret in shown.content.decode() and shown["Cache-Control"] == "no-store"
    again = operator.get(f"/console/budgets/{budget.pk}/").content.decode()
    assert secret not in again and "own secret" in again
    for page in ("/console/budgets/", f"/console/budgets/{budget.pk}/edit/", "/console/admin-actions/"):
        assert secret not in operator.get(page).content.decode(), page


def test_an_edit_that_keeps_the_receiver_shows_no_secret(operator, acme):
    budget = Budget.objects.create(
        scope="client", client=acme, limit_usd=Decimal("100"), alert_webhook_url="https://hooks.example.com/acme"
    )
    secret = budget.alert_webhook_secret
    data = budget_data(client=acme.pk, limit_usd="200", alert_webhook_url="https://hooks.example.com/acme")
    operator.post(f"/console/budgets/{budget.pk}/edit/", data)
    assert Budget.objects.get(pk=budget.pk).alert_webhook_secret == secret
    assert "whsec_" not in operator.get(f"/console/budgets/{budget.pk}/").content.decode()


def test_rotating_a_budget_webhook_secret_shows_the_new_one_once(operator, compliance, acme):
    budget = Budget.objects.create(
        scope="client", client=acme, limit_usd=Decimal("100"), alert_webhook_url="https://hooks.example.com/acme"
    )
    old = budget.alert_webhook_secret
    url = f"/console/budgets/{budget.pk}/rotate-webhook-secret/"
    assert compliance.post(url).status_code == 403
    assert "Rotate signing secret" not in compliance.get(f"/console/budgets/{budget.pk}/").content.decode()
    response = operator.post(url, follow=True)
    new = Budget.objects.get(pk=budget.pk).alert_webhook_secret
    assert new != old and new in response.content.decode() and old not in response.content.decode()
    assert new not in operator.get(f"/console/budgets/{budget.pk}/").content.decode()
    assert AdminAction.objects.get(action="rotate_webhook_secret").changes["alert_webhook_secret"] == [
        mask(old),
        mask(new),
    ]


def test_a_legacy_webhook_is_flagged_for_rotation(operator, acme):
    budget = Budget.objects.create(
        scope="client", client=acme, limit_usd=Decimal("100"), alert_webhook_url="https://hooks.example.com/acme"
    )
    Budget.objects.filter(pk=budget.pk).update(alert_webhook_secret="")
    page = operator.get(f"/console/budgets/{budget.pk}/").content.decode()
    assert "still signed with the shared legacy secret" in page


# --- Django admin --------------------------------------------------------------------------------------------------


@pytest.fixture
def root(db):
    from django.contrib.auth import get_user_model
    from django.test import Client as Browser

    user = get_user_model().objects.create_superuser("root", "root@example.org", "correct horse battery staple")
    browser = Browser()
    browser.force_login(user)
    return browser


def test_django_admin_shows_neither_a_credential_nor_a_webhook_secret_nor_their_tokens(root, research, acme):
    from django.db import connection

    budget = Budget.objects.create(
        scope="client", client=acme, limit_usd=Decimal("100"), alert_webhook_url="https://hooks.example.com/acme"
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT upstream_api_key FROM routing_agent WHERE id = %s", [research.pk])
        agent_token = cursor.fetchone()[0]
        cursor.execute("SELECT alert_webhook_secret FROM billing_budget WHERE id = %s", [budget.pk])
        budget_token = cursor.fetchone()[0]
    pages = {
        f"/admin/routing/agent/{research.pk}/change/": (SECRET, agent_token, "upstream_api_key"),
        "/admin/routing/agent/": (SECRET, agent_token, "upstream_api_key"),
        f"/admin/billing/budget/{budget.pk}/change/": (budget.alert_webhook_secret, budget_token, "webhook_secret"),
        "/admin/billing/budget/": (budget.alert_webhook_secret, budget_token, "webhook_secret"),
    }
    for url, (plaintext, token, name) in pages.items():
        page = root.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        assert plaintext not in html and token not in html and name not in html, url
