"""The one pooled HTTP client a gateway process uses to reach upstreams."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial

import aiohttp
import httpcore
import httpx
from django.conf import settings

from gateway_project import tracing
from gateway_project.errors import GatewayError
from gateway_project.outbound import CheckedResolver
from gateway_project.outbound import address_literal as outbound_literal
from routing.table import AgentRoute
from routing.upstream_url import upstream_url

# Never forwarded in either direction (RFC 9110 section 7.6.1), plus what the
# gateway itself owns: the caller's credentials and the framing it recomputes.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
CREDENTIALS = frozenset({b"authorization", b"x-api-key", b"cookie"})
# Which of the gateway's provider accounts pays: the gateway's credential decides, never a client.
BILLING_SELECTORS = frozenset({b"openai-organization", b"openai-project"})
# Facts about the connection that only the gateway may state: a client's own would be believed upstream.
FORWARDING = frozenset({b"forwarded", b"x-real-ip", b"x-request-id", b"x-client-id"})
# Headers some servers and frameworks read as the request's real method or path: a GET (passed unpriced) must stay
# a GET, and a path the gateway checked the path the upstream serves.
METHOD_OVERRIDES = frozenset(
    {b"x-http-method-override", b"x-http-method", b"x-method-override", b"x-original-method", b"x-original-url",
     b"x-rewrite-url"}
)  # fmt: skip
# What an upstream may not do on the gateway's origin (cookies, site data, refreshes, transport and cross-origin
# policy), and what the gateway says itself on every answer.
NOT_RELAYED = frozenset(
    {b"set-cookie", b"set-cookie2", b"clear-site-data", b"refresh", b"strict-transport-security", b"alt-svc",
     b"public-key-pins", b"report-to", b"nel", b"x-content-type-options", b"content-security-policy",
     b"content-security-policy-report-only", b"x-request-id", b"x-response-time-ms", b"request-id"}
)  # fmt: skip
NOT_RELAYED_PREFIXES = (b"access-control-", b"x-gateway-", b"x-ratelimit-", b"cross-origin-")
# Errors of the transport (and of aiohttp beneath it) that mean the upstream could not be read: a 502, never a 500.
TRANSPORT_ERRORS = (httpx.HTTPError, aiohttp.ClientError, ValueError, UnicodeError)


def _named_in_connection(headers) -> frozenset[bytes]:
    """Headers a ``Connection`` header names: hop-by-hop for this connection only (RFC 9110 section 7.6.1)."""
    named = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def _forwardable(name: bytes, connection_named: frozenset[bytes]) -> bool:
    return not (
        name in HOP_BY_HOP
        or name in CREDENTIALS
        or name in BILLING_SELECTORS
        or name in FORWARDING
        or name in METHOD_OVERRIDES
        or name.startswith(b"x-forwarded-")
        or name in connection_named
    )


_transports: dict[int, httpx.AsyncBaseTransport] = {}


class UpstreamError(GatewayError):
    """An upstream call that failed, with what the retry and breaker rules need: ``kind`` is "connect",
    "timeout", "status" (the upstream answered ``upstream_status``) or "invalid" (an answer we cannot read)."""

    def __init__(self, status, type_, code, message, *, kind: str, upstream_status: int | None = None):
        super().__init__(status, type_, code, message)
        self.kind = kind
        self.upstream_status = upstream_status


@dataclass(slots=True)
class AttemptProbe:
    """What one attempt learnt on the wire, for the attempt loop: when the headers came and their status.

    ``final`` says the loop will not retry this attempt, so a pass-through relays any status as it is. ``sent``:
    the request's head went out, so the upstream may bill it from then on, answered or not
    (``routing.admission.Ticket.unread``).
    """

    final: bool = True
    answered_at: float = 0.0
    status: int = 0
    sent: bool = False
    streamed: bool = False  # a stream was asked for: closing it stops what the upstream bills


def note_streamed() -> None:
    attempt = current_attempt.get()
    if attempt is not None:
        attempt.streamed = True


def _note_sent() -> None:
    attempt = current_attempt.get()
    if attempt is not None:
        attempt.sent = True


class _SentNotingRequest(aiohttp.ClientRequest):
    """aiohttp's request, noting the attempt sent once its head is handed to the connection (in the task that
    sends, so it sees that task's attempt). A ``TraceConfig`` did the same, at the cost of trace objects and signals
    for every request and every chunk each way."""

    async def send(self, conn):
        response = await super().send(conn)
        _note_sent()
        return response


async def _httpcore_trace(event: str, info: dict) -> None:
    if event == "http11.send_request_headers.complete":
        _note_sent()


current_attempt: ContextVar[AttemptProbe | None] = ContextVar("current_attempt", default=None)


def _transport() -> httpx.AsyncBaseTransport:
    """This event loop's pooled transport (aiohttp's: about a tenth of httpcore's CPU per call).

    The proxy calls the transport directly rather than through ``httpx.AsyncClient``:
    it sets every header itself and wants no cookies, redirects, auth or URL merging,
    and the client layer cost as much CPU per call as the transport under it.
    """
    loop = asyncio.get_running_loop()
    found = _transports.get(id(loop))
    if found is None:
        gw = settings.GATEWAY
        limits = httpx.Limits(
            max_connections=gw["UPSTREAM_MAX_CONNECTIONS"], max_keepalive_connections=gw["UPSTREAM_MAX_CONNECTIONS"]
        )
        if gw["HTTP_TRANSPORT"] == "aiohttp":
            from httpx_aiohttp import AiohttpTransport

            found = AiohttpTransport(limits=limits, trust_env=False, client=partial(_aiohttp_session, limits))
        else:
            found = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
            found._pool._network_backend = CheckedBackend(found._pool._network_backend)
        _transports.clear()  # a new loop (tests) makes the old pools unusable
        _transports[id(loop)] = found
    return found


def _aiohttp_session(limits: httpx.Limits) -> aiohttp.ClientSession:
    """aiohttp's session as the proxy needs it: no cookie jar (an upstream's ``Set-Cookie`` must never come back on
    another client's request), no proxy from the environment, every connection's address checked."""
    connector = aiohttp.TCPConnector(
        limit=limits.max_connections or 0,
        keepalive_timeout=limits.keepalive_expiry,
        ssl=httpx.create_ssl_context(trust_env=False),
        resolver=CheckedResolver(),
    )
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, request_class=_SentNotingRequest
    )


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with ``CheckedResolver`` in front: the address connected to is the one checked."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend):
        self._inner = inner
        self._resolver = CheckedResolver()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if outbound_literal(host) is None:
            try:
                found = await self._resolver.resolve(host, port, socket.AF_UNSPEC)
            except OSError as refused:
                raise httpcore.ConnectError(str(refused)) from refused
            host = found[0]["host"]
        return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def provider_url(route: AgentRoute, path: str) -> httpx.URL:
    """The URL of a fixed provider path on ``route``'s base (built and checked by ``upstream_url``, cached there)."""
    return upstream_url(route.base_url, path.encode())


