"""Auto-routing's choice among ordered rules: the first that fits wins; what each skip is for; the refusals."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import SimpleNamespace

import pytest

from billing.pricing import Price, Quote
from gateway_project.errors import GatewayError
from keys.access import KeySnapshot
from routing import auto_route
from routing.auto_route import AutoRoutes, RuleEntry, Signals, choose, scope_of
from routing.auto_signals import words_of
from routing.table import AgentRoute, RoutingTable


def agent(slug, models, capabilities=(), default=""):
    return AgentRoute(
        slug=slug, name=slug, kind="openai", base_url="http://upstream", upstream_api_key="", served_models=models,
        default_model=default or models[0], capabilities=capabilities, timeout=5, cost_center="",
    )  # fmt: skip


def key(agents=None, models=None):
    return KeySnapshot(
        key_id=1, prefix="gw_x", client_id=1, client_slug="c", cost_center_id=None, state="active", expires_at=None,
        allowed_agents=None if agents is None else frozenset(agents),
        allowed_models=None if models is None else frozenset(models), requests_per_minute=10, requests_per_day=0,
        tokens_per_minute=10, max_concurrent=1, issued_at=0, audit_previews=True,
    )  # fmt: skip


def table(rules, default=None, agents=None, scope=""):
    agents = agents or [
        agent("cheap", ("mini",)),
        agent("smart", ("big",), capabilities=("tools", "vision", "json")),
        agent("coder", ("codex",), capabilities=("tools",)),
    ]
    by_model = {model: route for route in agents for model in route.served_models}
    auto = AutoRoutes({scope: tuple(rules)}, {scope: default} if default else {})
    return RoutingTable({route.slug: route for route in agents}, by_model, auto=auto)


def signals(tokens=100, score=0.2, text="hello there", asks=()):
    return Signals(tokens, score, words_of(text), frozenset(asks))


def pick(tab, sig, k=None, scope=""):
    return asyncio.run(choose(tab, k or key(), sig, scope))


CODE = RuleEntry(id=1, name="code questions", model="codex", keywords=("python", "stack trace"))
LONG = RuleEntry(id=2, name="long prompts", model="big", min_prompt_tokens=1000)
HARD = RuleEntry(id=3, name="hard", model="big", min_complexity=0.5)
DEFAULT = RuleEntry(id=9, name="fallback", model="mini", is_default=True)


def test_the_first_rule_that_fits_wins_and_says_why():
    tab = table([CODE, LONG, HARD], DEFAULT)
    choice = pick(tab, signals(tokens=2000, score=0.7, text="my Python stack   trace"))
    assert (choice.model, choice.route.slug) == ("codex", "coder")
    assert choice.reason == 'rule=1 "code questions" complexity=0.70 tokens=2000 keyword="python"'
    assert choice.details["rule"] == 1 and choice.details["score"] == 0.7 and choice.details["keyword"] == "python"
    assert pick(tab, signals(tokens=2000, score=0.7)).details["rule"] == 2
    assert pick(tab, signals(tokens=10, score=0.7)).details["rule"] == 3
    fallback = pick(tab, signals(tokens=10, score=0.1))
    assert fallback.model == "mini" and fallback.reason.startswith('default "fallback"')


def test_bounds_are_inclusive():
    tab = table([RuleEntry(id=1, name="mid", model="big", min_prompt_tokens=10, max_prompt_tokens=20,
                           min_complexity=0.3, max_complexity=0.3)], DEFAULT)  # fmt: skip
    assert pick(tab, signals(tokens=10, score=0.3)).model == "big"
    assert pick(tab, signals(tokens=20, score=0.3)).model == "big"
    assert pick(tab, signals(tokens=21, score=0.3)).model == "mini"
    assert pick(tab, signals(tokens=15, score=0.31)).model == "mini"


def test_a_rule_whose_model_the_key_may_not_use_is_skipped_and_noted():
    tab = table([LONG, HARD], DEFAULT)
    choice = pick(tab, signals(tokens=2000), key(models=["mini"]))
    assert choice.model == "mini"
    assert choice.details["skipped"] == [{"rule": 2, "model": "big", "why": "the key may not use the model"}]
    assert pick(tab, signals(tokens=2000), key(agents=["cheap"])).model == "mini"  # the agent's scope too


def test_auto_is_offered_to_a_key_that_may_reach_one_of_its_models():
    tab = table([LONG], DEFAULT)
    assert auto_route.reachable(tab, key(), "")
    assert auto_route.reachable(tab, key(models=["mini"]), "")  # the default's
    assert not auto_route.reachable(tab, key(models=["codex"]), "")
    assert not auto_route.reachable(tab, key(agents=["coder"]), "")
    assert not auto_route.reachable(table([RuleEntry(id=4, name="gone", model="retired")]), key(), "")
    assert not auto_route.reachable(tab, key(), "some-agent")


def test_only_the_keys_scopes_in_the_way_is_a_403():
    with pytest.raises(GatewayError) as refused:
        pick(table([LONG], DEFAULT), signals(tokens=2000), key(models=["codex"]))
    assert (refused.value.status, refused.value.code) == (403, "model_not_allowed")
    assert "big" in refused.value.message and "mini" in refused.value.message


def test_no_rule_and_no_default_is_a_clear_400():
    with pytest.raises(GatewayError) as refused:
        pick(table([LONG]), signals(tokens=5))
    assert (refused.value.status, refused.value.code) == (400, "no_auto_route")
    assert "no usable default model" in refused.value.message


def test_a_rule_pointing_at_a_model_no_active_agent_serves_is_skipped():
    gone = RuleEntry(id=4, name="gone", model="retired-model")
    choice = pick(table([gone], DEFAULT), signals())
    assert choice.model == "mini" and choice.details["skipped"][0]["why"] == "no active agent serves the model"


def test_the_model_must_support_what_the_request_asks_for():
    anything = RuleEntry(id=5, name="any", model="codex")
    tab = table([anything], DEFAULT)
    assert pick(tab, signals(asks=["tools"])).model == "codex"
    with pytest.raises(GatewayError) as refused:  # neither codex nor the default's model sees images
        pick(tab, signals(asks=["vision"]))
    assert refused.value.code == "no_auto_route" and "vision" in refused.value.message
    vision = RuleEntry(id=6, name="images", model="big", asks_for=frozenset({"vision"}))
    assert pick(table([vision, anything], DEFAULT), signals(asks=["vision", "tools"])).model == "big"
    assert pick(table([vision, anything], DEFAULT), signals(asks=["tools"])).model == "codex"


def test_a_price_over_the_ceiling_skips_the_rule(monkeypatch):
    per_token = {"big": Decimal(10_000), "mini": Decimal(150)}  # nanodollars: $10 and $0.15 a million

    async def quote_for(route, model, tab=None):
        return Quote(model, Price(model, per_token[model], per_token[model] * 4))

    monkeypatch.setattr(auto_route, "quote_for", quote_for)
    cheap_only = RuleEntry(id=7, name="cheap", model="big", max_input_nanos=Decimal(1000))
    cheap_default = RuleEntry(id=9, name="fallback", model="mini", is_default=True)
    choice = pick(table([cheap_only], cheap_default), signals())
    assert choice.model == "mini" and choice.details["skipped"][0]["why"] == "input price over the ceiling"
    out = RuleEntry(id=8, name="out", model="big", max_output_nanos=Decimal(40_000))
    assert pick(table([out], cheap_default), signals()).model == "big"  # at the ceiling is within it


def test_an_agents_rules_pick_among_its_own_models():
    auto_agent = agent("assistant", ("mini", "big"), capabilities=("tools",), default="auto")
    others = [agent("smart", ("big",), capabilities=("vision",)), auto_agent]
    rules = [RuleEntry(id=1, name="long", model="big", min_prompt_tokens=100)]
    tab = table(rules, RuleEntry(id=2, name="d", model="mini", is_default=True), agents=others, scope="assistant")
    assert scope_of(tab, "assistant") == "assistant" and scope_of(tab, "auto") == "" and scope_of(tab, "big") is None
    choice = pick(tab, signals(tokens=500), scope="assistant")
    assert (choice.model, choice.route.slug) == ("big", "assistant")


def test_names_are_ascii_and_short_in_the_header():
    rule = RuleEntry(id=1, name='Ünïcode "quoted" \\ name\r\nX-Evil: 1' * 3, model="mini")
    reason = pick(table([rule]), signals()).reason
    assert reason.isascii() and "\r" not in reason and "\n" not in reason
    assert reason.startswith('rule=1 "?n?code ?quoted? ? name??X-Evil: 1')


def test_the_ceiling_reads_the_price_a_reservation_would_quote(monkeypatch):
    """The price table as the gateway holds it, and the dearest model the answer may come from: a cheap model
    whose agent falls back to a dear one is as dear as its reservation."""
    from billing import pricing

    def price(model, input_per_million, output_per_million):
        nanos = Decimal(1000)  # nanodollars a token per USD a million tokens
        per_token = (Decimal(input_per_million) * nanos, Decimal(output_per_million) * nanos)
        return pricing.PriceHistory((0.0,), (Price(model, *per_token),))

    monkeypatch.setattr(pricing.prices, "_value", {"mini": price("mini", "0.15", "0.6"), "big": price("big", 5, 15)})
    # A refresher that is never done: none is started for this test's event loop, and the real one comes back after.
    monkeypatch.setattr(pricing.prices, "_refresher", SimpleNamespace(done=lambda: False))
    under_a_dollar = {"max_output_nanos": Decimal(1000)}  # $1 a million output tokens
    rules = [RuleEntry(id=1, name="cheap big", model="big", **under_a_dollar),
             RuleEntry(id=2, name="cheap mini", model="mini", **under_a_dollar)]  # fmt: skip
    choice = pick(table(rules, DEFAULT), signals())
    assert choice.details["rule"] == 2 and choice.details["skipped"][0]["why"] == "output price over the ceiling"
    falls_back = agent("cheap", ("mini",))
    falls_back = AgentRoute(**{**{f: getattr(falls_back, f) for f in AgentRoute.__slots__}, "fallbacks": ("smart",)})
    tab = table(rules, DEFAULT, agents=[falls_back, agent("smart", ("big",))])
    assert pick(tab, signals()).details["rule"] == DEFAULT.id  # mini's reservation is big's price
