"""API keys over the management API: issued once, stored as a hash, revoked on demand."""

import hashlib
import logging

import pytest

from keys.models import ApiKey
from keys.services import issue_key


@pytest.fixture
def key(acme):
    key, _raw = issue_key(acme, name="ci", allowed_agents=["research"], allowed_models=["*"])
    return key


def issue(api, **fields):
    return api.post("/api/v1/keys/", {"allowed_agents": ["*"], "allowed_models": ["*"], **fields}, format="json")


def test_it_returns_the_raw_key_once(api, acme):
    response = issue(api, client=acme.pk, name="ci")
    assert response.status_code == 201
    body = response.json()
    raw = body["key"]
    assert raw.startswith("agk_")
    assert body["prefix"] == raw[:12]
    assert body["status"] == "active"
    assert body["client_slug"] == "acme"

    retrieved = api.get(f"/api/v1/keys/{body['id']}/").json()
    listed = api.get("/api/v1/keys/").json()["results"]
    assert "key" not in retrieved
    assert all("key" not in item for item in listed)
    assert raw not in str(retrieved) + str(listed)


def test_it_stores_only_the_sha256_of_the_raw_key(api, acme):
    body = issue(api, client=acme.pk).json()
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.key_hash == hashlib.sha256(body["key"].encode()).hexdigest()
    assert body["key"] not in str(ApiKey.objects.filter(pk=stored.pk).values().get())


def test_it_never_logs_the_raw_key(api, acme, caplog):
    with caplog.at_level(logging.DEBUG):
        raw = issue(api, client=acme.pk).json()["key"]
    assert raw not in caplog.text


def test_it_never_exposes_the_key_hash(api, key):
    assert "key_hash" not in api.get(f"/api/v1/keys/{key.pk}/").json()
    assert "key_hash" not in api.get("/api/v1/keys/").json()["results"][0]
    assert key.key_hash not in api.get("/api/v1/keys/").content.decode()


def test_it_issues_a_key_with_scopes_and_limits(api, acme):
    body = issue(
        api,
        client=acme.pk,
        allowed_agents=["research", "coder"],
        allowed_models=["*"],
        requests_per_minute=5,
        tokens_per_minute=1000,
        max_concurrent=0,
    ).json()
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.allowed_agents == ["research", "coder"]
    assert stored.allowed_models == ["*"]
    assert (stored.requests_per_minute, stored.tokens_per_minute, stored.max_concurrent) == (5, 1000, 0)


def test_it_ignores_read_only_fields_on_create(api, acme):
    body = issue(
        api,
        client=acme.pk,
        prefix="agk_chosen",
        key_hash="0" * 64,
        revoked_at="2020-01-01T00:00:00Z",
        last_used_at="2020-01-01T00:00:00Z",
        status="revoked",
    ).json()
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.prefix == body["key"][:12]
    assert stored.key_hash != "0" * 64
    assert stored.revoked_at is None
    assert stored.last_used_at is None
    assert body["status"] == "active"


def test_it_revokes_a_key(api, key):
    response = api.post(f"/api/v1/keys/{key.pk}/revoke/")
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"
    assert response.json()["revoked_at"] is not None
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert "key" not in response.json()


def test_revoking_twice_keeps_the_first_revocation_time(api, key):
    first = api.post(f"/api/v1/keys/{key.pk}/revoke/").json()["revoked_at"]
    assert api.post(f"/api/v1/keys/{key.pk}/revoke/").json()["revoked_at"] == first


def test_it_updates_a_key_partially(api, key):
    response = api.patch(
        f"/api/v1/keys/{key.pk}/", {"requests_per_minute": 7, "is_active": False, "name": "renamed"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "disabled"
    key.refresh_from_db()
    assert (key.requests_per_minute, key.is_active, key.name) == (7, False, "renamed")


def test_it_cannot_unrevoke_a_key_by_patching(api, key):
    api.post(f"/api/v1/keys/{key.pk}/revoke/")
    api.patch(f"/api/v1/keys/{key.pk}/", {"revoked_at": None}, format="json")
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_it_refuses_to_move_a_key_to_another_client(api, key, globex):
    response = api.patch(f"/api/v1/keys/{key.pk}/", {"client": globex.pk}, format="json")
    assert response.status_code == 400
    assert "client" in response.json()


def test_it_does_not_offer_put_on_keys(api, key):
    response = api.put(f"/api/v1/keys/{key.pk}/", {"client": key.client_id}, format="json")
    assert response.status_code == 405


def test_it_deletes_a_key(api, key):
    assert api.delete(f"/api/v1/keys/{key.pk}/").status_code == 204
    assert not ApiKey.objects.filter(pk=key.pk).exists()


def test_it_filters_keys_by_client_slug_and_state(api, acme, globex):
    acme_key, _ = issue_key(acme, allowed_agents=["*"], allowed_models=["*"])
    globex_key, _ = issue_key(globex, allowed_agents=["*"], allowed_models=["*"], is_active=False)

    def ids(**params):
        return [k["id"] for k in api.get("/api/v1/keys/", params).json()["results"]]

    assert ids(client=acme.pk) == [acme_key.pk]
    assert ids(client__slug="globex") == [globex_key.pk]
    assert ids(is_active="false") == [globex_key.pk]
    assert ids(prefix=acme_key.prefix) == [acme_key.pk]


@pytest.mark.parametrize(
    "scope",
    [
        "research",
        [1, 2],
        [],
        [""],
        ["  "],
        [None],
        ["*", "research"],
        {"research": True},
    ],
)
def test_it_refuses_allowed_agents_that_are_not_a_list_of_names(api, acme, scope):
    response = issue(api, client=acme.pk, allowed_agents=scope)
    assert response.status_code == 400
    assert "allowed_agents" in response.json()
    assert not ApiKey.objects.exists()


def test_it_requires_scopes_to_be_stated(api, acme):
    response = api.post("/api/v1/keys/", {"client": acme.pk}, format="json")
    assert response.status_code == 400
    assert set(response.json()) >= {"allowed_agents", "allowed_models"}


def test_it_refuses_allowed_models_that_are_not_a_list_of_names(api, acme):
    response = issue(api, client=acme.pk, allowed_models=[["gpt"]])
    assert response.status_code == 400
    assert "allowed_models" in response.json()


@pytest.mark.parametrize(
    ("field", "value"),
    [("requests_per_minute", 0), ("tokens_per_minute", 0), ("max_concurrent", -1), ("requests_per_minute", "many")],
)
def test_it_refuses_limits_out_of_range(api, acme, field, value):
    response = issue(api, client=acme.pk, **{field: value})
    assert response.status_code == 400
    assert field in response.json()
    assert response.json()["detail"].startswith(f"{field}:")


def test_it_refuses_a_key_for_a_missing_client(api):
    response = issue(api, client=999_999)
    assert response.status_code == 400
    assert "client" in response.json()
