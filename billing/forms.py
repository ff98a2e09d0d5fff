"""Console forms for budgets, alerts and model prices."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.conf import settings

from billing import overview
from billing.models import DEFAULT_PRICE_MODEL, Budget, BudgetAlert, ModelPrice
from billing.prices import unprices_unknown_models
from keys.models import ApiKey

CENTS = Decimal("0.01")
MICRO = Decimal("0.000001")
DATETIME_LOCAL = "%Y-%m-%dT%H:%M:%S"


def _key_label(key: ApiKey) -> str:
    status = "" if key.status == "active" else f" · {key.status}"
    return f"{key.prefix}… {key.name} ({key.client.name}){status}".replace("  ", " ")


class BudgetForm(forms.ModelForm):
    """A budget: its scope and the one target that scope needs, its period, limit, mode and where alerts go.

    Targets the scope does not need are dropped before the model's ``clean()`` checks the
    rest, so switching the scope after picking a client never trips over the hidden select.
    """

    alert_webhook_url = forms.URLField(
        required=False, max_length=500, assume_scheme="https", label="Alert webhook URL",
        help_text=Budget._meta.get_field("alert_webhook_url").help_text,
    )  # fmt: skip

    class Meta:
        model = Budget
        fields = [
            "scope", "cost_center", "client", "api_key", "name", "period", "period_days", "period_anchor",
            "limit_usd", "mode", "alert_percent", "alert_emails", "alert_webhook_url", "is_active",
        ]  # fmt: skip
        labels = {
            "api_key": "API key",
            "name": "Name (optional)",
            "period_days": "Custom period length (days)",
            "period_anchor": "Custom period starts on",
            "limit_usd": "Limit (USD per period)",
            "alert_percent": "Alert at (% of the limit)",
            "alert_emails": "Alert e-mails",
            "is_active": "Active",
        }
        widgets = {
            "limit_usd": forms.NumberInput(attrs={"step": "0.01", "min": "0"}),
            "alert_percent": forms.NumberInput(attrs={"min": "1", "max": "100"}),
            "period_anchor": forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
            "alert_emails": forms.TextInput(attrs={"placeholder": "finance@example.com, team@example.com"}),
        }
        help_texts = {
            "scope": "Only the target this scope needs (cost center, client or key) is used.",
            "period_anchor": "Empty means today; cycles follow back to back from this day.",
            "mode": "A hard budget refuses requests with 402 once it cannot cover them; a soft one only alerts.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        keys = ApiKey.objects.select_related("client").order_by("client__name", "-created_at")
        current = self.instance.api_key_id
        self.fields["api_key"].queryset = keys.filter(revoked_at__isnull=True) | keys.filter(pk=current)
        self.fields["api_key"].label_from_instance = _key_label
        for field in ("cost_center", "client", "api_key"):
            self.fields[field].empty_label = "—"

    def clean_limit_usd(self):
        # Stored with two decimals: say "100.00" in the trail whether "100" or "100.00" was typed.
        return self.cleaned_data["limit_usd"].quantize(CENTS)

    def clean(self):
        data = super().clean()
        for scope, field in Budget.TARGET_FIELDS.items():
            if data.get("scope") != scope:
                data[field] = None
        return data


class BudgetFilterForm(forms.Form):
    scope = forms.ChoiceField(choices=[("", "All scopes"), *Budget.SCOPES], required=False)
    q = forms.CharField(required=False, label="Target or name")

    def filter(self, budgets):
        data = self.cleaned_data if self.is_valid() else {}
        if data.get("scope"):
            budgets = budgets.filter(scope=data["scope"])
        if data.get("q"):
            budgets = overview.search(budgets, data["q"])
        return budgets


class AlertFilterForm(forms.Form):
    scope = forms.ChoiceField(choices=[("", "All scopes"), *Budget.SCOPES], required=False)
    acknowledged = forms.ChoiceField(
        choices=[("", "Any"), ("no", "Not acknowledged"), ("yes", "Acknowledged")], required=False
    )
    budget = forms.IntegerField(required=False, min_value=1, label="Budget #")

    def filter(self, alerts=None):
        alerts = BudgetAlert.objects.all() if alerts is None else alerts
        data = self.cleaned_data if self.is_valid() else {}
        if data.get("scope"):
            alerts = alerts.filter(budget__scope=data["scope"])
        if data.get("acknowledged"):
            alerts = alerts.filter(acknowledged_at__isnull=data["acknowledged"] == "no")
        if data.get("budget"):
            alerts = alerts.filter(budget_id=data["budget"])
        return alerts


class ModelPriceForm(forms.ModelForm):
    """One price of a model from a moment on; a change of price is a new row with a later date."""

    class Meta:
        model = ModelPrice
        fields = ["model", "effective_from", "input_per_million", "output_per_million"]
        labels = {
            "model": "Model",
            "input_per_million": "Input (USD per million tokens)",
            "output_per_million": "Output (USD per million tokens)",
        }
        widgets = {
            "effective_from": forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format=DATETIME_LOCAL),
            "input_per_million": forms.NumberInput(attrs={"step": "any", "min": "0"}),
            "output_per_million": forms.NumberInput(attrs={"step": "any", "min": "0"}),
        }
        help_texts = {"model": f"The model name requests use; “{DEFAULT_PRICE_MODEL}” prices every unlisted model."}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        field = self.fields["effective_from"]
        field.label = f"Effective from ({settings.TIME_ZONE})"
        field.help_text = "Now by default. A past moment reprices nothing: usage keeps the price it was charged."

    def clean_model(self):
        model = self.cleaned_data["model"]
        if self.instance.pk and self.instance.model == DEFAULT_PRICE_MODEL and model != DEFAULT_PRICE_MODEL:
            raise forms.ValidationError(f"The “{DEFAULT_PRICE_MODEL}” price prices unlisted models; it keeps its name.")
        return model

    def clean_effective_from(self):
        moment = self.cleaned_data["effective_from"]
        stored = self.instance.effective_from if self.instance.pk else None
        if stored is not None and moment == stored.replace(microsecond=0):
            return stored  # the form shows whole seconds; an untouched date is not a change
        return moment

    def clean_input_per_million(self):
        return self.cleaned_data["input_per_million"].quantize(MICRO)

    def clean_output_per_million(self):
        return self.cleaned_data["output_per_million"].quantize(MICRO)

    def clean(self):
        data = super().clean()
        starts = data.get("effective_from")
        if self.instance.pk and starts and "model" in data:
            after = ModelPrice(model=data["model"], effective_from=starts)
            if unprices_unknown_models(self.instance, after):  # the instance still holds the stored row here
                self.add_error(
                    "effective_from",
                    f"The “{DEFAULT_PRICE_MODEL}” model must always have a price in force; "
                    "add a new price from that moment instead.",
                )
        return data
