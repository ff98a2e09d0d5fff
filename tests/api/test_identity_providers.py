"""Identity providers over the management API: admins configure them, every URL and claim checked on save, the key
set checked on demand, identity keys kept in step and revoked with their provider."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from keys.models import ApiKey, IdentityProvider
from keys.services import identity_key
from tests.identity_provider import Issuer

URL = "/api/v1/identity-providers/"


@pytest.fixture
def issuer():
    made = Issuer()
    yield made
    made.stop()


def provider(issuer, **fields):
    return {"name": "Corp IdP", "slug": "corp", "issuer": issuer.issuer, "audiences": ["gateway"],
            "jwks_url": issuer.jwks_url, **fields}  # fmt: skip


def test_admins_configure_providers_and_others_read_them(api, operator_api, compliance_api, issuer, db):
    assert operator_api.post(URL, provider(issuer), format="json").status_code == 403
    created = api.post(URL, provider(issuer), format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["algorithms"], body["client_claim"], body["allowed_agents"]) == (["RS256", "ES256", "EdDSA"],
                                                                                  "client_id", ["*"])  # fmt: skip
    assert compliance_api.get(f"{URL}{body['id']}/").json()["issuer"] == issuer.issuer
    assert api.patch(f"{URL}{body['id']}/", {"leeway_seconds": 10}, format="json").status_code == 200
    assert [a.action for a in AdminAction.objects.filter(object_type="keys.identityprovider")] == ["update", "create"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"jwks_url": "http://idp.example.com/jwks"}, "jwks_url"),  # plain http off loopback
        ({"jwks_url": "https://192.168.1.5/jwks"}, "jwks_url"),  # a private address
        ({"jwks_url": "https://169.254.169.254/latest"}, "jwks_url"),  # cloud metadata
        ({"algorithms": ["HS256"]}, "algorithms"),
        ({"algorithms": ["none"]}, "algorithms"),
        ({"algorithms": []}, "algorithms"),
        ({"audiences": []}, "audiences"),
        ({"audiences": "gateway"}, "audiences"),
        ({"client_claim": ""}, "client_claim"),
        ({"roles_claim": "ro\x01les"}, "roles_claim"),
        ({"leeway_seconds": 3600}, "leeway_seconds"),
        ({"allowed_agents": "all"}, "allowed_agents"),
    ],
)
def test_a_bad_provider_is_refused_saying_why(api, issuer, db, fields, field):
    answer = api.post(URL, provider(issuer, **fields), format="json")
    assert answer.status_code == 400, answer.json()
    assert field in answer.json(), answer.json()


def test_the_check_fetches_the_key_set_and_says_what_it_holds(api, issuer, db):
    made = api.post(URL, provider(issuer, algorithms=["ES256"]), format="json").json()
    checked = api.post(f"{URL}{made['id']}/check/").json()
    assert checked["ok"] is True and checked["error"] == ""
    assert {key["algorithm"] for key in checked["keys"]} == {"RS256", "ES256", "EdDSA"}
    issuer.body = b"{}"
    checked = api.post(f"{URL}{made['id']}/check/").json()
    assert checked["ok"] is False and "list of keys" in checked["error"]


def test_identity_keys_follow_their_provider_and_are_revoked_with_it(api, issuer, acme, db):
    made = api.post(URL, provider(issuer), format="json").json()
    key = identity_key(made["id"], acme.slug)
    assert key.prefix.startswith("idk_") and identity_key(made["id"], acme.slug).pk == key.pk
    assert identity_key(made["id"], "nobody") is None
    api.patch(f"{URL}{made['id']}/", {"requests_per_minute": 7, "allowed_agents": ["research"]}, format="json")
    key.refresh_from_db()
    assert (key.requests_per_minute, key.allowed_agents) == (7, ["research"])
    assert api.delete(f"{URL}{made['id']}/").status_code == 204
    key.refresh_from_db()
    assert key.revoked_at is not None and key.identity_provider is None
    assert not IdentityProvider.objects.exists() and ApiKey.objects.filter(pk=key.pk).exists()
