"""Agents (upstreams) in the management API: serializer and viewset."""

import math
from typing import Literal

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from audit.trail import record_action
from gateway_project.api import SEARCHABLE_FILTER_BACKENDS, NameListField, SlugRelatedField, TrailedModelViewSet
from keys.models import AgentRole, Client
from routing import response_cache
from routing.balance import DEFAULT_TARGET
from routing.circuits import agent_health, reset_circuits
from routing.models import CACHE_FIELDS, RESILIENCE_FIELDS, Agent, Target, validate_agent_timeout
from routing.table import not_served_reason, target_credential

CLEARED_HELP = (
    "True when this change moved the URL to another scheme, host or port without setting a credential, so the stored "
    "one was removed (it is never sent to a host it was not set for): set it again if the new host needs it."
)


class AgentSerializer(serializers.ModelSerializer):
    served_models = NameListField(required=False, help_text="Model names this upstream serves.")
    capabilities = NameListField(required=False, help_text="Keywords for content routing.")
    has_upstream_api_key = serializers.SerializerMethodField(help_text="Whether an upstream credential is set.")
    upstream_api_key_cleared = serializers.SerializerMethodField(help_text=CLEARED_HELP)
    served = serializers.SerializerMethodField(
        help_text="Whether the gateway's routing table holds the agent. False when it is inactive, or when its "
        "upstream URL or an enabled target's fails the outbound address policy as it stands now (the allow-list "
        "changed since it was saved): requests for it then fail as for an agent that does not exist."
    )
    not_served_reason = serializers.SerializerMethodField(help_text="Why the agent is not served; empty when it is.")
    required_role = SlugRelatedField(
        slug_field="slug", queryset=AgentRole.objects.all(), required=False, allow_null=True,
        help_text="The slug of the role a key must hold to call the agent (403 role_required otherwise); null: none.",
    )  # fmt: skip

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
            "upstream_api_key_cleared",
            "served",
            "not_served_reason",
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
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"upstream_api_key": {"write_only": True}}

    def get_has_upstream_api_key(self, agent) -> bool:
        return bool(agent.upstream_api_key)

    def get_upstream_api_key_cleared(self, agent) -> bool:
        return agent.credential_cleared

    def get_served(self, agent) -> bool:
        return not not_served_reason(agent)

    def get_not_served_reason(self, agent) -> str:
        return not_served_reason(agent)

    def validate_timeout_seconds(self, value):
        value = _positive_seconds(value)
        try:
            validate_agent_timeout(value)
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.messages) from None
        return value

    def validate_breaker_window_seconds(self, value):
        return _positive_seconds(value)

    def validate_breaker_cooldown_seconds(self, value):
        return _positive_seconds(value)

    def validate_retry_statuses(self, value):
        if not isinstance(value, list) or not all(isinstance(s, int) and 400 <= s <= 599 for s in value):
            raise serializers.ValidationError("Give a list of HTTP statuses from 400 to 599.")
        return sorted(set(value))

    def validate_fallbacks(self, value):
        if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
            raise serializers.ValidationError("Give a list of agent slugs.")
        value = list(dict.fromkeys(s.strip() for s in value))
        return validate_fallback_slugs(value, self.instance.slug if self.instance else None, self.initial_data)


