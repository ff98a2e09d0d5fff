"""Management API tokens: stored as hashes, expire, rotate; an expired or replaced one gets a 401 that says so."""

import importlib
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client as Browser
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import AdminAction
from keys.api_tokens import issue_token
from keys.models import ApiToken, hash_key
from tests.api.conftest import user_with_role

adopt_legacy_tokens = importlib.import_module("keys.migrations.0007_api_tokens").adopt_legacy_tokens


def calling_with(raw: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    return api


@pytest.fixture
def olga(db):
    return user_with_role("olga", "operator")


def test_only_a_hash_and_a_prefix_of_a_token_are_stored(olga):
    token, raw = issue_token(olga)
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert raw not in str(stored)
    assert stored["key_hash"] == hash_key(raw) and stored["prefix"] == raw[:12]
    assert calling_with(raw).get("/api/v1/clients/").status_code == 200


def test_a_token_expires_after_the_default_lifetime(olga, settings):
    settings.GATEWAY_API_TOKEN_DAYS = 14
    token, _ = issue_token(olga)
    assert token.expires_at - token.created_at == timedelta(days=14)


def test_an_expired_token_gets_401_saying_it_expired_and_when(olga):
    token, raw = issue_token(olga, expires_at=timezone.now() - timedelta(seconds=1))
    response = calling_with(raw).get("/api/v1/clients/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    detail = response.json()["detail"]
    assert "expired at" in detail and token.expires_at.isoformat(timespec="seconds") in detail


def test_a_token_with_no_expiry_keeps_working(olga):
    _, raw = issue_token(olga, expires_at=None)
    assert calling_with(raw).get("/api/v1/clients/").status_code == 200


def test_an_unknown_token_is_refused_as_invalid(db):
    response = calling_with("agt_not-a-real-token").get("/api/v1/clients/")
    assert response.status_code == 401 and response.json()["detail"] == "Invalid token."


def test_a_token_of_a_deactivated_user_is_refused(olga):
    _, raw = issue_token(olga)
    olga.is_active = False
    olga.save()
    assert calling_with(raw).get("/api/v1/clients/").status_code == 401


def test_the_caller_sees_its_own_tokens_expiry(olga):
    token, raw = issue_token(olga)
    body = calling_with(raw).get("/api/v1/token/").json()
    assert body["prefix"] == token.prefix and body["user"] == "olga"
    assert body["expires_at"].startswith(token.expires_at.isoformat(timespec="seconds")[:19])
    assert "token" not in body and "key_hash" not in body


def test_rotating_returns_a_new_token_once_and_ends_the_old_one(olga):
    old, raw = issue_token(olga, expires_at=timezone.now() + timedelta(days=7))
    response = calling_with(raw).post("/api/v1/token/rotate/")
    assert response.status_code == 201
    new_raw = response.json()["token"]
    assert new_raw != raw and new_raw.startswith("agt_")
    new = ApiToken.objects.get(key_hash=hash_key(new_raw))
    assert abs(new.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)  # as long as the old
    assert calling_with(new_raw).get("/api/v1/clients/").status_code == 200
    assert calling_with(new_raw).get("/api/v1/token/").json()["prefix"] == new.prefix  # shown once: not here
    refused = calling_with(raw).get("/api/v1/clients/")
    assert refused.status_code == 401 and "rotated" in refused.json()["detail"]
    old.refresh_from_db()
    assert old.replaced_by == new and old.revoked_at is not None


def test_every_role_may_rotate_its_own_token(db):
    _, raw = issue_token(user_with_role("carl", "compliance"))
    assert calling_with(raw).post("/api/v1/token/rotate/").status_code == 201


def test_a_rotation_is_recorded_in_the_trail_without_the_secret(olga):
    old, raw = issue_token(olga)
    new_raw = calling_with(raw).post("/api/v1/token/rotate/").json()["token"]
    rotated = AdminAction.objects.get(action="rotate", object_type="keys.apitoken")
    assert (rotated.actor, rotated.via, rotated.object_id) == ("olga", "api", str(old.pk))
    assert set(rotated.changes) == {"revoked_at", "replaced_by"}
    created = AdminAction.objects.get(action="create", object_type="keys.apitoken")
    assert raw not in str(created.changes) and new_raw not in str(created.changes)
    assert created.changes["key_hash"][1].startswith("(secret ")


def test_a_token_cannot_be_rotated_twice(olga):
    _, raw = issue_token(olga)
    assert calling_with(raw).post("/api/v1/token/rotate/").status_code == 201
    again = calling_with(raw).post("/api/v1/token/rotate/")
    assert again.status_code == 401 and "rotated" in again.json()["detail"]
    assert ApiToken.objects.filter(user=olga).count() == 2


def test_a_console_session_has_no_token_to_rotate(olga):
    browser = Browser()
    browser.force_login(olga)
    response = browser.post("/api/v1/token/rotate/")
    assert response.status_code in (400, 403)  # 403 when the session's CSRF check comes first
    assert not ApiToken.objects.exists()
    shown = browser.get("/api/v1/token/")
    assert shown.status_code == 400 and "Authorization: Token" in shown.json()["detail"]


def test_tokens_drf_issued_in_clear_keep_working_as_hashes_and_leave_the_old_table_empty(olga, settings):
    settings.GATEWAY_API_TOKEN_DAYS = 30
    legacy = "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamp, user_id integer)")
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [legacy, timezone.now(), olga.pk])
        assert adopt_legacy_tokens(ApiToken, connection) == 1
        cursor.execute("SELECT COUNT(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0
        cursor.execute("DROP TABLE authtoken_token")
    adopted = ApiToken.objects.get(user=olga)
    assert adopted.key_hash == hash_key(legacy) and adopted.prefix == legacy[:8]
    assert adopted.expires_at - adopted.created_at == timedelta(days=30)
    assert calling_with(legacy).get("/api/v1/clients/").status_code == 200


def test_the_schema_describes_token_authentication_and_the_rotation(db):
    _, raw = issue_token(user_with_role("ana", "admin"))
    schema = calling_with(raw).get("/api/schema/", {"format": "json"}).json()
    scheme = schema["components"]["securitySchemes"]["tokenAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert '"Token"' in scheme["description"]
    rotate = schema["paths"]["/api/v1/token/rotate/"]["post"]
    issued = rotate["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "token" in schema["components"]["schemas"][issued]["properties"]
