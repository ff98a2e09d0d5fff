"""Console form for agents (upstreams): name lists as comma-separated text, the credential write-only."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import forms

from gateway_project import datetimes
from routing.models import CACHE_FIELDS, CREDENTIAL_MAX_LENGTH, RESILIENCE_FIELDS, Agent, Target
from routing.table import target_credential

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


class StatusListField(forms.CharField):
    """HTTP statuses typed as comma-separated numbers."""

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(str(status) for status in value)
        return value

    def to_python(self, value):
        text = super().to_python(value)
        statuses = []
        for part in text.replace("\n", ",").split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or not 400 <= int(part) <= 599:
                raise forms.ValidationError(f"“{part[:20]}” is not an HTTP status from 400 to 599.")
            statuses.append(int(part))
        return sorted(set(statuses))


CACHE_LABELS = {
    "cache_enabled": "Response cache: on",
    "cache_ttl_seconds": "Response cache: keep answers for (seconds)",
    "cache_shared": "Response cache: shared by all clients",
    "cache_streams": "Response cache: streamed answers too",
    "cache_max_entry_bytes": "Response cache: largest answer kept (bytes)",
    "cache_any_temperature": "Response cache: any temperature",
}
# Left empty (or not sent), these keep what the agent or route has, or the defaults for a new one.
CACHE_KEPT_WHEN_EMPTY = ("cache_ttl_seconds", "cache_max_entry_bytes")


class AgentForm(forms.ModelForm):
    """An agent's settings. The upstream credential is never shown: empty keeps it, "remove" clears it."""

    upstream_url = forms.URLField(
        max_length=500, assume_scheme="http", label="Upstream URL", help_text="Base URL, e.g. http://10.0.0.5:9000"
    )
    upstream_api_key = forms.CharField(
        required=False,
        max_length=CREDENTIAL_MAX_LENGTH,
        label="Upstream API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Credential the gateway sends upstream (never a client's key). No credential is set.",
    )
    clear_upstream_api_key = forms.BooleanField(required=False, label="Remove the stored upstream API key")
    served_models = NameListField(
        required=False, label="Served models", help_text="Comma-separated model names this upstream serves."
    )
    capabilities = NameListField(
        required=False,
        label="Capabilities",
        help_text="Comma-separated capabilities (e.g. research) for content routing; the Content routing page maps "
        "words of a request to them.",
    )
    retry_statuses = StatusListField(
        required=False,
        label="Retry statuses",
        help_text="Comma-separated upstream statuses that are retried and fall back (e.g. 502, 503, 529); "
        "connection errors and timeouts always are.",
    )
    fallbacks = NameListField(
        required=False,
        label="Fallbacks",
        help_text="Comma-separated agent slugs tried in this order when this agent fails or its circuits are open.",
    )
    dearer_models = NameListField(
        required=False,
        label="Dearer models seen",
        help_text="Models this upstream answered with that cost more than what was reserved; reservations price them "
        "in. The gateway adds them; remove one once the upstream no longer answers with it.",
    )
    sunset_at = datetimes.DateTimeField(
        required=False,
        label="Sunset",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="When a deprecated agent goes away (sent in the Sunset header).",
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
            *RESILIENCE_FIELDS,
            *CACHE_FIELDS,
            "dearer_models",
            "unmetered_pass_through",
            "cost_center",
            "required_role",
            "is_active",
        ]
        labels = {
            "unmetered_pass_through": "Allow unmetered pass-through",
            "strategy": "Balancing strategy",
            "max_retries": "Retries",
            "breaker_failures": "Circuit breaker: failures",
            "breaker_window_seconds": "Circuit breaker: window (seconds)",
            "breaker_cooldown_seconds": "Circuit breaker: cool-down (seconds)",
            "timeout_seconds": "Timeout (seconds)",
            "max_concurrent": "Capacity: requests at once",
            "requests_per_minute": "Capacity: requests per minute",
            **CACHE_LABELS,
        }
        widgets = {
            "timeout_seconds": forms.NumberInput(attrs={"step": "any", "min": "0"}),
            "breaker_window_seconds": forms.NumberInput(attrs={"step": "any", "min": "0"}),
            "breaker_cooldown_seconds": forms.NumberInput(attrs={"step": "any", "min": "0"}),
        }
        help_texts = {
            "slug": "Used in /agents/<slug>/ paths, key scopes and logs (letters, digits, - and _).",
            "timeout_seconds": "The total time for a request to this agent, its retries included; above zero.",
            "strategy": "How a request picks one of the agent's enabled targets: by weight (canary), the least busy "
            "(in flight ÷ max at once), or the best score of load, recent latency and error rate.",
            "max_retries": "Attempts after a failed one (on another target when there is one), with exponential "
            "backoff and jitter, within the timeout; 0 never retries.",
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
        "strategy",
        "max_retries",
        "retry_statuses",
        "fallbacks",
        "breaker_failures",
        "breaker_window_seconds",
        "breaker_cooldown_seconds",
        *CACHE_FIELDS,
        "cost_center",
        "required_role",
        "is_active",
    ]
    # Capacity fields left empty mean "no limit", like 0.
    UNLIMITED_WHEN_EMPTY = ("max_concurrent", "requests_per_minute")
    # Resilience settings left empty (or not sent) keep what the agent has, or the defaults for a new one.
    KEPT_WHEN_EMPTY = (
        "strategy", "max_retries", "breaker_failures", "breaker_window_seconds", "breaker_cooldown_seconds",
        "cache_ttl_seconds", "cache_max_entry_bytes",
    )  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["required_role"].empty_label = "No role required"
        self._stored_secret = self.instance.upstream_api_key
        if self._stored_secret:
            self.fields["upstream_api_key"].help_text = (
                "A credential is set and is never shown. Leave empty to keep it, or type a new one to replace it. "
                "Moving the upstream URL to another scheme, host or port removes it unless you type one here too."
            )
        else:
            del self.fields["clear_upstream_api_key"]
        for name in self.UNLIMITED_WHEN_EMPTY + self.KEPT_WHEN_EMPTY:
            self.fields[name].required = False

    def clean_upstream_url(self):
        url = self.cleaned_data["upstream_url"]
        if urlsplit(url).scheme not in ("http", "https"):
            raise forms.ValidationError("The upstream URL must start with http:// or https://.")
        return url

    def clean_fallbacks(self):
        fallbacks = self.cleaned_data["fallbacks"]
        own = self.data.get("slug") or self.instance.slug
        if own and own in fallbacks:
            raise forms.ValidationError("An agent cannot fall back to itself.")
        known = set(Agent.objects.filter(slug__in=fallbacks).values_list("slug", flat=True))
        unknown = [slug for slug in fallbacks if slug not in known]
        if unknown:
            raise forms.ValidationError(f"No such agent: {', '.join(unknown)}.")
        return fallbacks

    def clean(self):
        data = super().clean()
        for name in self.UNLIMITED_WHEN_EMPTY:
            if name in data and data[name] is None:
                data[name] = 0
        for name in self.KEPT_WHEN_EMPTY:
            if name in data and data[name] in (None, ""):
                data[name] = getattr(self.instance, name)
        for name in ("breaker_window_seconds", "breaker_cooldown_seconds"):
            if data.get(name) is not None and not data[name] > 0:
                self.add_error(name, "Must be above zero.")
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


