"""Admit a request against the key's limits and the client's budget, then settle it.

This is where ``keys`` and ``billing`` meet: their checks go to the hot state
as one atomic operation, and the real cost comes back in one more.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings

from billing import alerts
from billing.budgets import BudgetRule, budget_checks, budget_table, seeds_for
from billing.periods import Period
from billing.pricing import Charge, charge, prices, quote
from billing.usage import record_usage
from gateway_project.errors import GatewayError
from gateway_project.hotstate import BudgetCheck, ConcurrencySlot, HotState, RateCheck, TargetRelease, get_hot_state
from keys.access import concurrency_key, rate_checks, token_correction
from routing import balance, spans
from routing.exchange import Exchange
from routing.facts import Demand, RequestFacts
from routing.pricing import report_dearer_answer
from routing.protocols import dense_input_estimate, tokens_in_text
from routing.table import AgentRoute

log = logging.getLogger("gateway.admission")
# The slot limit of an agent without ``max_concurrent``: its requests are counted, never refused.
UNCOUNTED_LIMIT = 2**31
_seeds_for = database_sync_to_async(seeds_for)


class Unread(NamedTuple):
    agent: str
    model: str
    streamed: bool


@dataclass(slots=True)
class Ticket:
    """Everything an admission took, owned until ``settle`` gives it back: the one place that releases.

    Rate and concurrency slots, budget reservations (priced by ``facts.quote``), and the
    target lease of the first attempt when the admission took one. Each attempt's
    target goes back through ``end_attempt``: a failure at once, a success with the
    settle, in the same round trip. ``facts`` are what was admitted, kept as they were.
    """

    facts: RequestFacts
    store: HotState
    rules: tuple[BudgetRule, ...]
    budgets: list[BudgetCheck]
    periods: list[Period]
    estimated_tokens: int
    slot_keys: list[str]
    first_lease: balance.Lease | None = None  # taken with the admission for the first attempt
    pending_release: TargetRelease | None = None  # the answering attempt's target, released with the settle
    settled: bool = False
    answer_by: float = math.inf  # epoch seconds: the answer must be done by then, while its reservation stands
    # Attempts whose prompt went upstream and whose answer was never read: each is charged its worst case
    # (``note_unread``), and each further attempt reserves its own (``cover_next_attempt``).
    unread: list[Unread] = field(default_factory=list)
    covered_attempts: int = 1
    extra_budgets: list[BudgetCheck] = field(default_factory=list)

    def lease_taken_for(self, route: AgentRoute) -> balance.Lease | None:
        """The lease the admission took for this agent's first attempt, once."""
        lease = self.first_lease
        if lease is None or lease.route.slug != route.slug:
            return None
        self.first_lease = None
        return lease

    def note_unread(self, agent: str, model: str, streamed: bool) -> None:
        """An attempt whose prompt went upstream and whose answer was never read: it timed out, broke off, was too
        large to read, or its client left or its deadline passed while it ran. The upstream may bill all of it, and
        what it billed is unknown, so it is charged the worst case reserved for it: an attacker who hangs up
        before a long answer arrives, or asks for one longer than the timeout, does not get it for nothing. A
        stream that never began is charged its input: closing a stream stops its generation."""
        if self.facts.metered:
            self.unread.append(Unread(agent, model, streamed))

    async def cover_next_attempt(self, request_id: str) -> bool:
        """Before a retry or fallback: when every attempt reserved for is charged already, reserve another worst
        case in every hard budget. False when a budget cannot cover it: the request then ends with the failure it
        has, never spending past a hard budget on attempts."""
        if not self.facts.metered or len(self.unread) < self.covered_attempts:
            return True
        if any(rule.hard for rule in self.rules):
            demand = self.facts.demand
            cap = output_cap(demand.max_output, demand.default_output)
            reserve = self.facts.quote.worst_case(input_bound(demand), cap)
            left = self.answer_by - time.time()  # a job queued before deadlines were kept has none
            hold = (max(0.0, left) if math.isfinite(left) else answer_seconds(None)) + RESERVATION_MARGIN_SECONDS
            budgets, _ = budget_checks(
                self.store, self.rules, reserve=reserve, reservation=f"{request_id}+{self.covered_attempts}",
                hold_seconds=hold,
            )  # fmt: skip
            result = await admitted(self.store, [], [], budgets)
            result = await _seeded_admission(self.store, result, [], [], budgets, self.rules, self.periods)
            if not result.ok:
                return False
            self.extra_budgets += budgets
        self.covered_attempts += 1
        return True

    async def take_capacity(self, route: AgentRoute) -> bool:
        """A fallback's own capacity (its requests per minute and a slot of its ``max_concurrent``), taken before
        it is asked and given back with the settle; False when it is full. Only the agent asked for was admitted:
        fallbacks took more requests at once than their limit allowed."""
        rates, slots = capacity_checks(self.store, route)
        result = await admitted(self.store, rates, slots, [])
        if not result.ok:
            return False
        self.slot_keys = [*self.slot_keys, *(slot.key for slot in slots)]
        return True

    async def end_attempt(self, lease: balance.Lease, outcome: str, latency_ms: float) -> None:
        """Give an attempt's target back: a success's release waits for the settle (one round trip for both)."""
        if outcome == "ok" and not lease.probe and not self.settled:
            self.pending_release = balance.ending(lease, outcome, latency_ms)
        else:
            # Shielded: a client that leaves must not leave the target counted in flight.
            await asyncio.shield(balance.release(lease, outcome, latency_ms))


