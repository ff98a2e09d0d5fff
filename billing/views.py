"""Console pages for budgets (one per client) and model prices: thin views over the billing models."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.db import transaction
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from audit.trail import record_create, record_delete, record_update, snapshot
from billing.budgets import spent_in_window
from billing.forms import BudgetForm, ModelPriceForm
from billing.models import NANOS_PER_USD, Budget, ModelPrice
from billing.periods import MONTHLY, period_of
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin, TrailedEditView, sorted_page
from keys.models import Client


def _spent_usd(client_id: int) -> Decimal:
    """What the client spent this month, as the gateway's budget check counts it."""
    return Decimal(spent_in_window(Budget.CLIENT, client_id, period_of(MONTHLY))) / NANOS_PER_USD


def budget_row(client: Client) -> dict:
    """A client's limit, spend this month, and the bar: its width (capped at 100%) and whether it is red.

    A limit of zero is spent already (the gateway refuses every request), so it shows full and red.
    """
    budget = client.budgets.filter(scope=Budget.CLIENT).first()
    spent = _spent_usd(client.pk)
    row = {
        "client": client,
        "budget": budget,
        "spent": spent,
        "percent": None,
        "width": 0,
        "over": False,
        "exhausted": False,
    }
    if budget is not None:
        limit = budget.limit_usd
        share = spent / limit if limit > 0 else Decimal(1)
        row.update(
            percent=int(share * 100),
            width=min(100, int(share * 100)),
            over=share >= Decimal("0.8"),
            exhausted=spent >= limit,
        )
    return row


class BudgetListView(RoleRequiredMixin, View):
    """Every client, with or without a budget."""

    def get(self, request):
        clients = Client.objects.select_related("budget")
        if request.GET.get("q"):
            clients = clients.filter(Q(name__icontains=request.GET["q"]) | Q(slug__icontains=request.GET["q"]))
        page, sort = sorted_page(
            request, clients, {"name": "name", "slug": "slug", "limit": "budget__limit_usd"}, "name"
        )
        context = {"page": page, "sort": sort, "rows": [budget_row(c) for c in page], "alert_share": Decimal("0.8")}
        return render(request, "billing/budget_list.html", context)


class BudgetEditView(RoleRequiredMixin, View):
    """Set (create) or change the budget of the client ``pk``."""

    needed_roles = roles.MANAGE

    def get(self, request, pk):
        client = get_object_or_404(Client.objects.select_related("budget"), pk=pk)
        form = BudgetForm(instance=getattr(client, "budget", None))
        return render(request, "billing/budget_form.html", {"form": form, "row": budget_row(client)})

    def post(self, request, pk):
        client = get_object_or_404(Client, pk=pk)
        row = budget_row(client)  # before the form: a rejected value must not show as the current limit
        budget = Budget.objects.filter(client=client).first()
        before = snapshot(budget) if budget else None
        form = BudgetForm(request.POST, instance=budget or Budget(client=client))
        if not form.is_valid():
            return render(request, "billing/budget_form.html", {"form": form, "row": row}, status=400)
        with transaction.atomic():
            saved = form.save()
            if before is None:
                record_create(request.user, "console", saved)
            else:
                record_update(request.user, "console", saved, before)
        messages.success(request, f"Budget of “{client.name}” set to ${saved.limit_usd} a month.")
        return redirect("console:budgets")


class BudgetDeleteView(RoleRequiredMixin, View):
    """Remove the budget of the client ``pk``: the client may then spend without limit."""

    needed_roles = roles.MANAGE

    def post(self, request, pk):
        budget = get_object_or_404(Budget.objects.select_related("client"), client_id=pk)
        before, budget_pk = snapshot(budget), budget.pk
        with transaction.atomic():
            budget.delete()
            budget.pk = budget_pk
            record_delete(request.user, "console", budget, before)
        messages.success(request, f"Budget of “{budget.client.name}” removed; it now spends without a limit.")
        return redirect("console:budgets")


class PriceListView(RoleRequiredMixin, View):
    def get(self, request):
        page, sort = sorted_page(
            request,
            ModelPrice.objects.all(),
            {"model": "model", "input": "input_per_million", "output": "output_per_million", "updated": "updated_at"},
            "model",
        )
        return render(request, "billing/price_list.html", {"page": page, "sort": sort})


class PriceEditView(TrailedEditView):
    model = ModelPrice
    form_class = ModelPriceForm
    template_name = "billing/price_form.html"
    context_name = "price"
    success_url_name = "console:prices"

    def saved_message(self, obj):
        return f"Price of “{obj.model}” saved. Gateways pick it up within their refresh."
