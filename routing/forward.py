"""Forward a request to its upstream and bring the answer (and its usage) back.

Composed calls (chat, invoke) go through ``call_json`` or ``stream_sse``;
``/agents/<agent>/...`` goes through ``pass_through`` untouched. Each sets the
exchange's tokens, model and output text from what the upstream really said.
"""

from __future__ import annotations

import asyncio
import json

import httpx
from django.conf import settings

from gateway_project.errors import GatewayError
from routing import protocols, upstream
from routing.exchange import JSON, Exchange
from routing.protocols import usage_from_headers, usage_from_json
from routing.table import AgentRoute
from routing.upstream_url import upstream_url

SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
USAGE_CAPTURE_LIMIT = 1_048_576
USAGE_TAIL_BYTES = 65_536


def _rejected(status: int, route: AgentRoute, content: bytes) -> GatewayError:
    """An upstream's own refusal (4xx): keep its status, say what it said."""
    detail = content[:300].decode("utf-8", "replace")
    try:
        error = json.loads(content).get("error")
        detail = error.get("message", detail) if isinstance(error, dict) else str(error or detail)
    except (ValueError, AttributeError):
        pass
    return upstream.UpstreamError(
        status, "upstream_error", "upstream_rejected", f"The agent '{route.slug}' refused: {detail}",
        kind="status", upstream_status=status,
    )  # fmt: skip


def _failed_status(status: int, route: AgentRoute, content: bytes) -> GatewayError:
    return upstream.upstream_status_error(status, route) if status >= 500 else _rejected(status, route, content)


async def call_json(ex: Exchange, route: AgentRoute, path: str, body: bytes, headers: dict) -> tuple[dict, bytes]:
    """POST a composed JSON body; return the upstream's JSON answer and its bytes, within the agent's timeout."""
    ex.target = route.base_url
    request = upstream.build_request(
        "POST", upstream.provider_url(route, path), content=body, headers=headers, route=route
    )
    try:
        async with asyncio.timeout(route.timeout):
            response = await upstream.send(request)
            try:
                upstream.answer_status(response, route)
                content = await read_bounded(response, route)
            finally:
                await response.aclose()
    except (*upstream.TRANSPORT_ERRORS, TimeoutError) as exc:
        raise upstream.upstream_failure(exc, route) from None
    if response.status_code >= 400:
        raise _failed_status(response.status_code, route, content)
    answer = _json_or_none(content)
    if not isinstance(answer, dict):
        raise upstream.UpstreamError(
            502, "upstream_error", "upstream_invalid", f"The agent '{route.slug}' sent an answer that is not JSON.",
            kind="invalid",
        )  # fmt: skip
    usage = usage_from_json(answer) or usage_from_headers(response.headers)
    if usage:
        ex.input_tokens, ex.output_tokens = usage
    if isinstance(answer.get("model"), str) and answer["model"]:
        ex.model = answer["model"]
    return answer, content


async def read_bounded(response: httpx.Response, route: AgentRoute) -> bytes:
    """The whole answer of a call the gateway must read before answering, up to ``MAX_UPSTREAM_ANSWER_BYTES``.

    A larger one is a 502: an upstream cannot make a gateway process hold whatever it sends.
    """
    limit = settings.GATEWAY["MAX_UPSTREAM_ANSWER_BYTES"]
    declared = response.headers.get("content-length", "")
    chunks, size = [], 0
    if not (declared.isdigit() and int(declared) > limit):
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
        else:
            return b"".join(chunks)
    raise upstream.UpstreamError(
        502, "upstream_error", "upstream_too_large",
        f"The agent '{route.slug}' sent an answer larger than {limit} bytes.", kind="invalid",
    )  # fmt: skip


async def _open_stream(ex: Exchange, route: AgentRoute, request: httpx.Request) -> httpx.Response:
    ex.target = route.base_url
    try:
        return await upstream.send(request)
    except upstream.TRANSPORT_ERRORS as exc:
        raise upstream.upstream_failure(exc, route) from None


async def _relay(
    ex: Exchange, route: AgentRoute, response: httpx.Response, transform=None, capture=None, tail=None
) -> None:
    """Send the upstream's body on as it arrives; a failure after the first byte ends the response.

    ``capture`` keeps the first ``USAGE_CAPTURE_LIMIT`` bytes and ``tail`` the last ``USAGE_TAIL_BYTES``, where
    a large answer's ``usage`` is (``usage_in_tail``).
    """
    try:
        async for chunk in response.aiter_raw():
            if capture is not None and len(capture) < USAGE_CAPTURE_LIMIT:
                capture += chunk
            if tail is not None:
                tail += chunk
                if len(tail) > 2 * USAGE_TAIL_BYTES:
                    del tail[:-USAGE_TAIL_BYTES]
            out = transform(chunk) if transform else chunk
            if out:
                await ex.send(out)
    except upstream.TRANSPORT_ERRORS as exc:
        ex.error_type = upstream.upstream_failure(exc, route).code
    await ex.send(b"", more=False)


