"""``Deprecation`` (RFC 9745) and ``Sunset`` (RFC 8594) headers for deprecated agents and path routes.

``Deprecation: @<unix seconds>`` is a structured-field date: when the agent or route
was last saved while marked deprecated (the gateway keeps no separate date, and a
date in the past is what tells a client "this is deprecated now"). ``Sunset`` is an
HTTP-date, e.g. ``Sun, 28 Feb 2027 00:00:00 GMT``, sent only when a sunset is set.
"""

from __future__ import annotations

from datetime import datetime

from django.utils.http import http_date


def deprecation_headers(deprecated: bool, since: datetime | None, sunset_at: datetime | None) -> tuple:
    if not deprecated:
        return ()
    headers = [(b"deprecation", f"@{int(since.timestamp()) if since else 0}".encode())]
    if sunset_at is not None:
        headers.append((b"sunset", http_date(sunset_at.timestamp()).encode()))
    return tuple(headers)


def mark(ex, headers: tuple) -> None:
    """Add the headers to the answer once (a route's own come first and win over its agent's)."""
    if headers and not any(name == b"deprecation" for name, _ in ex.extra_headers):
        ex.extra_headers.extend(headers)
