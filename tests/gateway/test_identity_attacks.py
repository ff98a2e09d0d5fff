"""JWT identities after an attack (issue 14): each test is a finding of the attack, asserting the behaviour fixed."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest

from tests.identity_provider import Issuer
from tests.waiting import until

INVOKE = "/v1/agent/invoke"


def b64(d) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


def call(server, token, agent="research"):
    with server.client(token) as client:
        return client.post(INVOKE, json={"agent": agent, "input": "hello"})


@pytest.mark.parametrize(
    "header", [{"alg": "RS256", "kid": 1}, {"alg": "RS256", "crit": "x"}, {"alg": "RS256", "crit": ["exp"]}]
)
def test_a_malformed_token_header_is_a_401_never_a_500(gateway, header):
    """No provider, no key: anyone can send these (PyJWT raises InvalidTokenError for a kid or crit of a wrong type)."""
    token = f"{b64(header)}.{b64({'iss': 'x'})}.AAAA"
    answer = call(gateway, token)
    assert answer.status_code == 401, (answer.status_code, answer.text)


def in_force(server, issuer, provider, **claims):
    token = issuer.token(client_id=provider.client_slug, **claims)
    until(lambda: call(server, token).status_code == 200, "the provider in force")
    return token


def test_a_deactivated_provider_refuses_even_the_tokens_it_has_seen(gateway, issuer, provider, live_db):
    seen = in_force(gateway, issuer, provider, sub="seen@example.com")
    provider.is_active = False
    provider.save()
    fresh = lambda: issuer.token(client_id=provider.client_slug, sub=f"{uuid.uuid4().hex}@example.com")  # noqa
    until(lambda: call(gateway, fresh()).status_code == 401, "the deactivation in force (a new token refused)")
    time.sleep(0.5)
    answer = call(gateway, seen)
    assert answer.status_code == 401, (answer.status_code, answer.text[:200])


def test_a_key_withdrawn_from_the_jwks_refuses_the_tokens_seen_with_it(gateway, issuer, provider, live_db):
    seen = in_force(gateway, issuer, provider, sub="seen2@example.com")
    old = issuer.keys["RS256"]
    new = issuer.rotate("RS256")  # the provider withdraws a (compromised) key
    until(
        lambda: call(gateway, issuer.token(key=new, client_id=provider.client_slug)).status_code == 200,
        "the new key set fetched",
    )
    assert call(gateway, issuer.token(key=old, client_id=provider.client_slug, sub="x@e")).status_code == 401
    answer = call(gateway, seen)
    assert answer.status_code == 401, (answer.status_code, answer.text[:200])


def test_a_client_deleted_and_made_again_is_served_again(gateway, issuer, live_db):
    from keys.models import Client, IdentityProvider

    client = Client.objects.create(name="c", slug=f"c-{uuid.uuid4().hex[:12]}")
    made = IdentityProvider.objects.create(
        name="IdP",
        slug=f"idp-{uuid.uuid4().hex[:8]}",
        issuer=issuer.issuer,
        audiences=["gateway"],
        jwks_url=issuer.jwks_url,
        requests_per_minute=1000,
    )
    try:
        slug = client.slug
        token = issuer.token(client_id=slug)
        until(lambda: call(gateway, token).status_code == 200, "served")
        client.delete()
        until(lambda: call(gateway, token).status_code == 401, "client gone")
        Client.objects.create(name="c again", slug=slug)
        time.sleep(12)  # past UNKNOWN_CLIENT_SECONDS and every cache
        answer = call(gateway, issuer.token(client_id=slug, sub="new@example.com"))
        assert answer.status_code == 200, (answer.status_code, answer.text[:300])
    finally:
        made.delete()


def test_an_exp_beyond_any_time_is_a_401(gateway, issuer, provider):
    in_force(gateway, issuer, provider)
    token = issuer.token(client_id=provider.client_slug, sub="far@example.com", exp=10**400)
    answer = call(gateway, token)
    assert answer.status_code == 401, (answer.status_code, answer.text[:200])


def test_a_deeply_nested_jwks_is_a_401_and_the_check_says_so(gateway, issuer, provider, admin_api):
    in_force(gateway, issuer, provider)
    issuer.body = b"[" * 100_000  # 100 kB, well under MAX_JWKS_BYTES
    new = issuer.rotate("EdDSA")  # a key id the gateway does not hold: it fetches again
    time.sleep(0.5)  # past GATEWAY_JWKS_MIN_REFETCH_SECONDS (0.2 s in the tests)
    answer = call(gateway, issuer.token(key=new, client_id=provider.client_slug))
    checked = admin_api(gateway).post(f"/api/v1/identity-providers/{provider.pk}/check/")
    assert (answer.status_code, checked.status_code) == (401, 200), (answer.text[:150], checked.text[:150])


def test_the_leeway_on_exp_holds(gateway, issuer, provider):
    """leeway_seconds (30 by default): a token 10 s past its exp is still accepted."""
    in_force(gateway, issuer, provider)
    answer = call(gateway, issuer.token(client_id=provider.client_slug, sub="skew@example.com", lifetime=-10))
    assert answer.status_code == 200, answer.text[:200]


def test_a_claim_provider_cannot_name_a_client_bound_to_another_provider(gateway, live_db, make_key):
    """Provider B is client X's own (fixed). Provider A reads the client from a claim: it may not name X, and once
    it lists its claimable clients it may name only those."""
    from keys.models import ApiKey, IdentityProvider

    _, key = make_key()
    _, other = make_key()
    x, y = key.client, other.client
    a_issuer, b_issuer = Issuer(), Issuer()
    b = IdentityProvider.objects.create(
        name="B",
        slug=f"b-{uuid.uuid4().hex[:6]}",
        issuer=b_issuer.issuer,
        audiences=["gateway"],
        jwks_url=b_issuer.jwks_url,
        client=x,
    )
    a = IdentityProvider.objects.create(
        name="A",
        slug=f"a-{uuid.uuid4().hex[:6]}",
        issuer=a_issuer.issuer,
        audiences=["gateway"],
        jwks_url=a_issuer.jwks_url,
    )
    try:
        until(lambda: call(gateway, a_issuer.token(client_id=y.slug)).status_code == 200, "A in force")
        answer = call(gateway, a_issuer.token(client_id=x.slug, sub="mallory@tenant-a"))
        assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unknown_client")
        assert not ApiKey.objects.filter(identity_provider=a, client=x).exists()
        assert call(gateway, b_issuer.token(sub="ada@x")).status_code == 200  # B's own tokens: served as X
    finally:
        a.delete()
        b.delete()
        a_issuer.stop()
        b_issuer.stop()
