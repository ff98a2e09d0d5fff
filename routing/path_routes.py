"""Path routes: a path prefix and methods served by an agent, held in memory for the hot path.

The router asks ``match`` whether a path belongs to a route (longest prefix on a
path-segment boundary) with plain dictionary look-ups, one per segment, and the
proxy forwards it to the route's agent with the route's own timeout, retries,
auth, rate and protocol. ``validate_route`` keeps a route from shadowing the
gateway's own paths; the console form and the API both call it.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.urls import Resolver404, get_resolver, resolve

from routing.cache_policy import CachePolicy, cache_policy_of
from routing.deprecation import deprecation_headers

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Paths the gateway serves itself; Django's own top-level paths are added from the URLconf.
GATEWAY_PREFIXES = (
    "/v1", "/agents", "/console", "/admin", "/static", "/ws", "/api/schema", "/api/docs", "/metrics",
)  # fmt: skip
_PREFIX = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+$")


@dataclass(frozen=True, slots=True)
class PathRouteEntry:
    """A ``routing.PathRoute`` as the hot path needs it."""

    id: int
    prefix: str
    methods: frozenset[str]  # empty: every method
    agent: str
    upstream_path: str
    timeout: float | None  # None: the agent's
    max_retries: int | None  # None: the agent's
    auth_required: bool
    requests_per_minute: int  # 0: no limit of its own
    sse: bool
    deprecation: tuple[tuple[bytes, bytes], ...] = ()
    cache: CachePolicy | None = None  # its own response cache; the agent's does not apply through the route

    def allows(self, method: str) -> bool:
        return not self.methods or method in self.methods

    @property
    def allow_header(self) -> str:
        return ", ".join(method for method in HTTP_METHODS if method in self.methods)

    def upstream_rest(self, raw_path: bytes) -> bytes:
        """The raw path on the agent: ``upstream_path`` plus what follows the prefix, or the request's own path.

        The prefix is cut by segments, not characters, so a client that percent-encodes
        some of the prefix's letters cannot shift where the rest begins.
        """
        if not self.upstream_path:
            return raw_path
        segments = raw_path.split(b"/")
        depth = self.prefix.count("/")
        rest = b"/" + b"/".join(segments[depth + 1 :]) if len(segments) > depth + 1 else b""
        base = self.upstream_path.rstrip("/").encode()
        return base + rest if rest else self.upstream_path.encode()

    def agent_route(self, agent):
        """The agent's route with this route's timeout and retries where it sets them, and its own cache."""
        changes = {"cache": self.cache} if self.cache != agent.cache else {}
        if self.timeout is not None:
            changes["timeout"] = self.timeout
        if self.max_retries is not None:
            changes["max_retries"] = self.max_retries
        return dataclasses.replace(agent, **changes) if changes else agent


def entry_of(route) -> PathRouteEntry:
    return PathRouteEntry(
        id=route.pk,
        prefix=route.prefix,
        methods=frozenset(method.upper() for method in route.methods or ()),
        agent=route.agent.slug,
        upstream_path=route.upstream_path,
        timeout=route.timeout_seconds,
        max_retries=route.max_retries,
        auth_required=route.auth_required,
        requests_per_minute=route.requests_per_minute,
        sse=route.protocol == "sse",
        deprecation=deprecation_headers(route.deprecated, route.updated_at, route.sunset_at),
        cache=cache_policy_of(route, scope=f"route-{route.pk}", agent=route.agent),
    )


def match(paths: dict[str, PathRouteEntry], path: str) -> PathRouteEntry | None:
    """The route with the longest prefix that ``path`` equals or continues with a ``/``."""
    if not paths:
        return None
    candidate = path.rstrip("/") or "/"
    while candidate:
        found = paths.get(candidate)
        if found is not None:
            return found
        cut = candidate.rfind("/")
        if cut <= 0:
            return None
        candidate = candidate[:cut]
    return None


def _literal(pattern) -> str:
    """The fixed start of a URL pattern (``api/v1/`` of ``path("api/v1/", …)``, ``clients/`` of ``^clients/$``)."""
    return re.split(r"[<$(\\\[?*+.]", str(pattern.pattern).lstrip("^"), maxsplit=1)[0]


def django_paths(patterns=None, base: str = "") -> set[str]:
    """The fixed start of every path the Django URLconf serves, e.g. ``/api/v1/reports/usage``."""
    found = set()
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        literal = base + _literal(pattern)
        if hasattr(pattern, "url_patterns"):
            found |= django_paths(pattern.url_patterns, literal)
        elif literal.strip("/"):
            found.add("/" + literal.strip("/"))
    return found


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def clean_prefix(prefix: str) -> str:
    """The prefix without a trailing slash, or a ValidationError saying why it cannot be a route."""
    prefix = (prefix or "").strip()
    if not prefix.startswith("/"):
        raise ValidationError("Start the prefix with “/”, e.g. /api/v1/search.")
    prefix = prefix.rstrip("/")
    if not prefix:
        raise ValidationError("“/” would take every path; give a longer prefix.")
    if not _PREFIX.match(prefix):
        raise ValidationError("Use path segments separated by single “/”, without spaces, “?”, “#” or empty segments.")
    for reserved in GATEWAY_PREFIXES:
        if prefix == reserved or prefix.startswith(reserved + "/") or reserved.startswith(prefix + "/"):
            raise ValidationError(f"“{prefix}” would shadow the gateway's own path {reserved}/.")
    if _resolves(prefix) or _resolves(prefix + "/"):
        raise ValidationError(f"“{prefix}” would shadow a path of the gateway's own pages.")
    for served in sorted(django_paths()):
        if served == prefix or served.startswith(prefix + "/"):
            raise ValidationError(f"“{prefix}” would shadow the gateway's own path {served}/.")
    return prefix


def clean_methods(methods) -> list[str]:
    if not isinstance(methods, list | tuple) or not all(isinstance(m, str) for m in methods):
        raise ValidationError("Give a list of HTTP methods.")
    cleaned = []
    for method in methods:
        method = method.strip().upper()
        if method not in HTTP_METHODS:
            raise ValidationError(f"“{method}” is not one of {', '.join(HTTP_METHODS)}.")
        if method not in cleaned:
            cleaned.append(method)
    return cleaned


def clean_upstream_path(path: str) -> str:
    path = (path or "").strip()
    if path and (not path.startswith("/") or any(c in path for c in " ?#")):
        raise ValidationError("Start the upstream path with “/” (no spaces, “?” or “#”), or leave it empty.")
    return path


def clean_timeout(value):
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise ValidationError("Must be a number of seconds above zero (or empty for the agent's).")
    return value


def validate_route(values: dict) -> dict:
    """Check and normalise a route's fields; raises ValidationError keyed by field."""
    errors, cleaned = {}, dict(values)
    for name, check in (
        ("prefix", clean_prefix),
        ("methods", clean_methods),
        ("upstream_path", clean_upstream_path),
        ("timeout_seconds", clean_timeout),
    ):
        if name in values:
            try:
                cleaned[name] = check(values[name])
            except ValidationError as error:
                errors[name] = error.messages
    if errors:
        raise ValidationError(errors)
    return cleaned


def observe_sse(ex):
    """Read an SSE answer as it goes to the client, for its usage; the bytes go on unchanged and at once."""
    from routing.sse import OpenAIStreamScanner

    scanner = OpenAIStreamScanner(keep_usage_chunk=True)
    send = ex.send

    async def observed(data: bytes, *, more: bool = True) -> None:
        if data:
            scanner.feed(data)
        await send(data, more=more)

    ex.send = observed
    return scanner


def note_sse_usage(ex, scanner) -> None:
    """Usage from an OpenAI-shaped stream's final chunk, when the upstream gave none in its headers."""
    if scanner is None:
        return
    if scanner.usage and not (ex.input_tokens or ex.output_tokens):
        ex.input_tokens, ex.output_tokens = scanner.usage
    ex.output_text = ex.output_text or scanner.text
    if scanner.model:
        ex.model = scanner.model
