"""Money on the console's pages has thousands separators: $100,000.00, not $100000.00."""

from __future__ import annotations

from decimal import Decimal

from billing.models import Budget
from keys.models import Plan


def test_budgets_and_plans_show_large_amounts_with_thousands_separators(compliance, acme):
    budget = Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal("100000"))
    Plan.objects.create(name="Enterprise", slug="enterprise", monthly_budget_usd=Decimal("1234567.5"))
    assert "$100,000.00" in compliance.get("/console/budgets/").content.decode()
    assert "$100,000.00" in compliance.get(f"/console/budgets/{budget.pk}/").content.decode()
    plans = compliance.get("/console/plans/").content.decode()
    assert "$1,234,567.50" in plans and "1234567.5" not in plans
