"""Usage rows as the gateway's writer leaves them, for the rollup and report tests."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from billing.models import RollupDay, UsageRecord, UsageRollup
from keys.models import ApiKey, Client, CostCenter
from keys.services import issue_key

_ids = itertools.count(1)


def add_usage(
    at: datetime,
    key: ApiKey | None = None,
    *,
    agent: str = "research",
    model: str = "gpt-4o",
    input_tokens: int = 100,
    output_tokens: int = 50,
    cost: str = "0.001",
    default_priced: bool = False,
    cost_center: CostCenter | None = None,
) -> UsageRecord:
    """One metered request of ``key`` made at ``at``, attributed to its client's cost center unless told."""
    client = key.client if key else None
    return UsageRecord.objects.create(
        request_id=f"r{next(_ids)}-{uuid.uuid4().hex[:8]}",
        created_at=at,
        client=client,
        api_key=key,
        cost_center=cost_center or (client.cost_center if client else None),
        agent=agent,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=Decimal(cost),
        default_priced=default_priced,
    )


def new_key(slug: str | None = None, cost_center: CostCenter | None = None, name: str = "") -> ApiKey:
    """A key of a new client (``slug`` or a random one) in ``cost_center``."""
    slug = slug or f"c-{uuid.uuid4().hex[:10]}"
    client = Client.objects.create(name=name or slug.title(), slug=slug, cost_center=cost_center)
    key, _raw = issue_key(client)
    return key


def cost_center(slug: str, name: str = "") -> CostCenter:
    return CostCenter.objects.create(slug=slug, name=name or slug.title())


def forget_all_usage() -> None:
    """Start from no usage at all, inside the test's transaction (rolled back after it).

    Tests of live gateways commit their usage for every later test to see; reports
    count everything, so tests that check totals clear the slate first.
    """
    UsageRecord.objects.all().delete()
    UsageRollup.objects.all().delete()
    RollupDay.objects.all().delete()


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def acme_and_globex(hostile_model: str) -> dict[str, ApiKey]:
    """Acme (research lab) and Globex (sales) over the last days; one model name a spreadsheet would run."""
    forget_all_usage()
    research, sales = cost_center("lab", "Research lab"), cost_center("sales", "Sales")
    acme, globex = new_key("acme", research, "Acme"), new_key("globex", sales, "Globex")
    add_usage(utc(2026, 11, 30, 10), acme, agent="research", model="gpt-4o", cost="1.25", input_tokens=100)
    add_usage(utc(2026, 12, 1, 10), acme, agent="writing", model="gpt-4o-mini", cost="0.75", input_tokens=10)
    add_usage(utc(2026, 12, 1, 11), globex, agent="code", model=hostile_model, cost="2.5", default_priced=True)
    add_usage(utc(2026, 12, 2, 9), globex, agent="code", model="gpt-4o", cost="0.5")
    return {"acme": acme, "globex": globex}
