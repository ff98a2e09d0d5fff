"""Console forms for budgets and model prices."""

from __future__ import annotations

from decimal import Decimal

from django import forms

from billing.models import DEFAULT_PRICE_MODEL, Budget, ModelPrice

CENTS = Decimal("0.01")
MICRO = Decimal("0.000001")


class BudgetForm(forms.ModelForm):
    """A client's monthly limit; the client comes from the URL."""

    class Meta:
        model = Budget
        fields = ["limit_usd"]
        labels = {"limit_usd": "Monthly limit (USD)"}
        widgets = {"limit_usd": forms.NumberInput(attrs={"step": "0.01", "min": "0"})}
        help_texts = {"limit_usd": "The gateway refuses the client's requests with 402 once this is spent."}

    def clean_limit_usd(self):
        # Stored with two decimals: say "100.00" in the trail whether "100" or "100.00" was typed.
        return self.cleaned_data["limit_usd"].quantize(CENTS)


class ModelPriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = ["model", "input_per_million", "output_per_million"]
        labels = {
            "model": "Model",
            "input_per_million": "Input (USD per million tokens)",
            "output_per_million": "Output (USD per million tokens)",
        }
        widgets = {
            "input_per_million": forms.NumberInput(attrs={"step": "any", "min": "0"}),
            "output_per_million": forms.NumberInput(attrs={"step": "any", "min": "0"}),
        }
        help_texts = {"model": f"The model name requests use; “{DEFAULT_PRICE_MODEL}” prices every unlisted model."}

    def clean_model(self):
        model = self.cleaned_data["model"]
        if self.instance.pk and self.instance.model == DEFAULT_PRICE_MODEL and model != DEFAULT_PRICE_MODEL:
            raise forms.ValidationError(f"The “{DEFAULT_PRICE_MODEL}” price prices unlisted models; it keeps its name.")
        return model

    def clean_input_per_million(self):
        return self.cleaned_data["input_per_million"].quantize(MICRO)

    def clean_output_per_million(self):
        return self.cleaned_data["output_per_million"].quantize(MICRO)
