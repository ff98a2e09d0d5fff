"""Django admin is a read-only window for superusers: no change sidesteps the admin-action trail, no secret shows."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as Browser
from django.utils import timezone

from audit.models import AdminAction
from billing.models import Budget, ModelPrice, UsageRecord
from keys.api_tokens import issue_token
from keys.models import ApiKey, Client
from keys.services import issue_key
from routing.models import Agent

UPSTREAM_SECRET = "sk-upstream-do-not-show-3f9a1c"


@pytest.fixture
def root(db):
    """A superuser signed in to Django admin."""
    user = get_user_model().objects.create_superuser("root", "root@example.org", "correct horse battery staple")
    browser = Browser()
    browser.force_login(user)
    return browser


@pytest.fixture
def agent(db):
    return Agent.objects.create(
        slug="admin-test-agent",
        name="Admin test",
        upstream_url="http://10.0.0.5:9000",
        upstream_api_key=UPSTREAM_SECRET,
    )


@pytest.fixture
def usage(acme):
    return UsageRecord.objects.create(
        request_id="req-admin-1", created_at=timezone.now(), client=acme, agent="research", model="gpt-4o-mini",
        input_tokens=10, output_tokens=20, cost_usd=Decimal("0.5"),
    )  # fmt: skip


def test_a_superuser_cannot_delete_a_usage_record_in_django_admin(root, usage):
    assert root.get(f"/admin/billing/usagerecord/{usage.pk}/delete/").status_code == 403
    assert root.post(f"/admin/billing/usagerecord/{usage.pk}/delete/", {"post": "yes"}).status_code == 403
    root.post("/admin/billing/usagerecord/", {"action": "delete_selected", "_selected_action": [usage.pk],
                                             "post": "yes"})  # fmt: skip
    assert UsageRecord.objects.filter(pk=usage.pk).exists()


def test_a_superuser_cannot_change_an_agent_in_django_admin(root, agent):
    form = {"slug": agent.slug, "name": "Renamed", "kind": "agent", "upstream_url": "http://evil.example",
            "upstream_api_key": "", "timeout_seconds": 1}  # fmt: skip
    assert root.post(f"/admin/routing/agent/{agent.pk}/change/", form).status_code == 403
    agent.refresh_from_db()
    assert (agent.name, agent.upstream_api_key) == ("Admin test", UPSTREAM_SECRET)


def test_every_governed_model_is_read_only_in_django_admin(root, acme, agent, usage):
    key, _ = issue_key(acme)
    price = ModelPrice.objects.create(model="admin-test-model", input_per_million=1, output_per_million=2)
    budget = Budget.objects.create(client=acme, limit_usd=10)
    AdminAction.objects.create(created_at=timezone.now(), actor="x", via="console", action="update", object_type="x")
    objects = {
        "keys/client": acme, "keys/apikey": key, "routing/agent": agent, "billing/modelprice": price,
        "billing/budget": budget, "billing/usagerecord": usage, "audit/adminaction": AdminAction.objects.first(),
    }  # fmt: skip
    for path, obj in objects.items():
        assert root.get(f"/admin/{path}/").status_code == 200, path
        assert root.get(f"/admin/{path}/{obj.pk}/change/").status_code == 200, path  # shown, read-only
        assert root.get(f"/admin/{path}/add/").status_code == 403, path
        assert root.post(f"/admin/{path}/{obj.pk}/change/", {}).status_code == 403, path
        assert root.post(f"/admin/{path}/{obj.pk}/delete/", {"post": "yes"}).status_code == 403, path
        assert type(obj).objects.filter(pk=obj.pk).exists(), path
    assert Client.objects.get(pk=acme.pk).name == "Acme" and ApiKey.objects.filter(pk=key.pk, is_active=True).exists()


def test_the_agent_admin_never_shows_the_upstream_credential(root, agent):
    for url in (f"/admin/routing/agent/{agent.pk}/change/", "/admin/routing/agent/", "/admin/routing/agent/?q=sk-"):
        page = root.get(url)
        assert page.status_code == 200 and UPSTREAM_SECRET not in page.content.decode(), url
    assert "Admin test" in root.get(f"/admin/routing/agent/{agent.pk}/change/").content.decode()


def test_the_key_and_user_admins_never_show_hashes(root, acme):
    key, _ = issue_key(acme)
    assert key.key_hash not in root.get(f"/admin/keys/apikey/{key.pk}/change/").content.decode()
    user = get_user_model().objects.get(username="root")
    page = root.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert user.password.split("$")[-1] not in page and "pbkdf2" not in page


def test_api_tokens_are_not_in_django_admin(root):
    token, raw = issue_token(get_user_model().objects.get(username="root"))
    assert root.get("/admin/authtoken/tokenproxy/").status_code == 404
    assert root.get("/admin/authtoken/token/").status_code == 404
    assert root.get("/admin/keys/apitoken/").status_code == 404
    index = root.get("/admin/").content.decode()
    assert raw not in index and token.key_hash not in index and "API token" not in index


def test_django_admin_is_for_superusers_only(admin):
    assert admin.get("/admin/").status_code == 302  # an admin-role user who is not a superuser signs in again