def _positive_seconds(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise serializers.ValidationError("Must be a number of seconds above zero.")
    return value


def validate_fallback_slugs(value: list[str], own_slug: str | None, data) -> list[str]:
    """Fallbacks must be existing agents, other than the agent itself."""
    own = (data.get("slug") if hasattr(data, "get") else None) or own_slug
    if own and own in value:
        raise serializers.ValidationError("An agent cannot fall back to itself.")
    unknown = sorted(set(value) - set(Agent.objects.filter(slug__in=value).values_list("slug", flat=True)))
    if unknown:
        raise serializers.ValidationError(f"No such agent: {', '.join(unknown)}.")
    return value


class TargetHealthSerializer(serializers.Serializer):
    """One target's live state (``routing.balance.describe``)."""

    target = serializers.CharField(help_text=f"The target's name; '{DEFAULT_TARGET}' is the agent's own URL.")
    url = serializers.CharField()
    weight = serializers.IntegerField()
    max_concurrent = serializers.IntegerField(help_text="0 means no limit.")
    circuit = serializers.ChoiceField(choices=["closed", "open", "half_open"])
    open_for_seconds = serializers.FloatField(help_text="How long an open circuit stays open; 0 otherwise.")
    consecutive_failures = serializers.IntegerField()
    in_flight = serializers.IntegerField()
    latency_ms = serializers.FloatField(allow_null=True, help_text="Recent latency; null before any answer.")
    error_rate = serializers.FloatField(help_text="Recent share of failed calls, 0 to 1.")


class AgentHealthSerializer(serializers.Serializer):
    """An agent's routing and each of its targets' live state (``routing.circuits.agent_health``)."""

    agent = serializers.SlugField(help_text="The agent's slug.")
    strategy = serializers.ChoiceField(choices=Agent.Strategy.choices)
    fallbacks = serializers.ListField(child=serializers.CharField(), help_text="Agents tried next, in order.")
    targets = TargetHealthSerializer(many=True)


class ResetCircuitSerializer(serializers.Serializer):
    target = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text=f"Close only this target's circuit ('{DEFAULT_TARGET}' for the agent's own URL); empty: all.",
    )


class AgentViewSet(TrailedModelViewSet):
    """Agents: the upstreams (agent services and LLM providers) the gateway forwards to."""

    queryset = Agent.objects.select_related("required_role").prefetch_related("targets")  # served: its targets
    serializer_class = AgentSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["kind", "is_active", "cost_center"]
    search_fields = ["slug", "name"]
    ordering_fields = ["slug", "name", "created_at"]

    @extend_schema(responses=AgentHealthSerializer)
    @action(detail=True, methods=["get"])
    def health(self, request, pk=None):
        """Each target's circuit (closed, open, half_open), requests in flight, recent latency and error rate."""
        return Response(agent_health(self.get_object()))

    @extend_schema(request=ResetCircuitSerializer, responses=AgentHealthSerializer)
    @action(detail=True, methods=["post"], url_path="reset-circuit")
    def reset_circuit(self, request, pk=None):
        """Close the agent's circuits (``{"target": name}`` for one target only); answers the agent's health."""
        agent = self.get_object()
        asked = ResetCircuitSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        target = asked.validated_data.get("target")
        if target and not agent.targets.filter(name=target).exists() and target != DEFAULT_TARGET:
            raise serializers.ValidationError({"target": f"The agent '{agent.slug}' has no target '{target}'."})
        with transaction.atomic():
            closed = reset_circuits(agent, target)
            record_action(request.user, "api", "reset_circuit", agent, {"targets": closed})
        return Response(agent_health(agent))


class CacheStatsSerializer(serializers.Serializer):
    """How an agent's response cache did, from the audit log (``routing.response_cache.cache_stats``)."""

    agent = serializers.CharField()
    hours = serializers.IntegerField(help_text="The window: this many hours up to now.")
    hits = serializers.IntegerField()
    misses = serializers.IntegerField(help_text="Requests it could have answered, asked upstream.")
    bypassed = serializers.IntegerField(help_text="Requests it could not answer: no-store, a stream, too hot.")
    hit_rate = serializers.FloatField(allow_null=True, help_text="Hits over hits and misses; null without either.")
    saved_usd = serializers.DecimalField(max_digits=20, decimal_places=9, help_text="What the hits would have cost.")


class CacheWindowSerializer(serializers.Serializer):
    hours = serializers.IntegerField(min_value=1, max_value=24 * 90, default=24)


class CacheForgetSerializer(serializers.Serializer):
    """What to forget: one of the two."""

    agent = SlugRelatedField(slug_field="slug", queryset=Agent.objects.all(), required=False,
                             help_text="Every answer the agent's cache holds, for every client.")  # fmt: skip
    client = serializers.PrimaryKeyRelatedField(
        queryset=Client.objects.all(), required=False,
        help_text="Every answer cached for the client alone, by every agent whose cache is per client.",
    )  # fmt: skip

    def validate(self, data):
        if ("agent" in data) == ("client" in data):
            raise serializers.ValidationError("Give either an agent or a client.")
        return data


