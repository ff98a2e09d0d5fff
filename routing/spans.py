"""The spans of one request through the proxy, when tracing is on (``gateway_project.tracing``).

    POST /v1/chat/completions      server span, a child of the client's ``traceparent`` if it sent one
    ├── gateway.admission          limits, budgets and the first target, in one round trip
    ├── chat gpt-4o-mini           client span: one per upstream attempt (a retry, a fallback: another one)
    │   └── gateway.relay          the answer relayed as it arrives (a stream, a pass-through body)
    ├── gateway.settle             the real usage charged, everything taken given back
    └── invoke_agent research      consumer span: a job the request queued, run later by any process

A WebSocket session is one server span (``WS /agents/{agent}/{path}``) from its
handshake to its close, the agent's handshake its child's context.

Every span carries ``gateway.request_id``; attributes follow OpenTelemetry's HTTP
and GenAI semantic conventions. With tracing off every helper returns at its
first line and no span object is made. A request the sampler leaves out gets its
(non-recording) span, whose context still goes upstream with its "not sampled"
flag, but no children: every sampler the SDK has decides a trace's spans alike.
"""

from __future__ import annotations

import functools
import itertools
from contextvars import ContextVar
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.trace import SpanKind, StatusCode

from gateway_project import tracing
from gateway_project.errors import GatewayError
from routing.sse import MAX_FINISH_REASONS

REQUEST_ID = "gateway.request_id"
# gen_ai.operation.name of each of the gateway's APIs; a pass-through or path route's call is the upstream's own.
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/messages": "chat", "/v1/agent/invoke": "invoke_agent"}
# gen_ai.provider.name (and the older gen_ai.system) of an upstream's kind; an agent service names none.
PROVIDERS = {"openai": "openai", "anthropic": "anthropic"}
FIXED_ROUTES = frozenset({*OPERATIONS, "/v1/models", "/v1/usage", "/v1/jobs"})

_request_span: ContextVar = ContextVar("request_span", default=None)


def begin_request(ex):
    """Start the request's span as the current one; None when tracing is off."""
    tracer = tracing.tracer
    if tracer is None:
        return None
    parent = tracing.incoming_context(ex.headers)
    attributes = {
        REQUEST_ID: ex.request_id,
        "http.request.method": ex.method,
        "url.path": ex.path,  # never the query: a browser's key may be there
        "url.scheme": ex._scope.get("scheme", "http"),
        "network.protocol.version": ex._scope.get("http_version", "1.1"),
        "client.address": ex.client_ip or "",
        "user_agent.original": ex.header(b"user-agent"),
    }
    return _begin(tracer, ex.method, parent, SpanKind.SERVER, attributes)


def _begin(tracer, name: str, parent, kind, attributes: dict):
    """Start the span of a request (or a job's run) as the current one, and its request's span for its children."""
    span = tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
    token = context.attach(trace.set_span_in_context(span, parent))
    _request_span.set(span)
    return span, token


def end_request(ex, began) -> None:
    """The request's outcome on its span (status, error code, agent, models, usage, cost), then end it."""
    _end(ex, began, http=True)


def _end(ex, began, *, http: bool) -> None:
    if began is None:
        return
    span, token = began
    try:
        if span.is_recording():  # not when the sampler left this trace out
            attributes = {}
            if http:
                route = _route_of(ex)
                attributes["http.response.status_code"] = ex.status
                if route:
                    span.update_name(f"{ex.method} {route}")
                    attributes["http.route"] = route
            _describe(span, ex, attributes)
    finally:
        span.end()
        context.detach(token)


def end_session(ex, began, traffic) -> None:
    """A WebSocket session's span: the request's attributes, and what went each way and how it closed."""
    if began is not None and began[0].is_recording():
        attributes = {
            "gateway.ws.frames_in": traffic.frames_in,
            "gateway.ws.frames_out": traffic.frames_out,
            "gateway.ws.bytes_in": traffic.bytes_in,
            "gateway.ws.bytes_out": traffic.bytes_out,
        }
        if traffic.close_code is not None:  # None: refused with an HTTP answer
            attributes["gateway.ws.close_code"] = traffic.close_code
        if traffic.closed_by:
            attributes["gateway.ws.closed_by"] = traffic.closed_by
        began[0].set_attributes(attributes)
    end_request(ex, began)


