"""The gateway's endpoints, each a sequence of the same steps, each step asking the one owner of its decision.

path check (``upstream_url``) -> authenticate (``keys.access``; the body is read
only after) -> size and shape -> resolve (``routing.table``) -> authorize ->
price (``routing.pricing.quote_for``) -> admit (``admission``: a ``Ticket`` that
owns every slot, reservation and lease) -> attempts (``resilience``, each through
the kind's ``adapters`` and ``forward``) -> settle (the ticket, against its quote).
Every step raises ``GatewayError`` to refuse; ``serve`` turns that into the JSON
error and writes exactly one audit record whatever happened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from audit.redaction_rules import warm_rules
from billing.status import budget_report
from billing.usage import client_usage, usage_query
from gateway_project.errors import GatewayError, bad_request, forbidden, not_found
from gateway_project.logs import request_id
from gateway_project.writer import writer
from keys.access import (
    authorize,
    ensure_origin,
    ensure_usable,
    identify,
    note_failed_authentication,
    refuse_if_blocked,
)
from keys.origins import allows, origin_table, preflight_headers
from routing import (
    access_log,
    anthropic_shape,
    auto_route,
    deprecation,
    forward,
    jobs,
    path_routes,
    protocols,
    resilience,
    response_cache,
    spans,
)
from routing.adapters import Plan, adapter_for
from routing.admission import (
    RESERVATION_MARGIN_SECONDS,
    admit,
    admit_anonymous,
    answer_seconds,
    input_estimate,
    output_cap,
    settle,
    within_deadline,
)
from routing.exchange import ClientLeft, Exchange
from routing.facts import Demand, RequestFacts
from routing.governance import govern
from routing.guarding import guard_input
from routing.models import AUTO_MODEL
from routing.pricing import quote_for
from routing.table import AgentRoute, RoutingTable, routing_table
from routing.upstream_url import check_raw_path

log = logging.getLogger("gateway.proxy")

CLIENT_CLOSED = 499


async def serve(ex: Exchange) -> None:
    request_id.set(ex.request_id)  # log lines written while it is served name it
    span = spans.begin_request(ex)
    try:
        if ex.origin is not None:  # a browser's: answers before its key is known name the origins any client allows
            await origin_table.get()
        handler, args = _resolve_endpoint(ex)
        await handler(ex, *args)
    except GatewayError as error:
        await ex.fail(error)
    except ClientLeft:
        ex.status, ex.error_type = CLIENT_CLOSED, "client_disconnected"
    except asyncio.CancelledError:
        ex.status, ex.error_type = ex.status or CLIENT_CLOSED, "client_disconnected"
        raise
    except Exception:
        log.exception("request %s failed", ex.request_id)
        await ex.fail(GatewayError(500, "api_error", "internal_error", "The gateway failed; see its logs."))
    finally:
        ex.record()
        access_log.line(ex, span)
        spans.end_request(ex, span)


async def authenticate(ex: Exchange) -> None:
    """401 (429 after too many from one address) or 403, or the caller's key on the exchange (set before the 403,
    for the audit record). The body is not read before this: a refused caller costs no more than its headers."""
    refuse_if_blocked(ex.client_ip)  # no look-up at all for an address that failed too often
    try:
        key = await identify(ex.headers)
    except GatewayError:
        await note_failed_authentication(ex.client_ip)
        raise
    ex.learn(ex.facts.identified(key))
    await warm_rules()  # the audit record's previews use the rules as last loaded
    ensure_usable(key)
    ensure_origin(key, ex.origin)


def _resolve_endpoint(ex: Exchange):
    check_raw_path(ex.raw_path)  # one check of the path as sent, before anything reads it
    if ex.method == "OPTIONS" and ex.origin is not None and b"access-control-request-method" in ex.headers:
        return preflight, ()
    if ex.path.startswith("/agents/"):
        slug, _, rest = ex.raw_path[len(b"/agents/") :].partition(b"/")
        return pass_through, (slug.decode("latin-1"), rest)
    if ex.path == "/v1/messages" or ex.path.startswith("/v1/messages/"):
        ex.speak_anthropic()  # refusals, 404 and 405 included, in the shape Anthropic's SDK reads
    if ex.path.startswith("/v1/jobs/"):
        return (job_status, (ex.path[len("/v1/jobs/") :],)) if ex.method == "GET" else (_wrong_method, ("GET",))
    endpoint = ENDPOINTS.get(ex.path)
    if endpoint is None:
        if not ex.path.startswith("/v1/"):  # the router sent it here for a path route
            entry = path_routes.match(routing_table.last(RoutingTable({}, {})).paths, ex.path)
            if entry is not None:
                return path_route, (entry,)
        return _unknown_path, ()
    method, handler = endpoint
    if ex.method != method:
        return _wrong_method, (method,)
    return handler, ()


async def preflight(ex: Exchange) -> None:
    """A browser's CORS preflight: it carries no key, so an origin that any active client allows is answered (the
    request that follows is checked against its own client's), another is refused."""
    origin = ex.origin.decode("latin-1")
    if not allows(await origin_table.get(), origin):
        raise forbidden(f"No client of this gateway allows browser calls from the origin {origin!r}.",
                        "origin_not_allowed")  # fmt: skip
    headers = preflight_headers(ex.origin, ex.headers.get(b"access-control-request-headers", b""))
    ex.origin = None  # the preflight's own headers say all
    await ex.respond(204, b"", headers)


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


