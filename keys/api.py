"""Clients and API keys in the management API: serializers, filtersets and viewsets."""

from django.db import transaction
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from audit.trail import record_update, snapshot
from gateway_project.api import SEARCHABLE_FILTER_BACKENDS, NameListField, TrailedModelViewSet
from keys.models import ALL, ApiKey, Client
from keys.services import issue_key, revoke_key

KEY_STATUSES = ["active", "expired", "disabled", "revoked", "client_disabled"]


class ClientSerializer(serializers.ModelSerializer):
    class Meta:
        model = Client
        fields = ["id", "name", "slug", "contact", "is_active", "created_at"]
        read_only_fields = ["created_at"]


class ClientViewSet(TrailedModelViewSet):
    """Clients: the programs or teams that own keys, a budget and spend."""

    queryset = Client.objects.all()
    serializer_class = ClientSerializer
    filter_backends = SEARCHABLE_FILTER_BACKENDS
    filterset_fields = ["is_active"]
    search_fields = ["name", "slug"]
    ordering_fields = ["name", "slug", "created_at"]


class ScopeListField(NameListField):
    """Agent slugs or model names a key may use; ``["*"]`` for all.

    Required and never empty: an empty scope would allow nothing, which is never
    what a caller creating a key means; ``["*"]`` says "everything" explicitly.
    """

    default_error_messages = {"empty": f'Give at least one name, or ["{ALL}"] for all.'}

    def __init__(self, **kwargs):
        kwargs.setdefault("allow_empty", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        names = super().to_internal_value(data)
        if ALL in names and names != [ALL]:
            raise serializers.ValidationError(f'Use ["{ALL}"] on its own to allow all.')
        return names


class ApiKeySerializer(serializers.ModelSerializer):
    client_slug = serializers.CharField(source="client.slug", read_only=True)
    allowed_agents = ScopeListField(help_text='Agent slugs this key may call; ["*"] allows every agent.')
    allowed_models = ScopeListField(help_text='Model names this key may request; ["*"] allows every model.')
    status = serializers.ChoiceField(choices=KEY_STATUSES, read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "client",
            "client_slug",
            "name",
            "prefix",
            "status",
            "allowed_agents",
            "allowed_models",
            "requests_per_minute",
            "tokens_per_minute",
            "max_concurrent",
            "is_active",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "created_at",
        ]
        read_only_fields = ["prefix", "revoked_at", "last_used_at", "created_at"]
        extra_kwargs = {
            "requests_per_minute": {"min_value": 1},
            "tokens_per_minute": {"min_value": 1},
            "max_concurrent": {"min_value": 0},
        }

    def validate_client(self, client):
        if self.instance is not None and client != self.instance.client:
            raise serializers.ValidationError("A key cannot move to another client; issue a new key instead.")
        return client


class IssuedApiKeySerializer(ApiKeySerializer):
    """A key as issued: the only representation that ever carries the raw secret."""

    key = serializers.SerializerMethodField(help_text="The raw key. Shown in this response only: store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]

    def create(self, validated_data):
        key, self._raw_key = issue_key(**validated_data)
        return key

    def get_key(self, key) -> str:
        return self._raw_key


class ApiKeyFilter(filters.FilterSet):
    class Meta:
        model = ApiKey
        fields = ["client", "client__slug", "is_active", "prefix"]


@extend_schema_view(create=extend_schema(request=ApiKeySerializer, responses={201: IssuedApiKeySerializer}))
class ApiKeyViewSet(TrailedModelViewSet):
    """API keys. Creating one returns the raw key once; it is stored only as a hash.

    Revoke a key with ``POST /keys/{id}/revoke/``: that is the normal way to end a
    key, and it keeps the row so usage and audit records still name it. ``DELETE``
    removes the key for good.
    """

    queryset = ApiKey.objects.select_related("client")
    filterset_class = ApiKeyFilter
    ordering_fields = ["created_at", "last_used_at", "name"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_serializer_class(self):
        return IssuedApiKeySerializer if self.action == "create" else ApiKeySerializer

    @extend_schema(request=None, responses=ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Revoke the key now; every gateway process refuses it within a second."""
        key = self.get_object()
        before = snapshot(key)
        with transaction.atomic():
            revoke_key(key)
            record_update(request.user, "api", key, before, action="revoke")
        return Response(self.get_serializer(key).data)
