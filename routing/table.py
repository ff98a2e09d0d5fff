"""The routing table: active agents in memory, and how a request picks one."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings

from gateway_project import outbound
from gateway_project.credentials import same_origin
from gateway_project.errors import not_found
from gateway_project.snapshots import RefreshingTable
from routing import content_routing
from routing.cache_policy import CachePolicy, cache_policy_of
from routing.deprecation import deprecation_headers
from routing.models import DEFAULT_RETRY_STATUSES, Agent, CapabilityKeyword, PathRoute, Target
from routing.path_routes import PathRouteEntry, entry_of

if TYPE_CHECKING:
    from routing.auto_route import AutoRoutes

log = logging.getLogger("gateway.routing")


@dataclass(frozen=True, slots=True)
class TargetRoute:
    """One upstream instance of an agent (``routing.Target``)."""

    name: str
    base_url: str
    weight: int = 100
    max_concurrent: int = 0  # 0: no limit
    # The credential this target is sent (``target_credential``), decrypted once when the table loads.
    upstream_api_key: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class AgentRoute:
    slug: str
    name: str
    kind: str
    base_url: str
    upstream_api_key: str = field(repr=False)  # decrypted once when the table loads, never per request
    served_models: tuple[str, ...]
    default_model: str
    capabilities: tuple[str, ...]
    timeout: float
    cost_center: str
    default_max_output_tokens: int | None = None
    max_concurrent: int = 0  # the agent's capacity, shared by all clients; 0: no limit
    requests_per_minute: int = 0
    # Enabled targets; empty means the agent's own base_url is its one target.
    targets: tuple[TargetRoute, ...] = ()
    strategy: str = "weighted"
    max_retries: int = 2
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset(DEFAULT_RETRY_STATUSES))
    fallbacks: tuple[str, ...] = ()  # agent slugs tried in order when this one fails
    breaker_failures: int = 5
    breaker_window: float = 60.0
    breaker_cooldown: float = 30.0
    deprecated: bool = False
    sunset_at: datetime | None = None
    dearer_models: tuple[str, ...] = ()  # models its upstream answered with above what was reserved
    unmetered_pass_through: bool = False
    required_role: str = ""  # the AgentRole slug a key must hold to call it; "": none
    cache: CachePolicy | None = None  # None: its answers are not cached

    def serves(self, model: str) -> bool:
        """Whether the agent may be asked for ``model``: one it serves, its default, or any when it lists none."""
        return not self.served_models or model in self.served_models or model == self.default_model

    def answering_model(self, requested: str) -> str:
        """The model a request naming ``requested`` (a model, or the agent's slug for its default) is answered by:
        what the key's model scopes are checked against ("" when the upstream chooses)."""
        return self.default_model if requested == self.slug else requested

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    agents: dict[str, AgentRoute]
    by_model: dict[str, AgentRoute]
    paths: dict[str, PathRouteEntry] = field(default_factory=dict)  # active path routes by prefix
    keywords: dict[str, str] = field(default_factory=dict)  # content routing: keyword -> capability
    deprecations: dict[str, tuple] = field(default_factory=dict)  # agent slug -> Deprecation/Sunset headers
    auto: AutoRoutes | None = None  # model auto-routing's enabled rules (``routing.auto_route``)

    def agent(self, slug: str) -> AgentRoute:
        route = self.agents.get(slug)
        if route is None:
            raise not_found(f"There is no agent named '{slug}'.", "agent_not_found")
        return route

    def for_model(self, model: str) -> AgentRoute:
        """The agent serving ``model``; an agent's own slug works as a model name too."""
        route = self.by_model.get(model) or self.agents.get(model)
        if route is None:
            raise not_found(f"The model '{model}' does not exist or no agent serves it.", "model_not_found")
        return route

    async def by_content(self, text: str, allowed) -> tuple[AgentRoute, str]:
        """The allowed agent for ``text`` by the keyword map and the agents' loads, and why (``content_routing``)."""
        return await content_routing.choose(self, text, allowed)


def target_credential(target: Target, agent: Agent) -> str:
    """What a target is sent: its own credential, else the agent's when it is on the agent's scheme, host and port
    (the agent's credential was set for that origin and goes nowhere else)."""
    if target.upstream_api_key:
        return target.upstream_api_key
    return agent.upstream_api_key if same_origin(target.url, agent.upstream_url) else ""


def route_of(agent: Agent) -> AgentRoute:
    return AgentRoute(
        slug=agent.slug,
        name=agent.name,
        kind=agent.kind,
        base_url=agent.upstream_url.rstrip("/"),
        upstream_api_key=agent.upstream_api_key,
        served_models=tuple(agent.served_models or ()),
        default_model=agent.default_model,
        capabilities=tuple(word.lower() for word in agent.capabilities or ()),
        # Capped (an agent saved before the cap, or the setting lowered since): slots are counted no longer.
        timeout=min(
            agent.timeout_seconds or settings.GATEWAY["UPSTREAM_TIMEOUT"], settings.GATEWAY["MAX_ANSWER_SECONDS"]
        ),
        cost_center=agent.cost_center,
        default_max_output_tokens=agent.default_max_output_tokens,
        max_concurrent=agent.max_concurrent,
        requests_per_minute=agent.requests_per_minute,
        targets=tuple(
            TargetRoute(
                target.name,
                target.url.rstrip("/"),
                target.weight,
                target.max_concurrent,
                target_credential(target, agent),
            )
            for target in agent.targets.all()
            if target.enabled
        ),
        strategy=agent.strategy,
        max_retries=agent.max_retries,
        retry_statuses=frozenset(agent.retry_statuses or ()),
        fallbacks=tuple(agent.fallbacks or ()),
        breaker_failures=agent.breaker_failures,
        breaker_window=agent.breaker_window_seconds,
        breaker_cooldown=agent.breaker_cooldown_seconds,
        deprecated=agent.deprecated,
        sunset_at=agent.sunset_at,
        dearer_models=tuple(agent.dearer_models or ()),
        cache=cache_policy_of(agent),
        unmetered_pass_through=agent.unmetered_pass_through,
        required_role=agent.required_role.slug if agent.required_role_id else "",
    )


_reported: set[tuple[str, str]] = set()


def refusal_of(agent: Agent) -> str:
    """Why the gateway will not call ``agent`` (its URL or an enabled target's fails the outbound policy), or "".

    Checked without DNS, so loading stays cheap; names were resolved and checked when they were saved.
    Rows saved before the policy, or left behind when the allow-list shrank, are caught here.
    The console and the API show the same answer (``not_served_reason``), computed in their own process.
    """
    urls = [(agent.upstream_url, "Its upstream URL")]
    urls += [(target.url, f"The URL of its target '{target.name}'") for target in agent.targets.all() if target.enabled]
    for url, what in urls:
        why = outbound.upstream_refusal(url, what)
        if why:
            return why
    return ""


def not_served_reason(agent: Agent) -> str:
    """Why the routing table leaves ``agent`` out (inactive, or refused as ``usable`` refuses it), or "" when the
    gateway serves it. The console is another process than the gateway: it applies the same check, not a report."""
    if not agent.is_active:
        return "The agent is inactive."
    return refusal_of(agent)


def usable(agents) -> list[Agent]:
    """The agents the gateway may call; each refused one is logged once per process and reason."""
    kept = []
    for agent in agents:
        why = refusal_of(agent)
        if not why:
            kept.append(agent)
        elif (agent.slug, why) not in _reported:
            _reported.add((agent.slug, why))
            log.error("agent %s is not loaded into the routing table: %s", agent.slug, why)
    return kept


def load_table() -> RoutingTable:
    active = usable(Agent.objects.filter(is_active=True).select_related("required_role").prefetch_related("targets"))
    agents = {agent.slug: route_of(agent) for agent in active}
    by_model = {}
    for route in agents.values():
        for model in route.served_models:
            by_model.setdefault(model, route)
    routes = PathRoute.objects.filter(is_active=True).select_related("agent")
    paths = {route.prefix: entry_of(route) for route in routes}
    pairs = CapabilityKeyword.objects.values_list("keyword", "capability")
    keywords = {word.lower(): capability.lower() for word, capability in pairs}
    deprecations = {
        agent.slug: deprecation_headers(True, agent.updated_at, agent.sunset_at) for agent in active if agent.deprecated
    }
    from routing.auto_route import load_auto_routes  # it prices through ``routing.pricing``, which imports this

    return RoutingTable(agents, by_model, paths, keywords, deprecations, load_auto_routes())


routing_table = RefreshingTable("routing", load_table, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"])