def begin_job(ex, carrier: dict[str, str] | None):
    """Start a queued agent job's run as the current span, in the trace of the request that queued it (its
    ``traceparent`` kept with the job: a child of that request's span, whichever process runs it); None when
    tracing is off. The job's attempts, relay and settle are its children as a request's are."""
    tracer = tracing.tracer
    if tracer is None:
        return None
    parent = tracing.stored_context(carrier or {})
    attributes = {
        REQUEST_ID: ex.request_id,
        "gateway.job_id": ex.details["job_id"],
        "gateway.submitted_request_id": ex.details["submitted_request_id"],
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": ex.agent,
    }
    return _begin(tracer, f"invoke_agent {ex.agent}", parent, SpanKind.CONSUMER, attributes)


def end_job(ex, began) -> None:
    """The job run's outcome on its span (error code, agent, models, usage, cost), then end it."""
    _end(ex, began, http=False)


def _describe(span, ex, attributes: dict) -> None:
    """What a request or a job run came to, on its span: who asked, which agent and models, usage, cost, error."""
    key = ex.key
    if key is not None:
        attributes["gateway.client"] = key.client_slug
    if ex.agent:
        attributes["gateway.agent"] = ex.agent
    if ex.cost_nanos:
        attributes["gateway.cost_usd"] = ex.cost_nanos / 1e9
    _gen_ai(attributes, ex, OPERATIONS.get(ex.path), ex.facts.requested or ex.model, ex.facts.route)
    span.set_attributes(attributes)
    _outcome(span, ex.error_type)


def _route_of(ex) -> str:
    """``http.route``: the endpoint's path template, or a path route's prefix."""
    if ex.path in FIXED_ROUTES:
        return ex.path
    if ex.path.startswith("/agents/"):
        return "/agents/{agent}/{path}"
    if ex.path.startswith("/v1/jobs/"):
        return "/v1/jobs/{id}"
    prefix = ex.details.get("path_route")
    return f"{prefix}/{{path}}" if prefix else ""


def _gen_ai(attributes: dict, ex, operation: str | None, requested: str, route) -> None:
    """The GenAI semantic conventions' attributes of a request, added to ``attributes``."""
    if operation:
        attributes["gen_ai.operation.name"] = operation
    if requested:
        attributes["gen_ai.request.model"] = requested
    provider = PROVIDERS.get(route.kind) if route is not None else None
    if provider:
        attributes["gen_ai.provider.name"] = attributes["gen_ai.system"] = provider
    if 200 <= ex.status < 400 and ex.model:
        attributes["gen_ai.response.model"] = ex.model
    if ex.input_tokens or ex.output_tokens:
        attributes["gen_ai.usage.input_tokens"] = ex.input_tokens
        attributes["gen_ai.usage.output_tokens"] = ex.output_tokens


def _outcome(span, error_code: str) -> None:
    """A refusal or failure: the span's status is an error, described by the gateway's error code."""
    if error_code:
        span.set_attribute("error.type", error_code)
        span.set_status(StatusCode.ERROR, error_code)


def traced(name: str, after=None):
    """Run the decorated ``async def f(ex, ...)`` in a span ``name`` (a child of the current one); ``after(span,
    ex)`` adds what it learnt. A ``GatewayError`` it raises is the span's error."""

    def decorate(function):
        @functools.wraps(function)
        async def run(ex, *args, **kwargs):
            tracer = tracing.tracer
            if tracer is None or not trace.get_current_span().is_recording():
                return await function(ex, *args, **kwargs)
            with tracer.start_as_current_span(
                name, attributes={REQUEST_ID: ex.request_id}, record_exception=False, set_status_on_exception=False
            ) as span:
                try:
                    return await function(ex, *args, **kwargs)
                except GatewayError as error:
                    _outcome(span, error.code)
                    raise
                except BaseException as error:
                    _outcome(span, type(error).__name__)
                    raise
                finally:
                    if after is not None:
                        after(span, ex)

        return run

    return decorate


