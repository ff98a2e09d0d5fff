"""Personas for the console: one user per role, one without a role."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client as Browser


@pytest.fixture(autouse=True)
def outbound_allow_lists(settings):
    """The agents and webhooks these tests save point at loopback, 10.0.0.0/8 and names under example.com, none of
    which the outbound policy lets through by default: allowed here on purpose, as a deployment would list them."""
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8", "10.0.0.0/8", ".example.com"]
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = [".example.com"]


def _browser(username, role):
    user = get_user_model().objects.create_user(username, password="correct horse battery staple")
    if role:
        user.groups.add(Group.objects.get(name=role))
    browser = Browser()
    browser.force_login(user)
    return browser


@pytest.fixture
def admin(db):
    return _browser("ada", "admin")


@pytest.fixture
def operator(db):
    return _browser("olga", "operator")


@pytest.fixture
def compliance(db):
    return _browser("carl", "compliance")


@pytest.fixture
def nobody(db):
    return _browser("nina", None)


@pytest.fixture
def acme(db):
    from keys.models import Client

    return Client.objects.create(name="Acme", slug="acme")
