"""The sign-in throttle of the console and Django admin: by the real client address and by the username tried."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import django_ratelimit.core
import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client as Browser

from gateway_project.models import AuthEvent

PASSWORD = "correct horse battery staple"
LOAD_BALANCER = "10.0.0.2"
CONSOLE = "/console/login/"
ADMIN = "/admin/login/"


@pytest.fixture(autouse=True)
def fresh_limits(settings, monkeypatch):
    """Small limits, counters that start at zero (they live in the cache), and a still clock for the limits'
    windows, so that none rolls over in the middle of a test on a slow machine."""
    settings.LOGIN_RATE = "3/m"
    settings.LOGIN_USERNAME_RATE = "4/h"
    now = time.time()
    monkeypatch.setattr(django_ratelimit.core, "time", SimpleNamespace(time=lambda: now))
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def sam(db):
    return get_user_model().objects.create_user("sam", password=PASSWORD)


@pytest.fixture
def behind_load_balancer(settings):
    settings.GATEWAY = {**settings.GATEWAY, "TRUSTED_PROXIES": 1}


def attempt(url, username="sam", password="wrong", address="198.51.100.7", forwarded_for=None, agent="pytest-ua"):
    """One sign-in from a fresh browser at ``address`` (and through a load balancer if ``forwarded_for``)."""
    headers = {"REMOTE_ADDR": address, "HTTP_USER_AGENT": agent}
    if forwarded_for is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return Browser(**headers).post(url, {"username": username, "password": password})


def statuses(responses):
    return [response.status_code for response in responses]


@pytest.mark.parametrize("url", [CONSOLE, ADMIN])
def test_too_many_attempts_from_one_address_get_429_with_a_form_error_and_a_retry_after(sam, url):
    answers = [attempt(url, username=f"user{i}") for i in range(4)]
    assert statuses(answers) == [200, 200, 200, 429]
    throttled = answers[-1]
    assert "Too many sign-in attempts from your address" in throttled.content.decode()
    assert 1 <= int(throttled["Retry-After"]) <= 60
    # Throttled attempts are refused unchecked: even the right password does not sign in.
    refused = attempt(url, password=PASSWORD)
    assert refused.status_code == 429 and "_auth_user_id" not in refused.client.session


def test_behind_a_trusted_load_balancer_each_client_address_has_its_own_limit(sam, behind_load_balancer):
    # Every request comes from the load balancer's address; the client's is the header's last hop.
    first = [attempt(CONSOLE, address=LOAD_BALANCER, forwarded_for="203.0.113.10") for _ in range(4)]
    assert statuses(first) == [200, 200, 200, 429]
    other = attempt(CONSOLE, address=LOAD_BALANCER, forwarded_for="203.0.113.11", password=PASSWORD)
    assert other.status_code == 302  # another client behind the same balancer signs in
    # What the client wrote further left is not believed: rotating it is still the same address.
    spoofed = attempt(CONSOLE, address=LOAD_BALANCER, forwarded_for="192.0.2.99, 203.0.113.10")
    assert spoofed.status_code == 429
    event = AuthEvent.objects.filter(outcome=AuthEvent.SIGNED_IN).get()
    assert event.address == "203.0.113.11"


def test_without_trusted_proxies_a_forwarded_for_header_is_ignored(sam):
    answers = [attempt(CONSOLE, address="198.51.100.7", forwarded_for=f"203.0.113.{i}") for i in range(4)]
    assert statuses(answers) == [200, 200, 200, 429]
    assert set(AuthEvent.objects.values_list("address", flat=True)) == {"198.51.100.7"}


def test_an_ipv6_client_counts_with_its_whole_64(sam):
    answers = [attempt(CONSOLE, address=f"2001:db8:1:2::{i}") for i in range(1, 5)]
    assert statuses(answers) == [200, 200, 200, 429]


def test_an_ipv4_client_shown_as_an_ipv4_mapped_address_counts_as_its_ipv4(sam):
    """A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d: each is its own IPv4 client, not one /64 of all."""
    answers = [attempt(CONSOLE, address="::ffff:198.51.100.7") for _ in range(3)]
    assert statuses(answers) == [200, 200, 200]
    assert attempt(CONSOLE, address="198.51.100.7").status_code == 429
    assert attempt(CONSOLE, address="::ffff:198.51.100.8", password=PASSWORD).status_code == 302


def test_failures_at_one_username_from_many_addresses_throttle_that_username(sam):
    failures = [attempt(CONSOLE, address=f"198.51.100.{i}") for i in range(4)]
    assert statuses(failures) == [200] * 4
    # The fifth try, from yet another address and with the right password, is refused unchecked.
    refused = attempt(CONSOLE, address="198.51.100.200", password=PASSWORD)
    assert refused.status_code == 429
    assert "Too many failed sign-ins for this username" in refused.content.decode()
    assert "_auth_user_id" not in refused.client.session
    # Other accounts are not affected, nor is the name written differently a way around it.
    assert attempt(CONSOLE, username="SAM", address="198.51.100.201").status_code == 429
    get_user_model().objects.create_user("kim", password=PASSWORD)
    assert attempt(CONSOLE, username="kim", password=PASSWORD, address="198.51.100.202").status_code == 302


def test_the_username_limit_also_guards_django_admin(sam):
    for i in range(4):
        attempt(CONSOLE, address=f"198.51.100.{i}")
    get_user_model().objects.filter(pk=sam.pk).update(is_staff=True, is_superuser=True)
    answer = attempt(ADMIN, address="198.51.100.77", password=PASSWORD)
    assert answer.status_code == 429 and "Too many failed sign-ins for this username" in answer.content.decode()


def test_successful_sign_ins_do_not_count_against_the_username(sam, settings):
    settings.LOGIN_RATE = "100/m"
    answers = [attempt(CONSOLE, password=PASSWORD, address=f"198.51.100.{i}") for i in range(6)]
    assert statuses(answers) == [302] * 6


def test_sign_ins_failures_throttling_and_sign_outs_are_recorded_without_the_password(sam):
    secret = "hunter2-wrong-password"
    attempt(CONSOLE, password=secret, agent="Mozilla/5.0 " + "x" * 400)
    attempt(CONSOLE, username="nobody-here", password=secret)
    signed_in = attempt(CONSOLE, password=PASSWORD, address="198.51.100.8")
    signed_in.client.post("/console/logout/", REMOTE_ADDR="198.51.100.8")
    for _ in range(3):
        attempt(CONSOLE, address="198.51.100.8")

    events = list(AuthEvent.objects.order_by("id"))
    assert [(e.outcome, e.username, e.user_id) for e in events] == [
        (AuthEvent.FAILED, "sam", sam.pk),
        (AuthEvent.FAILED, "nobody-here", None),
        (AuthEvent.SIGNED_IN, "sam", sam.pk),
        (AuthEvent.SIGNED_OUT, "sam", sam.pk),
        (AuthEvent.FAILED, "sam", sam.pk),
        (AuthEvent.FAILED, "sam", sam.pk),
        (AuthEvent.THROTTLED, "sam", sam.pk),  # the address's fourth attempt this minute
    ]
    assert events[0].address == "198.51.100.7" and events[2].address == "198.51.100.8"
    assert events[0].user_agent.startswith("Mozilla/5.0 ") and len(events[0].user_agent) == 200
    assert {e.via for e in events} == {AuthEvent.CONSOLE}
    assert "address limit" in events[-1].detail
    stored = json.dumps(list(AuthEvent.objects.values()), default=str)
    assert secret not in stored and PASSWORD not in stored


def test_a_throttled_address_is_recorded_once_a_minute_not_once_per_attempt(sam):
    for _ in range(10):
        attempt(CONSOLE)
    assert AuthEvent.objects.filter(outcome=AuthEvent.THROTTLED).count() == 1


def test_django_admin_sign_ins_are_recorded_as_admin(sam):
    attempt(ADMIN)
    get_user_model().objects.filter(pk=sam.pk).update(is_staff=True, is_superuser=True)
    assert attempt(ADMIN, password=PASSWORD, address="198.51.100.9").status_code == 302
    assert list(AuthEvent.objects.order_by("id").values_list("outcome", "via")) == [
        (AuthEvent.FAILED, AuthEvent.ADMIN),
        (AuthEvent.SIGNED_IN, AuthEvent.ADMIN),
    ]


def test_a_right_password_on_an_account_not_allowed_in_django_admin_is_recorded_as_refused(sam):
    answer = attempt(ADMIN, password=PASSWORD)
    assert answer.status_code == 200 and "_auth_user_id" not in answer.client.session
    event = AuthEvent.objects.get()
    assert (event.outcome, event.via, event.user_id) == (AuthEvent.REFUSED, AuthEvent.ADMIN, sam.pk)