def settled(span, ex) -> None:
    """What a settle charged, on its span."""
    span.set_attributes(
        {
            "gen_ai.usage.input_tokens": ex.input_tokens,
            "gen_ai.usage.output_tokens": ex.output_tokens,
            "gateway.cost_usd": ex.cost_nanos / 1e9,
        }
    )


def relayed(span, ex) -> None:
    """How a relay ended: an error code when it broke off (the upstream, a guardrail, the deadline)."""
    _outcome(span, ex.error_type)


def begin_attempt(ex, route, target, number: int, retry: int):
    """Start one upstream attempt's span (client kind) as the current one, so the request sent carries it as the
    upstream's parent; None when tracing is off. ``number`` counts every attempt of the request from 1, ``retry``
    this agent's retries (0: its first try); a fallback names the agent it stands in for."""
    tracer = tracing.tracer
    if tracer is None or not trace.get_current_span().is_recording():
        return None
    operation = OPERATIONS.get(ex.path)
    model = ex.model or route.default_model
    url = urlsplit(target.base_url)
    attributes = {
        REQUEST_ID: ex.request_id,
        "gateway.attempt": number,
        "gateway.retry": retry,
        "gateway.agent": route.slug,
        "gateway.target": target.name,
        "server.address": url.hostname or "",
        "server.port": url.port or (443 if url.scheme == "https" else 80),
    }
    primary = ex.facts.route
    if primary is not None and primary.slug != route.slug:
        attributes["gateway.fallback_for"] = primary.slug
    if operation:
        attributes["gen_ai.operation.name"] = operation
    if model:
        attributes["gen_ai.request.model"] = model
    provider = PROVIDERS.get(route.kind)
    if provider:
        attributes["gen_ai.provider.name"] = attributes["gen_ai.system"] = provider
    name = f"{operation} {model}" if operation and model else f"attempt {route.slug}"
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
    return span, context.attach(trace.set_span_in_context(span))


def end_attempt(ex, began, entry: dict) -> None:
    """The attempt's outcome (its line in the audit record's ``attempts``) on its span, then end it."""
    if began is None:
        return
    span, token = began
    context.detach(token)
    if span.is_recording():
        outcome = entry.get("outcome", "")
        attributes = {"gateway.outcome": outcome}
        if entry.get("status"):
            attributes["http.response.status_code"] = entry["status"]
        if outcome == "ok":
            if ex.model:
                attributes["gen_ai.response.model"] = ex.model
            if ex.input_tokens or ex.output_tokens:
                attributes["gen_ai.usage.input_tokens"] = ex.input_tokens
                attributes["gen_ai.usage.output_tokens"] = ex.output_tokens
        span.set_attributes(attributes)
        if outcome != "ok":
            _outcome(span, outcome)
    span.end()


def note_answer(answer: dict) -> None:
    """The finish reasons of a whole JSON answer (OpenAI's ``choices``, Anthropic's ``stop_reason``) on the attempt's
    span and the request's."""
    if tracing.tracer is not None:
        note_finish_reasons(finish_reasons(answer))


def note_finish_reasons(reasons) -> None:
    """``reasons`` (a stream's, or a whole answer's) on the attempt's span and the request's."""
    if tracing.tracer is not None and reasons:
        reasons = list(reasons)
        trace.get_current_span().set_attribute("gen_ai.response.finish_reasons", reasons)
        request = _request_span.get()
        if request is not None:
            request.set_attribute("gen_ai.response.finish_reasons", reasons)


def finish_reasons(answer: dict) -> list[str]:
    """Each choice's, as many as a stream's are kept (an upstream may answer thousands of choices)."""
    choices = answer.get("choices")
    if isinstance(choices, list):
        reasons = (c.get("finish_reason") for c in choices if isinstance(c, dict))
        reasons = (reason for reason in reasons if isinstance(reason, str))
        return list(itertools.islice(reasons, MAX_FINISH_REASONS))
    reason = answer.get("stop_reason")
    return [reason] if isinstance(reason, str) else []
