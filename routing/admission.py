"""Admit a request against the key's limits and the client's budget, then settle it.

This is where ``keys`` and ``billing`` meet: their checks go to the hot state
as one atomic operation, and the real cost comes back in one more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.conf import settings

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


def input_estimate(body: bytes) -> int:
    """A conservative guess of a request's input tokens: about four bytes a token."""
    return max(1, len(body) // 4)


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


async def admit(
    ex: Exchange, input_tokens: int = 0, max_output: int | None = None, *, hold_seconds: float = 0, metered=True
) -> Ticket:
    """Take a request slot and, when ``metered``, reserve its worst-case cost; or raise 429/402.

    Tokens per minute count the input estimate plus ``max_output`` when the client
    capped the answer. The budget reservation prices the input estimate plus
    ``max_output`` (or the configured default cap) at the model's price, so
    concurrent requests can never together spend past a hard budget.
    """
    store = get_hot_state()
    key = ex.key
    snapshot = await budget_for(key.client_id)
    if metered:
        price = price_for(await prices.get(), ex.model)
        cap = max_output or settings.GATEWAY["DEFAULT_MAX_OUTPUT_TOKENS"]
        budget = budget_check(
            store, snapshot, reserve=cost_nanos(price, input_tokens, cap), reservation=ex.request_id,
            hold_seconds=hold_seconds,
        )  # fmt: skip
    else:
        budget = BudgetCheck(budget_check(store, snapshot).key, NO_BUDGET, 0, 60)
    tokens = input_tokens + (max_output or 0) if metered else 0
    checks = rate_checks(store, key, tokens)
    conc = concurrency_key(store, key) if key.max_concurrent else ""
    result = await store.admit(checks, conc, key.max_concurrent, budget)
    if not result.ok:
        if result.failed == "budget":
            raise GatewayError(
                402,
                "insufficient_quota",
                "budget_exceeded",
                "The client's monthly budget cannot cover this request's worst-case cost. "
                "Raise the budget, lower max_tokens, or wait for the next month.",
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
    return Ticket(store, budget, tokens, conc, metered)


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
