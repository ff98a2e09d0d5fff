"""Model auto-routing: a request for the model ``auto`` gets the model of the first rule that fits it.

Rules (``routing.AutoRouteRule``) are loaded with the routing table, so every gateway
process has them within its refresh and deciding costs no I/O: each enabled rule, in
position order, is tried against the request's signals (``routing.auto_signals``): its
estimated prompt tokens, complexity score, keywords and the capabilities it asks for.
A rule whose conditions hold is still skipped when no active agent serves its model,
when the key may not use that model (or its agent), when the model's agent does not
list a capability the request asks for (``tools``, ``vision``, ``json`` among the
agent's capabilities), or when the model's price, as a reservation would quote it, is
over the rule's ceiling. The scope's default rule is tried last, under the same checks
but without conditions. Nothing fitting: 403 when only the key's scopes stood in the
way, 400 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from billing.models import NANOS_PER_USD
from gateway_project.errors import GatewayError, bad_request, forbidden
from keys.access import authorize
from routing import auto_signals
from routing.admission import input_estimate
from routing.models import AUTO_MODEL, Agent, AutoRouteRule
from routing.pricing import quote_for

MAX_SKIPPED_NOTED = 20  # skipped rules kept in the audit record
_SAFE = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """An enabled rule as the hot path reads it: keywords normalised, price ceilings in nanodollars a token."""

    id: int
    name: str
    model: str
    is_default: bool = False
    min_prompt_tokens: int | None = None
    max_prompt_tokens: int | None = None
    min_complexity: float | None = None
    max_complexity: float | None = None
    keywords: tuple[str, ...] = ()
    asks_for: frozenset[str] = frozenset()
    max_input_nanos: Decimal | None = None
    max_output_nanos: Decimal | None = None

    def matched_keyword(self, signals: Signals) -> str | None:
        """None when a condition fails; else the keyword that matched ("" for a rule without keywords)."""
        tokens, score = signals.prompt_tokens, signals.complexity
        if self.min_prompt_tokens is not None and tokens < self.min_prompt_tokens:
            return None
        if self.max_prompt_tokens is not None and tokens > self.max_prompt_tokens:
            return None
        if self.min_complexity is not None and score < self.min_complexity:
            return None
        if self.max_complexity is not None and score > self.max_complexity:
            return None
        if self.asks_for and not self.asks_for <= signals.asks_for:
            return None
        if not self.keywords:
            return ""
        return auto_signals.first_keyword(signals.words, self.keywords, signals.vocabulary) or None


@dataclass(frozen=True, slots=True)
class AutoRoutes:
    """Enabled rules by scope ("": requests for the model ``auto``; else an agent's slug), and each scope's default."""

    rules: dict[str, tuple[RuleEntry, ...]]
    defaults: dict[str, RuleEntry]


NO_RULES = AutoRoutes({}, {})


@dataclass(frozen=True, slots=True)
class Signals:
    """What the rules read of one request, computed once."""

    prompt_tokens: int
    complexity: float
    words: str  # ``auto_signals.words_of`` the last user message
    asks_for: frozenset[str]
    vocabulary: frozenset[str] | None = None  # its different words (``auto_signals.read_all``); None: not known


@dataclass(frozen=True, slots=True)
class Choice:
    model: str
    route: object  # the AgentRoute that serves it
    reason: str  # for the X-Gateway-Route-Reason header: short and ASCII
    details: dict  # for the audit record's ``details.auto_route``


def signals_of(payload: dict, text, prompt_tokens: int) -> Signals:
    """The signals of a chat or messages request whose last user message is ``text`` (read once)."""
    score, words, vocabulary = auto_signals.read_all(text)
    return Signals(prompt_tokens, score, words, auto_signals.asked_capabilities(payload), vocabulary)


def scope_of(table, requested: str) -> str | None:
    """The rules a request naming ``requested`` is auto-routed by: "" for ``auto``, an agent's slug for an agent
    whose default model is ``auto`` (named by its slug), None when it is not auto-routed."""
    if requested == AUTO_MODEL:
        return ""
    if requested in table.by_model:
        return None
    route = table.agents.get(requested)
    return requested if route is not None and route.default_model == AUTO_MODEL else None


def _per_token(per_million: Decimal | None) -> Decimal | None:
    return None if per_million is None else per_million * NANOS_PER_USD / 1_000_000


def entry_of(rule: AutoRouteRule) -> RuleEntry:
    return RuleEntry(
        id=rule.pk,
        name=rule.name,
        model=rule.model,
        is_default=rule.is_default,
        min_prompt_tokens=rule.min_prompt_tokens,
        max_prompt_tokens=rule.max_prompt_tokens,
        min_complexity=rule.min_complexity,
        max_complexity=rule.max_complexity,
        keywords=tuple(dict.fromkeys(auto_signals.normal_keyword(k) for k in rule.keywords or ())),
        asks_for=frozenset(rule.asks_for or ()),
        max_input_nanos=_per_token(rule.max_input_per_million),
        max_output_nanos=_per_token(rule.max_output_per_million),
    )


def load_auto_routes() -> AutoRoutes:
    """The enabled rules, as the routing table keeps them (read when it loads)."""
    rules: dict[str, list[RuleEntry]] = {}
    defaults: dict[str, RuleEntry] = {}
    for rule in AutoRouteRule.objects.filter(enabled=True).select_related("agent").order_by("position", "pk"):
        scope = rule.agent.slug if rule.agent_id else ""
        if rule.is_default:
            defaults.setdefault(scope, entry_of(rule))
        else:
            rules.setdefault(scope, []).append(entry_of(rule))
    return AutoRoutes({scope: tuple(entries) for scope, entries in rules.items()}, defaults)


def ascii_safe(text: str, limit: int = 40) -> str:
    """``text`` for a header: printable ASCII without quotes or backslashes (others become "?"), at most ``limit``."""
    return "".join(char if ord(char) in _SAFE else "?" for char in text[:limit])


def _serving(table, scope: str, model: str):
    """The agent that answers ``model`` in ``scope``, or None when no active agent does."""
    if not scope:
        return table.by_model.get(model)
    route = table.agents.get(scope)
    return route if route is not None and route.served_models and model in route.served_models else None


async def _why_not(table, key, scope: str, rule: RuleEntry, signals: Signals) -> tuple[object, str]:
    """The agent serving the rule's model, and "" when the rule may pick it, else why not."""
    route = _serving(table, scope, rule.model)
    if route is None:
        return None, "no active agent serves the model"
    if not key.may_call(route) or not key.may_use_model(rule.model):
        return route, "the key may not use the model"
    missing = [name for name in sorted(signals.asks_for) if name not in route.capabilities]
    if missing:
        return route, f"the model's agent lacks {','.join(missing)}"
    if rule.max_input_nanos is not None or rule.max_output_nanos is not None:
        price = (await quote_for(route, rule.model, table)).price
        if rule.max_input_nanos is not None and price.input_nanos_per_token > rule.max_input_nanos:
            return route, "input price over the ceiling"
        if rule.max_output_nanos is not None and price.output_nanos_per_token > rule.max_output_nanos:
            return route, "output price over the ceiling"
    return route, ""


def reachable(table, key, scope: str) -> bool:
    """Whether some rule of ``scope`` (its conditions aside) picks a model an active agent serves and the key may
    use: what ``GET /v1/models`` and content routing ask before offering ``auto`` or an agent that auto-routes."""
    routes: AutoRoutes = table.auto or NO_RULES
    default = routes.defaults.get(scope)
    for rule in (*routes.rules.get(scope, ()), *((default,) if default is not None else ())):
        route = _serving(table, scope, rule.model)
        if route is not None and key.may_call(route) and key.may_use_model(rule.model):
            return True
    return False


async def choose(table, key, signals: Signals, scope: str) -> Choice:
    """The model for a request with ``signals`` in ``scope``, or the refusal that says why there is none."""
    routes: AutoRoutes = table.auto or NO_RULES
    candidates = routes.rules.get(scope, ())
    default = routes.defaults.get(scope)
    skipped: list[dict] = []
    for rule in (*candidates, default) if default is not None else candidates:
        keyword = "" if rule.is_default else rule.matched_keyword(signals)
        if keyword is None:
            continue
        route, why = await _why_not(table, key, scope, rule, signals)
        if why:
            skipped.append({"rule": rule.id, "model": rule.model, "why": why})
            continue
        return _chosen(rule, route, keyword, signals, scope, skipped)
    raise _nothing_fits(scope, signals, skipped)


def _chosen(rule: RuleEntry, route, keyword: str, signals: Signals, scope: str, skipped: list[dict]) -> Choice:
    label = "default" if rule.is_default else f"rule={rule.id}"
    reason = f'{label} "{ascii_safe(rule.name)}" complexity={signals.complexity:.2f} tokens={signals.prompt_tokens}'
    if keyword:
        reason += f' keyword="{ascii_safe(keyword)}"'
    details = {
        "rule": rule.id, "name": rule.name, "default": rule.is_default, "model": rule.model, "agent": route.slug,
        "reason": reason, "score": signals.complexity, "prompt_tokens": signals.prompt_tokens,
        "asks_for": sorted(signals.asks_for), "scope": scope or AUTO_MODEL,
    }  # fmt: skip
    if keyword:
        details["keyword"] = keyword
    if skipped:
        details["skipped"] = skipped[:MAX_SKIPPED_NOTED]
    return Choice(rule.model, route, reason, details)


def _nothing_fits(scope: str, signals: Signals, skipped: list[dict]) -> GatewayError:
    where = f"the agent '{scope}'" if scope else f"the model '{AUTO_MODEL}'"
    if skipped and all(entry["why"] == "the key may not use the model" for entry in skipped):
        models = ", ".join(dict.fromkeys(entry["model"] for entry in skipped))
        return forbidden(
            f"Auto-routing for {where} chose only models this API key may not use ({models}).", "model_not_allowed"
        )
    why = "; ".join(f"rule {entry['rule']} ({entry['model']}): {entry['why']}" for entry in skipped[:5])
    asked = f" The request asks for {', '.join(sorted(signals.asks_for))}." if signals.asks_for else ""
    message = f"No auto-routing rule for {where} fits this request, and there is no usable default model.{asked}"
    return GatewayError(400, "invalid_request_error", "no_auto_route", message + (f" Skipped: {why}." if why else ""))


async def apply(ex, table, payload: dict, requested: str, text_of, *, header=True) -> tuple[dict, Choice | None]:
    """``payload`` with the model auto-routing chose, when ``requested`` (a model or an agent's slug) is auto-routed,
    its rules reading ``text_of(payload)`` (only then), and the choice, noted in the audit record's
    ``details.auto_route`` and, with ``header``, the response's ``X-Gateway-Route-Reason``; else ``payload`` as it
    was and None."""
    scope = scope_of(table, requested)
    if scope is None:
        return payload, None
    ex.agent, ex.model = scope, AUTO_MODEL  # what a refusal's audit record shows was asked for
    if scope:  # the agent asked for, before any of its models: a key outside its scope hears that
        authorize(ex.key, table.agents[scope])
    signals = signals_of(payload, text_of(payload), input_estimate(ex.body))
    choice = await choose(table, ex.key, signals, scope)
    ex.details["auto_route"] = choice.details
    if header:
        ex.extra_headers.append((b"x-gateway-route-reason", choice.reason.encode()))
    return {**payload, "model": choice.model}, choice


def invoke_input(payload: dict):
    """What an invoke's rules read: its input."""
    return payload["input"]


async def apply_to_invoke(ex, table, payload: dict) -> dict:
    """An invoke ``payload`` naming the model ``auto`` with the model chosen: by the rules of the agent it names
    (whose default model must then be ``auto``), else by those of ``auto``."""
    agent = payload.get("agent")
    if agent:
        table.agent(agent)  # 404 for an agent that does not exist
    payload, choice = await apply(ex, table, payload, agent or AUTO_MODEL, invoke_input, header=False)
    if choice is None:
        raise bad_request(
            f"The agent '{agent}' does not auto-route (its default model is not '{AUTO_MODEL}'): name a model it "
            f"serves, or leave out the agent to use the rules of '{AUTO_MODEL}'.",
            "no_auto_route",
        )
    return payload


# --- validation of a rule as saved (the console's form and the API's serializer both call it) ---------------


def rule_problems(rule: AutoRouteRule) -> dict[str, str]:
    """Field -> what is wrong with ``rule`` beyond its fields' own checks; empty when it may be saved."""
    problems: dict[str, str] = {}
    for low, high in (("min_prompt_tokens", "max_prompt_tokens"), ("min_complexity", "max_complexity")):
        lower, upper = getattr(rule, low), getattr(rule, high)
        if lower is not None and upper is not None and lower > upper:
            problems[high] = f"Must be at least the minimum ({lower})."
    if rule.model == AUTO_MODEL:
        problems["model"] = f"A rule picks a real model, not “{AUTO_MODEL}”."
    elif rule.model:
        problems.update(_model_problems(rule))
    if rule.is_default:
        conditions = [name for name in AutoRouteRule.CONDITIONS if getattr(rule, name) not in (None, [], "")]
        if conditions:
            problems["is_default"] = "The default rule has no conditions: clear " + ", ".join(conditions) + "."
        others = AutoRouteRule.objects.filter(is_default=True, agent=rule.agent).exclude(pk=rule.pk)
        if others.exists():
            problems["is_default"] = f"“{others.first().name}” is the default already; one default per agent."
    if rule.agent_id and rule.agent.default_model != AUTO_MODEL:
        problems["agent"] = f"The agent's default model must be “{AUTO_MODEL}” for its requests to be auto-routed."
    return problems


def _model_problems(rule: AutoRouteRule) -> dict[str, str]:
    if rule.agent_id:
        if rule.model not in (rule.agent.served_models or ()):
            return {"model": f"The agent '{rule.agent.slug}' does not list this model among its served models."}
        return {}
    if not any(rule.model in (agent.served_models or ()) for agent in Agent.objects.only("served_models")):
        return {"model": "No agent lists this model among its served models."}
    return {}


def unserved_models(rules) -> set[str]:
    """The models of ``rules`` that no active agent serves (for their scope): the gateway skips those rules."""
    active = list(Agent.objects.filter(is_active=True).only("slug", "served_models"))
    served = {model for agent in active for model in agent.served_models or ()}
    by_slug = {agent.slug: set(agent.served_models or ()) for agent in active}
    return {
        rule.model
        for rule in rules
        if rule.model not in (by_slug.get(rule.agent.slug, set()) if rule.agent_id else served)
    }


def reordered(rule: AutoRouteRule, step: int) -> list[tuple[AutoRouteRule, int]]:
    """The rules of ``rule``'s scope whose position changes when it moves one place up (-1) or down (+1), with
    their new positions (10, 20, …, so that equal positions still move); empty when it is already first or last."""
    siblings = list(AutoRouteRule.objects.filter(agent=rule.agent_id, is_default=False).order_by("position", "pk"))
    index = next(i for i, sibling in enumerate(siblings) if sibling.pk == rule.pk)
    other = index + step
    if not 0 <= other < len(siblings):
        return []
    siblings[index], siblings[other] = siblings[other], siblings[index]
    return [(sibling, n * 10) for n, sibling in enumerate(siblings, start=1) if sibling.position != n * 10]
