"""Callers identified by a JWT from a configured identity provider instead of an API key.

A bearer token that is a JWT is verified with PyJWT against its issuer's keys (the JWKS,
fetched through the outbound address policy, cached, fetched again when a token names a
key id it does not hold: the provider rotated its keys). Its claims name the caller's
client, subject, roles and groups. Each (provider, client) pair is served by an *identity
key*: an API key of the client with no usable secret, made on first use, holding the
provider's scopes and limits, so rate limits, budgets, usage and the audit log treat a
token's calls as they treat a key's, and an admin can disable or revoke it. The caller's
snapshot is that key's with the token's roles added and its subject, groups and expiry.
Tokens are never stored: the process remembers a verified token's claims by its SHA-256,
until it expires, so a client reusing its token costs one look-up, not a signature check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from typing import NamedTuple

import httpx
import jwt
from channels.db import database_sync_to_async
from django.conf import settings

from gateway_project import outbound
from gateway_project.errors import GatewayError
from gateway_project.snapshots import RefreshingTable
from keys.access import KeySnapshot, key_snapshots

log = logging.getLogger("gateway.identities")

ALGORITHMS = ("RS256", "ES256", "EdDSA")
MAX_TOKEN_LENGTH = 16_384  # a header of a token with many groups; beyond it, no token the gateway reads
MAX_JWKS_BYTES = 256 * 1024
MAX_CLAIM_VALUES = 100  # roles or groups a token may carry
MAX_CLAIM_TEXT = 200  # characters of a subject, role or group
JWKS_TIMEOUT = 5.0
VERIFIED_KEPT = 10_000  # verified tokens remembered per process


def _invalid(message: str, code: str = "invalid_token") -> GatewayError:
    return GatewayError(401, "authentication_error", code, message)


class Provider(NamedTuple):
    """An identity provider as the hot path needs it."""

    pk: int
    slug: str
    issuer: str
    audiences: tuple[str, ...]
    jwks_url: str
    algorithms: tuple[str, ...]
    client_slug: str  # every token's client, or "" to read it from ``client_claim``
    client_claim: str
    roles_claim: str
    groups_claim: str
    leeway: int


def _load_providers() -> dict[str, Provider]:
    from keys.models import IdentityProvider

    return {
        p.issuer: Provider(
            p.pk,
            p.slug,
            p.issuer,
            tuple(p.audiences),
            p.jwks_url,
            tuple(p.algorithms),
            p.client.slug if p.client_id else "",
            p.client_claim,
            p.roles_claim,
            p.groups_claim,
            p.leeway_seconds,
        )
        for p in IdentityProvider.objects.filter(is_active=True).select_related("client")
    }


provider_table = RefreshingTable(
    "identity-providers", _load_providers, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"]
)


# --- the providers' keys ------------------------------------------------------------------------------------------


class JwksError(Exception):
    """The key set could not be fetched or read."""


async def fetch_jwks(url: str) -> dict[str, jwt.PyJWK]:
    """The signing keys at ``url`` by key id: resolved and checked by the outbound policy, connected to the checked
    address, no redirects, at most ``MAX_JWKS_BYTES``. Keys the gateway does not verify with are left out."""
    try:
        async with asyncio.timeout(JWKS_TIMEOUT):  # the whole fetch: a provider sending slowly is cut off too
            body = await outbound.aget(url, outbound.upstream_allow_list(), timeout=JWKS_TIMEOUT,
                                       max_bytes=MAX_JWKS_BYTES, what="The JWKS URL")  # fmt: skip
    except outbound.Refused as refused:
        raise JwksError(str(refused)) from None
    except (httpx.HTTPError, outbound.TooLarge, OSError) as error:
        raise JwksError(f"{type(error).__name__}: {error}") from None
    try:
        document = json.loads(body)
        entries = document["keys"]
        if not isinstance(entries, list):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise JwksError("The JWKS is not a JSON object with a list of keys.") from None
    found = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue  # a kind of key the gateway does not use (or a broken one): the others still serve
        if key.algorithm_name in ALGORITHMS:
            found[str(entry.get("kid", ""))] = key
    return found


@dataclasses.dataclass
class KeySet:
    """One provider's keys: fetched when first needed, again once ``JWKS_CACHE_SECONDS`` old, and again when a token
    names a key id not held (no more often than ``JWKS_MIN_REFETCH_SECONDS``, so tokens with made-up key ids cannot
    make the gateway hammer the provider). A failed fetch keeps the keys there were."""

    url: str
    keys: dict = dataclasses.field(default_factory=dict)
    fetched_at: float = 0.0
    tried_at: float = float("-inf")
    error: str = ""
    _pending: asyncio.Future | None = None

    async def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self.fetched_at >= settings.GATEWAY["JWKS_CACHE_SECONDS"] or not self.fetched_at
        missing = self._find(kid) is None
        if (stale or missing) and now - self.tried_at >= settings.GATEWAY["JWKS_MIN_REFETCH_SECONDS"]:
            await self.refresh()
        return self._find(kid)

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:  # a token without a key id: only a provider with one key is unambiguous
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the keys again; requests needing them meanwhile share the fetch."""
        if self._pending is None or self._pending.done():
            self.tried_at = time.monotonic()
            self._pending = asyncio.ensure_future(self._fetch())
        await asyncio.shield(self._pending)

    async def _fetch(self) -> None:
        try:
            keys = await fetch_jwks(self.url)
        except JwksError as error:
            self.error = str(error)
            log.warning("fetching the JWKS at %s failed: %s", self.url, error)
            return
        self.keys, self.fetched_at, self.error = keys, time.monotonic(), ""


