"""One-time, short-lived, encrypted hand-off of a secret from the request that made it to the page that shows it.

A new API key's raw value must reach the page after the redirect without being
written anywhere durable: not the database session (kept for weeks), not a log.
``put`` seals it with Fernet under a key derived from ``SECRET_KEY`` and a random
one-time token, and keeps it in the cache for ``GATEWAY_SECRET_HANDOFF_SECONDS``
under the token's hash; ``take`` returns it once and deletes it. The cache alone
cannot open it (the token is not there), nor can whoever holds the token alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.cache import cache

CACHE_PREFIX = "secret-handoff:"


def _fernet(token: str) -> Fernet:
    derived = hmac.new(settings.SECRET_KEY.encode(), b"secret-handoff:" + token.encode(), hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def _cache_key(token: str) -> str:
    return CACHE_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def put(secret: str, purpose: str) -> str:
    """Seal ``secret`` for one later ``take`` with the same ``purpose``; the one-time token to take it with."""
    token = secrets.token_urlsafe(32)
    sealed = _fernet(token).encrypt(json.dumps({"purpose": purpose, "secret": secret}).encode())
    cache.set(_cache_key(token), sealed.decode("ascii"), settings.GATEWAY_SECRET_HANDOFF_SECONDS)
    return token


def take(token: str, purpose: str) -> str | None:
    """The secret ``token`` was given for, this once; None when it was taken already, expired or is for another use."""
    key = _cache_key(token)
    sealed = cache.get(key)
    # Only the reader whose delete removed it may show it: two page loads at once show it once.
    if sealed is None or not cache.delete(key):
        return None
    try:
        payload = json.loads(
            _fernet(token).decrypt(sealed.encode("ascii"), ttl=settings.GATEWAY_SECRET_HANDOFF_SECONDS)
        )
    except (InvalidToken, ValueError):
        return None
    return payload["secret"] if payload.get("purpose") == purpose else None
