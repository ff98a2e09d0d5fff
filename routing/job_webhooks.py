"""Where a job's completion webhook may go.

The gateway POSTs to a URL its caller chose, from inside the network it runs in, so a
``webhook_url`` passes the outbound address policy (``gateway_project.outbound``) when the
job is submitted and again at each delivery, which goes to the address that was checked
(so a name that resolves elsewhere a moment later is never followed). With
``GATEWAY_JOB_WEBHOOK_HOSTS`` set, only those hosts may be named at all; they may be
internal, like the hosts on ``GATEWAY_WEBHOOK_ALLOWED_HOSTS``.
"""

from __future__ import annotations

from django.conf import settings

from gateway_project import outbound

WHAT = "'webhook_url'"


class WebhookRefused(ValueError):
    """The URL is not one the gateway will call."""


def check_form(url: object) -> str:
    """The URL if it is a well-formed http(s) URL that fits the host allowlist; else ``WebhookRefused``."""
    if isinstance(url, str) and len(url) > 500:
        raise WebhookRefused(f"{WHAT} is longer than 500 characters.")
    try:
        dest = outbound.parse(url, WHAT)
    except outbound.Refused as refused:
        raise WebhookRefused(str(refused)) from None
    allowed = settings.GATEWAY_JOB_WEBHOOK_HOSTS
    if allowed and not outbound.AllowList.of(allowed).has_host(dest.host):
        raise WebhookRefused(f"{WHAT} names host '{dest.host}', which is not in the webhook allowlist.")
    return dest.url


async def check(url: object) -> str:
    """``check_form`` plus the address policy: the host resolves, and only to addresses the gateway may call."""
    url = check_form(url)
    try:
        await outbound.aresolve(url, outbound.webhook_allow_list(), WHAT)
    except outbound.Refused as refused:
        raise WebhookRefused(str(refused)) from None
    return url
