"""What the console and the API show and do about an agent's targets: live health, and closing circuits by hand."""

from __future__ import annotations

from routing import balance
from routing.models import Agent
from routing.table import route_of


def agent_health(agent: Agent) -> dict:
    """Each enabled target's circuit, in flight, recent latency and error rate, read live from the hot state."""
    route = route_of(agent)
    return {
        "agent": agent.slug,
        "strategy": agent.strategy,
        "fallbacks": list(agent.fallbacks or []),
        "targets": balance.health(route),
    }


def reset_circuits(agent: Agent, target: str | None = None) -> list[str]:
    """Close the circuits of the agent's targets (or of the one named); return the names closed."""
    route = route_of(agent)
    names = [t.name for t in balance.targets_of(route) if target in (None, "", t.name)]
    for name in names:
        balance.reset(route, name)
    return names
