"""Signed webhooks: how the gateway POSTs events and how a receiver checks that one came from it.

The signature is ``sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`` in
``X-Gateway-Signature``, with the Unix time in ``X-Gateway-Timestamp``; a receiver
recomputes it over the raw body with its own secret and refuses stale timestamps, so a
captured delivery cannot be replayed later. Every receiver has its own secret (a budget's
webhook, each async job), so no receiver can sign what another would accept; only
receivers set up before that still share ``GATEWAY_WEBHOOK_SECRET`` (the legacy secret)
until their secret is rotated. Every delivery of one event carries the same
``X-Gateway-Event-Id``, so a receiver can drop retried duplicates.

Deliveries go through ``outbound.post``: the receiver's name is resolved and checked at
each attempt, the request goes to the checked address, redirects are not followed, and
only the status (or the kind of connection failure) is kept, never what the receiver said.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping

import httpx
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from gateway_project import outbound

SIGNATURE_HEADER = "X-Gateway-Signature"
TIMESTAMP_HEADER = "X-Gateway-Timestamp"
EVENT_ID_HEADER = "X-Gateway-Event-Id"
SCHEME = "sha256="
USER_AGENT = "agent-gateway-webhooks/1"


class DeliveryError(Exception):
    """The receiver could not be reached or did not answer 2xx: worth another try later."""


Refused = outbound.Refused  # the URL is not one the gateway calls: no later try will change that


def encode(payload: dict) -> bytes:
    """The exact bytes that are signed and sent (dates and decimals as strings)."""
    return json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"), sort_keys=True).encode()


def sign(body: bytes, timestamp: int, secret: str | None = None) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>." + body`` under the receiver's secret (empty: the legacy shared one)."""
    key = (secret or settings.GATEWAY_WEBHOOK_SECRET).encode()
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signed_headers(
    body: bytes, *, secret: str | None = None, event_id: str = "", timestamp: int | None = None
) -> dict[str, str]:
    """The headers that make ``body`` verifiable by the receiver that holds ``secret``."""
    stamp = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: SCHEME + sign(body, stamp, secret),
    }
    if event_id:
        headers[EVENT_ID_HEADER] = event_id
    return headers


def verify(body: bytes, headers: Mapping[str, str], secret: str | None = None, tolerance_seconds: float = 300) -> bool:
    """True when ``headers`` carry a fresh, valid signature of exactly ``body``."""
    found = {name.lower(): value for name, value in headers.items()}
    signature = found.get(SIGNATURE_HEADER.lower(), "")
    try:
        stamp = int(found.get(TIMESTAMP_HEADER.lower(), ""))
    except ValueError:
        return False
    if not signature.startswith(SCHEME) or abs(time.time() - stamp) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature[len(SCHEME) :], sign(body, stamp, secret))


def post_signed(url: str, payload: dict, event_id: str, *, secret: str, timeout: float | None = None) -> httpx.Response:
    """POST ``payload`` as JSON signed with the receiver's ``secret``; raise ``Refused`` for a URL the policy
    refuses, ``DeliveryError`` unless the receiver answers 2xx (the message holds its status, never its body)."""
    body = encode(payload)
    seconds = settings.GATEWAY_WEBHOOK_TIMEOUT if timeout is None else timeout
    headers = signed_headers(body, secret=secret, event_id=event_id)
    try:
        response = outbound.post(url, content=body, headers=headers, timeout=seconds)
    except outbound.Unresolvable as exc:
        raise DeliveryError(str(exc)) from exc  # DNS may answer next time
    except httpx.HTTPError as exc:
        raise DeliveryError(type(exc).__name__) from exc
    if not response.is_success:
        raise DeliveryError(f"HTTP {response.status_code}")
    return response
