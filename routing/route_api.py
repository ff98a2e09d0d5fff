"""Path routes and content routing's keyword map in the management API: serializers and viewsets."""

from __future__ import annotations

import math

from django.core.exceptions import ValidationError as DjangoValidationError
from django_filters import rest_framework as filters
from rest_framework import serializers

from gateway_project.api import SEARCHABLE_FILTER_BACKENDS, SlugRelatedField, TrailedModelViewSet
from routing import path_routes
from routing.content_routing import clean_keyword
from routing.models import CACHE_FIELDS, Agent, CapabilityKeyword, PathRoute


def _checked(check, value):
    try:
        return check(value)
    except DjangoValidationError as error:
        raise serializers.ValidationError(error.messages) from None


class PathRouteSerializer(serializers.ModelSerializer):
    agent = SlugRelatedField(slug_field="slug", queryset=Agent.objects.all(), help_text="The agent's slug.")
    methods = serializers.ListField(
        child=serializers.ChoiceField(path_routes.HTTP_METHODS), required=False,
        help_text="Methods the route accepts; empty: every method (others get 405 with Allow).",
    )  # fmt: skip

    class Meta:
        model = PathRoute
        fields = [
            "id", "prefix", "methods", "agent", "upstream_path", "timeout_seconds", "max_retries", "auth_required",
            "requests_per_minute", "protocol", "deprecated", "sunset_at", *CACHE_FIELDS, "is_active", "created_at",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = ["created_at", "updated_at"]

    def validate_prefix(self, value):
        return _checked(path_routes.clean_prefix, value)

    def validate_methods(self, value):
        return _checked(path_routes.clean_methods, value)

    def validate_upstream_path(self, value):
        return _checked(path_routes.clean_upstream_path, value)

    def validate_timeout_seconds(self, value):
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise serializers.ValidationError("Must be a number of seconds above zero (or null for the agent's).")
        return value


class PathRouteFilter(filters.FilterSet):
    agent = filters.CharFilter(field_name="agent__slug", help_text="The agent's slug.")

    class Meta:
        model = PathRoute
        fields = ["agent", "protocol", "auth_required", "deprecated", "is_active"]


class PathRouteViewSet(TrailedModelViewSet):
    """Path routes: a path prefix and methods served by an agent, with their own timeout, auth, rate and protocol."""

    queryset = PathRoute.objects.select_related("agent")
    serializer_class = PathRouteSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_class = PathRouteFilter
    search_fields = ["prefix", "upstream_path"]
    ordering_fields = ["prefix", "created_at"]


class CapabilityKeywordSerializer(serializers.ModelSerializer):
    class Meta:
        model = CapabilityKeyword
        fields = ["id", "keyword", "capability"]

    def validate_keyword(self, value):
        word = _checked(clean_keyword, value)
        taken = CapabilityKeyword.objects.filter(keyword=word)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise serializers.ValidationError(f"“{word}” is already mapped.")
        return word

    def validate_capability(self, value):
        return value.strip().lower()


class CapabilityKeywordViewSet(TrailedModelViewSet):
    """Content routing's map: a word in the input names a capability (agents list the capabilities they have)."""

    queryset = CapabilityKeyword.objects.all()
    serializer_class = CapabilityKeywordSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["capability"]
    search_fields = ["keyword", "capability"]
    ordering_fields = ["keyword", "capability"]
