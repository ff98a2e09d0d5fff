"""The attempt loop around every forwarded call: targets, retries, circuit breakers, the fallback chain.

An agent is tried on one of its targets (``balance``); a connection error, a
timeout or a status in its ``retry_statuses`` is retried, on another target
when it has one, after an exponential backoff with full jitter, while the
agent's timeout (the budget for all its attempts) lasts. When the agent fails
(or all its circuits are open), its ``fallbacks`` are tried in order, each
asked in its own wire shape by the endpoint's per-route function. Nothing is
retried once a byte of the answer went to the client.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from gateway_project.errors import GatewayError
from routing import balance, spans
from routing.exchange import Exchange
from routing.observe import observe_attempt
from routing.table import AgentRoute, routing_table
from routing.upstream import AttemptProbe, UpstreamError, current_attempt, timeout_message

# Backoff before retry n (from 0): a random wait up to min(CAP, BASE * 2**n) seconds ("full jitter").
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 2.0

TARGET_HEADER = b"x-gateway-target"  # <agent>/<target> that answered
FALLBACK_HEADER = b"x-gateway-fallback"  # the agent asked for, when a fallback answered instead

Attempt = Callable[[AgentRoute], Awaitable[None]]


class AttemptsStopped(Exception):
    """No further attempt: those before it were charged, and a hard budget cannot cover another."""

    def __init__(self, error: GatewayError | None):
        super().__init__("attempts stopped")
        self.error = error


class AgentFailed(Exception):
    """An agent could not answer, in a way its fallbacks may make up for."""

    def __init__(self, error: GatewayError):
        super().__init__(error.message)
        self.error = error


def verdict(error: GatewayError, route: AgentRoute) -> str:
    """What an attempt's error means: "retry" (and fall back), "fail" (fall back only) or "answer" (pass on)."""
    if not isinstance(error, UpstreamError):
        return "answer"
    if error.kind in ("connect", "timeout"):
        return "retry"
    if error.upstream_status is not None and error.upstream_status in route.retry_statuses:
        return "retry"
    if error.kind == "invalid" or (error.upstream_status or 0) >= 500:
        return "fail"
    return "answer"  # the upstream's own refusal (4xx): it is up, and the client gets its answer


def backoff(retry: int, rng=random) -> float:
    return rng.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**retry))


def _set_header(ex: Exchange, name: bytes, value: str | None) -> None:
    ex.extra_headers[:] = [(k, v) for k, v in ex.extra_headers if k != name]
    if value is not None:
        ex.extra_headers.append((name, value.encode()))


async def run(ex: Exchange, ticket, primary: AgentRoute, attempt: Attempt, *, fallbacks: bool = True) -> None:
    """Answer through ``primary`` or, failing that, its fallbacks; raise the last failure if none can.

    Targets are taken and given back through ``ticket`` (``routing.admission.Ticket``), which owns them.
    """
    chain = [primary]
    if fallbacks and primary.fallbacks:
        chain += await _fallback_routes(ex, primary)
    attempts: list[dict] = []
    failures: list[GatewayError] = []
    requested = (ex.agent, ex.model)
    try:
        for index, route in enumerate(chain):
            if index:
                if not await ticket.take_capacity(route):
                    reason = "at capacity (its requests per minute or requests at once)"
                    ex.details.setdefault("fallbacks_skipped", []).append({"agent": route.slug, "reason": reason})
                    continue
                ex.agent, ex.model = route.slug, route.default_model
                _set_header(ex, FALLBACK_HEADER, primary.slug)
            try:
                await _try_agent(ex, ticket, route, attempt, attempts, final_agent=index == len(chain) - 1)
            except AgentFailed as failed:
                failures.append(failed.error)
                if ex.response_started:
                    raise failed.error from None
                continue
            except AttemptsStopped as stopped:
                failures += [stopped.error] if stopped.error else []
                ex.details["attempts_stopped"] = (
                    "a hard budget cannot cover another attempt after those charged for prompts sent and not answered"
                )
                break
            except GatewayError as error:
                # An answer a guardrail withheld is the answer: another agent is not asked instead.
                if not index or ex.response_started or isinstance(error, UpstreamError) or error.code == BLOCKED:
                    raise
                # A fallback that cannot take this request (a field its API lacks): the next one may.
                ex.details.setdefault("fallbacks_skipped", []).append({"agent": route.slug, "reason": error.message})
                continue
            if index:
                ex.details["fallback"] = {"requested": primary.slug, "answered": route.slug}
            return
        ex.agent, ex.model = requested
        _set_header(ex, FALLBACK_HEADER, None)
        raise _final_error(failures)
    finally:
        if len(attempts) > 1 or any(a["outcome"] != "ok" for a in attempts):
            ex.details["attempts"] = attempts


def _final_error(failures: list[GatewayError]) -> GatewayError:
    """The error the client gets when nothing answered: the last real failure, or "circuit open" if only that."""
    real = [error for error in failures if error.code not in ("circuit_open", "targets_busy")]
    if real:
        return real[-1]
    circuit = [error for error in failures if error.code == "circuit_open"]
    return min(circuit or failures, key=lambda error: int(dict(error.headers).get(b"retry-after", b"1")))


