"""Identity tokens alone: claims read strictly, made-up key ids cannot make the gateway hammer a provider, what the
hot path keeps of a token (never the token)."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from gateway_project.errors import GatewayError
from keys.access import KeySnapshot, carry_identity, ensure_usable
from keys.identities import KeySet, Provider, _claim_names, _identity_of, fetch_jwks
from tests.identity_provider import Issuer

PROVIDER = Provider(1, "idp", "https://idp.example", ("gateway",), "http://127.0.0.1:1/jwks", ("RS256",), "",
                    "client_id", "roles", "groups", 30)  # fmt: skip
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
                    max_leaves=10)  # fmt: skip


@given(JSON)
def test_a_roles_claim_is_a_list_of_strings_or_space_separated_text_or_the_token_is_refused(value):
    try:
        names = _claim_names({"roles": value}, "roles", "roles")
    except GatewayError as error:
        assert (error.status, error.code) == (401, "invalid_token")
        return
    assert all(isinstance(name, str) for name in names)
    assert names == (value.split() if isinstance(value, str) else value)


@given(st.dictionaries(st.sampled_from(["sub", "client_id", "roles", "groups", "exp"]), JSON))
def test_claims_give_an_identity_or_a_401_never_another_error(claims):
    claims = {"sub": "ada", "exp": time.time() + 60, **claims}
    try:
        identity = _identity_of(PROVIDER, claims)
    except GatewayError as error:
        assert error.status == 401
        return
    except (TypeError, ValueError):  # exp not a number: PyJWT refuses such a token before its claims are read
        assert not isinstance(claims["exp"], int | float)
        return
    assert identity.client_slug == claims["client_id"] and identity.subject == claims["sub"]


def snapshot(**fields) -> KeySnapshot:
    values = dict(key_id=1, prefix="idk_x", client_id=1, client_slug="acme", cost_center_id=None, state="active",
                  expires_at=None, allowed_agents=None, allowed_models=None, requests_per_minute=60,
                  requests_per_day=0, tokens_per_minute=1000, max_concurrent=0, issued_at=0.0,
                  audit_previews=True)  # fmt: skip
    return KeySnapshot(**{**values, **fields})


def test_a_session_keeps_its_tokens_identity_when_its_key_changes_and_ends_with_the_token():
    held = snapshot(roles=frozenset({"analyst", "own"}), subject="ada", groups=("finance",),
                    identity_roles=frozenset({"analyst"}), identity_provider="idp",
                    token_expires_at=time.time() + 60)  # fmt: skip
    fresh = snapshot(roles=frozenset({"own2"}), expires_at=time.time() + 3600)
    carried = carry_identity(fresh, held)
    assert carried.roles == {"own2", "analyst"} and carried.subject == "ada" and carried.groups == ("finance",)
    assert carried.ends_at == held.token_expires_at
    assert carry_identity(None, held) is None and carry_identity(fresh, fresh) is fresh
    with pytest.raises(GatewayError) as expired:
        ensure_usable(snapshot(subject="ada", token_expires_at=time.time() - 1))
    assert (expired.value.status, expired.value.code) == (401, "token_expired")


@pytest.fixture
def issuer():
    made = Issuer()
    yield made
    made.stop()


@override_settings(GATEWAY={"JWKS_CACHE_SECONDS": 600.0, "JWKS_MIN_REFETCH_SECONDS": 30.0})
def test_made_up_key_ids_do_not_make_the_gateway_fetch_the_key_set_again_and_again(issuer):
    keys = KeySet(issuer.jwks_url)

    async def ask():
        found = await keys.key_for(issuer.keys["RS256"].kid)
        unknown = await asyncio.gather(*(keys.key_for(f"made-up-{i}") for i in range(50)))
        return found, unknown

    found, unknown = asyncio.run(ask())
    assert found is not None and unknown == [None] * 50
    assert issuer.hits == 1


def test_a_key_set_keeps_only_keys_it_verifies_with(issuer):
    issuer.body = (
        b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}, {"kty": "RSA", "kid": "enc", "use": "enc", '
        b'"n": "AQAB", "e": "AQAB"}, {"kty": "EC", "kid": "broken", "crv": "P-256"}, "junk", '
        + __import__("json").dumps(issuer.keys["EdDSA"].jwk()).encode()
        + b"]}"
    )
    assert list(asyncio.run(fetch_jwks(issuer.jwks_url))) == [issuer.keys["EdDSA"].kid]


def test_a_snapshot_with_a_tokens_identity_goes_through_json_unchanged():
    """What a job keeps of the key it was admitted with (routing/jobs.py)."""
    import json

    held = snapshot(roles=frozenset({"analyst"}), subject="ada", groups=("finance", "eu"), allowed_agents=None,
                    allowed_models=frozenset({"gpt-4o"}), identity_roles=frozenset({"analyst"}),
                    identity_provider="idp", token_expires_at=123.0, client_tags=("a",))  # fmt: skip
    assert KeySnapshot.from_json(json.loads(json.dumps(held.as_json()))) == held