async def _metered(ex: Exchange, facts: RequestFacts, max_output: int | None, call, cache=None) -> None:
    """Price and admit ``facts`` (routed: reserving the worst case at the dearest price the answer may cost), run
    ``call``, and settle whatever happened to it. With a ``cache`` lookup (``response_cache.lookup_for``), a kept
    answer answers instead, charged nothing; a fresh one is kept."""
    priced = await _priced_demand(ex, facts, max_output)
    await govern(ex, priced)  # the policy rules, before anything is taken
    if cache is not None and await response_cache.answer_from_cache(ex, priced, cache):
        return
    ticket = await admit(ex, priced, take_target=True)
    try:
        await within_deadline(ex, ticket, call)
    finally:
        await settle(ex, ticket)
    if cache is not None:
        await response_cache.keep_answer(ex, cache)


async def _priced_demand(ex: Exchange, facts: RequestFacts, max_output: int | None) -> RequestFacts:
    """The routed facts with their quote and demand: the last two steps before admission."""
    route = facts.route
    quoted = await quote_for(route, facts.requested or route.slug, await routing_table.get())
    hold = answer_seconds(route) + RESERVATION_MARGIN_SECONDS  # its deadline (``within_deadline``), and the settle
    demand = Demand(
        input_estimate(ex.body), max_output, route.default_max_output_tokens, hold,
        protocols.referenced_input_tokens(ex.body),
    )  # fmt: skip
    return ex.learn(facts.priced(quoted).demanding(demand))


async def _route_for_model(ex: Exchange, requested: str, route: AgentRoute | None = None) -> RequestFacts:
    """The facts routed to ``route``, else the agent serving ``requested`` (a model, or an agent's slug for its
    default model), if the key may use it."""
    table = await routing_table.get()
    route = route or table.for_model(requested)
    deprecation.mark(ex, table.deprecations.get(route.slug))
    ex.agent, ex.model = route.slug, route.answering_model(requested)
    authorize_model(ex.key, route, requested)
    return ex.learn(ex.facts.routed(route, requested))


# --- POST /v1/chat/completions --------------------------------------------


async def chat_completions(ex: Exchange) -> None:
    await authenticate(ex)
    payload = await ex.json()
    protocols.validate_chat(payload)
    payload, auto = await _auto_routed(ex, payload)
    facts = await _route_for_model(ex, payload["model"], auto and auto.route)
    route = facts.route
    ex.input_text = protocols.last_user_text(payload["messages"])
    payload = await guard_input(ex, ex.key, route.slug, payload)  # before anything is reserved
    stream = protocols.stream_flag(payload)
    options = payload.get("stream_options")
    wants_usage = isinstance(options, dict) and options.get("include_usage") is True

    protocols.refuse_unpriced(payload, route)
    payload = _capped(payload, route)
    attempt = partial(_chat_via, ex, payload, stream, wants_usage)
    cache = _composed_lookup(ex, route, payload, stream)
    await _metered(ex, facts, protocols.max_tokens(payload), partial(_run, ex, route, attempt), cache)


