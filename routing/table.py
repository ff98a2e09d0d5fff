"""The routing table: active agents in memory, and how a request picks one."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings

from gateway_project.errors import forbidden, not_found
from gateway_project.snapshots import RefreshingTable
from routing.models import Agent

_WORD = re.compile(r"[a-z][a-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class AgentRoute:
    slug: str
    name: str
    kind: str
    base_url: str
    upstream_api_key: str
    served_models: tuple[str, ...]
    default_model: str
    capabilities: tuple[str, ...]
    timeout: float
    cost_center: str
    default_max_output_tokens: int | None = None
    max_concurrent: int = 0  # the agent's capacity, shared by all clients; 0: no limit
    requests_per_minute: int = 0

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"


@dataclass(frozen=True, slots=True)
class RoutingTable:
    agents: dict[str, AgentRoute]
    by_model: dict[str, AgentRoute]

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

    def by_content(self, text: str, allowed) -> tuple[AgentRoute, str]:
        """Pick the allowed agent whose capability keywords the text mentions most.

        Returns the agent and the reason, for the response and the audit log.
        """
        candidates = [route for route in self.agents.values() if allowed(route.slug)]
        if not candidates:
            raise forbidden("This API key may not use any agent.", "agent_not_allowed")
        words = set(_WORD.findall(text.lower()))
        best, best_hits = None, 0
        for route in candidates:
            hits = sum(1 for keyword in route.capabilities if keyword in words)
            if hits > best_hits:
                best, best_hits = route, hits
        if best is not None:
            return best, "capability"
        default = self.agents.get(settings.GATEWAY["DEFAULT_AGENT"])
        if default is not None and allowed(default.slug):
            return default, "default"
        return candidates[0], "default"


def _route(agent: Agent) -> AgentRoute:
    return AgentRoute(
        slug=agent.slug,
        name=agent.name,
        kind=agent.kind,
        base_url=agent.upstream_url.rstrip("/"),
        upstream_api_key=agent.upstream_api_key,
        served_models=tuple(agent.served_models or ()),
        default_model=agent.default_model,
        capabilities=tuple(word.lower() for word in agent.capabilities or ()),
        timeout=agent.timeout_seconds or settings.GATEWAY["UPSTREAM_TIMEOUT"],
        cost_center=agent.cost_center,
        default_max_output_tokens=agent.default_max_output_tokens,
        max_concurrent=agent.max_concurrent,
        requests_per_minute=agent.requests_per_minute,
    )


def load_table() -> RoutingTable:
    agents = {agent.slug: _route(agent) for agent in Agent.objects.filter(is_active=True)}
    by_model = {}
    for route in agents.values():
        for model in route.served_models:
            by_model.setdefault(model, route)
    return RoutingTable(agents, by_model)


routing_table = RefreshingTable("routing", load_table, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"])
