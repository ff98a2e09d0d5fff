"""Budget changes shared by the console, the API, the CLI and the demo."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from billing.models import Budget, BudgetAlert
from keys.models import ApiKey, Client


@transaction.atomic
def set_client_monthly_budget(client: Client, limit_usd: Decimal) -> Budget:
    """Give ``client`` a hard monthly budget of ``limit_usd``, or change the one it has."""
    budget, _ = Budget.objects.update_or_create(
        scope=Budget.CLIENT, client=client, period=Budget.MONTHLY, mode=Budget.HARD, defaults={"limit_usd": limit_usd}
    )
    return budget


def give_plan_budget(key: ApiKey) -> Budget | None:
    """A new key on a plan with a budget gets its own hard monthly budget of that amount."""
    plan = key.plan
    if plan is None or plan.monthly_budget_usd is None:
        return None
    return Budget.objects.create(
        scope=Budget.KEY, api_key=key, period=Budget.MONTHLY, mode=Budget.HARD, limit_usd=plan.monthly_budget_usd,
        name=f"{plan.name} plan",
    )  # fmt: skip


def carry_budgets_over(old: ApiKey, successor: ApiKey) -> list[Budget]:
    """A rotated key's successor inherits copies of its key budgets (a new key starts a new count)."""
    copies = []
    for budget in Budget.objects.filter(scope=Budget.KEY, api_key=old, is_active=True):
        budget.pk = None
        budget.api_key = successor
        budget.save()
        copies.append(budget)
    return copies


def acknowledge_alert(alert: BudgetAlert) -> BudgetAlert:
    """Mark ``alert`` as seen by a person; acknowledging it again keeps the first time."""
    BudgetAlert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(acknowledged_at=timezone.now())
    alert.refresh_from_db(fields=["acknowledged_at"])
    return alert
