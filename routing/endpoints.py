"""The gateway's endpoints, each a sequence of the same steps.

authenticate -> size and shape -> resolve -> authorize -> admit -> forward
-> settle. Every step raises ``GatewayError`` to refuse; ``serve`` turns that
into the JSON error and writes exactly one audit record whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from functools import partial

from channels.db import database_sync_to_async

from audit.redaction_rules import warm_rules
from billing.status import budget_report
from billing.usage import client_usage, usage_query
from gateway_project.errors import GatewayError, bad_request, not_found
from gateway_project.writer import writer
from keys.access import authorize, ensure_usable, identify
from routing import anthropic_shape, forward, protocols
from routing.admission import admit, input_estimate, settle
from routing.exchange import Exchange
from routing.sse import (
    AnthropicStreamScanner,
    AnthropicToOpenAIStream,
    OpenAIStreamScanner,
    OpenAIToAnthropicStream,
    anthropic_stream_of,
    openai_stream_of,
)
from routing.table import AgentRoute, routing_table

log = logging.getLogger("gateway.proxy")

CLIENT_CLOSED = 499
# A reservation outlives its request's own timeout by this much before it lapses.
RESERVATION_MARGIN_SECONDS = 60


async def serve(ex: Exchange) -> None:
    try:
        handler, args = _resolve_endpoint(ex)
        await handler(ex, *args)
    except GatewayError as error:
        await ex.fail(error)
    except asyncio.CancelledError:
        ex.status, ex.error_type = ex.status or CLIENT_CLOSED, "client_disconnected"
        raise
    except Exception:
        log.exception("request %s failed", ex.request_id)
        await ex.fail(GatewayError(500, "api_error", "internal_error", "The gateway failed; see its logs."))
    finally:
        ex.record()


async def authenticate(ex: Exchange) -> None:
    """401 or 403, or the caller's key on the exchange (set before the 403, for the audit record)."""
    ex.key = await identify(ex.headers)
    await warm_rules()  # the audit record's previews use the rules as last loaded
    ensure_usable(ex.key)


def _resolve_endpoint(ex: Exchange):
    if ex.path.startswith("/agents/"):
        slug, _, rest = ex.path[len("/agents/") :].partition("/")
        return pass_through, (slug, rest)
    if ex.path == "/v1/messages" or ex.path.startswith("/v1/messages/"):
        ex.speak_anthropic()  # refusals, 404 and 405 included, in the shape Anthropic's SDK reads
    endpoint = ENDPOINTS.get(ex.path)
    if endpoint is None:
        return _unknown_path, ()
    method, handler = endpoint
    if ex.method != method:
        return _wrong_method, (method,)
    return handler, ()


async def _unknown_path(ex: Exchange) -> None:
    await authenticate(ex)
    raise not_found(f"There is no endpoint {ex.method} {ex.path}.", "unknown_endpoint")


async def _wrong_method(ex: Exchange, allowed: str) -> None:
    await authenticate(ex)
    raise GatewayError(
        405,
        "invalid_request_error",
        "method_not_allowed",
        f"{ex.path} accepts {allowed} only.",
        [(b"allow", allowed.encode())],
    )