def usage_in_tail(tail: bytes) -> tuple[int, int] | None:
    """The ``usage`` object near the end of a JSON answer too large to read whole."""
    at = tail.rfind(b'"usage"')
    if at == -1:
        return None
    colon = tail.find(b":", at + 7)
    try:
        obj, _ = json.JSONDecoder().raw_decode(tail[colon + 1 :].decode("utf-8", "replace").lstrip())
    except (ValueError, RecursionError):
        return None
    return usage_from_json({"usage": obj})


async def stream_sse(ex: Exchange, route: AgentRoute, path: str, body: bytes, scanner, headers: dict) -> None:
    """POST a streaming request and relay its events through ``scanner`` without buffering them."""
    request = upstream.build_request(
        "POST", upstream.provider_url(route, path), content=body, headers=headers, route=route
    )
    response = await _open_stream(ex, route, request)
    try:
        if response.status_code >= 400:
            raise _failed_status(response.status_code, route, await read_bounded(response, route))
        await ex.start(200, SSE_HEADERS)
        await _relay(ex, route, response, transform=scanner.feed)
    finally:
        await response.aclose()
        if scanner.usage:
            ex.input_tokens, ex.output_tokens = scanner.usage
        ex.output_text = scanner.text
        ex.model = getattr(scanner, "model", "") or ex.model


async def pass_through(ex: Exchange, route: AgentRoute, rest: bytes, plan, adapter) -> None:
    """Forward method, path, query, headers and ``plan.body`` (re-serialised when the adapter read it); stream the
    answer back, reading its usage from its headers, its JSON or (``adapter``) its stream's usage events."""
    url = upstream_url(route.base_url, rest, ex.query)
    client_slug = ex.key.client_slug if ex.key else ""  # a path route may need no key
    headers = upstream.passthrough_headers(
        ex.raw_headers, route, ex.request_id, client_slug, adapter.credentials(route)
    )
    request = upstream.build_request(ex.method, url, content=plan.body or None, headers=headers, route=route)
    response = await _open_stream(ex, route, request)
    scanner = None
    try:
        attempt = upstream.current_attempt.get()
        if attempt is not None and not attempt.final and _worth_retrying(response.status_code, route):
            raise _failed_status(response.status_code, route, await read_bounded(response, route))
        content_type = response.headers.get("content-type", "")
        capture = bytearray() if "json" in content_type and "content-encoding" not in response.headers else None
        tail = bytearray() if capture is not None else None
        if "event-stream" in content_type:
            scanner = adapter.stream_scanner(plan)
        await ex.start(upstream.answer_status(response, route), upstream.response_headers(response))
        await _relay(ex, route, response, transform=scanner.feed if scanner else None, capture=capture, tail=tail)
    finally:
        await response.aclose()
    # A provider's usage is in its answer; ``X-Usage-*`` headers are the agent services' contract only.
    usage = None if plan.model else usage_from_headers(response.headers)
    if usage is None and tail and capture is not None and len(capture) >= USAGE_CAPTURE_LIMIT:
        usage = usage_in_tail(bytes(tail))
    if scanner is not None:
        usage = usage or scanner.usage
        ex.model = scanner.model or ex.model
        ex.output_text = scanner.text
    elif usage is None and capture:
        answer = _json_or_none(capture)
        usage = usage_from_json(answer)
        if isinstance(answer, dict):
            ex.model = answer.get("model") if isinstance(answer.get("model"), str) else ex.model
            output = answer.get("output")
            ex.output_text = output if isinstance(output, str) else protocols.chat_text(answer)
    if usage:
        ex.input_tokens, ex.output_tokens = usage
    elif plan.model and response.status_code < 400:
        ex.details["usage_unread"] = True  # a metered call whose usage the gateway could not read: charged its worst
    if not plan.model:
        ex.model = response.headers.get("x-usage-model", ex.model or "")


def _json_or_none(content: bytes):
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None


def _worth_retrying(status: int, route: AgentRoute) -> bool:
    """A status the attempt loop retries elsewhere rather than relay (the last attempt relays it as it is)."""
    return status in route.retry_statuses


async def respond_json_bytes(ex: Exchange, content: bytes) -> None:
    await ex.respond(200, content, [JSON])


async def respond_upstream_json(ex: Exchange, answer: dict) -> None:
    await respond_json_bytes(ex, json.dumps(answer).encode())
