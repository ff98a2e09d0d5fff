"""The WebSocket proxy: a session on ``/agents/<agent>/ws`` relayed to the agent's own ``/ws``.

The handshake takes the HTTP proxy's steps (authenticate, resolve, authorize,
admit) and opens the agent's connection before it accepts the client's, so every
refusal, an unreachable agent's included, is decided while the client still waits
for the handshake's answer. Frames then flow both ways until either side closes, text
frames through the guardrails that apply to the key and the agent (``routing.ws_guard``;
none: untouched), and the whole session is one audit record.

How a refusal reaches the client depends on the server. One that offers the ASGI
"WebSocket Denial Response" extension (uvicorn) answers the handshake with the
HTTP status and the JSON error, like any HTTP refusal. Daphne 4.2 does not: an
application that closes before accepting makes it answer a bare ``403 Access
denied`` whatever the reason, and it drops close reasons. There the gateway
accepts, sends the JSON error as one text frame and closes with 4000 + the HTTP
status (4401, 4403, 4404, 4429, 4502, ...).

A session lasts only as long as its key lets it in: when the key is revoked,
disabled, expires, loses the agent from its scopes or its client is disabled, the
gateway closes the session with 1008 (policy violation) and the error code as the
reason (``ws_sessions``), within a second on every gateway process. Daphne lets an
application send no standard code but 1000, so its clients get 4008 instead, as
``close_client`` maps every standard code (and drops the reason).

A session also lasts at most ``GATEWAY_MAX_SESSION_SECONDS`` from its handshake,
then is closed the same way with the reason ``session_deadline``: the concurrency
slots it holds (the key's, the agent's) are counted in the hot state only that long
and a minute (``hotstate.slot_ttl_seconds``), so a session held open past them
would have let its key and agent run more sessions than their ``max_concurrent``.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import unquote_plus

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from gateway_project import tracing
from gateway_project.errors import GatewayError, forbidden, not_found
from gateway_project.logs import request_id
from keys.access import authorize, presented_key
from routing import access_log, spans, upstream
from routing.adapters import adapter_for
from routing.adapters.base import ProviderAdapter
from routing.admission import admit, settle
from routing.endpoints import authenticate
from routing.exchange import Exchange
from routing.governance import govern
from routing.table import AgentRoute, routing_table
from routing.ws_guard import FrameGuard
from routing.ws_relay import SESSION_DEADLINE, Traffic, close_client, relay, upstream_close_code
from routing.ws_sessions import open_sessions

log = logging.getLogger("gateway.ws")

DENIAL_EXTENSION = "websocket.http.response"
QUERY_KEY = "api_key"
# Daphne refuses a handshake its application has not accepted within 5 s (--websocket_connect_timeout):
# the agent must answer well before, or the client gets Daphne's bare 403 instead of the gateway's 504.
MAX_OPEN_SECONDS = 4.0
# The largest message taken from an agent; a larger one closes the session with 1009.
MAX_UPSTREAM_MESSAGE_BYTES = 16 * 1024 * 1024
UPSTREAM_QUEUE_FRAMES = 2
# Handshake headers of the client's own connection; the agent's connection makes its own.
NOT_FORWARDED = frozenset(
    {b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions", b"sec-websocket-protocol"}
)


class WebSocketProxyConsumer(AsyncWebsocketConsumer):
    """Serves ``/agents/<agent>/ws``.

    Like the HTTP proxy consumer it keeps Channels' interface but runs the session
    itself: the generic dispatch loop would handle one message at a time and close
    database connections in a thread after each frame, and the relay must read the
    client and the agent at once. It uses no channel layer.
    """

    channel_layer_alias = "proxy-uses-no-channel-layer"

    async def __call__(self, scope, receive, send):
        self.scope = scope
        if (await receive())["type"] == "websocket.connect":
            await serve_session(scope, receive, send)


async def serve_session(scope: dict, receive, send) -> None:
    """Admit, connect, relay and settle one session; write exactly one audit record whatever happened."""
    ex = Exchange({**scope, "method": "WS"}, b"", False, send)
    request_id.set(ex.request_id)  # log lines written while it lasts name it
    span = spans.begin_request(ex)  # the whole session, handshake to close
    traffic = Traffic()
    ticket = guard = None
    try:
        try:
            route = await _authorize(ex)
            # Frames carry no token usage: a session takes a request and a slot (the key's, the agent's), no cost.
            facts = ex.learn(ex.facts.routed(route))
            await govern(ex, facts)  # the policy rules, method WS
            ticket = await admit(ex, facts, spent_budgets=True)
            guard = await FrameGuard.for_session(ex.key, route.slug, ex.request_id)  # the guardrails read once
            agent = await open_upstream(ex, route, scope)
        except GatewayError as error:
            await refuse(ex, scope, send, error, traffic)
            return
        try:
            await send(
                {
                    "type": "websocket.accept",
                    "subprotocol": agent.subprotocol,
                    # Where the server sends them (uvicorn; Daphne does not): the limits left, the request id.
                    "headers": [*ex.extra_headers, (b"x-request-id", ex.request_id.encode())],
                }
            )
            ex.status = 101
            traffic.handshake_ms = ex.elapsed_ms()
            seconds_left = settings.GATEWAY["MAX_SESSION_SECONDS"] - ex.elapsed_ms() / 1000
            async with open_sessions.watch(ex.key, route, ex.started, ex.origin) as watched:
                frame_limit = settings.GATEWAY["MAX_BODY_BYTES"]
                await relay(receive, send, agent, traffic, frame_limit, watched.withdrawn, seconds_left, guard)
        finally:
            await agent.close(upstream_close_code(traffic.close_code) if traffic.closed_by == "client" else 1001)
    except asyncio.CancelledError:  # the server is shutting down (a client that leaves is a message, not this)
        ex.status = ex.status or 503
        traffic.end("gateway", 1001, "server_shutdown")
        raise
    except Exception:
        log.exception("WebSocket session %s failed", ex.request_id)
        if ex.status == 101:
            traffic.end("gateway", 1011, "internal_error")
            await close_client(send, 1011)
        else:
            failed = GatewayError(500, "api_error", "internal_error", "The gateway failed; see its logs.")
            await refuse(ex, scope, send, failed, traffic)
    finally:
        if ticket is not None:
            await settle(ex, ticket)
        ex.error_type = ex.error_type or traffic.error
        ex.input_text, ex.output_text = traffic.first_in, traffic.first_out
        ex.details.update(traffic.details())  # beside what the stages wrote (the policy's, its context)
        if guard is not None:
            guard.audit(ex)
        if traffic.error == SESSION_DEADLINE:
            ex.details["session_deadline_seconds"] = settings.GATEWAY["MAX_SESSION_SECONDS"]
        ex.record()
        access_log.line(ex, span)
        spans.end_session(ex, span, traffic)


async def _authorize(ex: Exchange) -> AgentRoute:
    """The key (from the headers or ``?api_key=``) and the agent it may use, or a 401, 403 or 404."""
    if presented_key(ex.headers) is None:
        key = key_in_query(ex.query)
        if key is None:
            raise GatewayError(
                401,
                "authentication_error",
                "missing_api_key",
                "No API key given. Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>', "
                "or as '?api_key=<key>' where the client cannot set headers.",
            )
        ex.headers[b"x-api-key"] = key.encode()
    await authenticate(ex)
    slug, _, rest = ex.path[len("/agents/") :].partition("/")
    if rest != "ws":
        message = f"There is no WebSocket endpoint {ex.path}; sessions open at /agents/<agent>/ws."
        raise not_found(message, "unknown_endpoint")
    route = (await routing_table.get()).agent(slug)
    ex.agent, ex.model = route.slug, route.default_model
    authorize(ex.key, route)
    if isinstance(adapter_for(route), ProviderAdapter) and not route.unmetered_pass_through:
        raise forbidden(
            f"The gateway cannot meter a WebSocket session with the provider agent '{route.slug}', so it does not open "
            "one. Use its metered HTTP APIs, or ask an admin to allow unmetered pass-through for this agent.",
            "unmetered_pass_through",
        )
    return route


def key_in_query(query: bytes) -> str | None:
    """The value of ``api_key`` in a query string, if there is one."""
    for pair in query.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if unquote_plus(name) == QUERY_KEY and value:
            return unquote_plus(value)
    return None


def query_without_key(query: bytes) -> str:
    """The query string as the client sent it, minus its ``api_key``: the agent never sees the client's key."""
    pairs = query.decode("latin-1").split("&")
    return "&".join(pair for pair in pairs if pair and unquote_plus(pair.partition("=")[0]) != QUERY_KEY)


