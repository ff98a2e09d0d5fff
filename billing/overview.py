"""What the console shows about budgets and their alerts: which budgets apply where, and each one's bar."""

from __future__ import annotations

from django.db.models import Q

from billing.models import Budget, BudgetAlert
from billing.status import budget_status
from keys.models import Client

TARGETS = ("cost_center", "client", "api_key", "api_key__client")


def bar(budget: Budget) -> dict:
    """``budget_status`` plus how its bar looks: red from the budget's own alert share on, full once exhausted."""
    status = budget_status(budget)
    status["bar_width"] = 100 if status["exhausted"] else status["bar_width"]
    status["red"] = status["alerting"] or status["exhausted"]
    return status


def bars(budgets) -> list[dict]:
    return [bar(budget) for budget in budgets]


def with_targets(budgets):
    return budgets.select_related(*TARGETS)


def search(budgets, text: str):
    """Budgets whose name or target (cost center, client, key or the key's client) mentions ``text``."""
    return budgets.filter(
        Q(name__icontains=text)
        | Q(cost_center__name__icontains=text)
        | Q(cost_center__slug__icontains=text)
        | Q(client__name__icontains=text)
        | Q(client__slug__icontains=text)
        | Q(api_key__name__icontains=text)
        | Q(api_key__prefix__icontains=text)
        | Q(api_key__client__name__icontains=text)
    )


def applying_to_client(client: Client):
    """Every budget a request of ``client`` must fit: the organization's, its cost center's, its own, its keys'."""
    applies = Q(scope=Budget.ORGANIZATION) | Q(scope=Budget.CLIENT, client=client)
    applies |= Q(scope=Budget.KEY, api_key__client=client)
    if client.cost_center_id is not None:
        applies |= Q(scope=Budget.COST_CENTER, cost_center_id=client.cost_center_id)
    return widest_first(with_targets(Budget.objects.filter(applies)))


def widest_first(budgets) -> list[Budget]:
    """Organization, cost center, client, then key budgets (the order a request is checked in)."""
    rank = {scope: i for i, (scope, _) in enumerate(Budget.SCOPES)}
    return sorted(budgets, key=lambda b: (rank[b.scope], b.pk))


def open_alert_count() -> int:
    """Alerts nobody has acknowledged yet, for the dashboard's banner."""
    return BudgetAlert.objects.filter(acknowledged_at__isnull=True).count()