class ResponseCacheViewSet(viewsets.ViewSet):
    """The exact response cache: how each caching agent's did, and forgetting what it holds."""

    @extend_schema(parameters=[CacheWindowSerializer], responses=CacheStatsSerializer(many=True))
    def list(self, request):
        """Every agent with its cache on: hits, misses and what the hits saved over the last ``hours`` (24)."""
        window = CacheWindowSerializer(data=request.query_params)
        window.is_valid(raise_exception=True)
        agents = Agent.objects.filter(cache_enabled=True).order_by("slug").values_list("slug", flat=True)
        return Response([response_cache.cache_stats(slug, window.validated_data["hours"]) for slug in agents])

    @extend_schema(request=CacheForgetSerializer, responses={204: None})
    @action(detail=False, methods=["post"])
    def invalidate(self, request):
        """Forget an agent's cached answers (``{"agent": slug}``) or a client's (``{"client": id}``), everywhere at
        once: the next request for each is asked upstream."""
        asked = CacheForgetSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        response_cache.forget(asked.validated_data.get("agent") or asked.validated_data["client"], request.user, "api")
        return Response(status=204)


class TargetSerializer(serializers.ModelSerializer):
    agent = SlugRelatedField(slug_field="slug", queryset=Agent.objects.all())
    has_upstream_api_key = serializers.SerializerMethodField(help_text="Whether the target has its own credential.")
    credential_source = serializers.SerializerMethodField(
        help_text="What the target is sent: its own credential (own), the agent's, which goes only to the agent's "
        "own scheme, host and port (agent), or none."
    )
    upstream_api_key_cleared = serializers.SerializerMethodField(help_text=CLEARED_HELP)

    class Meta:
        model = Target
        fields = [
            "id", "agent", "name", "url", "upstream_api_key", "has_upstream_api_key", "credential_source",
            "upstream_api_key_cleared", "weight", "max_concurrent", "enabled", "created_at",
        ]  # fmt: skip
        read_only_fields = ["created_at"]
        extra_kwargs = {"upstream_api_key": {"write_only": True}}
        validators = []  # the unique name per agent is checked in validate(), with a message that names both

    def get_has_upstream_api_key(self, target) -> bool:
        return bool(target.upstream_api_key)

    def get_credential_source(self, target) -> Literal["own", "agent", "none"]:
        if target.upstream_api_key:
            return "own"
        return "agent" if target_credential(target, target.agent) else "none"

    def get_upstream_api_key_cleared(self, target) -> bool:
        return target.credential_cleared

    def validate(self, data):
        agent = data.get("agent", getattr(self.instance, "agent", None))
        name = data.get("name", getattr(self.instance, "name", None))
        clash = Target.objects.filter(agent=agent, name=name).exclude(pk=getattr(self.instance, "pk", None))
        if clash.exists():
            raise serializers.ValidationError({"name": f"The agent '{agent.slug}' already has a target '{name}'."})
        return data


class TargetFilter(filters.FilterSet):
    agent = filters.CharFilter(method="filter_agent", help_text="The agent's slug, or its id.")

    class Meta:
        model = Target
        fields = ["agent", "enabled"]

    def filter_agent(self, queryset, name, value):
        if value.isascii() and value.isdigit() and len(value) <= 18:  # an id, within a bigint
            return queryset.filter(agent__pk=int(value))
        return queryset.filter(agent__slug=value)


class TargetViewSet(TrailedModelViewSet):
    """An agent's upstream instances: weight (canary share), capacity, enabled. ``?agent=<slug>`` filters."""

    queryset = Target.objects.select_related("agent")
    serializer_class = TargetSerializer
    filterset_class = TargetFilter
    ordering_fields = ["name", "weight", "created_at"]
