"""Forward a request to its upstream and bring the answer (and its usage) back.

Composed calls (chat, invoke) go through ``call_json`` or ``stream_sse``;
``/agents/<agent>/...`` goes through ``pass_through`` untouched. Each sets the
exchange's tokens, model and output text from what the upstream really said.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial

import httpx
from django.conf import settings

from gateway_project.errors import GatewayError
from routing import protocols, spans, upstream
from routing.exchange import JSON, Exchange
from routing.guarding import ANY, OFF_LOOP_CHARS, media_kind
from routing.pricing import dearer_than_reserved, report_dearer_answer
from routing.protocols import usage_from_headers, usage_from_json
from routing.sse import EventTooLarge
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
    spans.note_answer(answer)
    return answer, content


async def read_bounded(response: httpx.Response, route: AgentRoute, *, decoded: bool = False) -> bytes:
    """The whole answer of a call the gateway must read before answering, up to ``MAX_UPSTREAM_ANSWER_BYTES``
    (``decoded``: uncompressed, the limit counting what it decompresses to).

    A larger one is a 502: an upstream cannot make a gateway process hold whatever it sends.
    """
    limit = settings.GATEWAY["MAX_UPSTREAM_ANSWER_BYTES"]
    declared = response.headers.get("content-length", "")
    chunks, size = [], 0
    if not (declared.isdigit() and int(declared) > limit):
        async for chunk in response.aiter_bytes() if decoded else response.aiter_raw():
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


class StopAnswer(Exception):
    """A relayed answer must go no further: ``last`` (an error event in the stream's shape) ends it."""

    def __init__(self, code: str, last: bytes):
        super().__init__(code)
        self.code, self.last = code, last


def watching_model(ex: Exchange, route: AgentRoute, scanner):
    """``scanner.feed``, stopping the stream at the first event naming a model priced above the reservation.

    The upstream was asked for another model; going on would spend past what was
    reserved (and past a hard budget). The model is learnt at once
    (``report_dearer_answer``), so the next requests reserve for it and pass.
    """
    seen = ""

    def feed(chunk: bytes) -> bytes:
        nonlocal seen
        out = scanner.feed(chunk)
        if scanner.model != seen:
            seen = scanner.model
            if dearer_than_reserved(ex.facts.quote, seen):
                report_dearer_answer(route.slug, seen, ex.request_id)
                ex.model = seen
                ex.details["stopped_dearer_model"] = {"reserved_model": ex.facts.quote.model, "answered_model": seen}
                message = (
                    f"The agent '{route.slug}' answered with {seen}, priced above the {ex.facts.quote.model} this "
                    "request was admitted for; the answer was stopped. Retry: the gateway now reserves for it."
                )
                raise StopAnswer("dearer_model_stopped", scanner.error_event("upstream_error", message))
        return out

    return feed


@spans.traced("gateway.relay", after=spans.relayed)
async def _relay(
    ex: Exchange, route: AgentRoute, response: httpx.Response, transform=None, capture=None, tail=None,
    decoded: bool = False,
) -> None:  # fmt: skip
    """Send the upstream's body on as it arrives (``decoded``: uncompressed); a failure after the first byte ends
    the response.

    ``capture`` keeps the first ``USAGE_CAPTURE_LIMIT`` bytes and ``tail`` the last ``USAGE_TAIL_BYTES``, where
    a large answer's ``usage`` is (``usage_in_tail``).
    """
    try:
        async for chunk in response.aiter_bytes() if decoded else response.aiter_raw():
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
    except StopAnswer as stop:
        ex.error_type = stop.code
        await ex.send(stop.last)
    except EventTooLarge as too_large:
        ex.error_type = "upstream_event_too_large"
        ex.details["upstream_stream_error"] = str(too_large)
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
    upstream.note_streamed()
    response = await _open_stream(ex, route, request)
    try:
        if response.status_code >= 400:
            raise _failed_status(response.status_code, route, await read_bounded(response, route))
        await ex.start(200, SSE_HEADERS)
        await _relay(ex, route, response, transform=watching_model(ex, route, scanner))
    finally:
        await response.aclose()
        note_stream_usage(ex, scanner)


def note_stream_usage(ex: Exchange, scanner) -> None:
    """What a stream said of its usage, model and text, however it ended (run in ``finally``: a client that
    leaves cancels the relay, and what was relayed until then is still charged)."""
    if scanner.usage:
        ex.input_tokens, ex.output_tokens = scanner.usage
    ex.output_text = scanner.text
    ex.output_estimate = scanner.output_estimate
    ex.model = scanner.model or ex.model
    spans.note_finish_reasons(getattr(scanner, "finish_reasons", ()))
    if ex.response_started and not scanner.complete:
        # Cut (the client left, the deadline passed, the upstream broke off) before its final usage, or ended
        # without one: charged from what was relayed (``admission.charged_usage``).
        cut = ex.client_left or not ex.response_finished or bool(ex.error_type)
        ex.details["usage_partial" if cut else "usage_missing"] = True


async def pass_through(ex: Exchange, route: AgentRoute, rest: bytes, plan, adapter) -> None:
    """Forward method, path, query, headers and ``plan.body`` (re-serialised when the adapter read it); stream the
    answer back, reading its usage from its headers, its JSON or (``adapter``) its stream's usage events."""
    url = upstream_url(route.base_url, rest, ex.query)
    client_slug = ex.key.client_slug if ex.key else ""  # a path route may need no key
    headers = upstream.passthrough_headers(
        ex.raw_headers, route, ex.request_id, client_slug, adapter.credentials(route)
    )
    request = upstream.build_request(ex.method, url, content=plan.body or None, headers=headers, route=route)
    if plan.stream:
        upstream.note_streamed()
    response = await _open_stream(ex, route, request)
    answer = _PassThroughAnswer(plan)
    try:
        attempt = upstream.current_attempt.get()
        if attempt is not None and not attempt.final and _worth_retrying(response.status_code, route):
            raise _failed_status(response.status_code, route, await read_bounded(response, route))
        guard = ex.output_guard
        decoded = guard is not None and guarded_encoding(response, route)  # guardrails read the text, not gzip
        content_type = response.headers.get("content-type", "")
        if "json" in content_type and ("content-encoding" not in response.headers or decoded):
            answer.capture, answer.tail = bytearray(), bytearray()
        if "event-stream" in content_type:
            answer.scanner = adapter.stream_scanner(plan)
        status, headers = upstream.answer_status(response, route), upstream.response_headers(response)
        if guard is not None:  # whatever the status: an agent's error page can leak as well as its answer
            if decoded:
                headers = [(name, value) for name, value in headers if name not in (b"content-encoding",
                                                                                    b"content-length")]  # fmt: skip
            if checked_whole(content_type, response):
                await _pass_through_checked(ex, route, response, answer, status, headers, decoded)
                return
            headers = guard.started(headers)
        await ex.start(status, headers, checked=guard is not None)
        answer.relayed = True
        scanner = answer.scanner
        feed = watching_model(ex, route, scanner) if scanner else None
        await _relay(ex, route, response, feed, answer.capture, answer.tail, decoded=decoded)
    finally:
        await response.aclose()
        if answer.relayed:  # however the relay ended: a client that left still pays for what it was sent
            answer.note_usage(ex, response)


READABLE_ENCODINGS = frozenset({"identity", "gzip", "x-gzip", "deflate"})


def guarded_encoding(response: httpx.Response, route: AgentRoute) -> bool:
    """Whether an answer output guardrails must read is compressed (and so relayed decoded); a 502 when it is
    compressed in a way the gateway cannot read (it asked for ``identity``): unread, it cannot be let through."""
    codings = [part.strip().lower() for part in response.headers.get("content-encoding", "").split(",")]
    codings = [coding for coding in codings if coding and coding != "identity"]
    unreadable = [coding for coding in codings if coding not in READABLE_ENCODINGS]
    if unreadable:
        raise upstream.UpstreamError(
            502, "upstream_error", "upstream_unreadable",
            f"The agent '{route.slug}' answered in the '{unreadable[0]}' encoding, which the gateway's output "
            "guardrails cannot read; the answer was withheld.", kind="invalid",
        )  # fmt: skip
    return bool(codings)


def checked_whole(content_type: str, response: httpx.Response) -> bool:
    """Whether a guarded pass-through answer is read whole and checked before its status is sent (so a block is a
    403, not an answer cut short): JSON that is not a stream of lines, and text of a declared length. A stream
    (events, JSON lines, text without a length) is checked as it goes instead."""
    kind = media_kind(content_type.encode("latin-1", "replace"))
    if kind == "json":
        return "ndjson" not in content_type and "jsonl" not in content_type and "json-seq" not in content_type
    return kind == "text" and "content-length" in response.headers


async def _pass_through_checked(ex, route, response, answer, status: int, headers, decoded: bool) -> None:
    """Read a guarded answer whole (bounded), note its usage, check it, then send it or the guardrail's 403."""
    body = await read_bounded(response, route, decoded=decoded)
    if answer.capture is not None:
        answer.capture += body[:USAGE_CAPTURE_LIMIT]
        answer.tail += body[-USAGE_TAIL_BYTES:]
    answer.relayed = True  # read: its usage counts even when the guardrail withholds it
    check = partial(ex.output_guard.whole, body, headers, ANY)  # 403 ``guardrail_blocked`` on a block
    body = await asyncio.to_thread(check) if len(body) > OFF_LOOP_CHARS else check()  # a large one beside the loop
    kept = [(name, value) for name, value in headers if name != b"content-length"]
    await ex.start(status, [*kept, (b"content-length", str(len(body)).encode())], checked=True)
    await ex.send(body, more=False)


class _PassThroughAnswer:
    """What was kept of a pass-through answer to read its usage from: its stream's scanner, or its JSON's head
    (``USAGE_CAPTURE_LIMIT`` bytes) and tail."""

    def __init__(self, plan):
        self.plan = plan
        self.scanner = None
        self.capture: bytearray | None = None
        self.tail: bytearray | None = None
        self.relayed = False

    def note_usage(self, ex: Exchange, response: httpx.Response) -> None:
        plan, capture = self.plan, self.capture
        # A provider's usage is in its answer; ``X-Usage-*`` headers are the agent services' contract only.
        usage = None if plan.model else usage_from_headers(response.headers)
        if self.scanner is not None:
            note_stream_usage(ex, self.scanner)
            if ex.details.pop("usage_missing", False):
                ex.details["usage_unread"] = True  # a whole stream without its usage: charged its worst
            return
        if usage is None and self.tail and capture is not None and len(capture) >= USAGE_CAPTURE_LIMIT:
            usage = usage_in_tail(bytes(self.tail))
        if usage is None and capture:
            answer = _json_or_none(capture)
            usage = usage_from_json(answer)
            if isinstance(answer, dict):
                ex.model = answer.get("model") if isinstance(answer.get("model"), str) else ex.model
                output = answer.get("output")
                ex.output_text = output if isinstance(output, str) else protocols.chat_text(answer)
        if usage:
            ex.input_tokens, ex.output_tokens = usage
        elif plan.model and response.status_code < 400:
            ex.details["usage_unread"] = True  # a metered call whose usage could not be read: charged its worst
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