def upstream_url(route: AgentRoute, query: bytes) -> str:
    """``<agent's base URL>/ws`` with a WebSocket scheme, and the client's query minus its key."""
    url = route.url("ws")
    url = "wss" + url[len("https") :] if url.startswith("https") else "ws" + url[len("http") :]
    kept = query_without_key(query)
    return f"{url}?{kept}" if kept else url


async def open_upstream(ex: Exchange, route: AgentRoute, scope: dict) -> ClientConnection:
    """Connect to the agent with the client's headers (never its key) and subprotocols, or raise 502/504."""
    ex.target = route.base_url
    raw = [(name, value) for name, value in ex.raw_headers if name not in NOT_FORWARDED]
    headers = upstream.passthrough_headers(raw, route, ex.request_id, ex.key.client_slug)
    if tracing.tracer is not None:  # the session's span is the agent's parent, in place of the client's
        headers = tracing.with_trace_headers(headers)
    try:
        return await connect(
            upstream_url(route, ex.query),
            additional_headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
            subprotocols=scope.get("subprotocols") or None,
            user_agent_header=None,  # the client's own, if it sent one, is among the headers
            proxy=None,  # like the HTTP transport: no proxy from the environment
            open_timeout=min(route.timeout, settings.GATEWAY["UPSTREAM_CONNECT_TIMEOUT"], MAX_OPEN_SECONDS),
            max_size=MAX_UPSTREAM_MESSAGE_BYTES,
            # Frames read from the agent ahead of the client: two at most (websockets' default, 16 frames of up to
            # 16 MiB, let an agent make a worker hold 256 MiB for a client that does not read).
            max_queue=UPSTREAM_QUEUE_FRAMES,
        )
    except InvalidStatus as refused:
        status = refused.response.status_code
        if status >= 500 or status < 400:
            raise upstream.upstream_status_error(status, route) from None
        message = f"The agent '{route.slug}' refused the WebSocket handshake with HTTP {status}."
        raise GatewayError(status, "upstream_error", "upstream_rejected", message) from None
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise upstream.upstream_failure(exc, route) from None


async def refuse(ex: Exchange, scope: dict, send, error: GatewayError, traffic: Traffic) -> None:
    """Answer the handshake with the error: as HTTP where the server can, else as an error frame and a close."""
    ex.status, ex.error_type = error.status, error.code
    body = error.body(ex.request_id)
    if DENIAL_EXTENSION in scope.get("extensions", {}):
        headers = [(b"content-type", b"application/json"), (b"x-request-id", ex.request_id.encode()), *error.headers]
        await send({"type": "websocket.http.response.start", "status": error.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        traffic.end("gateway", None)
        return
    code = 4000 + error.status
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": body.decode()})
    await close_client(send, code, error.code)
    traffic.end("gateway", code)