def _composed_lookup(ex: Exchange, route: AgentRoute, payload: dict, stream: bool):
    """The cache lookup of a composed call (its JSON normalised), or None when its agent caches nothing."""
    if route.cache is None:
        return None
    request = response_cache.normalised(f"{ex.path}\n{route.slug}", payload)
    return response_cache.lookup_for(ex, route, request, stream=stream, payload=payload)


async def _auto_routed(ex: Exchange, payload: dict):
    """A chat or messages ``payload`` with the model auto-routing chose, when it asks for one (``auto_route``)."""
    return await auto_route.apply(ex, await routing_table.get(), payload, payload["model"], _last_user_text)


def _last_user_text(payload: dict):
    return protocols.last_user_text(payload["messages"])


def authorize_model(key, route: AgentRoute, requested: str) -> None:
    """403 unless the key may use the agent and the model that will answer: a request naming the agent (its slug)
    is answered by its default model, which the key's model scopes must cover like any other; a key limited to
    some models cannot ask an agent whose upstream chooses its own."""
    model = route.answering_model(requested)
    if not model and key.allowed_models is not None and key.may_call(route):
        raise forbidden(
            f"This API key may use only some models, and the agent '{route.slug}' has no default model: "
            "name the model to use.",
            "model_not_allowed",
        )
    authorize(key, route, model)


def _may_use(key, table: RoutingTable, slug: str) -> bool:
    """Whether content routing may choose the agent ``slug`` for this key: the agent (its role too) and its default
    model (of an agent that auto-routes: a model its rules may pick)."""
    route = table.agents.get(slug)
    if route is None:
        return key.may_use_agent(slug)
    if route.default_model == AUTO_MODEL:
        return key.may_call(route) and auto_route.reachable(table, key, slug)
    return key.may_call(route) and key.may_use_model(route.default_model)


def _capped(payload: dict, route: AgentRoute) -> dict:
    """``payload`` with the answer length the reservation assumed, when the client set none: what is reserved is
    then the most the answer can cost."""
    if protocols.max_tokens(payload) is not None:
        return payload
    return {**payload, "max_tokens": output_cap(None, route.default_max_output_tokens)}


async def _chat_via(ex, payload, stream, wants_usage, route):
    """One attempt on ``route`` (the agent asked for, or a fallback: ``ex.model`` is the model to ask it for). A
    fallback not marked unmetered is not sent what only the agent asked for could take (it is skipped)."""
    protocols.refuse_unpriced(payload, route)
    await adapter_for(route).chat(ex, route, payload, stream, wants_usage)


# --- POST /v1/messages: Anthropic's shape, whichever provider answers --------


async def messages(ex: Exchange) -> None:
    await authenticate(ex)
    payload = await ex.json()
    anthropic_shape.validate_messages(payload)
    payload, auto = await _auto_routed(ex, payload)
    facts = await _route_for_model(ex, payload["model"], auto and auto.route)
    route = facts.route
    ex.input_text = protocols.last_user_text(payload["messages"])
    payload = await guard_input(ex, ex.key, route.slug, payload)
    stream = protocols.stream_flag(payload)
    # Translate before admitting: what cannot be translated is refused without touching the limits.
    protocols.refuse_unpriced(payload, route)
    adapter_for(route).check_messages(payload, ex.model)
    attempt = partial(_messages_via, ex, payload, stream)
    cache = _composed_lookup(ex, route, payload, stream)
    await _metered(ex, facts, payload["max_tokens"], partial(_run, ex, route, attempt), cache)


async def _messages_via(ex, payload, stream, route):
    """One attempt on ``route`` (the agent asked for, or a fallback), answered in Anthropic's shape."""
    protocols.refuse_unpriced(payload, route)  # a fallback's own marking, as for chat
    await adapter_for(route).messages(ex, route, payload, stream)


# --- POST /v1/agent/invoke --------------------------------------------------


