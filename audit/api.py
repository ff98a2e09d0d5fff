"""The audit log in the management API, read-only: serializer, filterset and viewset."""

from django_filters import rest_framework as filters
from rest_framework import serializers, viewsets

from audit.models import AdminAction, AuditRecord
from gateway_project import roles


class AuditRecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditRecord
        fields = [
            "id",
            "request_id",
            "created_at",
            "client_id",
            "client_slug",
            "api_key_id",
            "key_prefix",
            "agent",
            "model",
            "method",
            "path",
            "status",
            "error_type",
            "latency_ms",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "client_ip",
            "user_agent",
            "input_preview",
            "output_preview",
        ]
        read_only_fields = fields


class AuditRecordFilter(filters.FilterSet):
    since = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="Created at or after")
    until = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Created before")
    client = filters.CharFilter(field_name="client_slug", label="Client slug")
    client_id = filters.NumberFilter(field_name="client_id")
    agent = filters.CharFilter(field_name="agent")
    status = filters.NumberFilter(field_name="status")
    status_min = filters.NumberFilter(field_name="status", lookup_expr="gte", label="Status at least")
    status_max = filters.NumberFilter(field_name="status", lookup_expr="lte", label="Status at most")
    key_prefix = filters.CharFilter(field_name="key_prefix")
    request_id = filters.CharFilter(field_name="request_id")

    class Meta:
        model = AuditRecord
        fields = [
            "since",
            "until",
            "client",
            "client_id",
            "agent",
            "status",
            "status_min",
            "status_max",
            "key_prefix",
            "request_id",
        ]


class AuditRecordViewSet(viewsets.ReadOnlyModelViewSet):
    """The request log, newest first. Append-only: the gateway writes it, nobody edits it."""

    queryset = AuditRecord.objects.all()
    serializer_class = AuditRecordSerializer
    filterset_class = AuditRecordFilter
    ordering_fields = ["created_at", "latency_ms", "status"]
    ordering = ["-created_at", "-id"]


class AdminActionSerializer(serializers.ModelSerializer):
    class Meta:
        model = AdminAction
        fields = [
            "id",
            "created_at",
            "actor",
            "actor_id",
            "via",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "changes",
        ]


class AdminActionFilter(filters.FilterSet):
    since = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AdminAction
        fields = ["since", "until", "actor", "action", "object_type", "object_id", "via"]


class AdminActionViewSet(viewsets.ReadOnlyModelViewSet):
    """The admin-action trail, newest first: every change made through the console or the API."""

    queryset = AdminAction.objects.all()
    serializer_class = AdminActionSerializer
    filterset_class = AdminActionFilter
    ordering_fields = ["created_at", "actor", "action"]
    ordering = ["-created_at", "-id"]
    read_roles = roles.EXPORT
