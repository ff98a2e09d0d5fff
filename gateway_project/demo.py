"""Demo data: agents on the mock upstream, a demo client with a budget, an admin login."""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from billing.services import set_client_monthly_budget
from keys.services import client_for_slug, issue_key
from routing.models import Agent

DEMO_AGENTS = [
    # slug, name, kind, served models, default model, capabilities, cost center
    (
        "research",
        "Research agent",
        "agent",
        [],
        "gpt-4o-mini",
        ["research", "find", "search", "investigate", "compare", "lookup"],
        "research",
    ),
    (
        "writing",
        "Writing agent",
        "agent",
        [],
        "gpt-4o-mini",
        ["write", "draft", "edit", "rewrite", "summarize", "email", "essay"],
        "marketing",
    ),
    (
        "code",
        "Code agent",
        "agent",
        [],
        "gpt-4o",
        ["code", "debug", "implement", "refactor", "bug", "function", "test"],
        "engineering",
    ),
    ("openai", "OpenAI (mock)", "openai", ["gpt-4o", "gpt-4o-mini"], "gpt-4o-mini", [], "platform"),
    ("anthropic", "Anthropic (mock)", "anthropic", ["claude-sonnet", "claude-haiku"], "claude-haiku", [], "platform"),
]


@transaction.atomic
def seed_agents(upstream_url: str) -> list[Agent]:
    """Create or update the demo agents so they point at ``upstream_url``."""
    agents = []
    for slug, name, kind, served, default, capabilities, cost_center in DEMO_AGENTS:
        agent, _ = Agent.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "kind": kind,
                "upstream_url": upstream_url,
                "served_models": served,
                "default_model": default,
                "capabilities": capabilities,
                "cost_center": cost_center,
                "timeout_seconds": 30,
                "is_active": True,
            },
        )
        agents.append(agent)
    return agents


def seed_admin(username: str = "admin") -> str:
    """Make (or reset) the demo superuser and return its new password."""
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": "admin@example.com"})
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password


@transaction.atomic
def seed_demo_client() -> str:
    """A demo client with a $100 monthly budget and a fresh key for every agent; returns the raw key."""
    client, _ = client_for_slug("demo", name="Demo client")
    set_client_monthly_budget(client, Decimal("100.00"))
    _, raw = issue_key(
        client,
        name="demo key",
        allowed_agents=["*"],
        allowed_models=["*"],
        requests_per_minute=120,
        tokens_per_minute=200_000,
        max_concurrent=20,
    )
    return raw
