"""Console form for agents (upstreams): name lists as comma-separated text, the credential write-only."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import forms

from routing.models import Agent

NAME_MAX_LENGTH = 200


class NameListField(forms.CharField):
    """A list of names typed as comma-separated text; shown back the same way."""

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        names = [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
        return list(dict.fromkeys(names))  # drop repeats, keep the order

    def validate(self, value):
        super().validate(value)
        too_long = [name for name in value if len(name) > NAME_MAX_LENGTH]
        if too_long:
            raise forms.ValidationError(f"Names are at most {NAME_MAX_LENGTH} characters: {too_long[0][:40]}…")


class AgentForm(forms.ModelForm):
    """An agent's settings. The upstream credential is never shown: empty keeps it, "remove" clears it."""

    upstream_url = forms.URLField(
        max_length=500, assume_scheme="http", label="Upstream URL", help_text="Base URL, e.g. http://10.0.0.5:9000"
    )
    upstream_api_key = forms.CharField(
        required=False,
        max_length=500,
        label="Upstream API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Credential the gateway sends upstream (never a client's key). No credential is set.",
    )
    clear_upstream_api_key = forms.BooleanField(required=False, label="Remove the stored upstream API key")
    served_models = NameListField(
        required=False, label="Served models", help_text="Comma-separated model names this upstream serves."
    )
    capabilities = NameListField(
        required=False, label="Capabilities", help_text="Comma-separated keywords for content routing."
    )

    class Meta:
        model = Agent
        fields = [
            "slug",
            "name",
            "kind",
            "upstream_url",
            "served_models",
            "default_model",
            "capabilities",
            "timeout_seconds",
            "default_max_output_tokens",
            "max_concurrent",
            "requests_per_minute",
            "cost_center",
            "is_active",
        ]
        labels = {
            "timeout_seconds": "Timeout (seconds)",
            "max_concurrent": "Capacity: requests at once",
            "requests_per_minute": "Capacity: requests per minute",
        }
        widgets = {"timeout_seconds": forms.NumberInput(attrs={"step": "any", "min": "0"})}
        help_texts = {
            "slug": "Used in /agents/<slug>/ paths, key scopes and logs (letters, digits, - and _).",
            "timeout_seconds": "How long the gateway waits for the upstream; above zero.",
        }

    field_order = [
        "slug",
        "name",
        "kind",
        "upstream_url",
        "upstream_api_key",
        "clear_upstream_api_key",
        "served_models",
        "default_model",
        "capabilities",
        "timeout_seconds",
        "default_max_output_tokens",
        "max_concurrent",
        "requests_per_minute",
        "cost_center",
        "is_active",
    ]
    # Capacity fields left empty mean "no limit", like 0.
    UNLIMITED_WHEN_EMPTY = ("max_concurrent", "requests_per_minute")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stored_secret = self.instance.upstream_api_key
        if self._stored_secret:
            self.fields[
                "upstream_api_key"
            ].help_text = (
                "A credential is set and is never shown. Leave empty to keep it, or type a new one to replace it."
            )
        else:
            del self.fields["clear_upstream_api_key"]
        for name in self.UNLIMITED_WHEN_EMPTY:
            self.fields[name].required = False

    def clean_upstream_url(self):
        url = self.cleaned_data["upstream_url"]
        if urlsplit(url).scheme not in ("http", "https"):
            raise forms.ValidationError("The upstream URL must start with http:// or https://.")
        return url

    def clean(self):
        data = super().clean()
        for name in self.UNLIMITED_WHEN_EMPTY:
            if name in data and data[name] is None:
                data[name] = 0
        if data.get("clear_upstream_api_key") and data.get("upstream_api_key"):
            self.add_error("upstream_api_key", "Either type a new key or remove the stored one, not both.")
        return data

    def save(self, commit=True):
        agent = super().save(commit=False)
        if self.cleaned_data.get("clear_upstream_api_key"):
            agent.upstream_api_key = ""
        elif self.cleaned_data.get("upstream_api_key"):
            agent.upstream_api_key = self.cleaned_data["upstream_api_key"]
        if commit:
            agent.save()
        return agent
