"""Console form for model auto-routing's rules."""

from __future__ import annotations

from django import forms

from routing.auto_signals import CAPABILITIES, clean_keywords
from routing.models import Agent, AutoRouteRule


class AutoRouteRuleForm(forms.ModelForm):
    """A rule; keywords are typed comma-separated, the capabilities asked for ticked. The rule's own ``clean``
    (``auto_route.rule_problems``) checks the whole of it."""

    agent = forms.ModelChoiceField(
        queryset=Agent.objects.order_by("slug"), to_field_name="slug", required=False,
        help_text="Only for requests to this agent (its default model must be “auto”); empty: the model “auto”.",
    )  # fmt: skip
    keywords = forms.CharField(
        required=False, help_text="Comma-separated words or phrases (at most 20), any of which in the last user "
        "message (whole words, any case); empty: any text.",
    )  # fmt: skip
    asks_for = forms.MultipleChoiceField(
        choices=[(name, name) for name in CAPABILITIES], required=False, widget=forms.CheckboxSelectMultiple,
        help_text="The request asks for all of these (tools offered, an image, a JSON response format).",
    )  # fmt: skip

    class Meta:
        model = AutoRouteRule
        fields = [
            "name", "position", "enabled", "agent", "model", "is_default", "min_prompt_tokens", "max_prompt_tokens",
            "min_complexity", "max_complexity", "keywords", "asks_for", "max_input_per_million",
            "max_output_per_million",
        ]  # fmt: skip

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.initial["keywords"] = ", ".join(self.instance.keywords or ())

    def clean_keywords(self):
        text = self.cleaned_data["keywords"] or ""
        return clean_keywords([part for part in text.split(",") if part.strip()])

    def clean_asks_for(self):
        return [name for name in CAPABILITIES if name in self.cleaned_data["asks_for"]]