def check_jwks(provider) -> dict:
    """Fetch ``provider``'s key set now (from synchronous code: the console, the API) and say what it holds."""
    try:
        keys = asyncio.run(fetch_jwks(provider.jwks_url))
    except JwksError as error:
        return {"ok": False, "keys": [], "error": str(error)}
    listed = [{"kid": kid, "algorithm": key.algorithm_name} for kid, key in keys.items()]
    allowed = [key for key in listed if key["algorithm"] in provider.algorithms]
    error = "" if allowed else "It holds no key for the provider's algorithms: no token would verify."
    return {"ok": bool(allowed), "keys": listed, "error": error}


_key_sets: dict[int, KeySet] = {}


def key_set(provider: Provider) -> KeySet:
    held = _key_sets.get(provider.pk)
    if held is None or held.url != provider.jwks_url:
        held = _key_sets[provider.pk] = KeySet(provider.jwks_url)
    return held


# --- tokens -------------------------------------------------------------------------------------------------------


class Identity(NamedTuple):
    """What a verified token says."""

    provider: Provider
    subject: str
    client_slug: str
    roles: frozenset[str]
    groups: tuple[str, ...]
    expires_at: float  # its exp, with the provider's leeway
    key: object = None  # the signing key it verified with: remembered only while the key set still holds it


_verified: dict[bytes, Identity] = {}


def _claim_names(claims: dict, name: str, what: str) -> list[str]:
    """A roles or groups claim: a list of strings or one space-separated string (as OAuth's ``scope``); absent is
    none. Anything else refuses the token: a caller must not gain or lose roles by a claim the gateway misread."""
    if not name or name not in claims:
        return []
    value = claims[name]
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _invalid(f"The token's {what} claim {name!r} must be a list of strings.")
    if len(value) > MAX_CLAIM_VALUES or any(len(item) > MAX_CLAIM_TEXT for item in value):
        raise _invalid(f"The token's {what} claim {name!r} holds more than the gateway reads.")
    return value


async def verify(raw: str) -> Identity:
    """The identity a JWT proves, or 401 saying why not (the reasons never echo the token)."""
    if len(raw) > MAX_TOKEN_LENGTH:
        raise _invalid("The token is longer than the gateway reads.")
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).digest()
    providers = await provider_table.get()
    known = _verified.get(digest)
    if known is not None and _still_valid(known, providers):
        return known
    try:
        header = jwt.get_unverified_header(raw)
        unverified = jwt.decode(raw, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):  # a malformed kid or crit raises InvalidTokenError
        raise _invalid("The bearer token is neither an API key nor a readable JWT.") from None
    issuer = unverified.get("iss")
    provider = providers.get(issuer) if isinstance(issuer, str) else None
    if provider is None:
        raise _invalid("The token's issuer is not an identity provider of this gateway.")
    algorithm = header.get("alg")
    if algorithm not in provider.algorithms:
        allowed = ", ".join(provider.algorithms)
        raise _invalid(f"The token is signed with {str(algorithm)[:20]!r}; this provider's tokens use {allowed}.")
    kid = header.get("kid")
    key = await key_set(provider).key_for(kid if isinstance(kid, str) else None)
    if key is None or key.algorithm_name != algorithm:
        raise _invalid("The token is signed with a key its issuer does not publish.")
    try:
        claims = jwt.decode(
            raw, key=key, algorithms=[algorithm], audience=list(provider.audiences), issuer=provider.issuer,
            leeway=provider.leeway, options={"require": ["exp", "iat", "sub"]},
        )  # fmt: skip
    except jwt.ExpiredSignatureError:
        raise _invalid("The token has expired.", "token_expired") from None
    except jwt.ImmatureSignatureError:
        raise _invalid("The token is not valid yet (nbf or iat is in the future).", "token_not_yet_valid") from None
    except jwt.InvalidAudienceError:
        raise _invalid("The token is not meant for this gateway (its audience).") from None
    except jwt.MissingRequiredClaimError as missing:
        raise _invalid(f"The token has no {missing.claim!r} claim.") from None
    except jwt.PyJWTError:
        raise _invalid("The token's signature or claims do not verify.") from None
    identity = _identity_of(provider, claims)._replace(key=key)
    if len(_verified) >= VERIFIED_KEPT:
        _verified.clear()
    _verified[digest] = identity
    return identity


