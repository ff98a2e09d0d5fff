"""Callers with a JWT from a configured identity provider, under both servers: verified against the provider's JWKS on
loopback, every refusal a clear 401, keys rotated, roles and groups from claims, served through an identity key."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.identity_provider import Issuer
from tests.waiting import until

INVOKE = "/v1/agent/invoke"


@pytest.fixture(scope="module")
def server(either_server):
    return either_server


def call(server, token, agent="research", **options):
    with server.client(token) as client:
        return client.post(INVOKE, json={"agent": agent, "input": "hello"}, **options)


def in_force(server, issuer, provider):
    """Wait for the gateway to know the provider: a good token is answered."""
    token = issuer.token(client_id=provider.client_slug)
    return until(lambda: (r := call(server, token)).status_code == 200 and r, "the provider in force")


def refused(response, code="invalid_token", status=401) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["x-request-id"]
    return error["message"]


def test_a_token_calls_an_agent_through_its_clients_identity_key_and_the_record_names_the_subject(
    server, issuer, provider, audit_of, live_db
):
    from billing.models import UsageRecord
    from keys.models import ApiKey

    answer = in_force(server, issuer, provider)
    token = issuer.token(client_id=provider.client_slug, sub="grace@example.com")
    answer = call(server, token)
    assert answer.status_code == 200, answer.text
    record = audit_of(answer)
    assert record.details["identity"] == {"provider": provider.slug, "subject": "grace@example.com"}
    assert record.details["context"]["subject"] == "grace@example.com"
    assert record.client_slug == provider.client_slug and record.key_prefix.startswith("idk_")
    assert token not in json.dumps(record.details) and token[-20:] not in record.input_preview
    key = ApiKey.objects.get(identity_provider=provider)
    assert (key.client.slug, key.pk) == (provider.client_slug, record.api_key_id)
    assert until(lambda: UsageRecord.objects.filter(api_key=key).exists(), "the usage metered to the identity key")


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_each_algorithm_verifies(server, issuer, provider, algorithm):
    in_force(server, issuer, provider)
    assert call(server, issuer.token(algorithm, client_id=provider.client_slug)).status_code == 200


def test_every_bad_token_is_a_clear_401(server, issuer, provider, make_key):
    in_force(server, issuer, provider)
    slug = provider.client_slug
    now = issuer.token(client_id=slug)
    assert "expired" in refused(call(server, issuer.token(client_id=slug, lifetime=-120)), "token_expired")
    future = issuer.token(client_id=slug, nbf=int(time.time()) + 3600)
    refused(call(server, future), "token_not_yet_valid")
    assert "audience" in refused(call(server, issuer.token(client_id=slug, aud="someone-else")))
    assert "issuer" in refused(call(server, issuer.token(client_id=slug, iss="https://evil.example")))
    assert "'client_id'" in refused(call(server, issuer.token()))
    assert "does not know" in refused(call(server, issuer.token(client_id="no-such-client")), "unknown_client")
    assert "'sub'" in refused(call(server, issuer.token(client_id=slug, sub=None)))
    assert "roles" in refused(call(server, issuer.token(client_id=slug, roles={"admin": True})))
    head, body, signature = now.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(body + "=="))
    tampered["client_id"] = "someone-else"
    forged = f"{head}.{base64.urlsafe_b64encode(json.dumps(tampered).encode()).rstrip(b'=').decode()}.{signature}"
    refused(call(server, forged))
    # alg none, and HS256 keyed with the public key (the algorithm-confusion attack): never accepted.
    unsigned = jwt.encode({"iss": issuer.issuer, "aud": "gateway", "sub": "x", "client_id": slug, "iat": 1,
                           "exp": 4_000_000_000}, None, algorithm="none")  # fmt: skip
    assert "'none'" in refused(call(server, unsigned))
    public_pem = issuer.keys["RS256"].private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    confused = jwt.api_jws.PyJWS()
    confused._algorithms["HS256"].prepare_key = lambda key: key  # PyJWT refuses PEM keys for HMAC: force it
    token = confused.encode(
        json.dumps({"iss": issuer.issuer, "aud": "gateway", "sub": "x", "client_id": slug, "iat": 1,
                    "exp": 4_000_000_000}).encode(),
        public_pem, algorithm="HS256", headers={"kid": issuer.keys["RS256"].kid},
    )  # fmt: skip
    refused(call(server, token))
    refused(call(server, "eyJ" + "A" * 40_000 + ".x.y"))
    refused(call(server, "eyJnot.a.token"))
    # A key id the provider never published, and a key of another issuer with a published key id.
    other = Issuer()
    try:
        refused(call(server, other.token(iss=issuer.issuer, client_id=slug)))
        stolen_kid = other.token(iss=issuer.issuer, client_id=slug, headers={"kid": issuer.keys["RS256"].kid})
        refused(call(server, stolen_kid))
    finally:
        other.stop()


def test_rotated_keys_are_fetched_when_a_token_names_a_new_key_id(server, issuer, provider):
    in_force(server, issuer, provider)
    old = issuer.keys["ES256"]
    new = issuer.rotate("ES256")
    fetched = issuer.hits
    # Fetched again as soon as the last fetch is GATEWAY_JWKS_MIN_REFETCH_SECONDS old (0.2 s in the tests).
    until(lambda: call(server, issuer.token(key=new, client_id=provider.client_slug)).status_code == 200,
          "the rotated key fetched")  # fmt: skip
    assert issuer.hits > fetched
    # The old key is no longer published: a token signed with it now (never seen before) is refused.
    refused(call(server, issuer.token(key=old, client_id=provider.client_slug, sub="late@example.com")))


def test_roles_and_groups_come_from_the_claims(server, issuer, provider, live_db, wait_for_agent, seeded):
    from keys.models import AgentRole, PolicyRule
    from routing.models import Agent

    role = AgentRole.objects.create(slug=f"analyst-{uuid.uuid4().hex[:6]}", name="Analyst")
    agent = Agent.objects.create(slug=f"ledger-{uuid.uuid4().hex[:6]}", name="ledger", upstream_url=seeded.url,
                                 required_role=role)  # fmt: skip
    rule = PolicyRule.objects.create(
        name=f"finance group only {uuid.uuid4().hex[:6]}", effect="deny",
        condition=f"request.agent == '{agent.slug}' && !('finance' in identity.groups)",
    )  # fmt: skip
    try:
        in_force(server, issuer, provider)
        slug = provider.client_slug
        plain = issuer.token(client_id=slug)
        until(lambda: call(server, plain, agent.slug).status_code == 403, "the agent routed")
        refused(call(server, plain, agent.slug), "role_required", 403)
        analyst = issuer.token(client_id=slug, roles=[role.slug])
        refused(call(server, analyst, agent.slug), "policy_denied", 403)
        # A space-separated claim, as OAuth's scope is, reads as a list too.
        finance = issuer.token(client_id=slug, roles=f"reader {role.slug}", groups=["finance"])
        assert call(server, finance, agent.slug).status_code == 200
    finally:
        rule.delete()
        agent.delete()
        role.delete()


def test_an_identity_key_revoked_by_an_admin_refuses_the_providers_tokens_for_that_client(
    server, issuer, provider, live_db
):
    from django.utils import timezone

    from keys.models import ApiKey

    in_force(server, issuer, provider)
    key = ApiKey.objects.get(identity_provider=provider)
    key.revoked_at = timezone.now()
    key.save()
    token = issuer.token(client_id=provider.client_slug, sub="someone@example.com")
    until(lambda: call(server, token).status_code == 403, "the revocation seen")
    refused(call(server, token), "key_revoked", 403)


def test_the_providers_limits_are_its_identity_keys(server, issuer, provider, live_db):
    from keys.models import ApiKey

    in_force(server, issuer, provider)
    provider.requests_per_minute = 2
    provider.save()  # its identity keys follow, announced
    assert ApiKey.objects.get(identity_provider=provider).requests_per_minute == 2
    token = issuer.token(client_id=provider.client_slug)
    until(lambda: call(server, token).status_code == 429, "the provider's limit in force")


def test_a_jwks_the_gateway_cannot_read_refuses_tokens_with_a_401_never_a_500(server, issuer, provider):
    in_force(server, issuer, provider)
    issuer.body = b"{not json"
    new = issuer.rotate("EdDSA")  # a new key id: the gateway fetches again, and finds nothing it can read
    refused(call(server, issuer.token(key=new, client_id=provider.client_slug)))
    issuer.body = json.dumps({"keys": "nope"}).encode()
    refused(call(server, issuer.token(key=new, client_id=provider.client_slug, sub="b@example.com")))
    issuer.body = b"x" * (300 * 1024)
    refused(call(server, issuer.token(key=new, client_id=provider.client_slug, sub="c@example.com")))
    # Keys already held keep serving meanwhile.
    assert call(server, issuer.token("RS256", client_id=provider.client_slug, sub="d@example.com")).status_code == 200
    issuer.body = None
    assert until(lambda: call(server, issuer.token(key=new, client_id=provider.client_slug)).status_code == 200,
                 "the key set readable again")  # fmt: skip
