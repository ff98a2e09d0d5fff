"""The client's real address behind the load balancers we trust (``GATEWAY_TRUSTED_PROXIES``).

One rule for the gateway's hot path (ASGI scope headers) and for the console's and
the API's Django requests (``request.META``), so a limit keyed by address means the
same address everywhere.
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings


def _address(value: str) -> str | None:
    """``value`` as an IP address (a port or IPv6 brackets allowed around it), or None."""
    value = value.strip()
    if value.startswith("[") and "]" in value:
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: list[bytes], trusted_proxies: int) -> tuple[str | None, str]:
    """The caller's address: the right-most hop of ``X-Forwarded-For`` that no trusted proxy of ours added.

    With ``trusted_proxies`` proxies in front of the gateway, the last that many
    addresses of the chain (the peer included) are theirs; the one before them is
    the client's, whatever a client wrote further left. Returns the address and,
    when the header was unusable, its raw text (for the audit record; the peer is used then).
    """
    if trusted_proxies <= 0 or not forwarded_for:
        return peer, ""
    hops = [hop for value in forwarded_for for hop in value.decode("latin-1").split(",")]
    chain = [*hops, peer or ""]
    candidate = chain[max(0, len(chain) - 1 - trusted_proxies)]
    address = _address(candidate)
    if address is None:
        return peer, b", ".join(forwarded_for).decode("latin-1")[:200]
    return address, ""


def request_address(request) -> str | None:
    """The real client address of a Django request (the console, the API, Django admin), or None if unknown."""
    trusted = settings.GATEWAY["TRUSTED_PROXIES"]
    header = request.META.get("HTTP_X_FORWARDED_FOR", "") if trusted else ""
    # Django joins repeated X-Forwarded-For headers with commas, as client_address splits them.
    forwarded = [header.encode("latin-1", "replace")] if header else []
    address, _unusable = client_address(_address(request.META.get("REMOTE_ADDR") or ""), forwarded, trusted)
    return address


@functools.lru_cache(maxsize=4096)  # callers come back: parsing an address each request cost more than the look-up
def counted_as(address: str | None, ipv6_prefix: int) -> str:
    """What a limit per client address counts ``address`` under: an IPv4 address itself (an IPv4-mapped IPv6
    address too, as a dual-stack socket shows IPv4 clients), an IPv6 address by its network of ``ipv6_prefix`` bits.

    One subscriber gets a whole /64 (2^64 addresses) or more: counted address by address, it could rotate
    through them and never reach a limit.
    """
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)
