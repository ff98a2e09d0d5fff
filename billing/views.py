"""Console pages for budgets, their alerts and model prices: thin views over the billing modules."""

from __future__ import annotations

from django.contrib import messages
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View

from audit.trail import record_update, snapshot
from billing import overview
from billing.forms import AlertFilterForm, BudgetFilterForm, BudgetForm, ModelPriceForm
from billing.history import budget_history
from billing.models import DEFAULT_PRICE_MODEL, Budget, BudgetAlert, ModelPrice
from billing.periods import MONTHLY, period_of
from billing.prices import price_book, unpriced_models, unprices_unknown_models
from billing.services import acknowledge_alert
from gateway_project import handoff, roles
from gateway_project.console import RoleRequiredMixin, TrailedDeleteView, TrailedEditView, sorted_page

# --- budgets ----------------------------------------------------------------------------------------------------


def _query_without(request, *names) -> str:
    query = request.GET.copy()
    for name in ("page", "sort", *names):
        query.pop(name, None)
    return query.urlencode()


class BudgetListView(RoleRequiredMixin, View):
    """Every budget at every scope, with where it stands in its current window."""

    def get(self, request):
        form = BudgetFilterForm(request.GET or None)
        budgets = form.filter(overview.with_targets(Budget.objects.all()))
        page, sort = sorted_page(
            request, budgets, {"scope": "scope", "period": "period", "limit": "limit_usd", "created": "created_at"},
            "scope",
        )  # fmt: skip
        context = {
            "form": form,
            "page": page,
            "sort": sort,
            "rows": overview.bars(page),
            "query": _query_without(request),
        }
        return render(request, "billing/budget_list.html", context)


# The session keeps only one-time tokens of hand-offs (gateway_project.handoff), by budget id; never a secret.
WEBHOOK_SECRET_SESSION = "issued_webhook_secret_handoffs"
HANDOFFS_KEPT = 5


def _purpose(budget_pk: int) -> str:
    return f"budget-webhook-secret:{budget_pk}"


def _show_secret_once(request, budget: Budget) -> None:
    """Hand a webhook signing secret just made to the budget's next page view, through an encrypted one-time
    hand-off."""
    if budget.issued_webhook_secret:
        tokens = request.session.get(WEBHOOK_SECRET_SESSION, {})
        tokens[str(budget.pk)] = handoff.put(budget.issued_webhook_secret, purpose=_purpose(budget.pk))
        request.session[WEBHOOK_SECRET_SESSION] = dict(list(tokens.items())[-HANDOFFS_KEPT:])


def _take_secret(request, budget: Budget) -> str | None:
    tokens = request.session.get(WEBHOOK_SECRET_SESSION, {})
    token = tokens.pop(str(budget.pk), None)
    if token is None:
        return None
    request.session[WEBHOOK_SECRET_SESSION] = tokens
    return handoff.take(token, purpose=_purpose(budget.pk))


class BudgetDetailView(RoleRequiredMixin, View):
    """A budget, its alerts and past windows; once after its webhook got a new secret, that secret."""

    def get(self, request, pk):
        budget = get_object_or_404(overview.with_targets(Budget.objects.all()), pk=pk)
        context = {
            "budget": budget,
            "status": overview.bar(budget),
            "alerts": budget.alerts.all()[:50],
            "history": budget_history(budget, count=6),
            "webhook_secret": _take_secret(request, budget),
        }
        response = render(request, "billing/budget_detail.html", context)
        if context["webhook_secret"]:
            response["Cache-Control"] = "no-store"
        return response


class BudgetRotateWebhookSecretView(RoleRequiredMixin, View):
    """Give a budget's webhook a new signing secret (POST only), shown once on the budget's page."""

    needed_roles = roles.MANAGE

    def post(self, request, pk):
        budget = get_object_or_404(Budget, pk=pk)
        if not budget.alert_webhook_url:
            messages.error(request, "This budget has no webhook.")
            return redirect("console:budget", pk=budget.pk)
        before = snapshot(budget)
        with transaction.atomic():
            budget.rotate_webhook_secret()
            record_update(request.user, "console", budget, before, action="rotate_webhook_secret")
        _show_secret_once(request, budget)
        messages.success(request, "The webhook has a new signing secret; the old one no longer signs its alerts.")
        return redirect("console:budget", pk=budget.pk)


