"""The console's pages and actions, per role."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client as Browser
from django.utils import timezone

from audit.models import AdminAction, AuditRecord
from keys.models import ApiKey, Client, hash_key

READ_PAGES = ["/console/", "/console/clients/", "/console/audit/"]


@pytest.fixture
def records(db, acme):
    now = timezone.now()

    def make(i, **fields):
        defaults = dict(
            request_id=f"r{i}", created_at=now - timedelta(minutes=i), client_id=acme.pk, client_slug="acme",
            key_prefix="agk_abcdefgh", agent="research", method="POST", path="/v1/chat/completions", status=200,
            latency_ms=12.5, input_tokens=3, output_tokens=5, input_preview="hello", output_preview="world",
        )  # fmt: skip
        return AuditRecord.objects.create(**{**defaults, **fields})

    return [
        make(1),
        make(2, status=429, error_type="rate_limit_requests", agent="code"),
        make(3, input_preview='=HYPERLINK("http://evil")', client_slug="other", client_id=None),
    ]


@pytest.mark.parametrize("url", READ_PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(db, url):
    response = Browser().get(url)
    assert response.status_code == 302 and response["Location"].startswith("/console/login/")


@pytest.mark.parametrize("url", READ_PAGES)
def test_every_role_reads_the_pages_and_a_user_without_a_role_gets_403(admin, operator, compliance, nobody, url):
    for browser in (admin, operator, compliance):
        assert browser.get(url).status_code == 200
    assert nobody.get(url).status_code == 403


def test_the_dashboard_shows_traffic_and_spend(operator, records):
    page = operator.get("/console/").content.decode()
    assert "Requests today" in page and "Spend this month" in page
    assert "rate_limit_requests" in page  # the latest requests table


def test_sign_in_works_and_is_throttled(db):
    from django.contrib.auth import get_user_model

    cache.clear()
    get_user_model().objects.create_user("sam", password="correct horse battery staple")
    browser = Browser()
    response = browser.post("/console/login/", {"username": "sam", "password": "correct horse battery staple"})
    assert response.status_code == 302
    cache.clear()
    stranger = Browser()
    statuses = [
        stranger.post("/console/login/", {"username": "sam", "password": "wrong"}).status_code for _ in range(21)
    ]
    # Ten tries a minute; the limit's window may roll over once during the test, never twice.
    assert statuses[:10] == [200] * 10 and 429 in statuses
    cache.clear()


def test_forms_need_the_csrf_token(db, acme):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user("op")
    user.groups.add(Group.objects.get(name="operator"))
    browser = Browser(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.post("/console/clients/new/", {"name": "X", "slug": "x"}).status_code == 403
    assert not Client.objects.filter(slug="x").exists()


def test_an_operator_creates_and_edits_a_client_and_the_trail_says_so(operator):
    response = operator.post(
        "/console/clients/new/", {"name": "Beta", "slug": "beta", "contact": "b@x", "is_active": "on"}
    )
    client = Client.objects.get(slug="beta")
    assert response.status_code == 302 and response["Location"] == f"/console/clients/{client.pk}/"
    operator.post(f"/console/clients/{client.pk}/edit/", {"name": "Beta Ltd", "slug": "beta", "contact": "b@x"})
    client.refresh_from_db()
    assert client.name == "Beta Ltd" and not client.is_active
    actions = list(AdminAction.objects.order_by("id").values_list("actor", "via", "action"))
    assert actions == [("olga", "console", "create"), ("olga", "console", "update")]


def test_a_bad_client_form_shows_errors_and_saves_nothing(operator, acme):
    response = operator.post("/console/clients/new/", {"name": "", "slug": "acme"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "This field is required" in page and "already exists" in page
    assert Client.objects.count() == 1


def test_compliance_staff_cannot_change_anything(compliance, acme):
    assert compliance.get("/console/clients/new/").status_code == 403
    assert compliance.post("/console/clients/new/", {"name": "X", "slug": "x"}).status_code == 403
    assert compliance.post(f"/console/clients/{acme.pk}/keys/new/", {"all_agents": "on"}).status_code == 403
    assert not Client.objects.filter(slug="x").exists() and not ApiKey.objects.exists()


def new_key(browser, client, **fields):
    data = {"name": "ci", "all_agents": "on", "models_text": "*", "requests_per_minute": 60,
            "tokens_per_minute": 1000, "max_concurrent": 5, **fields}  # fmt: skip
    return browser.post(f"/console/clients/{client.pk}/keys/new/", data, follow=True)


def test_a_new_key_is_shown_exactly_once(operator, acme):
    page = new_key(operator, acme).content.decode()
    raw = re.search(r'id="raw-key">(agk_[^<]+)<', page).group(1)
    key = ApiKey.objects.get()
    assert key.key_hash == hash_key(raw) and key.allowed_agents == ["*"]
    again = operator.get(f"/console/keys/{key.pk}/issued/").content.decode()
    assert raw not in again and "cannot be shown again" in again
    assert raw not in json.dumps(list(AdminAction.objects.values("changes")))


def test_a_key_form_needs_an_agent_and_valid_limits(operator, acme):
    response = operator.post(
        f"/console/clients/{acme.pk}/keys/new/",
        {"models_text": "*", "requests_per_minute": 0, "tokens_per_minute": 10, "max_concurrent": 1},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Choose at least one agent" in page and "greater than or equal to 1" in page
    assert not ApiKey.objects.exists()


def test_rotating_issues_a_successor_and_expires_the_old_key_after_the_grace(operator, acme):
    new_key(operator, acme)
    old = ApiKey.objects.get()
    page = operator.post(f"/console/keys/{old.pk}/rotate/", {"grace_hours": 2}, follow=True).content.decode()
    assert re.search(r'id="raw-key">agk_', page)
    old.refresh_from_db()
    successor = ApiKey.objects.exclude(pk=old.pk).get()
    assert old.replaced_by == successor and successor.allowed_agents == old.allowed_agents
    assert abs((old.expires_at - timezone.now()) - timedelta(hours=2)) < timedelta(minutes=1)
    assert old.status == "active"  # still in its grace period
    assert list(AdminAction.objects.filter(action="rotate").values_list("object_id", flat=True)) == [str(old.pk)]


def test_revoking_a_key(operator, acme):
    new_key(operator, acme)
    key = ApiKey.objects.get()
    response = operator.post(f"/console/keys/{key.pk}/revoke/")
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.status == "revoked"
    assert AdminAction.objects.filter(action="revoke", object_id=str(key.pk)).exists()


def test_the_audit_log_filters(operator, records):
    def shown(query):
        page = operator.get(f"/console/audit/?{query}").content.decode()
        return sorted(set(re.findall(r"/console/audit/(\d+)/", page)))

    assert len(shown("")) == 3
    assert shown("status=429") == [str(records[1].pk)]
    assert shown("agent=code") == [str(records[1].pk)]
    assert shown("client=other") == [str(records[2].pk)]
    assert shown("text=hyperlink") == [str(records[2].pk)]
    since = (timezone.now() - timedelta(minutes=1, seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
    assert shown(f"since={since}") == [str(records[0].pk)]
    assert operator.get(f"/console/audit/{records[0].pk}/").status_code == 200


def test_compliance_exports_the_filtered_log_as_csv_with_formulas_neutralised(compliance, records):
    response = compliance.get("/console/audit/export/?format=csv")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 3
    hostile = next(row for row in rows if row["request_id"] == "r3")
    assert hostile["input_preview"].startswith("'=HYPERLINK")
    filtered = compliance.get("/console/audit/export/?format=csv&status=429")
    assert len(list(csv.DictReader(io.StringIO(b"".join(filtered.streaming_content).decode())))) == 1
    first, second = AdminAction.objects.filter(action="export").order_by("id")
    assert first.actor == "carl" and first.changes["filter"] == [None, {}]
    assert second.changes["filter"] == [None, {"status": "429"}]


def test_compliance_exports_json_lines(compliance, records):
    response = compliance.get("/console/audit/export/?format=jsonl&agent=research")
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert {line["request_id"] for line in lines} == {"r1", "r3"}


def test_operators_may_not_export_or_read_the_trail(operator, records):
    assert operator.get("/console/audit/export/?format=csv").status_code == 403
    assert operator.get("/console/admin-actions/").status_code == 403


def test_compliance_reads_and_exports_the_trail(compliance, operator, acme):
    operator.post(f"/console/clients/{acme.pk}/edit/", {"name": "Acme 2", "slug": "acme", "is_active": "on"})
    page = compliance.get("/console/admin-actions/").content.decode()
    assert "olga" in page and "Acme → Acme 2" in page
    response = compliance.get("/console/admin-actions/export/?format=jsonl")
    lines = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert lines[0]["changes"]["name"] == ["Acme", "Acme 2"]


def test_an_unknown_export_format_is_a_404(compliance):
    assert compliance.get("/console/audit/export/?format=xlsx").status_code == 404


def test_a_clients_page_shows_each_keys_usage_and_the_spend_trend(operator, acme):
    from decimal import Decimal

    from billing.models import UsageRecord
    from keys.services import issue_key

    key, _ = issue_key(acme, allowed_agents=["*"], allowed_models=["*"])
    for cost in ("0.25", "0.50"):
        UsageRecord.objects.create(
            request_id=f"u{cost}", created_at=timezone.now(), client=acme, api_key=key, agent="research",
            model="gpt-4o", input_tokens=10, output_tokens=20, cost_usd=Decimal(cost),
        )  # fmt: skip
    page = operator.get(f"/console/clients/{acme.pk}/").content.decode()
    assert "2 req · 60 tok · $0.75" in page
    trend = json.loads(re.search(r'id="spend-trend" type="application/json">(.*?)</script>', page).group(1))
    assert len(trend) == 30 and trend[-1]["cost"] == 0.75 and sum(p["cost"] for p in trend) == 0.75


def test_django_admin_is_for_superusers_only(admin, db):
    from django.contrib.auth import get_user_model

    assert admin.get("/admin/").status_code == 302  # an admin-role user who is not a superuser
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-long-enough-1")
    browser = Browser()
    browser.force_login(root)
    assert browser.get("/admin/").status_code == 200
