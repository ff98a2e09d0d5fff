"""The console's Sign-ins page (admins only, filterable, paged) and the retention of sign-in events."""

from __future__ import annotations

import re
from datetime import timedelta

from django.utils import timezone

from audit.tasks import apply_audit_retention
from gateway_project.models import AuthEvent

PAGE = "/console/sign-ins/"


def event(outcome=AuthEvent.FAILED, username="mallory", address="203.0.113.5", ago=timedelta(0), **fields):
    return AuthEvent.objects.create(
        created_at=timezone.now() - ago, outcome=outcome, via=AuthEvent.CONSOLE, username=username, address=address,
        **fields,
    )  # fmt: skip


def usernames(page: str) -> list[str]:
    return re.findall(r'<td class="mono">([^<]*)</td>\s*<td>', page)


def test_only_admins_see_the_sign_ins_page_and_its_link(admin, operator, compliance, nobody):
    assert admin.get(PAGE).status_code == 200
    for browser in (operator, compliance, nobody):
        assert browser.get(PAGE).status_code == 403
    assert f'href="{PAGE}"' in admin.get("/console/users/").content.decode()  # the People area's pages
    assert ">People<" in admin.get("/console/").content.decode()
    assert ">People<" not in operator.get("/console/").content.decode()


def test_the_page_lists_events_newest_first_with_address_agent_and_outcome(admin):
    event(username="mallory", ago=timedelta(minutes=5), user_agent="curl/8.0")
    event(AuthEvent.THROTTLED, username="eve", address="2001:db8::7", detail="username limit (20/h)")
    page = admin.get(PAGE).content.decode()
    assert page.index(">eve<") < page.index(">mallory<")
    assert "2001:db8::7" in page and "curl/8.0" in page and "username limit (20/h)" in page
    assert "wrong username or password" in page and "throttled" in page


def test_the_page_filters_by_outcome_username_address_and_time(admin):
    event(username="mallory", address="203.0.113.5")
    event(username="eve", address="203.0.113.6")
    event(AuthEvent.SIGNED_IN, username="ada", address="203.0.113.5")
    event(username="old", address="203.0.113.9", ago=timedelta(days=3))
    assert usernames(admin.get(PAGE, {"outcome": "failed", "address": "203.0.113.5"}).content.decode()) == ["mallory"]
    assert usernames(admin.get(PAGE, {"username": "eve"}).content.decode()) == ["eve"]
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    recent = usernames(admin.get(PAGE, {"since": since, "outcome": "failed"}).content.decode())
    assert sorted(recent) == ["eve", "mallory"]


def test_a_bad_filter_is_a_400_with_the_forms_error(admin):
    response = admin.get(PAGE, {"address": "not-an-address", "outcome": "guessed"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Enter a valid IPv4 or IPv6 address" in page and "Select a valid choice" in page


def test_the_page_is_paged(admin):
    for i in range(30):
        event(username=f"user{i:02}", ago=timedelta(seconds=i))
    first = admin.get(PAGE, {"outcome": "failed"}).content.decode()
    second = admin.get(PAGE, {"outcome": "failed", "page": 2}).content.decode()
    assert len(usernames(first)) == 25 and usernames(second) == [f"user{i:02}" for i in range(25, 30)]
    assert "Page 1 of 2" in first and "outcome=failed" in first  # the next page keeps the filter


def test_the_retention_task_deletes_events_past_their_retention(db, settings, tmp_path):
    settings.GATEWAY_ARCHIVE_DIR = tmp_path
    settings.GATEWAY_AUTH_EVENT_RETENTION_DAYS = 30
    kept = event(ago=timedelta(days=29))
    event(ago=timedelta(days=31))
    summary = apply_audit_retention()
    assert summary["auth_events_deleted"] == 1
    assert list(AuthEvent.objects.values_list("pk", flat=True)) == [kept.pk]


def test_a_retention_of_zero_keeps_events_for_ever(db, settings, tmp_path):
    settings.GATEWAY_ARCHIVE_DIR = tmp_path
    settings.GATEWAY_AUTH_EVENT_RETENTION_DAYS = 0
    event(ago=timedelta(days=4000))
    assert apply_audit_retention()["auth_events_deleted"] == 0
    assert AuthEvent.objects.count() == 1