class BudgetEditView(TrailedEditView):
    """Create a budget (``?scope=client&client=<pk>`` picks the target) or edit one, addressed by its own pk."""

    model = Budget
    form_class = BudgetForm
    template_name = "billing/budget_form.html"
    context_name = "budget"

    def initial(self, request):
        fields = ("scope", *Budget.TARGET_FIELDS.values())
        return {name: request.GET[name] for name in fields if request.GET.get(name)}

    def saved_message(self, obj):
        return f"Budget saved: {obj}. Gateways apply it within their refresh."

    def after_save(self, request, obj):
        _show_secret_once(request, obj)  # a webhook set for the first time, or moved to another host

    def success_url(self, obj):
        return reverse("console:budget", kwargs={"pk": obj.pk})


class BudgetDeleteView(TrailedDeleteView):
    model = Budget
    success_url_name = "console:budgets"

    def consequences(self, obj):
        return [f"Requests of {obj.describe_target()} are no longer limited by this budget; its alerts go with it."]

    def cancel_url(self, obj):
        return reverse("console:budget", kwargs={"pk": obj.pk})

    def deleted_message(self, obj):
        return f"Budget removed: {obj}."


# --- alerts -----------------------------------------------------------------------------------------------------


class AlertListView(RoleRequiredMixin, View):
    """Budget alerts, newest first, with how their e-mail and webhook went."""

    def get(self, request):
        form = AlertFilterForm(request.GET or None)
        alerts = form.filter(BudgetAlert.objects.select_related(*(f"budget__{t}" for t in overview.TARGETS)))
        page, sort = sorted_page(request, alerts, {"time": "created_at", "threshold": "threshold_percent"}, "-time")
        context = {"form": form, "page": page, "sort": sort, "query": _query_without(request)}
        return render(request, "billing/alert_list.html", context)


class AlertAcknowledgeView(RoleRequiredMixin, View):
    needed_roles = roles.MANAGE

    def post(self, request, pk):
        alert = get_object_or_404(BudgetAlert, pk=pk)
        before = snapshot(alert)
        with transaction.atomic():
            acknowledge_alert(alert)
            recorded = record_update(request.user, "console", alert, before, action="acknowledge")
        messages.success(request, "Alert acknowledged." if recorded else "That alert was acknowledged already.")
        back = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
            back = reverse("console:alerts")
        return redirect(back)


# --- prices -----------------------------------------------------------------------------------------------------


class PriceListView(RoleRequiredMixin, View):
    def get(self, request):
        context = {"book": price_book(), "unpriced": unpriced_models(period_of(MONTHLY))}
        return render(request, "billing/price_list.html", context)


class PriceEditView(TrailedEditView):
    """Add a price (``?model=`` names the model) or correct one; a change of price is a new row with a later date."""

    model = ModelPrice
    form_class = ModelPriceForm
    template_name = "billing/price_form.html"
    context_name = "price"
    success_url_name = "console:prices"

    def initial(self, request):
        return {"model": request.GET["model"]} if request.GET.get("model") else {}

    def saved_message(self, obj):
        when = f"{timezone.localtime(obj.effective_from):%Y-%m-%d %H:%M}"
        return f"Price of “{obj.model}” from {when} saved. Gateways pick it up within their refresh."


class PriceDeleteView(TrailedDeleteView):
    model = ModelPrice
    success_url_name = "console:prices"

    def refusal(self, obj):
        if unprices_unknown_models(obj):
            return (
                f"This is the “{DEFAULT_PRICE_MODEL}” price in force: unlisted models would have no price. "
                "Add a new default price first."
            )
        return ""

    def consequences(self, obj):
        return ["Usage already charged keeps the price it was charged; the gateway uses the model's other prices."]
