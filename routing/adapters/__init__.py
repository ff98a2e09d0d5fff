"""One adapter per upstream kind (``base.Adapter``): the only code that knows how a kind is spoken to."""

from __future__ import annotations

from routing.adapters.agent import AgentServiceAdapter
from routing.adapters.anthropic import AnthropicAdapter
from routing.adapters.base import Adapter, Plan
from routing.adapters.openai import OpenAIAdapter
from routing.table import AgentRoute

ADAPTERS: dict[str, Adapter] = {
    adapter.kind: adapter for adapter in (AgentServiceAdapter(), OpenAIAdapter(), AnthropicAdapter())
}


def adapter_for(route: AgentRoute) -> Adapter:
    return ADAPTERS.get(route.kind) or ADAPTERS["agent"]


__all__ = ["ADAPTERS", "Adapter", "Plan", "adapter_for"]
