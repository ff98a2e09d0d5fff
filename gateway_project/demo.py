"""Demo data: agents on the mock upstream, plans, cost centers, a demo client under budgets, an admin login."""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from billing.models import Budget
from billing.services import set_client_monthly_budget
from keys.models import CostCenter, Plan
from keys.services import client_for_slug, issue_key
from routing.models import Agent, CapabilityKeyword

DEMO_AGENTS = [
    # slug, name, kind, served models, default model, capabilities, cost center
    (
        "research",
        "Research agent",
        "agent",
        [],
        "gpt-4o-mini",
        ["research"],
        "research",
    ),
    (
        "writing",
        "Writing agent",
        "agent",
        [],
        "gpt-4o-mini",
        ["writing"],
        "marketing",
    ),
    (
        "code",
        "Code agent",
        "agent",
        [],
        "gpt-4o",
        ["code"],
        "engineering",
    ),
    (
        "openai",
        "OpenAI (mock)",
        "openai",
        ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"],
        "gpt-4o-mini",
        [],
        "platform",
    ),
    ("anthropic", "Anthropic (mock)", "anthropic", ["claude-sonnet", "claude-haiku"], "claude-haiku", [], "platform"),
]


# Content routing's keyword map: a word in the input -> the capability it asks for (a capability's own name
# counts too). The demo agents have one capability each: research, writing, code.
DEMO_KEYWORDS = {
    "research": ["find", "search", "investigate", "compare", "lookup", "facts", "sources", "history"],
    "writing": ["write", "draft", "edit", "rewrite", "summarize", "email", "essay", "letter", "proofread"],
    "code": ["debug", "implement", "refactor", "bug", "function", "test", "python", "compile", "stacktrace"],
}


def seed_keywords() -> None:
    """Create the demo keyword map; keywords already mapped (perhaps edited in the console) are left alone."""
    for capability, words in DEMO_KEYWORDS.items():
        for word in words:
            CapabilityKeyword.objects.get_or_create(keyword=word, defaults={"capability": capability})


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
    seed_keywords()
    return agents


def seed_admin(username: str = "admin") -> str:
    """Make (or reset) the demo superuser and return its new password."""
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(username=username, defaults={"email": "admin@example.com"})
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password


DEMO_PLANS = [
    # slug, name, rpm, rpd, tpm, max concurrent, monthly budget per key
    ("free", "Free", 20, 1_000, 20_000, 2, Decimal("5.00")),
    ("pro", "Pro", 300, 50_000, 500_000, 20, Decimal("200.00")),
    ("enterprise", "Enterprise", 3_000, 0, 5_000_000, 200, None),
]


def seed_plans() -> list[Plan]:
    plans = []
    for slug, name, rpm, rpd, tpm, concurrent, budget in DEMO_PLANS:
        plan, _ = Plan.objects.update_or_create(
            slug=slug,
            defaults=dict(
                name=name, requests_per_minute=rpm, requests_per_day=rpd, tokens_per_minute=tpm,
                max_concurrent=concurrent, monthly_budget_usd=budget,
            ),
        )  # fmt: skip
        plans.append(plan)
    return plans


@transaction.atomic
def seed_demo_client() -> str:
    """A demo client in the Research cost center under budgets at every scope; returns a fresh raw key.

    The organization's and the cost center's budgets are soft (they alert, never refuse),
    the client's $100 a month is hard.
    """
    seed_plans()
    research, _ = CostCenter.objects.get_or_create(slug="research", defaults={"name": "Research", "code": "CC-4100"})
    CostCenter.objects.get_or_create(slug="product", defaults={"name": "Product", "code": "CC-4200"})
    client, _ = client_for_slug("demo", name="Demo client")
    if client.cost_center_id is None:
        client.cost_center = research
        client.save(update_fields=["cost_center"])
    set_client_monthly_budget(client, Decimal("100.00"))
    Budget.objects.get_or_create(
        scope=Budget.ORGANIZATION, period=Budget.MONTHLY, name="Company AI spend",
        defaults={"limit_usd": Decimal("5000.00"), "mode": Budget.SOFT},
    )  # fmt: skip
    Budget.objects.get_or_create(
        scope=Budget.COST_CENTER, cost_center=research, period=Budget.MONTHLY,
        defaults={"limit_usd": Decimal("1000.00"), "mode": Budget.SOFT, "alert_percent": 75},
    )  # fmt: skip
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
