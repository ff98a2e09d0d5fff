"""Personas for the audit tests: a console session and an API token per role.

The chain tests write through the gateway's own writer, which commits, so they and
their personas use committed data (``live_db``) with names of their own; ``console_as``
and ``api_as`` make a persona of any role in the test's rolled-back transaction.
"""

import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client as Browser
from rest_framework.test import APIClient

from keys.api_tokens import issue_token


def _user(username, role):
    name = f"{username}-{uuid.uuid4().hex[:8]}"
    user = get_user_model().objects.create_user(name, password="correct horse battery staple")
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def _browser(user):
    browser = Browser()
    browser.force_login(user)
    return browser


@pytest.fixture
def admin_console(live_db):
    return _browser(_user("ada", "admin"))


@pytest.fixture
def compliance_console(live_db):
    return _browser(_user("carl", "compliance"))


@pytest.fixture
def nobody_console(live_db):
    return _browser(_user("nina", None))


@pytest.fixture
def compliance_api(live_db):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(_user('cora', 'compliance'))[1]}")
    return api


@pytest.fixture
def admin_api(live_db):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(_user('adam', 'admin'))[1]}")
    return api


@pytest.fixture
def console_as(db):
    """``console_as("admin")``: a signed-in browser of a user holding that role (None: no role)."""

    def make(role):
        return _browser(_user(role or "nobody", role))

    return make


@pytest.fixture
def api_as(db):
    """``api_as("admin")``: a management API client with a token of a user holding that role."""

    def make(role):
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(_user(role or 'nobody', role))[1]}")
        return api

    return make