async def agent_invoke(ex: Exchange) -> None:
    await authenticate(ex)
    payload = await ex.json()
    protocols.validate_invoke(payload)
    table = await routing_table.get()
    if payload.get("model") == AUTO_MODEL:  # an agent's own rules when it names one, else those of "auto"
        payload = await auto_route.apply_to_invoke(ex, table, payload)
    full: set[str] = set()
    while True:
        route, reason = await _invoke_route_for(ex, table, payload, full)
        headers = len(ex.extra_headers)
        try:
            await _invoke_on(ex, route, reason, payload)
            return
        except GatewayError as error:
            if reason in ("requested", "model") or error.code not in AGENT_FULL or ex.response_started:
                raise
            # Content routing read the agent's load, then another request took its last slot before this one's
            # admission: choose again among the others rather than refuse while they have room.
            full.add(route.slug)
            if not any(_may_use(ex.key, table, slug) for slug in table.agents.keys() - full):
                raise
            del ex.extra_headers[headers:]
            ex.details.pop("auto_route", None)  # the agent chosen next decides its own model, and says why
            ex.details["content_routing_full"] = sorted(full)


AGENT_FULL = frozenset({"agent_concurrency_limit", "agent_rate_limit"})


async def _invoke_route_for(ex: Exchange, table: RoutingTable, payload: dict, full: set[str]):
    if payload.get("agent"):
        return table.agent(payload["agent"]), "requested"
    if payload.get("model"):
        return table.for_model(payload["model"]), "model"
    allowed = partial(_may_use, ex.key, table)
    return await table.by_content(payload["input"], lambda slug: slug not in full and allowed(slug))


async def _invoke_on(ex: Exchange, route: AgentRoute, reason: str, payload: dict) -> None:
    """Invoke ``route`` (chosen for ``reason``): synchronously, or as a job."""
    table = await routing_table.get()
    deprecation.mark(ex, table.deprecations.get(route.slug))
    if not payload.get("model") and route.default_model == AUTO_MODEL:  # the agent's rules pick one of its models
        payload, _ = await auto_route.apply(ex, table, payload, route.slug, auto_route.invoke_input, header=False)
    if "auto_route" in ex.details:
        reason = ex.details["auto_route"]["reason"]
    ex.details["route_reason"] = reason
    model = payload.get("model") or route.default_model
    ex.agent, ex.model, ex.input_text = route.slug, model, payload["input"]
    if payload.get("model") and not route.serves(payload["model"]):
        raise not_found(f"The agent '{route.slug}' does not serve the model '{payload['model']}'.", "model_not_found")
    authorize_model(ex.key, route, payload.get("model") or route.slug)
    facts = ex.learn(ex.facts.routed(route, payload.get("model") or route.slug))
    payload = await guard_input(ex, ex.key, route.slug, payload)
    ex.input_text = payload["input"] if isinstance(payload.get("input"), str) else ex.input_text
    asked = protocols.max_tokens(payload)
    limit = asked or output_cap(None, route.default_max_output_tokens)  # what is reserved is what is asked for
    if jobs.wants_async(ex, payload):  # a job: admitted the same way, answered 202, run in the background
        await govern(ex, facts)
        await jobs.submit(ex, facts, reason, payload, model, limit)
        return
    call = partial(invoke_route, ex, route, payload["input"], model, payload.get("model") or "", limit)
    await _metered(ex, facts, asked, call)
    latency_ms = round(ex.elapsed_ms(), 2)
    ex.extra_headers.append((b"x-gateway-route-reason", reason.encode()))
    await ex.respond_json(
        200,
        {
            "request_id": ex.request_id,
            "output": ex.output_text,
            "agent_used": ex.agent,
            "model": ex.model,
            "route_reason": reason,
            "tokens_used": ex.input_tokens + ex.output_tokens,
            "usage": {"input_tokens": ex.input_tokens, "output_tokens": ex.output_tokens},
            "cost_usd": float(ex.cost_nanos) / 1e9,
            "latency_ms": latency_ms,
        },
    )


async def invoke_route(ex: Exchange, route: AgentRoute, text: str, model: str, requested: str, limit, ticket) -> None:
    """Ask ``route`` (with its retries and fallbacks) for an answer to ``text``; it lands on ``ex.output_text``."""

    async def attempt(target: AgentRoute) -> None:
        if target.slug == route.slug:
            await adapter_for(target).invoke(ex, target, text, model, requested, limit)
        else:  # a fallback: its own default model
            await adapter_for(target).invoke(ex, target, text, ex.model, "", limit)

    await resilience.run(ex, ticket, route, attempt)