def _unread(ex: Exchange, probe: AttemptProbe, usage_before: tuple[int, int]) -> bool:
    """Whether a failed (or cancelled) attempt sent its prompt and never read its answer: no error status came
    back (an upstream does not bill its own errors), no answer began to the client (a relayed answer is charged
    from what it relayed) and no usage was read."""
    return (
        probe.sent
        and probe.status < 400
        and not ex.response_started
        and (ex.input_tokens, ex.output_tokens) == usage_before
    )


BLOCKED = "guardrail_blocked"


async def _fallback_routes(ex: Exchange, primary: AgentRoute) -> list[AgentRoute]:
    """The fallbacks that exist, are active and that the key may use (those skipped are noted in the audit)."""
    table = await routing_table.get()
    routes, skipped = [], []
    for slug in primary.fallbacks:
        route = table.agents.get(slug)
        if route is None or slug == primary.slug:
            skipped.append({"agent": slug, "reason": "unknown or inactive agent"})
        elif not ex.key.may_call(route) or (route.default_model and not ex.key.may_use_model(route.default_model)):
            skipped.append({"agent": slug, "reason": "outside the key's scopes or roles"})
        else:
            routes.append(route)
    if skipped:
        ex.details["fallbacks_skipped"] = skipped
    return routes


async def _try_agent(ex: Exchange, ticket, route: AgentRoute, attempt: Attempt, log: list[dict], final_agent: bool):
    """Up to ``1 + max_retries`` attempts on the agent's targets within its timeout; raise AgentFailed if none."""
    deadline = time.monotonic() + route.timeout
    tried: set[str] = set()
    last: GatewayError | None = None
    for retry in range(route.max_retries + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not await ticket.cover_next_attempt(ex.request_id):
            raise AttemptsStopped(last)
        try:
            lease = ticket.lease_taken_for(route) or await balance.acquire(
                route, tried, route.timeout + balance.LEASE_MARGIN_SECONDS
            )
        except balance.NoTarget as refused:
            log.append({"agent": route.slug, "target": "", "outcome": refused.error().code, "ms": 0})
            raise AgentFailed(last or refused.error()) from None
        tried.add(lease.target.name)
        final = final_agent and retry == route.max_retries
        number = len(log) + 1
        outcome, entry = await _attempt(ex, ticket, route, lease, attempt, remaining, final, (number, retry))
        log.append(entry)
        if outcome is None:
            return
        last = outcome
        if verdict(outcome, route) != "retry" or ex.response_started:
            raise AgentFailed(outcome) if verdict(outcome, route) != "answer" else outcome
        if retry < route.max_retries:
            pause = backoff(retry)
            if time.monotonic() + pause >= deadline:
                break
            await asyncio.sleep(pause)
    raise AgentFailed(last or balance.unavailable(route.slug, False, 1000))


async def _attempt(ex, ticket, route, lease, attempt, remaining, final, nth) -> tuple[GatewayError | None, dict]:
    """One call to one target (``nth``: the request's attempt number and the agent's retry); returns its error
    (None: it answered) and its line in the audit's attempts."""
    # The target's own URL and credential: a target is sent the agent's credential only on the agent's origin.
    target = lease.target
    target_route = replace(route, base_url=target.base_url, upstream_api_key=target.upstream_api_key, timeout=remaining)
    probe = AttemptProbe(final=final)
    token = current_attempt.set(probe)
    _set_header(ex, TARGET_HEADER, f"{route.slug}/{lease.target.name}")
    started = time.perf_counter()
    outcome, error = "none", None
    entry = {"agent": route.slug, "target": lease.target.name}
    usage_before, answered = (ex.input_tokens, ex.output_tokens), False
    span = spans.begin_attempt(ex, route, target, *nth)
    try:
        await attempt(target_route)
        answered = True
        # A pass-through's last attempt relays a failing status as it is, and a stream may break off after
        # it began: the breaker counts both.
        broke = ex.error_type.startswith("upstream")
        failing = broke or probe.status >= 500 or probe.status in route.retry_statuses
        outcome = "fail" if failing else "ok"
        entry.update(outcome=ex.error_type if broke else "ok", status=probe.status or 200)
    except GatewayError as caught:
        error = caught
        if isinstance(caught, UpstreamError) and caught.kind == "timeout":
            caught.message = timeout_message(route)  # the agent's whole time, not what was left for this attempt
        kind = verdict(caught, route)
        outcome = "ok" if kind == "answer" and isinstance(caught, UpstreamError) else "fail"
        if not isinstance(caught, UpstreamError):
            outcome = "none"
        entry.update(outcome=caught.code, status=getattr(caught, "upstream_status", None) or caught.status)
    except asyncio.CancelledError:
        entry.update(outcome="client_disconnected")
        raise
    finally:
        current_attempt.reset(token)
        if not answered and _unread(ex, probe, usage_before):
            ticket.note_unread(route.slug, ex.model or route.default_model, probe.streamed)
            entry["charged"] = "input" if probe.streamed else "worst_case"
        done = probe.answered_at or time.perf_counter()
        entry["ms"] = round((done - started) * 1000, 1)
        ex.upstream_seconds += done - started
        observe_attempt(route.slug, lease.target.name, entry.get("outcome", "error"), done - started)
        latency = (done - started) * 1000 if outcome != "none" else -1
        spans.end_attempt(ex, span, entry)
        await ticket.end_attempt(lease, outcome, latency)
    if error is not None and not ex.response_started:
        _set_header(ex, TARGET_HEADER, None)
    return error, entry
