"""Where a job's completion webhook may go, and what it says.

The gateway POSTs to a URL its caller chose, from inside the network it runs in, so
an unchecked ``webhook_url`` would let any key holder make the gateway reach internal
services (``http://10.0.0.5/admin``, cloud metadata at ``169.254.169.254``). So: only
http(s); with ``GATEWAY_JOB_WEBHOOK_HOSTS`` set, only those hosts; without it, only
hosts whose every address is public (checked when the job is submitted and again
before each delivery; redirects are never followed). A name that resolves to a public
address when checked and to a private one a moment later (DNS rebinding) can still
slip through the second check's window: set the host allowlist where that matters.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class WebhookRefused(ValueError):
    """The URL is not one the gateway will call."""


def check_form(url: object) -> str:
    """The URL if it is a well-formed http(s) URL that fits the host allowlist; else ``WebhookRefused``."""
    if not isinstance(url, str) or not url.strip():
        raise WebhookRefused("'webhook_url' must be a non-empty string.")
    if len(url) > 500:
        raise WebhookRefused("'webhook_url' is longer than 500 characters.")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("'webhook_url' must be an http:// or https:// URL with a host.")
    if parts.username or parts.password:
        raise WebhookRefused("'webhook_url' must not carry credentials.")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise WebhookRefused("'webhook_url' has an invalid port.") from None
    allowed = settings.GATEWAY_JOB_WEBHOOK_HOSTS
    if allowed and not host_allowed(parts.hostname, allowed):
        raise WebhookRefused(f"'webhook_url' names host '{parts.hostname}', which is not in the webhook allowlist.")
    return url.strip()


def host_allowed(host: str, allowed: list[str]) -> bool:
    """``host`` equals an entry, or ends with an entry that starts with a dot (``.example.com``)."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if host == entry or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _addresses_refusal(host: str, infos) -> str:
    addresses = {info[4][0] for info in infos}
    if not addresses:
        return f"'webhook_url' host '{host}' does not resolve."
    private = sorted(a for a in addresses if not _public(a))
    if private:
        return f"'webhook_url' host '{host}' resolves to a non-public address ({private[0]})."
    return ""


def _needs_address_check(host: str) -> bool:
    """Hosts on the allowlist were chosen by an admin: they may be internal on purpose."""
    return not settings.GATEWAY_JOB_WEBHOOK_HOSTS or not host_allowed(host, settings.GATEWAY_JOB_WEBHOOK_HOSTS)


async def check(url: object) -> str:
    """``check_form`` plus, unless the host is allowlisted, that it resolves only to public addresses."""
    url = check_form(url)
    host, port = urlsplit(url).hostname, urlsplit(url).port
    if _needs_address_check(host):
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except OSError:
            raise WebhookRefused(f"'webhook_url' host '{host}' does not resolve.") from None
        refusal = _addresses_refusal(host, infos)
        if refusal:
            raise WebhookRefused(refusal)
    return url


def check_now(url: str) -> str:
    """``check`` from synchronous code (the delivery task, before each attempt)."""
    url = check_form(url)
    host, port = urlsplit(url).hostname, urlsplit(url).port
    if _needs_address_check(host):
        try:
            infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except OSError:
            raise WebhookRefused(f"'webhook_url' host '{host}' does not resolve.") from None
        refusal = _addresses_refusal(host, infos)
        if refusal:
            raise WebhookRefused(refusal)
    return url
