"""Model auto-routing's rules in the management API: serializer and viewset."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from gateway_project.api import (
    SEARCHABLE_FILTER_BACKENDS,
    SlugRelatedField,
    TrailedModelViewSet,
    as_it_would_be_saved,
)
from routing.auto_route import rule_problems
from routing.auto_signals import CAPABILITIES, clean_keywords
from routing.models import Agent, AutoRouteRule


class AutoRouteRuleSerializer(serializers.ModelSerializer):
    agent = SlugRelatedField(
        slug_field="slug", queryset=Agent.objects.all(), required=False, allow_null=True,
        help_text="Only for requests to this agent (its default model must be “auto”); null: the model “auto”.",
    )  # fmt: skip
    keywords = serializers.ListField(
        child=serializers.CharField(allow_blank=True, trim_whitespace=False), required=False,
        help_text="Words or phrases, any of which in the last user message (whole words, any case); at most 20.",
    )  # fmt: skip
    asks_for = serializers.ListField(
        child=serializers.ChoiceField(CAPABILITIES), required=False,
        help_text="The request asks for all of these; empty: any request.",
    )  # fmt: skip

    class Meta:
        model = AutoRouteRule
        fields = [
            "id", "name", "position", "enabled", "agent", "model", "is_default", "min_prompt_tokens",
            "max_prompt_tokens", "min_complexity", "max_complexity", "keywords", "asks_for", "max_input_per_million",
            "max_output_per_million", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]

    def validate_keywords(self, value):
        try:
            return clean_keywords(value)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None

    def validate_asks_for(self, value):
        return [name for name in CAPABILITIES if name in value]

    def validate(self, data):
        problems = rule_problems(as_it_would_be_saved(AutoRouteRule, self.instance, data))
        if problems:
            raise serializers.ValidationError(problems)
        return data


class AutoRouteRuleViewSet(TrailedModelViewSet):
    """Model auto-routing's rules: a request for the model “auto” (or an agent whose default model is “auto”) gets the
    model of the first enabled rule, by position, that fits it; the default rule's when none does."""

    queryset = AutoRouteRule.objects.select_related("agent")
    serializer_class = AutoRouteRuleSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["enabled", "is_default", "model"]
    search_fields = ["name", "model"]
    ordering_fields = ["position", "name", "created_at"]