async def _metered(ex: Exchange, route: AgentRoute, max_output: int | None, call) -> None:
    """Admit (reserving the worst case), run ``call``, and settle whatever happened to it."""
    hold = route.timeout + RESERVATION_MARGIN_SECONDS
    ticket = await admit(
        ex, input_estimate(ex.body), max_output, hold_seconds=hold, default_output=route.default_max_output_tokens,
        route=route,
    )  # fmt: skip
    try:
        await call()
    finally:
        if not ex.input_tokens and not ex.output_tokens and ex.response_started and ex.output_text:
            # The upstream reported no usage: fall back to estimates rather than charge nothing.
            ex.input_tokens, ex.output_tokens = max(1, len(ex.input_text) // 4), max(1, len(ex.output_text) // 4)
        await settle(ex, ticket, route.default_model)


async def _route_for_model(ex: Exchange, requested: str) -> AgentRoute:
    """The agent serving ``requested`` (a model, or an agent's slug for its default model), if the key may use it."""
    route = (await routing_table.get()).for_model(requested)
    ex.agent, ex.model = route.slug, route.default_model if requested == route.slug else requested
    authorize(ex.key, route.slug, "" if requested == route.slug else requested)
    return route


def _note_stream_error(ex: Exchange, scanner) -> None:
    """An upstream that failed mid-stream (its error went on to the client) is an error in the audit record."""
    if scanner.error:
        ex.error_type = ex.error_type or "upstream_error"
        ex.details["upstream_stream_error"] = scanner.error


# --- POST /v1/chat/completions --------------------------------------------


async def chat_completions(ex: Exchange) -> None:
    await authenticate(ex)
    payload = ex.json()
    protocols.validate_chat(payload)
    route = await _route_for_model(ex, payload["model"])
    ex.input_text = protocols.last_user_text(payload["messages"])
    stream = payload.get("stream") is True
    options = payload.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True

    async def call():
        if route.kind == "openai":
            await _chat_openai(ex, route, payload, stream, wants_usage)
        elif route.kind == "anthropic":
            await _chat_anthropic(ex, route, payload, stream, wants_usage)
        else:
            await _chat_agent(ex, route, payload, stream, wants_usage)

    await _metered(ex, route, protocols.max_tokens(payload), call)


async def _chat_openai(ex, route, payload, stream, wants_usage):
    if stream:
        body = {**payload, "stream_options": {**(payload.get("stream_options") or {}), "include_usage": True}}
        scanner = OpenAIStreamScanner(keep_usage_chunk=wants_usage)
        await forward.stream_sse(ex, route, "/v1/chat/completions", json.dumps(body).encode(), scanner)
        return
    answer, content = await forward.call_json(ex, route, "/v1/chat/completions", ex.body)
    ex.output_text = protocols.chat_text(answer)
    await forward.respond_json_bytes(ex, content)  # the provider's own bytes, as it sent them


async def _chat_anthropic(ex, route, payload, stream, wants_usage):
    body = json.dumps(protocols.chat_to_anthropic(payload)).encode()
    if stream:
        scanner = AnthropicToOpenAIStream(ex.request_id, ex.model, include_usage=wants_usage)
        await forward.stream_sse(ex, route, "/v1/messages", body, scanner)
        _note_stream_error(ex, scanner)
        return
    answer, _ = await forward.call_json(ex, route, "/v1/messages", body)
    chat = protocols.anthropic_to_chat(answer, ex.model, ex.request_id)
    ex.output_text = protocols.chat_text(chat)
    await forward.respond_upstream_json(ex, chat)


async def _chat_agent(ex, route, payload, stream, wants_usage):
    body = protocols.invoke_body(ex.input_text, ex.model, protocols.max_tokens(payload))
    answer, _ = await forward.call_json(ex, route, "/invoke", json.dumps(body).encode())
    ex.output_text = protocols.agent_text(answer)
    model = ex.model or route.slug
    if stream:
        usage = (ex.input_tokens, ex.output_tokens)
        await ex.start(200, forward.SSE_HEADERS)
        await ex.send(openai_stream_of(ex.request_id, model, ex.output_text, usage, wants_usage), more=False)
        return
    chat = protocols.chat_completion(ex.request_id, model, ex.output_text, ex.input_tokens, ex.output_tokens)
    await forward.respond_upstream_json(ex, chat)


# --- POST /v1/messages: Anthropic's shape, whichever provider answers --------


async def messages(ex: Exchange) -> None:
    await authenticate(ex)
    payload = ex.json()
    anthropic_shape.validate_messages(payload)
    route = await _route_for_model(ex, payload["model"])
    ex.input_text = protocols.last_user_text(payload["messages"])
    stream = payload.get("stream") is True
    # Translate before admitting: what cannot be translated is refused without touching the limits.
    if route.kind == "anthropic":
        body = ex.body if payload["model"] == ex.model else json.dumps({**payload, "model": ex.model}).encode()
        call = partial(_messages_anthropic, ex, route, body, stream)
    elif route.kind == "openai":
        body = json.dumps(anthropic_shape.messages_to_chat(payload, ex.model)).encode()
        call = partial(_messages_openai, ex, route, body, stream)
    else:
        anthropic_shape.ensure_translatable(payload, ex.model)
        call = partial(_messages_agent, ex, route, payload["max_tokens"], stream)
    await _metered(ex, route, payload["max_tokens"], call)


async def _messages_anthropic(ex, route, body, stream):
    if stream:
        scanner = AnthropicStreamScanner(ex.model)
        await forward.stream_sse(ex, route, "/v1/messages", body, scanner)
        _note_stream_error(ex, scanner)
        return
    answer, content = await forward.call_json(ex, route, "/v1/messages", body)
    ex.output_text = protocols.anthropic_text(answer)
    await forward.respond_json_bytes(ex, content)  # the provider's own bytes, as it sent them


async def _messages_openai(ex, route, body, stream):
    if stream:
        scanner = OpenAIToAnthropicStream(ex.request_id, ex.model)
        await forward.stream_sse(ex, route, "/v1/chat/completions", body, scanner)
        _note_stream_error(ex, scanner)
        return
    answer, _ = await forward.call_json(ex, route, "/v1/chat/completions", body)
    ex.output_text = protocols.chat_text(answer)
    await forward.respond_upstream_json(ex, anthropic_shape.chat_to_message(answer, ex.model, ex.request_id))


async def _messages_agent(ex, route, limit, stream):
    body = protocols.invoke_body(ex.input_text, ex.model, limit)
    answer, _ = await forward.call_json(ex, route, "/invoke", json.dumps(body).encode())
    ex.output_text = protocols.agent_text(answer)
    model, usage = ex.model or route.slug, (ex.input_tokens, ex.output_tokens)
    if stream:
        await ex.start(200, forward.SSE_HEADERS)
        await ex.send(anthropic_stream_of(ex.request_id, model, ex.output_text, usage), more=False)
        return
    await forward.respond_upstream_json(ex, anthropic_shape.message(ex.request_id, model, ex.output_text, *usage))


# --- POST /v1/agent/invoke --------------------------------------------------


async def agent_invoke(ex: Exchange) -> None:
    await authenticate(ex)
    payload = ex.json()
    protocols.validate_invoke(payload)
    table = await routing_table.get()
    if payload.get("agent"):
        route, reason = table.agent(payload["agent"]), "requested"
    elif payload.get("model"):
        route, reason = table.for_model(payload["model"]), "model"
    else:
        route, reason = table.by_content(payload["input"], ex.key.may_use_agent)
    model = payload.get("model") or route.default_model
    ex.agent, ex.model, ex.input_text = route.slug, model, payload["input"]
    authorize(ex.key, route.slug, payload.get("model") or "")
    limit = protocols.max_tokens(payload)

    async def call():
        if route.kind == "openai":
            body = {"model": model, "messages": [{"role": "user", "content": payload["input"]}]}
            if limit:
                body["max_tokens"] = limit
            answer, _ = await forward.call_json(ex, route, "/v1/chat/completions", json.dumps(body).encode())
            ex.output_text = protocols.chat_text(answer)
        elif route.kind == "anthropic":
            body = {
                "model": model,
                "max_tokens": limit or protocols.ANTHROPIC_DEFAULT_MAX_TOKENS,
                "messages": [{"role": "user", "content": payload["input"]}],
            }
            answer, _ = await forward.call_json(ex, route, "/v1/messages", json.dumps(body).encode())
            ex.output_text = protocols.anthropic_text(answer)
        else:
            body = protocols.invoke_body(payload["input"], payload.get("model") or "", limit)
            answer, _ = await forward.call_json(ex, route, "/invoke", json.dumps(body).encode())
            ex.output_text = protocols.agent_text(answer)

    await _metered(ex, route, limit, call)
    latency_ms = round(ex.elapsed_ms(), 2)
    ex.extra_headers.append((b"x-gateway-route-reason", reason.encode()))
    await ex.respond_json(
        200,
        {
            "request_id": ex.request_id,
            "output": ex.output_text,
            "agent_used": route.slug,
            "model": ex.model,
            "route_reason": reason,
            "tokens_used": ex.input_tokens + ex.output_tokens,
            "usage": {"input_tokens": ex.input_tokens, "output_tokens": ex.output_tokens},
            "cost_usd": float(ex.cost_nanos) / 1e9,
            "latency_ms": latency_ms,
        },
    )


# --- ANY /agents/<agent>/<path> ---------------------------------------------


async def pass_through(ex: Exchange, slug: str, rest: str) -> None:
    await authenticate(ex)
    ex.ensure_size()
    route = (await routing_table.get()).agent(slug)
    ex.agent, ex.model = route.slug, route.default_model
    authorize(ex.key, route.slug)
    ex.input_text = ex.body[:1000].decode("utf-8", "replace")
    await _metered(ex, route, None, lambda: forward.pass_through(ex, route, rest))


# --- GET /v1/models ---------------------------------------------------------


async def list_models(ex: Exchange) -> None:
    await authenticate(ex)
    ticket = await admit(ex, metered=False)
    try:
        table = await routing_table.get()
        created = int(time.time())
        data = []
        for route in sorted(table.agents.values(), key=lambda r: r.slug):
            if not ex.key.may_use_agent(route.slug):
                continue
            data.append({"id": route.slug, "object": "model", "created": created, "owned_by": f"agent:{route.slug}"})
            for model in route.served_models:
                if ex.key.may_use_model(model):
                    data.append({"id": model, "object": "model", "created": created, "owned_by": route.slug})
        await ex.respond_json(200, {"object": "list", "data": data})
    finally:
        await settle(ex, ticket, "")


# --- GET /v1/usage ----------------------------------------------------------


async def usage(ex: Exchange) -> None:
    await authenticate(ex)
    try:
        query = usage_query(ex.query.decode("latin-1"))
    except ValueError as error:
        raise bad_request(str(error)) from None
    ticket = await admit(ex, metered=False)
    try:
        await writer.flush()  # so the report includes this process's latest requests
        key = ex.key
        report = await database_sync_to_async(client_usage)(key.client_id, query)
        budgets = await database_sync_to_async(budget_report)(key.key_id, key.client_id, key.cost_center_id)
        await ex.respond_json(200, {**report, "client": key.client_slug, "budgets": budgets})
    finally:
        await settle(ex, ticket, "")


ENDPOINTS = {
    "/v1/chat/completions": ("POST", chat_completions),
    "/v1/messages": ("POST", messages),
    "/v1/agent/invoke": ("POST", agent_invoke),
    "/v1/models": ("GET", list_models),
    "/v1/usage": ("GET", usage),
}
