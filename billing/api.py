"""Prices, budgets and usage in the management API: serializers, filtersets and viewsets."""

from django_filters import rest_framework as filters
from rest_framework import serializers, viewsets
from rest_framework.validators import UniqueValidator

from billing.models import Budget, ModelPrice, UsageRecord
from gateway_project.api import SEARCHABLE_FILTER_BACKENDS, TrailedModelViewSet
from keys.models import Client


class ModelPriceSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelPrice
        fields = ["id", "model", "input_per_million", "output_per_million", "updated_at"]
        read_only_fields = ["updated_at"]


class ModelPriceViewSet(TrailedModelViewSet):
    """Prices in USD per million input and output tokens; the ``default`` row prices unlisted models."""

    queryset = ModelPrice.objects.all()
    serializer_class = ModelPriceSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    search_fields = ["model"]
    ordering_fields = ["model", "updated_at"]


class BudgetSerializer(serializers.ModelSerializer):
    client = serializers.PrimaryKeyRelatedField(
        queryset=Client.objects.all(),
        validators=[
            UniqueValidator(
                queryset=Budget.objects.all(), message="This client already has a budget; update that one instead."
            )
        ],
    )
    client_slug = serializers.CharField(source="client.slug", read_only=True)

    class Meta:
        model = Budget
        fields = ["id", "client", "client_slug", "limit_usd", "updated_at"]
        read_only_fields = ["updated_at"]


class BudgetViewSet(TrailedModelViewSet):
    """Monthly spending limits in USD, at most one per client; the gateway refuses with 402 once spent."""

    queryset = Budget.objects.select_related("client").order_by("client__name")
    serializer_class = BudgetSerializer
    filterset_fields = ["client"]
    ordering_fields = ["limit_usd", "updated_at"]


class UsageRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "request_id",
            "created_at",
            "client",
            "api_key",
            "agent",
            "model",
            "input_tokens",
            "output_tokens",
            "cost_usd",
        ]
        read_only_fields = fields


class UsageRecordFilter(filters.FilterSet):
    # Plain ids: usage outlives deleted clients and keys, so their rows may be gone.
    client = filters.NumberFilter(field_name="client_id")
    api_key = filters.NumberFilter(field_name="api_key_id")
    created_after = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="Created at or after")
    created_before = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Created before")

    class Meta:
        model = UsageRecord
        fields = ["client", "api_key", "agent", "model", "request_id", "created_after", "created_before"]


class UsageRecordViewSet(viewsets.ReadOnlyModelViewSet):
    """Tokens and cost of each metered request, newest first; written by the gateway, read-only here."""

    queryset = UsageRecord.objects.all()
    serializer_class = UsageRecordSerializer
    filterset_class = UsageRecordFilter
    ordering_fields = ["created_at", "cost_usd", "input_tokens", "output_tokens"]
