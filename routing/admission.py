"""Admit a request against the key's limits and the client's budget, then settle it.

This is where ``keys`` and ``billing`` meet: their checks go to the hot state
as one atomic operation, and the real cost comes back in one more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from billing.budgets import budget_check, budget_for
from billing.pricing import cost_nanos, price_for, prices
from billing.usage import record_usage
from gateway_project.errors import GatewayError
from gateway_project.hotstate import BudgetCheck, HotState, get_hot_state
from keys.access import concurrency_key, rate_checks, token_correction
from routing.exchange import Exchange

NO_BUDGET = -1


@dataclass(slots=True)
class Ticket:
    store: HotState
    budget: BudgetCheck
    estimated_tokens: int
    concurrency_key: str
    metered: bool


def estimate_tokens(body: bytes, max_tokens: int | None) -> int:
    """A conservative guess (about four bytes a token, plus the answer's cap) for admission."""
    return max(1, len(body) // 4) + (max_tokens or 0)


def _refusal(failed: str, snapshot, retry_after_ms: int) -> GatewayError:
    retry = max(1, math.ceil(retry_after_ms / 1000))
    headers = [(b"retry-after", str(retry).encode())]
    if failed == "requests":
        message = f"Rate limit reached: {snapshot.requests_per_minute} requests per minute for this key."
        code = "rate_limit_requests"
    elif failed == "tokens":
        message = f"Rate limit reached: {snapshot.tokens_per_minute} tokens per minute for this key."
        code = "rate_limit_tokens"
    else:
        message = f"Too many requests in flight: this key allows {snapshot.max_concurrent} at once."
        code = "concurrency_limit"
    return GatewayError(429, "rate_limit_error", code, f"{message} Retry after {retry} s.", headers)


async def admit(ex: Exchange, tokens: int, *, metered: bool = True) -> Ticket:
    """Reserve a request slot (and, when ``metered``, check the budget) or raise 429/402."""
    store = get_hot_state()
    key = ex.key
    budget = budget_check(store, await budget_for(key.client_id))
    if not metered:
        budget = BudgetCheck(budget.key, NO_BUDGET, budget.seed, budget.ttl_seconds)
    checks = rate_checks(store, key, tokens if metered else 0)
    conc = concurrency_key(store, key) if key.max_concurrent else ""
    result = await store.admit(checks, conc, key.max_concurrent, budget)
    if not result.ok:
        if result.failed == "budget":
            raise GatewayError(
                402,
                "insufficient_quota",
                "budget_exceeded",
                "The client's monthly budget is spent. Raise the budget or wait for the next month.",
            )
        raise _refusal(result.failed, key, result.retry_after_ms)
    ex.extra_headers += [
        (b"x-ratelimit-limit-requests", str(key.requests_per_minute).encode()),
        (b"x-ratelimit-remaining-requests", str(result.remaining.get("requests", 0)).encode()),
        (b"x-ratelimit-limit-tokens", str(key.tokens_per_minute).encode()),
        (
            b"x-ratelimit-remaining-tokens",
            str(result.remaining.get("tokens", key.tokens_per_minute)).encode(),
        ),
    ]
    return Ticket(store, budget, tokens if metered else 0, conc, metered)


async def settle(ex: Exchange, ticket: Ticket, default_model: str) -> None:
    """Price what the upstream really used, correct the counters and queue the usage row."""
    key = ex.key
    spend = 0
    if ticket.metered and (ex.input_tokens or ex.output_tokens):
        model = ex.model or default_model
        spend = cost_nanos(price_for(await prices.get(), model), ex.input_tokens, ex.output_tokens)
        ex.cost_nanos = spend
        record_usage(
            request_id=ex.request_id,
            client_id=key.client_id,
            key_id=key.key_id,
            agent=ex.agent,
            model=model,
            input_tokens=ex.input_tokens,
            output_tokens=ex.output_tokens,
            cost_nanos=spend,
        )
    actual = ex.input_tokens + ex.output_tokens if ticket.metered else 0
    adjusts = token_correction(ticket.store, key, ticket.estimated_tokens, actual)
    await ticket.store.settle(adjusts, ticket.concurrency_key, ticket.budget, spend)