# --- ANY /agents/<agent>/<path> ---------------------------------------------


async def pass_through(ex: Exchange, slug: str, rest: bytes) -> None:
    await authenticate(ex)
    await ex.ensure_size()
    table = await routing_table.get()
    route = table.agent(slug)
    deprecation.mark(ex, table.deprecations.get(route.slug))
    ex.agent, ex.model = route.slug, route.default_model
    authorize(ex.key, route)
    ex.body = await guard_input(ex, ex.key, route.slug)
    plan = _pass_through_plan(ex, route, rest)
    facts = ex.learn(ex.facts.routed(route, plan.model or route.slug))
    attempt = partial(_pass_through_once, ex, rest, plan)
    cache = _pass_through_lookup(ex, route, rest, plan)
    await _metered(ex, facts, plan.max_output, partial(_run_without_fallbacks, ex, route, attempt), cache)


def _pass_through_lookup(ex: Exchange, route: AgentRoute, rest: bytes, plan: Plan):
    """The cache lookup of a pass-through call (its method, path, query, types and body as sent), or None when its
    agent (or path route) caches nothing."""
    if route.cache is None:
        return None
    request, payload = response_cache.raw_request(ex, rest), response_cache.json_object(ex.body)
    return response_cache.lookup_for(ex, route, request, stream=plan.stream, payload=payload or {})


def _pass_through_plan(ex: Exchange, route: AgentRoute, rest: bytes) -> Plan:
    """The adapter's plan for this call, with the model it names checked against the key's scopes."""
    plan = adapter_for(route).plan(route, ex.method, rest, ex.body, output_cap(None, route.default_max_output_tokens))
    if plan.model:
        protocols.refuse_unpriced_headers(ex.raw_headers, route)
        if ex.key is not None:
            authorize(ex.key, route, plan.model)
        ex.model = plan.model
    ex.details.update(plan.notes)
    ex.input_text = plan.input_text or ex.body[:1000].decode("utf-8", "replace")
    return plan


async def _run(ex: Exchange, route: AgentRoute, attempt, ticket) -> None:
    await resilience.run(ex, ticket, route, attempt)


async def _run_without_fallbacks(ex: Exchange, route: AgentRoute, attempt, ticket) -> None:
    await resilience.run(ex, ticket, route, attempt, fallbacks=False)


async def _pass_through_once(ex: Exchange, rest: bytes, plan: Plan, route: AgentRoute) -> None:
    await forward.pass_through(ex, route, rest, plan, adapter_for(route))


# --- a path route: ANY <prefix>[/<rest>] -------------------------------------


async def path_route(ex: Exchange, entry: path_routes.PathRouteEntry) -> None:
    """Forward like pass-through, under the route's own timeout, retries, auth, rate and protocol."""
    ex.details["path_route"] = entry.prefix
    deprecation.mark(ex, entry.deprecation)
    if entry.auth_required:
        await authenticate(ex)
    if not entry.allows(ex.method):
        raise GatewayError(
            405, "invalid_request_error", "method_not_allowed", f"{entry.prefix} accepts {entry.allow_header} only.",
            [(b"allow", entry.allow_header.encode())],
        )  # fmt: skip
    await ex.ensure_size()
    table = await routing_table.get()
    route = entry.agent_route(table.agent(entry.agent))
    deprecation.mark(ex, table.deprecations.get(route.slug))
    ex.agent, ex.model = route.slug, route.default_model
    rest = entry.upstream_rest(ex.raw_path)
    if entry.auth_required:
        authorize(ex.key, route)
    elif route.required_role:
        raise GatewayError(
            401, "authentication_error", "missing_api_key",
            f"{entry.prefix} needs no key, but its agent '{route.slug}' serves only keys holding the role "
            f"'{route.required_role}': send one as 'Authorization: Bearer <key>'.",
        )  # fmt: skip
    ex.body = await guard_input(ex, ex.key, route.slug)
    plan = _pass_through_plan(ex, route, rest)
    if plan.model and not entry.auth_required:
        raise GatewayError(
            401, "authentication_error", "missing_api_key",
            f"{entry.prefix} needs no key, but this call spends a provider's tokens, which only a key may: "
            "send one as 'Authorization: Bearer <key>'.",
        )  # fmt: skip
    scanner = path_routes.observe_sse(ex) if entry.sse and not plan.stream else None
    facts = ex.learn(ex.facts.routed(route, plan.model or route.slug, entry))
    cache = _pass_through_lookup(ex, route, rest, plan)
    if entry.auth_required:
        facts = await _priced_demand(ex, facts, plan.max_output)
        await govern(ex, facts)
    else:
        ex.details["anonymous"] = True
        await govern(ex, facts)
    if cache is not None and await response_cache.answer_from_cache(ex, facts, cache):
        return
    ticket = await (admit(ex, facts, take_target=True) if entry.auth_required else admit_anonymous(ex, facts))
    try:
        # The route's retries and timeout (``agent_route``), on the agent's targets and behind their breakers.
        attempt = partial(_pass_through_once, ex, rest, plan)
        await within_deadline(ex, ticket, partial(_run_without_fallbacks, ex, route, attempt))
    finally:
        path_routes.note_sse_usage(ex, scanner)
        await settle(ex, ticket)
    if cache is not None:
        await response_cache.keep_answer(ex, cache)