def _still_valid(identity: Identity, providers: dict[str, Provider]) -> bool:
    """A remembered token is taken again only while it has not expired, its provider is in force exactly as it was
    (not deactivated, its issuer, audiences and keys unchanged), and the key it was signed with is still published
    (as last fetched)."""
    provider = identity.provider
    if identity.expires_at <= time.time() or providers.get(provider.issuer) != provider:
        return False
    held = _key_sets.get(provider.pk)
    return held is not None and identity.key is not None and identity.key in held.keys.values()


def _identity_of(provider: Provider, claims: dict) -> Identity:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > MAX_CLAIM_TEXT:
        raise _invalid(f"The token's subject must be text of 1 to {MAX_CLAIM_TEXT} characters.")
    client = provider.client_slug
    if not client:
        client = claims.get(provider.client_claim)
        if not isinstance(client, str) or not client:
            raise _invalid(f"The token has no {provider.client_claim!r} claim naming its client.")
    roles = frozenset(_claim_names(claims, provider.roles_claim, "roles"))
    groups = tuple(_claim_names(claims, provider.groups_claim, "groups"))
    try:
        expires = float(claims["exp"]) + provider.leeway  # as PyJWT judged it: a session lasts as long
    except (OverflowError, TypeError, ValueError):
        raise _invalid("The token's exp is not a time the gateway reads.") from None
    return Identity(provider, subject, client[:MAX_CLAIM_TEXT], roles, groups, expires)


# --- the identity keys --------------------------------------------------------------------------------------------

_identity_keys: dict[tuple[int, str], tuple[str | None, float]] = {}  # (provider, client) -> (key hash, until)
UNKNOWN_CLIENT_SECONDS = 10.0  # how long a client a token named and the database lacks is not looked up again
IDENTITY_KEY_SECONDS = 60.0  # how long a (provider, client) pair's identity key is taken as found


@database_sync_to_async
def _identity_key_hash(provider_pk: int, client_slug: str) -> str | None:
    from keys.services import identity_key

    key = identity_key(provider_pk, client_slug)
    return None if key is None else key.key_hash


async def identify_token(raw: str) -> KeySnapshot:
    """The snapshot a JWT's caller is served with: its identity key's, with the token's roles, subject, groups and
    expiry; 401 for a token that does not verify or names no client of the gateway."""
    identity = await verify(raw)
    provider = identity.provider
    where = (provider.pk, identity.client_slug)
    held = _identity_keys.get(where)
    snapshot = None
    if held is not None and held[1] > time.monotonic():
        snapshot = await key_snapshots.get(held[0]) if held[0] is not None else None
        if snapshot is None and held[0] is not None:  # the key is gone (its client deleted): look again
            held = None
    if held is None or held[1] <= time.monotonic():
        key_hash = await _identity_key_hash(provider.pk, identity.client_slug)
        held = (key_hash, time.monotonic() + (IDENTITY_KEY_SECONDS if key_hash else UNKNOWN_CLIENT_SECONDS))
        if len(_identity_keys) >= VERIFIED_KEPT:
            _identity_keys.clear()
        _identity_keys[where] = held
        snapshot = await key_snapshots.get(key_hash) if key_hash is not None else None
    if snapshot is None:
        raise _invalid(f"The token names the client {identity.client_slug!r}, which this gateway does not know or "
                       "this provider may not name.", "unknown_client")  # fmt: skip
    return with_identity(snapshot, identity)


def with_identity(snapshot: KeySnapshot, identity: Identity) -> KeySnapshot:
    """The identity key's snapshot as this token's caller is served: its roles added, its subject and expiry."""
    return dataclasses.replace(
        snapshot, roles=snapshot.roles | identity.roles, subject=identity.subject, groups=identity.groups,
        identity_roles=identity.roles, identity_provider=identity.provider.slug, token_expires_at=identity.expires_at,
    )  # fmt: skip


def forget_identity_keys() -> None:
    """Look identity keys up again (a provider or client changed in this process)."""
    _identity_keys.clear()
