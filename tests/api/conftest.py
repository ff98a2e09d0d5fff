"""Personas and small builders shared by the management API tests."""

import itertools
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AuditRecord
from keys.api_tokens import issue_token
from keys.models import Client


@pytest.fixture(autouse=True)
def outbound_allow_lists(settings):
    """The agents and webhooks these tests save point at loopback, 10.0.0.0/8 and names under example.com, none of
    which the outbound policy lets through by default: allowed here on purpose, as a deployment would list them."""
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8", "10.0.0.0/8", ".example.com"]
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = [".example.com"]


_request_ids = itertools.count(1)


def client_with_token(user) -> APIClient:
    """An API client calling with a new token of ``user`` (issued as ``manage.py api_token`` issues them)."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user)[1]}")
    return api


def user_with_role(username: str, role: str | None):
    user = get_user_model().objects.create_user(username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def admin_user(db):
    return user_with_role("admin", "admin")


@pytest.fixture
def admin_token(admin_user):
    """The admin persona's raw token (stored only as a hash)."""
    return issue_token(admin_user)[1]


@pytest.fixture
def operator_api(db):
    """An API client of an operator: manages clients, keys, budgets, agents and prices."""
    return client_with_token(user_with_role("olga", "operator"))


@pytest.fixture
def compliance_api(db):
    """An API client of compliance staff: reads everything, changes nothing."""
    return client_with_token(user_with_role("carl", "compliance"))


@pytest.fixture
def api(admin_token):
    """An API client that calls as the admin."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {admin_token}")
    return client


@pytest.fixture
def outsider_api(db):
    """An API client with a valid token of a user with no role: refused with 403."""
    return client_with_token(user_with_role("outsider", None))


@pytest.fixture
def anonymous_api():
    """An API client with no credentials: refused with 401."""
    return APIClient()


@pytest.fixture
def acme(db):
    return Client.objects.create(name="Acme", slug="acme")


@pytest.fixture
def globex(db):
    return Client.objects.create(name="Globex", slug="globex")


@pytest.fixture
def make_audit(db):
    """Build audit records; ``ago`` is how long before now the request happened."""

    def make(*, ago: timedelta = timedelta(0), **fields) -> AuditRecord:
        defaults = {
            "request_id": f"req-{next(_request_ids)}",
            "created_at": timezone.now() - ago,
            "method": "POST",
            "path": "/v1/chat/completions",
            "status": 200,
        }
        return AuditRecord.objects.create(**{**defaults, **fields})

    return make
