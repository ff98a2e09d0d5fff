"""Console forms for clients and keys."""

from __future__ import annotations

from datetime import timedelta

from django import forms

from keys.models import ALL, ApiKey, Client


class ClientForm(forms.ModelForm):
    class Meta:
        model = Client
        fields = ["name", "slug", "contact", "is_active"]
        help_texts = {"slug": "Short name used in logs and the API (letters, digits, - and _)."}


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class ApiKeyForm(forms.ModelForm):
    """A key's scopes and limits; agents are checkboxes, models a comma-separated list or *."""

    all_agents = forms.BooleanField(required=False, label="All agents, including ones added later")
    agents = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple, label="Agents")
    models_text = forms.CharField(
        initial=ALL, label="Models", help_text="Comma-separated model names, or * for every model of the agents."
    )

    class Meta:
        model = ApiKey
        fields = ["name", "requests_per_minute", "tokens_per_minute", "max_concurrent", "expires_at"]
        widgets = {"expires_at": forms.DateTimeInput(attrs={"type": "datetime-local"})}
        help_texts = {"expires_at": "Leave empty for a key that does not expire."}

    def __init__(self, *args, agent_choices: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["agents"].choices = [(slug, slug) for slug in agent_choices]
        if self.instance.pk:
            agents = self.instance.allowed_agents or []
            self.initial.setdefault("all_agents", ALL in agents)
            self.initial.setdefault("agents", [a for a in agents if a != ALL])
            self.initial.setdefault("models_text", ", ".join(self.instance.allowed_models or []))

    def clean(self):
        data = super().clean()
        if not data.get("all_agents") and not data.get("agents"):
            self.add_error("agents", "Choose at least one agent, or allow all agents.")
        models = _names(data.get("models_text", ""))
        if not models:
            self.add_error("models_text", "Give at least one model name, or *.")
        elif ALL in models and len(models) > 1:
            self.add_error("models_text", "* already means every model; give it alone.")
        data["models"] = models
        return data

    def scope_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "allowed_agents": [ALL] if data["all_agents"] else list(data["agents"]),
            "allowed_models": data["models"],
        }


class RotateForm(forms.Form):
    grace_hours = forms.IntegerField(
        min_value=0, max_value=24 * 30, initial=24, label="Grace period (hours)",
        help_text="How long the old key keeps working after the new one is issued.",
    )  # fmt: skip

    @property
    def grace(self) -> timedelta:
        return timedelta(hours=self.cleaned_data["grace_hours"])
