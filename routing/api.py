"""Agents (upstreams) in the management API: serializer and viewset."""

import math

from rest_framework import serializers

from gateway_project.api import SEARCHABLE_FILTER_BACKENDS, NameListField, TrailedModelViewSet
from routing.models import Agent


class AgentSerializer(serializers.ModelSerializer):
    served_models = NameListField(required=False, help_text="Model names this upstream serves.")
    capabilities = NameListField(required=False, help_text="Keywords for content routing.")
    has_upstream_api_key = serializers.SerializerMethodField(help_text="Whether an upstream credential is set.")

    class Meta:
        model = Agent
        fields = [
            "id",
            "slug",
            "name",
            "kind",
            "upstream_url",
            "upstream_api_key",
            "has_upstream_api_key",
            "served_models",
            "default_model",
            "capabilities",
            "timeout_seconds",
            "default_max_output_tokens",
            "max_concurrent",
            "requests_per_minute",
            "cost_center",
            "is_active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"upstream_api_key": {"write_only": True}}

    def get_has_upstream_api_key(self, agent) -> bool:
        return bool(agent.upstream_api_key)

    def validate_timeout_seconds(self, value):
        if not math.isfinite(value) or value <= 0:
            raise serializers.ValidationError("Must be a number of seconds above zero.")
        return value


class AgentViewSet(TrailedModelViewSet):
    """Agents: the upstreams (agent services and LLM providers) the gateway forwards to."""

    queryset = Agent.objects.all()
    serializer_class = AgentSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["kind", "is_active", "cost_center"]
    search_fields = ["slug", "name"]
    ordering_fields = ["slug", "name", "created_at"]
