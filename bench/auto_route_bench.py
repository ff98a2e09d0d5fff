#!/usr/bin/env python3
"""Model auto-routing's cost per request: the request's signals read and ~20 rules decided.

    .venv/bin/python bench/auto_route_bench.py [--rules 20] [--requests 5000] [--rounds 7] [--prompt-bytes 2048]

Runs ``routing.auto_route.signals_of`` and ``choose`` in this process, as the hot path
calls them, on a 2 KB chat prompt and a table of ``--rules`` rules of every kind (keywords,
prompt tokens, complexity, capabilities asked for, price ceilings), each model served by its
own agent. Three cases:

- **signals**: the request read once (complexity, words, capabilities asked for);
- **first**: the first rule fits (the cheapest decision);
- **last**: no rule fits and the default answers: every rule is tried, the price ceilings
  of the rules whose other conditions hold quoted (``routing.pricing.quote_for``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django

django.setup()

from billing import pricing  # noqa: E402
from billing.pricing import Price, PriceHistory  # noqa: E402
from keys.access import KeySnapshot  # noqa: E402
from routing.auto_route import AutoRoutes, RuleEntry, choose, signals_of  # noqa: E402
from routing.protocols import last_user_text  # noqa: E402
from routing.table import AgentRoute, RoutingTable  # noqa: E402

PARAGRAPH = (
    "We have a Django service that proxies requests to several model providers. Last week the latency of the "
    "streaming endpoint doubled after we upgraded the HTTP client, and the error rate went from 0.1% to 2%. "
)


def prompt(size: int) -> str:
    text = "```python\nasync def handler(request):\n    return await forward(request)\n```\n"
    while len(text) < size:
        text += PARAGRAPH
    return text[:size] + " What changed, and what should we measure first?"


def key() -> KeySnapshot:
    return KeySnapshot(
        key_id=1, prefix="gw_bench", client_id=1, client_slug="bench", cost_center_id=None, state="active",
        expires_at=None, allowed_agents=None, allowed_models=frozenset(f"model-{i}" for i in range(0, 40, 2)),
        requests_per_minute=1000, requests_per_day=0, tokens_per_minute=10**6, max_concurrent=50, issued_at=0,
        audit_previews=True,
    )  # fmt: skip


def rule(i: int, miss: bool) -> RuleEntry:
    """Rule ``i``: one of five kinds; with ``miss`` its conditions never hold for the bench's prompt."""
    model = f"model-{i}"
    kind = i % 5
    if kind == 0:
        return RuleEntry(i, f"keywords {i}", model, keywords=(f"word{i}", "stack trace", "kubernetes operator")
                         if miss else ("latency", "error rate"))  # fmt: skip
    if kind == 1:
        return RuleEntry(i, f"tokens {i}", model, min_prompt_tokens=100_000 if miss else 100, max_prompt_tokens=None)
    if kind == 2:
        return RuleEntry(i, f"complex {i}", model, min_complexity=0.95 if miss else 0.1)
    if kind == 3:
        return RuleEntry(i, f"vision {i}", model, asks_for=frozenset({"vision"}) if miss else frozenset())
    # Its conditions hold, but its price is over the ceiling when ``miss``: quoted on every request.
    return RuleEntry(i, f"cheap {i}", model, max_input_nanos=Decimal(1) if miss else Decimal(10**9))


def table(count: int, miss: bool) -> RoutingTable:
    agents = {}
    for i in range(count + 1):
        slug = f"agent-{i}"
        agents[slug] = AgentRoute(
            slug=slug, name=slug, kind="openai", base_url="http://upstream", upstream_api_key="",
            served_models=(f"model-{i}",), default_model=f"model-{i}", capabilities=("tools",), timeout=30,
            cost_center="",
        )  # fmt: skip
    by_model = {route.default_model: route for route in agents.values()}
    rules = tuple(rule(i, miss) for i in range(count))
    default = RuleEntry(count, "fallback", f"model-{count}", is_default=True)
    return RoutingTable(agents, by_model, auto=AutoRoutes({"": rules}, {"": default}))


def install_prices(count: int) -> None:
    """Prices in memory, as the gateway holds them, without a database."""
    history = {
        f"model-{i}": PriceHistory((0.0,), (Price(f"model-{i}", Decimal(2500), Decimal(10_000)),))
        for i in range(count + 1)
    }
    pricing.prices._value = history
    pricing.prices._interval = lambda: 10**9  # no background reload during the bench


async def per_request(requests: int, rounds: int, call) -> float:
    """The fastest of ``rounds`` rounds, in µs a request: the machine's other load only ever adds time."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(requests):
            await call()
        best = min(best, (time.perf_counter() - start) / requests * 1e6)
    return best


async def measure(requests: int, rounds: int, count: int, size: int) -> dict[str, float]:
    text = prompt(size)
    payload = {"model": "auto", "messages": [{"role": "user", "content": text}], "tools": [{"type": "function"}]}
    body_tokens = (len(text) + 80) // 4
    snapshot = key()
    signals = signals_of(payload, last_user_text(payload["messages"]), body_tokens)

    async def read():
        signals_of(payload, last_user_text(payload["messages"]), body_tokens)

    results = {"signals": await per_request(requests, rounds, read)}
    for case, miss in (("first", False), ("last", True)):
        tab = table(count, miss)
        choice = await choose(tab, snapshot, signals, "")
        assert choice.details["default"] is miss, choice.reason
        results[case] = await per_request(requests, rounds, lambda tab=tab: choose(tab, snapshot, signals, ""))
    results["signals + last"] = results["signals"] + results["last"]
    results["_reason"] = choice.reason
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--prompt-bytes", type=int, default=2048)
    args = parser.parse_args()
    install_prices(args.rules)
    results = asyncio.run(measure(args.requests, args.rounds, args.rules, args.prompt_bytes))
    print(f"{args.rules} rules, a {args.prompt_bytes}-byte prompt, best of {args.rounds} rounds of {args.requests}")
    print(f"  last reason: {results.pop('_reason')}")
    for case, micros in results.items():
        print(f"  {case:<16} {micros:8.1f} µs a request")


if __name__ == "__main__":
    main()
