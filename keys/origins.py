"""Browser clients: which web origins may call the gateway, per client (CORS).

A client lists the origins its browser code runs on (``Client.allowed_origins``:
``https://app.example.com``, or ``*`` for any). An answer to a request that carries an
``Origin`` the caller's client allows names it in ``Access-Control-Allow-Origin``; a
request from an origin its client does not allow is refused (403 ``origin_not_allowed``)
when that client lists any origin at all, and answered as before when it lists none (a
program that sends an ``Origin`` of its own is not a browser the gateway must police).
A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) carries no key, so it
is answered for an origin any active client allows (``origin_table``); the request
that follows is checked against its own client. Credentials are never allowed (keys
travel in headers, not cookies), so ``*`` is always safe to answer with.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from gateway_project.snapshots import RefreshingTable

ANY = "*"
MAX_ORIGINS = 50
PREFLIGHT_MAX_AGE = b"600"
ALLOWED_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme://host[:port]: a DNS name (labels of letters, digits and -), an IPv4 address or a bracketed IPv6 one.
_ORIGIN = re.compile(
    r"^https?://(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]+\])"
    r"(?::[1-9][0-9]{0,4})?$"
)
_HEADER_NAMES = re.compile(rb"^[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$")


def validate_origin_list(value):
    """Origins as browsers send them: ``scheme://host[:port]``, http or https, nothing after; or ``*`` alone."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValidationError('Give a list of origins, e.g. https://app.example.com, or ["*"] for any.')
    if len(value) > MAX_ORIGINS:
        raise ValidationError(f"At most {MAX_ORIGINS} origins.")
    if ANY in value and len(value) > 1:
        raise ValidationError('"*" already allows every origin; give it alone.')
    for item in value:
        if item != ANY and origin_problem(item):
            raise ValidationError(f"{item!r}: {origin_problem(item)}")
    if len(set(value)) != len(value):
        raise ValidationError("Name each origin once.")


def origin_problem(origin: str) -> str:
    """Why ``origin`` is not one a browser would send, or "": a browser sends the scheme and host in lower case,
    an internationalised host in its xn-- (punycode) form, and no port when it is the scheme's default."""
    if not origin.isprintable() or origin != origin.strip() or len(origin) > 300:
        return "an origin is a short line of printable text."
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return "not an origin."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "an origin is http:// or https:// and a host."
    if parts.path or parts.query or parts.fragment or parts.username or parts.password or origin.endswith("/"):
        return "an origin has no path, query, fragment or user: just scheme://host[:port]."
    if origin != origin.lower():
        return "write the origin in lower case, as browsers send it."
    if not _ORIGIN.match(origin):
        return (
            "not an origin a browser sends: a host of letters, digits, - and . (an internationalised name in "
            "its xn-- form; no wildcards: list each origin), or an IP address, and an optional port."
        )
    if port is not None and not 0 < port < 65536:
        return "not a port."
    if port == DEFAULT_PORTS[parts.scheme]:
        return f"browsers leave out the default port: write {parts.scheme}://{parts.netloc.rsplit(':', 1)[0]}."
    return ""


def allows(allowed: tuple[str, ...] | frozenset[str], origin: str) -> bool:
    return ANY in allowed or origin in allowed


def answer_headers(origin: bytes, allowed) -> list[tuple[bytes, bytes]]:
    """The headers that let a browser on ``origin`` read an answer (none when ``allowed`` does not include it)."""
    text = origin.decode("latin-1")
    if not allows(allowed, text):
        return [(b"vary", b"Origin")]  # another origin's answer would differ: no cache may hand this one to it
    named = b"*" if ANY in allowed else origin
    return [(b"access-control-allow-origin", named), (b"access-control-expose-headers", b"*"), (b"vary", b"Origin")]


def preflight_headers(origin: bytes, requested_headers: bytes) -> list[tuple[bytes, bytes]]:
    """A preflight's answer for an origin some client allows: the methods, the headers asked for (when they are
    header names), and how long the browser may remember it."""
    headers = [
        (b"access-control-allow-methods", ALLOWED_METHODS),
        (b"access-control-max-age", PREFLIGHT_MAX_AGE),
        (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    ]
    if requested_headers and _HEADER_NAMES.match(requested_headers.strip()):
        headers.append((b"access-control-allow-headers", requested_headers.strip()))
    named = b"*" if ANY in origin_table.last(frozenset()) else origin
    return [(b"access-control-allow-origin", named), *headers]


def _load_origins() -> frozenset[str]:
    from keys.models import Client

    origins: set[str] = set()
    for listed in Client.objects.filter(is_active=True).values_list("allowed_origins", flat=True):
        origins.update(listed or ())
    return frozenset(origins)


# Every origin an active client allows, for preflights (which carry no key): in force within the refresh interval.
origin_table = RefreshingTable("origins", _load_origins, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"])