def build_request(method: str, url, *, content, headers, route: AgentRoute) -> httpx.Request:
    extensions = {"timeout": timeout_for(route).as_dict()}
    if tracing.tracer is not None:  # the attempt's span is the upstream's parent, in place of the client's
        headers = tracing.with_trace_headers(headers)
    if settings.GATEWAY["HTTP_TRANSPORT"] != "aiohttp":
        extensions["trace"] = _httpcore_trace  # aiohttp's session has its own (``_sent_trace``)
    return httpx.Request(method, url, content=content, headers=headers, extensions=extensions)


async def send(request: httpx.Request) -> httpx.Response:
    """Send and return the response with its body still to be read (or streamed); close it after."""
    response = await _transport().handle_async_request(request)
    attempt = current_attempt.get()
    if attempt is not None:
        attempt.answered_at, attempt.status = time.perf_counter(), response.status_code
    return response


def timeout_for(route: AgentRoute) -> httpx.Timeout:
    return httpx.Timeout(route.timeout, connect=min(route.timeout, settings.GATEWAY["UPSTREAM_CONNECT_TIMEOUT"]))


def passthrough_headers(
    raw: list[tuple[bytes, bytes]], route: AgentRoute, request_id: str, client_slug: str, credentials=None
) -> list[tuple[bytes, bytes]]:
    """The caller's headers minus hop-by-hop, credentials and forwarding claims, plus the gateway's own.

    ``Accept-Encoding: identity`` so the answer's usage can be read on its way through; ``credentials``
    are the headers of the gateway's own upstream credential in the form the upstream's kind expects
    (``routing.adapters``), a bearer token by default.
    """
    named = _named_in_connection(raw)
    kept = [(name, value) for name, value in raw if name != b"accept-encoding" and _forwardable(name, named)]
    kept += [
        (b"accept-encoding", b"identity"),
        (b"x-request-id", request_id.encode()),
        (b"x-client-id", client_slug.encode()),
    ]
    if credentials is None and route.upstream_api_key:
        credentials = [(b"authorization", f"Bearer {route.upstream_api_key}".encode())]
    kept += credentials or ()
    return kept


