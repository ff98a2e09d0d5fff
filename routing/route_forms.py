"""Console forms for path routes and content routing's keyword map."""

from __future__ import annotations

from django import forms

from gateway_project import datetimes
from routing import path_routes
from routing.content_routing import clean_keyword
from routing.forms import CACHE_KEPT_WHEN_EMPTY, CACHE_LABELS
from routing.models import CACHE_FIELDS, Agent, CapabilityKeyword, PathRoute


class PathRouteForm(forms.ModelForm):
    """A path route; methods are typed as comma-separated text (empty: every method)."""

    methods = forms.CharField(
        required=False, help_text=f"Comma-separated, from {', '.join(path_routes.HTTP_METHODS)}; empty: every method."
    )
    agent = forms.ModelChoiceField(queryset=Agent.objects.order_by("slug"), to_field_name="slug")
    sunset_at = datetimes.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="Answers carry a Sunset header with this date (only while the route is deprecated).",
    )  # fmt: skip

    class Meta:
        model = PathRoute
        fields = [
            "prefix", "methods", "agent", "upstream_path", "timeout_seconds", "max_retries", "auth_required",
            "requests_per_minute", "protocol", "deprecated", "sunset_at", *CACHE_FIELDS, "is_active",
        ]  # fmt: skip
        labels = CACHE_LABELS
        help_texts = {
            "deprecated": "Answers carry a Deprecation header.",
            "protocol": "Server-sent events are streamed through as they arrive; usage is read from the final chunk.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["methods"] = ", ".join(self.instance.methods or ())
        for name in CACHE_KEPT_WHEN_EMPTY:
            self.fields[name].required = False
        self.fields["cache_enabled"].help_text = (
            "Answer a call the same as one answered before through this route from the cache, at no cost to the "
            "client, until the entry expires. The agent's own cache does not apply to calls through the route; "
            "keyless callers' answers are cached only when shared."
        )

    def clean(self):
        data = super().clean()
        for name in CACHE_KEPT_WHEN_EMPTY:
            if name in data and data[name] is None:
                data[name] = getattr(self.instance, name)
        return data

    def clean_prefix(self):
        return path_routes.clean_prefix(self.cleaned_data["prefix"])

    def clean_methods(self):
        text = self.cleaned_data["methods"] or ""
        return path_routes.clean_methods([part for part in text.replace(" ", ",").split(",") if part.strip()])

    def clean_upstream_path(self):
        return path_routes.clean_upstream_path(self.cleaned_data["upstream_path"])

    def clean_timeout_seconds(self):
        return path_routes.clean_timeout(self.cleaned_data["timeout_seconds"])


class CapabilityKeywordForm(forms.ModelForm):
    class Meta:
        model = CapabilityKeyword
        fields = ["keyword", "capability"]
        help_texts = {
            "keyword": "One word of a request's input, e.g. “debug”.",
            "capability": "The capability it asks for, e.g. “code”; agents list the capabilities they have.",
        }

    def clean_keyword(self):
        word = clean_keyword(self.cleaned_data["keyword"])
        if CapabilityKeyword.objects.filter(keyword=word).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(f"“{word}” is already mapped.")
        return word

    def clean_capability(self):
        return self.cleaned_data["capability"].strip().lower()
