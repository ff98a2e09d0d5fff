"""The console's identity provider pages: admins configure providers, every role reads them and checks their keys."""

from __future__ import annotations

import pytest

from keys.models import IdentityProvider
from tests.identity_provider import Issuer


@pytest.fixture
def issuer():
    made = Issuer()
    yield made
    made.stop()


def form(issuer, **fields):
    return {"name": "Corp IdP", "slug": "corp", "issuer": issuer.issuer, "audiences": "gateway, gateway-eu",
            "jwks_url": issuer.jwks_url, "algorithms": ["RS256", "EdDSA"], "client_claim": "client_id",
            "roles_claim": "roles", "groups_claim": "groups", "leeway_seconds": "30", "allowed_agents": "*",
            "allowed_models": "*", "requests_per_minute": "60", "tokens_per_minute": "100000", "max_concurrent": "10",
            "is_active": "on", **fields}  # fmt: skip


def test_an_admin_adds_a_provider_and_a_bad_one_is_shown_why(admin, operator, issuer, db):
    assert operator.get("/console/identity-providers/new/").status_code == 403
    assert operator.post("/console/identity-providers/new/", form(issuer)).status_code == 403
    bad = admin.post("/console/identity-providers/new/", form(issuer, jwks_url="http://idp.example.org/jwks",
                                                              algorithms=["HS256"]))  # fmt: skip
    assert bad.status_code == 400
    text = bad.content.decode()
    assert "https://" in text and "HS256" in text
    assert admin.post("/console/identity-providers/new/", form(issuer)).status_code == 302
    made = IdentityProvider.objects.get()
    assert (made.audiences, made.algorithms, made.allowed_agents) == (["gateway", "gateway-eu"], ["RS256", "EdDSA"],
                                                                      ["*"])  # fmt: skip
    listing = operator.get("/console/identity-providers/").content.decode()
    assert 'data-provider="corp"' in listing and "New identity provider" not in listing


def test_every_role_checks_a_providers_keys(compliance, issuer, db):
    made = IdentityProvider.objects.create(name="Corp", slug="corp", issuer=issuer.issuer, audiences=["gateway"],
                                           jwks_url=issuer.jwks_url)  # fmt: skip
    page = compliance.post(f"/console/identity-providers/{made.pk}/check/").content.decode()
    assert 'data-ok="true"' in page and issuer.keys["ES256"].kid in page
    issuer.body = b"nope"
    page = compliance.post(f"/console/identity-providers/{made.pk}/check/").content.decode()
    assert 'data-ok="false"' in page and "not a JSON object" in page