def input_estimate(body: bytes) -> int:
    """A conservative guess of a request's input tokens: about four bytes a token."""
    return max(1, len(body) // 4)


def _refusal(failed: str, snapshot, retry_after_ms: int) -> GatewayError:
    retry = max(1, math.ceil(retry_after_ms / 1000))
    headers = [(b"retry-after", str(retry).encode())]
    if failed == "requests":
        message = f"Rate limit reached: {snapshot.requests_per_minute} requests per minute for this key."
        code = "rate_limit_requests"
    elif failed == "requests_per_day":
        message = f"Rate limit reached: {snapshot.requests_per_day} requests per day for this key."
        code = "rate_limit_requests_per_day"
    elif failed == "tokens":
        message = f"Rate limit reached: {snapshot.tokens_per_minute} tokens per minute for this key."
        code = "rate_limit_tokens"
    elif failed == "client_requests":
        message = (
            f"Rate limit reached: {snapshot.client_requests_per_minute} requests per minute for this client, "
            "shared by all its keys."
        )
        code = "client_rate_limit_requests"
    elif failed == "client_tokens":
        message = (
            f"Rate limit reached: {snapshot.client_tokens_per_minute} tokens per minute for this client, "
            "shared by all its keys."
        )
        code = "client_rate_limit_tokens"
    else:
        message = f"Too many requests in flight: this key allows {snapshot.max_concurrent} at once."
        code = "concurrency_limit"
    return GatewayError(429, "rate_limit_error", code, f"{message} Retry after {retry} s.", headers)


def _agent_refusal(failed: str, route: AgentRoute, retry_after_ms: int) -> GatewayError:
    """The agent, not the key, is full: its capacity is shared by every client."""
    retry = max(1, math.ceil(retry_after_ms / 1000))
    if failed == "agent_requests":
        message = f"The agent '{route.slug}' is at capacity: {route.requests_per_minute} requests per minute"
        code = "agent_rate_limit"
    else:
        message = f"The agent '{route.slug}' is at capacity: {route.max_concurrent} requests at once"
        code = "agent_concurrency_limit"
    return GatewayError(
        429, "rate_limit_error", code, f"{message}, shared by all clients. Retry after {retry} s.",
        [(b"retry-after", str(retry).encode())],
    )  # fmt: skip


def capacity_checks(store: HotState, route: AgentRoute | None) -> tuple[list[RateCheck], list[ConcurrencySlot]]:
    """The agent's own limits, shared by every client and key.

    Every agent's requests in flight are counted (content routing reads them for the
    least-loaded choice); only an agent with ``max_concurrent`` is ever full.
    """
    if route is None:
        return [], []
    rates = []
    if route.requests_per_minute:
        rates.append(RateCheck("agent_requests", store.key("agent-rpm", route.slug), route.requests_per_minute, 1))
    limit = route.max_concurrent or UNCOUNTED_LIMIT
    return rates, [ConcurrencySlot("agent_concurrency", store.key("agent-conc", route.slug), limit)]


def path_route_check(store: HotState, path_route) -> list[RateCheck]:
    """A path route's own requests per minute, shared by every caller and every gateway process."""
    if path_route is None or not path_route.requests_per_minute:
        return []
    return [RateCheck("route_requests", store.key("route-rpm", path_route.id), path_route.requests_per_minute, 1)]


def _route_refusal(path_route, retry_after_ms: int) -> GatewayError:
    retry = max(1, math.ceil(retry_after_ms / 1000))
    return GatewayError(
        429, "rate_limit_error", "route_rate_limit",
        f"The route {path_route.prefix} is at its limit of {path_route.requests_per_minute} requests per minute, "
        f"shared by all callers. Retry after {retry} s.",
        [(b"retry-after", str(retry).encode())],
    )  # fmt: skip


@spans.traced("gateway.admission")
async def admit_anonymous(ex: Exchange, facts: RequestFacts) -> Ticket:
    """Admit a call on a route that needs no key: only the route's own rate and the agent's capacity apply."""
    store = get_hot_state()
    route, path_route = facts.route, facts.path_route
    rates, slots = capacity_checks(store, route)
    rates = path_route_check(store, path_route) + rates
    result = await admitted(store, rates, slots, [], ex=ex)
    if not result.ok:
        if result.failed == "route_requests":
            raise _route_refusal(path_route, result.retry_after_ms)
        raise _agent_refusal(result.failed, route, result.retry_after_ms)
    answer_by = time.time() + answer_seconds(route)
    return Ticket(facts, store, (), [], [], 0, [slot.key for slot in slots], answer_by=answer_by)


@spans.traced("gateway.admission")
async def admit(ex: Exchange, facts: RequestFacts, *, take_target: bool = False, spent_budgets: bool = False) -> Ticket:
    """Take a request slot and, when the facts carry a demand, reserve its worst-case cost in every budget; or
    raise 429/402.

    Tokens per minute count the input estimate plus the answer's cap (``output_cap``, the
    one sent upstream). The reservation prices the most input that may be charged
    (``input_bound``) plus the answer's cap at the quote's price, the dearest the answer may cost, so concurrent
    requests can never together spend past a hard budget. With a route, the agent's own
    capacity (requests per minute and at once, shared by all clients) must fit too, and
    with a path route that route's own requests per minute. ``spent_budgets``: a request without a demand (a
    WebSocket session: frames carry no tokens) is still refused 402 by a hard budget already spent, reserving
    nothing. ``take_target`` also takes the
    target of the route's first attempt in the same round trip, when choosing it needs no live
    state (the ticket's ``first_lease``; a request that does not use it gives it back when it settles).
    """
    store = get_hot_state()
    key, route, path_route, demand = facts.key, facts.route, facts.path_route, facts.demand
    rules: tuple[BudgetRule, ...] = ()
    reserve = tokens = 0
    if demand is not None:
        table = await budget_table.get_fresh_since(key.issued_at)  # a new key's budgets are often new too
        rules = table.applying_to(key.key_id, key.client_id, key.cost_center_id)
        if facts.quote is None:
            facts = facts.priced(quote(await prices.get(), facts.requested or facts.default_model))
        reserve = facts.quote.worst_case(input_bound(demand), output_cap(demand.max_output, demand.default_output))
        tokens = demand.input_tokens + output_cap(demand.max_output, demand.default_output)  # the cap sent
    elif spent_budgets:
        table = await budget_table.get_fresh_since(key.issued_at)
        rules = table.applying_to(key.key_id, key.client_id, key.cost_center_id)
    hold = demand.hold_seconds if demand is not None else 0
    budgets, periods = budget_checks(store, rules, reserve=reserve, reservation=facts.request_id, hold_seconds=hold)
    checks = rate_checks(store, key, tokens)
    slots = (
        [ConcurrencySlot("concurrency", concurrency_key(store, key), key.max_concurrent)] if key.max_concurrent else []
    )
    agent_rates, agent_slots = capacity_checks(store, route)
    checks += path_route_check(store, path_route) + agent_rates
    slots += agent_slots
    first = balance.first_lease(route) if take_target and route is not None else None
    result = await admitted(store, checks, slots, budgets, first, ex)
    lease = _taken(first, result.target)
    try:
        result = await _seeded_admission(store, result, checks, slots, budgets, rules, periods, ex)
        if not result.ok:
            _refuse(key, result, rules, periods, route, path_route)
    except BaseException:
        if lease is not None:  # refused, or failed: the target goes back
            await asyncio.shield(balance.release(lease, "none", -1))
        raise
    ex.extra_headers += [
        (b"x-ratelimit-limit-requests", str(key.requests_per_minute).encode()),
        (b"x-ratelimit-remaining-requests", str(result.remaining.get("requests", 0)).encode()),
        (b"x-ratelimit-limit-tokens", str(key.tokens_per_minute).encode()),
        (
            b"x-ratelimit-remaining-tokens",
            str(result.remaining.get("tokens", key.tokens_per_minute)).encode(),
        ),
    ]
    answer_by = time.time() + (hold - RESERVATION_MARGIN_SECONDS if hold else answer_seconds(route))
    return Ticket(
        facts,
        store,
        rules,
        budgets,
        periods,
        tokens,
        [slot.key for slot in slots],
        first_lease=lease,
        answer_by=answer_by,
    )


def answer_seconds(route: AgentRoute | None) -> float:
    """The longest a request may take, answer included: ``MAX_ANSWER_SECONDS`` (which caps every agent's timeout)."""
    longest = settings.GATEWAY["MAX_ANSWER_SECONDS"]
    return max(longest, route.timeout) if route is not None else longest


async def within_deadline(ex: Exchange, ticket: Ticket, call) -> None:
    """Run ``call(ticket)`` until the ticket's ``answer_by``: a stream that outlasts it is cut (and charged for what
    was relayed), before its reservation could lapse and let others spend what it is about to.

    A timer of the loop's own that cancels the task, as ``asyncio.timeout`` does, without its context manager's
    bookkeeping: every metered request passes here, and the deadline almost never fires.
    """
    left = ticket.answer_by - time.time()
    if not math.isfinite(left):
        await call(ticket)
        return
    task = asyncio.current_task()
    cancelling = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(max(0.0, left), expire)
    try:
        await call(ticket)
    except asyncio.CancelledError:
        # Ours only if nothing else (a hang-up, the server stopping) asked for the cancellation too.
        if not expired or task.uncancel() > cancelling:
            raise
        ex.details["answer_deadline_seconds"] = round(ex.elapsed_ms() / 1000, 1)
        raise GatewayError(
            504, "timeout_error", "answer_deadline",
            f"The answer took longer than the gateway allows a request ({round(left, 1):g} s); it was cut off.",
        ) from None  # fmt: skip
    finally:
        timer.cancel()


# A reservation outlives its request's deadline by this much before it lapses: time for the settle.
RESERVATION_MARGIN_SECONDS = 60

# Input a request may be charged beyond its estimate (about four bytes a token): text is never more than a token a
# byte (a prompt of small numbers is two bytes a token); what a provider adds (a tool-use system prompt, a few
# tokens a message) is within the slack; images and documents bring their own allowance.
INPUT_CHARGE_FACTOR = 4
INPUT_CHARGE_SLACK = 4096


def input_bound(demand: Demand) -> int:
    """The most input a request may be charged, and so what is reserved for it: a token a byte of its body, a
    slack, and its images' and documents' allowance. Reserved at the estimate (four bytes a token) and charged up to
    this, a dense prompt spent past a hard budget with an honest upstream."""
    return demand.input_tokens * INPUT_CHARGE_FACTOR + INPUT_CHARGE_SLACK + demand.input_allowance


def unknown_input(ex: Exchange, demand: Demand) -> int:
    """The input charged when the upstream's count is unknown (an unread or cut answer): the body's tokens counted
    word by word (``protocols.dense_input_estimate``, or four bytes a token if more) and its allowances, within
    what was reserved."""
    counted = max(demand.input_tokens, dense_input_estimate(getattr(ex, "body", b""))) + demand.input_allowance
    return min(counted, input_bound(demand))


def charged_usage(ex: Exchange, demand: Demand) -> tuple[int, int]:
    """The tokens a metered request is charged: what the upstream reported, within what was reserved.

    No usage read from an answer that must carry it: the worst case reserved. An
    answer that began but ended before its final usage (the client left, the deadline
    passed, the upstream broke off or never sends usage): the whole input, as estimated
    from the body (or as reported), and at least the output that was relayed,
    estimated from its text. More than the answer's cap, or far more input than the
    body could hold: the bound, with the report kept in the audit record
    (``usage_over_reservation``). So neither a lying upstream nor a client that hangs
    up before the usage arrives can make a request cost more than its reservation, or
    nothing.
    """
    cap = output_cap(demand.max_output, demand.default_output)
    most_input = input_bound(demand)
    reported = ex.input_tokens, ex.output_tokens
    if ex.details.get("usage_unread"):
        return unknown_input(ex, demand), cap
    relayed = ex.output_estimate or (tokens_in_text(ex.output_text) if ex.output_text else 0)
    if ex.details.get("usage_partial") or ex.details.get("usage_missing") or (not any(reported) and relayed):
        reported = ex.input_tokens or unknown_input(ex, demand), max(ex.output_tokens, relayed)
        ex.details["usage_estimated"] = {"input": reported[0], "output": reported[1]}
    charged = min(reported[0], most_input), min(reported[1], cap)
    if charged != reported:
        ex.details["usage_over_reservation"] = {"reported": list(reported), "charged": list(charged)}
    return charged


def output_cap(max_output: int | None, default_output: int | None) -> int:
    """The longest answer a request may get: the client's ``max_tokens``, or the agent's default, or ours.

    It is reserved, and it is sent upstream when the client gave none, so the worst
    case reserved is also the worst case that can be charged.
    """
    return max_output or default_output or settings.GATEWAY["DEFAULT_MAX_OUTPUT_TOKENS"]


async def admitted(store: HotState, rates, slots, budgets, first=None, ex: Exchange | None = None):
    """``store.admit``, seen through even when the caller is cancelled (its client hung up) while it runs.

    The script may already have taken slots, reservations and a target when the
    cancellation lands, and no ticket exists yet to give them back: they are given
    back here, once it has run, before the cancellation goes on. Else every hang-up
    during admission would hold an agent's shared slots until they lapsed. With the
    request's exchange, when its client's hang-up is the one thing that cancels it (the
    proxy's, ``Exchange.serve_in``), the hang-up waits for the script
    (``Exchange.hang_up_held``), which then runs in the request's own task: no task and
    no shield a request. Otherwise (a retry's or a fallback's admission, under the
    answer's deadline; a WebSocket session's) the script runs in a task of its own, shielded.
    """
    acquire = first[1] if first else None
    if ex is not None and ex.defers_hang_up:
        ex.hang_up_held += 1
        try:
            result = await store.admit(rates, slots, budgets, acquire)
        finally:
            ex.hang_up_held -= 1
        if ex.hang_up_pending and not ex.hang_up_held:
            ex.hang_up_pending = False
            await _give_back_taken(store, result, slots, budgets, first)
            raise asyncio.CancelledError
        return result
    call = asyncio.ensure_future(store.admit(rates, slots, budgets, acquire))
    try:
        return await asyncio.shield(call)
    except asyncio.CancelledError:
        await asyncio.shield(_undo(store, call, slots, budgets, first))
        raise


async def _undo(store: HotState, call: asyncio.Future, slots, budgets, first) -> None:
    try:
        result = await call
    except Exception:  # it failed: it took nothing
        return
    await _give_back_taken(store, result, slots, budgets, first)


async def _give_back_taken(store: HotState, result, slots, budgets, first) -> None:
    """What an admission that is not going on took: its lease on the first target, its slots and reservations."""
    lease = _taken(first, result.target)
    if lease is not None:
        await balance.release(lease, "none", -1)
    if result.ok:
        await store.settle([], [slot.key for slot in slots], budgets, 0)


def _taken(first, verdict) -> balance.Lease | None:
    """The admission's lease on the first target, if the target took it."""
    if first is None or verdict is None or verdict[0] not in ("ok", "probe"):
        return None
    lease = first[0]
    lease.probe = verdict[0] == "probe"
    return lease


async def _seeded_admission(store, result, checks, slots, budgets, rules, periods, ex=None):
    if result.failed == "seed":
        # A new window or an emptied Redis: count the window's spend from the database once, then ask again.
        missing = result.unseeded
        spent = await _seeds_for([rules[i] for i in missing], [periods[i] for i in missing])
        await store.seed([budgets[i] for i in missing], spent)
        result = await admitted(store, checks, slots, budgets, ex=ex)
    return result


def _refuse(key, result, rules, periods, route, path_route):
    """Raise the error of a refused admission."""
    if result.failed == "budget":
        rule, period = rules[result.budget_index], periods[result.budget_index]
        alerts.notice(rule, period, alerts.LIMIT_PERCENT, result.spent)
        raise GatewayError(
            402,
            "insufficient_quota",
            "budget_exceeded",
            f"The {rule.label} (${rule.limit_nanos / 1e9:,.2f} until {period.end:%Y-%m-%d %H:%M %Z}) "
            "cannot cover this request's worst-case cost. "
            "Raise the budget, lower max_tokens, or wait for the next period.",
        )
    if result.failed == "seed":
        raise GatewayError(503, "api_error", "budget_unavailable", "Budget counters are being rebuilt; retry.",
                           [(b"retry-after", b"1")])  # fmt: skip
    if result.failed == "route_requests":
        raise _route_refusal(path_route, result.retry_after_ms)
    if result.failed.startswith("agent_"):
        raise _agent_refusal(result.failed, route, result.retry_after_ms)
    raise _refusal(result.failed, key, result.retry_after_ms)


@spans.traced("gateway.settle", after=spans.settled)
async def settle(ex: Exchange, ticket: Ticket) -> None:
    """Price what the upstream really used, correct the counters, queue the usage row and notice alerts; once.

    The charge is priced against the ticket's quote (``billing.pricing.charge``): an
    answer from a model dearer than anything reserved is charged at its real price,
    flagged on the audit record, and reported so the agent's next reservations cover it.
    Whatever happens while pricing, every slot, reservation and lease goes back.
    """
    if ticket.settled:
        return
    ticket.settled = True
    spend = 0
    try:
        spend = await _charge(ex, ticket)
    finally:
        await _give_back(ex, ticket, spend)


async def _charge(ex: Exchange, ticket: Ticket) -> int:
    """Price and record the request's usage, and its unread attempts' worst cases (``Ticket.note_unread``): the
    nanodollars it spent (0 when it is not metered)."""
    facts = ticket.facts
    if not facts.metered:
        return 0
    ex.input_tokens, ex.output_tokens = charged_usage(ex, facts.demand)
    if not (ex.input_tokens or ex.output_tokens or ticket.unread):
        return 0
    table = await prices.get()
    asked = facts.requested or facts.default_model
    quoted = facts.quote or quote(table, asked)
    spend = 0
    if ex.input_tokens or ex.output_tokens:
        charged = _priced(ex, table, quoted, ex.model or asked, ex.input_tokens, ex.output_tokens)
        if charged.over_quote:
            ex.details["priced_over_reservation"] = {"reserved_model": quoted.model, "answered_model": charged.model}
            report_dearer_answer(ex.agent, charged.model, ex.request_id)
        spend = _record(ex, facts.key, ex.agent, charged, ex.input_tokens, ex.output_tokens)
    if ticket.unread:
        spend += _charge_unread(ex, ticket, table, quoted)
    ex.cost_nanos = spend
    return spend


def _charge_unread(ex: Exchange, ticket: Ticket, table, quoted) -> int:
    """Each unread attempt's worst case (a stream's input), at the price of the model it asked, in a usage row of
    its own (noted in the audit record, and counted in its tokens)."""
    demand = ticket.facts.demand
    input_tokens, cap = unknown_input(ex, demand), output_cap(demand.max_output, demand.default_output)
    spend, noted = 0, []
    for agent, model, streamed in ticket.unread:
        output_tokens = 0 if streamed else cap
        charged = _priced(ex, table, quoted, model or quoted.model, input_tokens, output_tokens)
        spend += _record(ex, ticket.facts.key, agent, charged, input_tokens, output_tokens)
        noted.append({"agent": agent, "model": charged.model, "input_tokens": input_tokens,
                      "output_tokens": output_tokens, "cost_nanos": charged.nanos})  # fmt: skip
        ex.input_tokens += input_tokens
        ex.output_tokens += output_tokens
    ex.details["unread_attempts_charged"] = noted
    return spend


def _priced(ex: Exchange, table, quoted, model: str, input_tokens: int, output_tokens: int) -> Charge:
    try:
        return charge(table, quoted, model, input_tokens, output_tokens)
    except Exception:  # a bug, not the client's doing: it still pays what was reserved, never nothing
        log.exception("pricing request %s failed; charged its reservation", ex.request_id)
        ex.details["priced_at_reservation"] = True
        return Charge(quoted.model, quoted.worst_case(input_tokens, output_tokens), False, False)


def _record(ex: Exchange, key, agent: str, charged: Charge, input_tokens: int, output_tokens: int) -> int:
    record_usage(
        request_id=ex.request_id,
        client_id=key.client_id,
        key_id=key.key_id,
        cost_center_id=key.cost_center_id,
        agent=agent,
        model=charged.model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_nanos=charged.nanos,
        default_priced=charged.default_priced,
    )
    return charged.nanos


async def _give_back(ex: Exchange, ticket: Ticket, spend: int) -> None:
    """Correct the token counters, release the slots and the leases, and turn reservations into ``spend``."""
    key = ticket.facts.key
    actual = ex.input_tokens + ex.output_tokens if ticket.facts.metered else 0
    adjusts = token_correction(ticket.store, key, ticket.estimated_tokens, actual)
    release, ticket.pending_release = ticket.pending_release, None
    unused, ticket.first_lease = ticket.first_lease, None
    if unused is not None:  # admitted with a target it never called (refused later, or answered without it)
        if release is None:
            release = balance.ending(unused, "none", -1)
        else:
            await balance.release(unused, "none", -1)
    totals = await ticket.store.settle(adjusts, ticket.slot_keys, ticket.budgets, spend, release)
    if ticket.extra_budgets:  # the further attempts' reservations: the spend is counted once, above
        await ticket.store.settle([], [], ticket.extra_budgets, 0)
    if spend:
        for rule, period, total in zip(ticket.rules, ticket.periods, totals, strict=True):
            if total >= 0:
                for percent in alerts.crossed(rule, total - spend, total):
                    alerts.notice(rule, period, percent, total)