# --- GET /v1/models ---------------------------------------------------------


async def list_models(ex: Exchange) -> None:
    await authenticate(ex)
    await govern(ex, ex.facts)
    ticket = await admit(ex, ex.facts)
    try:
        table = await routing_table.get()
        created = int(time.time())
        data = []
        if auto_route.reachable(table, ex.key, ""):
            data.append({"id": AUTO_MODEL, "object": "model", "created": created, "owned_by": "gateway:auto-routing"})
        for route in sorted(table.agents.values(), key=lambda r: r.slug):
            if not ex.key.may_call(route):
                continue
            data.append({"id": route.slug, "object": "model", "created": created, "owned_by": f"agent:{route.slug}"})
            for model in route.served_models:
                if ex.key.may_use_model(model):
                    data.append({"id": model, "object": "model", "created": created, "owned_by": route.slug})
        await ex.respond_json(200, {"object": "list", "data": data})
    finally:
        await settle(ex, ticket)


# --- GET /v1/usage ----------------------------------------------------------


async def usage(ex: Exchange) -> None:
    await authenticate(ex)
    try:
        query = usage_query(ex.query.decode("latin-1"))
    except ValueError as error:
        raise bad_request(str(error)) from None
    await govern(ex, ex.facts)
    ticket = await admit(ex, ex.facts)
    try:
        await writer.flush()  # so the report includes this process's latest requests
        key = ex.key
        report = await database_sync_to_async(client_usage)(key.client_id, query)
        budgets = await database_sync_to_async(budget_report)(key.key_id, key.client_id, key.cost_center_id)
        await ex.respond_json(200, {**report, "client": key.client_slug, "budgets": budgets})
    finally:
        await settle(ex, ticket)


# --- GET /v1/jobs, GET /v1/jobs/<id>: asynchronous invokes ------------------


async def job_status(ex: Exchange, job_id: str) -> None:
    await authenticate(ex)
    await govern(ex, ex.facts)
    await jobs.admit_poll(ex)
    job = await jobs.job_for(ex.key, job_id)
    ex.details["job_id"] = str(job.pk)
    await ex.respond_json(200, jobs.job_body(job))


async def list_jobs(ex: Exchange) -> None:
    await authenticate(ex)
    query = {k: v[-1] for k, v in parse_qs(ex.query.decode("latin-1")).items()}
    await govern(ex, ex.facts)
    await jobs.admit_poll(ex)
    await ex.respond_json(200, await jobs.recent_jobs(ex.key, query))


ENDPOINTS = {
    "/v1/jobs": ("GET", list_jobs),
    "/v1/chat/completions": ("POST", chat_completions),
    "/v1/messages": ("POST", messages),
    "/v1/agent/invoke": ("POST", agent_invoke),
    "/v1/models": ("GET", list_models),
    "/v1/usage": ("GET", usage),
}
