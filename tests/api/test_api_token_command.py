"""The api_token command: a new token of a user with a role on stdout, nothing else; rotate, expire, revoke."""

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from keys.api_tokens import live_tokens
from keys.models import ApiToken, hash_key


def api_token(*args) -> str:
    out = StringIO()
    call_command("api_token", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def opens_the_api(raw: str) -> int:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {raw.strip()}")
    return api.get("/api/v1/clients/").status_code


def test_it_prints_only_a_new_token_stored_as_a_hash(admin_user):
    output = api_token("admin")
    raw = output.strip()
    assert output == raw + "\n" and raw.startswith("agt_")
    token = ApiToken.objects.get(user=admin_user)
    assert token.key_hash == hash_key(raw) and token.prefix == raw[:12]
    assert not ApiToken.objects.filter(key_hash=raw).exists()  # never the raw token itself


def test_the_printed_token_opens_the_api(admin_user):
    assert opens_the_api(api_token("admin")) == 200


def test_a_second_token_is_refused_until_rotated_because_the_first_cannot_be_shown_again(admin_user):
    first = api_token("admin")
    with pytest.raises(CommandError, match="--rotate"):
        api_token("admin")
    rotated = api_token("admin", "--rotate")
    assert rotated != first
    assert list(live_tokens(admin_user).values_list("key_hash", flat=True)) == [hash_key(rotated.strip())]
    assert opens_the_api(first) == 401 and opens_the_api(rotated) == 200


def test_a_new_token_expires_after_the_default_lifetime(admin_user, settings):
    settings.GATEWAY_API_TOKEN_DAYS = 30
    api_token("admin")
    expires = ApiToken.objects.get(user=admin_user).expires_at
    assert abs(expires - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)


def test_days_expires_and_no_expiry_set_the_new_tokens_expiry(admin_user, settings):
    api_token("admin", "--days", "7")
    assert abs(live_tokens(admin_user).get().expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    api_token("admin", "--rotate", "--expires", "2099-01-31T18:00:00+00:00")
    assert live_tokens(admin_user).get().expires_at.isoformat() == "2099-01-31T18:00:00+00:00"
    api_token("admin", "--rotate", "--no-expiry")
    assert live_tokens(admin_user).get().expires_at is None
    settings.GATEWAY_API_TOKEN_DAYS = 0
    api_token("admin", "--rotate")
    assert live_tokens(admin_user).get().expires_at is None  # 0 days: no default expiry


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "1 to 36500"),
        (["--expires", "2001-01-01"], "has passed"),
        (["--expires", "next tuesday"], "ISO date"),
        (["--revoke", "--days", "3"], "--revoke issues no token"),
    ],
)
def test_it_refuses_a_bad_expiry_with_a_clear_message(admin_user, args, message):
    with pytest.raises(CommandError, match=message):
        api_token("admin", *args)
    assert not ApiToken.objects.exists()


def test_revoke_ends_the_users_tokens_and_prints_nothing(admin_user):
    raw = api_token("admin")
    assert api_token("admin", "--revoke") == ""
    assert opens_the_api(raw) == 401
    assert not live_tokens(admin_user).exists()


def test_it_refuses_a_user_without_a_role(db):
    get_user_model().objects.create_user("outsider", is_staff=True)
    with pytest.raises(CommandError, match="no role"):
        api_token("outsider")
    with pytest.raises(CommandError, match="no role"):
        api_token("outsider", "--create")
    assert not ApiToken.objects.exists()


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
    assert ApiToken.objects.get(user=user).key_hash == hash_key(token)


def test_create_can_make_a_compliance_user(db):
    api_token("auditor", "--create", "--role", "compliance")
    user = get_user_model().objects.get(username="auditor")
    assert list(user.groups.values_list("name", flat=True)) == ["compliance"]