class TargetForm(forms.ModelForm):
    """A target; its own credential is write-only like the agent's (empty keeps it, "remove" clears it)."""

    url = forms.URLField(max_length=500, assume_scheme="http", label="URL")
    upstream_api_key = forms.CharField(
        required=False,
        max_length=CREDENTIAL_MAX_LENGTH,
        label="Own API key",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_upstream_api_key = forms.BooleanField(required=False, label="Remove its own key")

    class Meta:
        model = Target
        fields = ["name", "url", "weight", "max_concurrent", "enabled"]
        labels = {"max_concurrent": "Max at once"}

    def clean_url(self):
        url = self.cleaned_data["url"]
        if urlsplit(url).scheme not in ("http", "https"):
            raise forms.ValidationError("The URL must start with http:// or https://.")
        return url

    def clean(self):
        data = super().clean()
        if data.get("clear_upstream_api_key") and data.get("upstream_api_key"):
            self.add_error("upstream_api_key", "Either type a new key or remove the stored one, not both.")
        return data

    def save(self, commit=True):
        target = super().save(commit=False)
        if self.cleaned_data.get("clear_upstream_api_key"):
            target.upstream_api_key = ""
        elif self.cleaned_data.get("upstream_api_key"):
            target.upstream_api_key = self.cleaned_data["upstream_api_key"]
        if commit:
            target.save()
        return target

    def credential_source(self) -> str:
        """What the saved target is sent, for its row: its own key, the agent's, or none."""
        target = self.instance
        if target.pk is None:
            return ""
        if target.upstream_api_key:
            return "own key"
        return "agent's key" if target_credential(target, target.agent) else "no key"


# An agent's targets, edited on its page; none means the agent's own upstream URL serves it.
TargetFormSet = forms.inlineformset_factory(Agent, Target, form=TargetForm, extra=1, can_delete=True)