def _relayable(name: bytes, value: bytes, named: frozenset[bytes]) -> bool:
    return not (
        name in HOP_BY_HOP
        or name in NOT_RELAYED
        or name.startswith(NOT_RELAYED_PREFIXES)
        or name in named
        or not _TOKEN.fullmatch(name)
        or _CONTROL.search(value)
    )


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9a-z-]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """An upstream's answer headers as the client may get them: no hop-by-hop, no cookies or other say over the
    gateway's origin, none the gateway sets itself, none a server could not send; an absolute ``Location`` (a
    redirect off the gateway) neither."""
    raw = [(name.lower(), value) for name, value in response.headers.raw]
    named = _named_in_connection(raw)
    kept = [(name, value) for name, value in raw if _relayable(name, value, named)]
    return [(name, value) for name, value in kept if name != b"location" or not _ABSOLUTE.match(value)]


_ABSOLUTE = re.compile(rb"^\s*([a-z][a-z0-9+.-]*:|//|\\\\)", re.IGNORECASE)


def answer_status(response: httpx.Response, route: AgentRoute) -> int:
    """The upstream's status, or a 502 when it is no HTTP status a client could be sent."""
    status = response.status_code
    if not 100 <= status <= 599 or status == 101:
        raise UpstreamError(
            502, "upstream_error", "upstream_invalid", f"The agent '{route.slug}' answered with status {status}.",
            kind="invalid",
        )  # fmt: skip
    return status


def _caused_by_timeout(exc: BaseException) -> bool:
    cause = exc.__cause__
    if cause is not None and not isinstance(cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return False  # aiohttp's transport reports a dropped connection as ConnectTimeout
    return isinstance(exc, httpx.TimeoutException)


def upstream_failure(exc: BaseException, route: AgentRoute) -> UpstreamError:
    """Turn a transport error into 504 (too slow) or 502 (unreachable or broken)."""
    if isinstance(exc, TimeoutError) or _caused_by_timeout(exc):
        return UpstreamError(
            504,
            "timeout_error",
            "upstream_timeout",
            timeout_message(route),
            kind="timeout",
        )
    return UpstreamError(
        502,
        "upstream_error",
        "upstream_unreachable",
        f"The agent '{route.slug}' could not be reached ({type(exc).__name__}).",
        kind="connect",
    )


def timeout_message(route: AgentRoute) -> str:
    return f"The agent '{route.slug}' did not answer within {round(route.timeout, 1):g} seconds."


def upstream_status_error(status: int, route: AgentRoute) -> UpstreamError:
    return UpstreamError(
        502, "upstream_error", "upstream_error", f"The agent '{route.slug}' failed with HTTP {status}.",
        kind="status", upstream_status=status,
    )  # fmt: skip
