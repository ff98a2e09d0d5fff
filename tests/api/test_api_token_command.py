"""The api_token management command: a token of a user with a role on stdout, nothing else."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def api_token(*args) -> str:
    out = StringIO()
    call_command("api_token", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_prints_only_the_token_of_a_user_with_a_role(admin_user):
    output = api_token("admin")
    assert output == Token.objects.get(user=admin_user).key + "\n"


def test_the_printed_token_opens_the_api(admin_user):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token('admin').strip()}")
    assert api.get("/api/v1/clients/").status_code == 200


def test_it_prints_the_same_token_until_rotated(admin_user):
    first = api_token("admin")
    assert api_token("admin") == first
    rotated = api_token("admin", "--rotate")
    assert rotated != first
    assert list(Token.objects.filter(user=admin_user).values_list("key", flat=True)) == [rotated.strip()]


def test_it_refuses_a_user_without_a_role(db):
    get_user_model().objects.create_user("outsider", is_staff=True)
    with pytest.raises(CommandError, match="no role"):
        api_token("outsider")
    with pytest.raises(CommandError, match="no role"):
        api_token("outsider", "--create")
    assert not Token.objects.exists()


def test_it_refuses_a_missing_user(db):
    with pytest.raises(CommandError, match="--create"):
        api_token("nobody")
    assert not get_user_model().objects.filter(username="nobody").exists()


def test_it_refuses_an_inactive_user(db):
    get_user_model().objects.create_user("retired", is_staff=True, is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        api_token("retired")


def test_create_makes_an_operator_without_a_usable_password(db):
    token = api_token("robot", "--create").strip()
    user = get_user_model().objects.get(username="robot")
    assert list(user.groups.values_list("name", flat=True)) == ["operator"]
    assert not user.is_superuser and not user.is_staff
    assert not user.has_usable_password()
    assert Token.objects.get(user=user).key == token


def test_create_can_make_a_compliance_user(db):
    api_token("auditor", "--create", "--role", "compliance")
    user = get_user_model().objects.get(username="auditor")
    assert list(user.groups.values_list("name", flat=True)) == ["compliance"]
