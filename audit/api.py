"""The audit log in the management API (read-only), the rows the database refused, and the redaction rules."""

import hmac

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from audit import checkpoints
from audit.chain import REQUEST_CHAIN, TRAIL_CHAIN, Chain, verify
from audit.forms import BUILTIN_FIXED
from audit.models import AdminAction, AuditRecord, QuarantinedRow, RedactionRule
from audit.redaction_rules import deletion_refusal
from gateway_project import datetimes, roles, throttles
from gateway_project.api import TrailedModelViewSet
from gateway_project.pagination import AppendOnlyCursorPagination, CountedCursorPagination

VERIFICATION = inline_serializer(
    "AuditVerification",
    {
        "ok": serializers.BooleanField(),
        "checked": serializers.IntegerField(),
        "first_seq": serializers.IntegerField(allow_null=True),
        "last_seq": serializers.IntegerField(allow_null=True),
        "message": serializers.CharField(),
        "finding": inline_serializer(
            "AuditChainFinding",
            {
                "kind": serializers.ChoiceField(["altered", "inserted", "removed", "key", "checkpoint", "archive"]),
                "seq": serializers.IntegerField(allow_null=True),
                "request_id": serializers.CharField(),
                "message": serializers.CharField(),
            },
            allow_null=True,
        ),
    },
)


def verify_schema(what: str):
    return extend_schema(
        summary=f"Verify the {what}'s hash chain",
        description=f"Recompute the {what}'s keyed chain over the records created in [since, until) (all by default) "
        "and name the first record that was altered, inserted or removed; then check the chain's head against the "
        "last signed checkpoint and the archived runs it links through against their files.",
        parameters=[
            OpenApiParameter("since", str, description="ISO date-time: records created at or after it"),
            OpenApiParameter("until", str, description="ISO date-time: records created before it"),
        ],
        responses={200: VERIFICATION, 429: throttles.THROTTLED},
    )


def verification_response(request, chain: Chain) -> Response:
    """Verify ``chain`` over the query's since/until; 400 when they are not date-times."""
    bounds = serializers.Serializer()
    bounds.fields["since"] = serializers.DateTimeField(required=False)
    bounds.fields["until"] = serializers.DateTimeField(required=False)
    bounds.initial_data = request.query_params
    if not bounds.is_valid():
        raise ValidationError(bounds.errors)
    result = verify(bounds.validated_data.get("since"), bounds.validated_data.get("until"), chain=chain)
    finding = result.finding
    return Response(
        {
            "ok": result.ok,
            "checked": result.checked,
            "first_seq": result.first_seq,
            "last_seq": result.last_seq,
            "message": result.describe(),
            "finding": None
            if finding is None
            else {"kind": finding.kind, "seq": finding.seq, "request_id": finding.request_id,
                  "message": finding.message},
        }
    )  # fmt: skip


CHECKPOINT = inline_serializer(
    "AuditCheckpoint",
    {
        "payload": serializers.CharField(help_text="The JSON text signed, as signed: verify the signature over it."),
        "algorithm": serializers.CharField(help_text="Ed25519"),
        "key_id": serializers.CharField(help_text="Which checkpoint key signed it"),
        "signature": serializers.CharField(help_text="Base64 of the Ed25519 signature over the payload's bytes"),
        "checkpoint": serializers.DictField(help_text="The payload parsed: version, time, chains"),
        "public_key": serializers.CharField(help_text="Base64 of the raw public key (check it is the one you pinned)"),
        "age_seconds": serializers.FloatField(),
        "interval_seconds": serializers.FloatField(help_text="How often a checkpoint is published"),
    },
)


class ReadsCheckpoints(BasePermission):
    """Admins and compliance users, or an external monitor: ``Authorization: Bearer <GATEWAY_AUDIT_MONITOR_TOKEN>``."""

    message = "Your role does not allow this."

    def has_permission(self, request, view):
        if roles.may(request.user, roles.EXPORT):
            return True
        token = settings.GATEWAY_AUDIT_MONITOR_TOKEN
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def checkpoint_response() -> Response:
    """The last checkpoint, as signed, with its payload parsed and its key's public half; 404 before the first."""
    try:
        checkpoint = checkpoints.latest()
    except checkpoints.CheckpointError as error:
        detail = f"The last checkpoint does not verify: {error}."
        return Response({"detail": detail}, status.HTTP_503_SERVICE_UNAVAILABLE)
    if checkpoint is None:
        return Response({"detail": "No checkpoint has been published yet."}, status.HTTP_404_NOT_FOUND)
    public = checkpoints.public_keys()[checkpoint.key_id]
    moment = parse_datetime(checkpoint.time)
    return Response(
        {
            **checkpoint.line(),
            "checkpoint": checkpoint.body,
            "public_key": checkpoints.describe_public_key(public)["public_key"],
            "age_seconds": (timezone.now() - moment).total_seconds() if moment is not None else None,
            "interval_seconds": settings.GATEWAY_AUDIT_CHECKPOINT_SECONDS,
        }
    )


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
            "target",
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
            "seq",
            "prev_hash",
            "record_hash",
        ]
        read_only_fields = fields


class AuditRecordFilter(filters.FilterSet):
    since = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte", label="Created at or after")
    until = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt", label="Created before")
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
    """The request log, newest first (as written). Append-only: the gateway writes it, nobody edits it.

    Paged by cursor: follow each page's ``next`` link to the end to see every record once,
    however many are written or removed by retention meanwhile.
    """

    queryset = AuditRecord.objects.all()
    serializer_class = AuditRecordSerializer
    filterset_class = AuditRecordFilter
    pagination_class = AppendOnlyCursorPagination
    ordering_fields = ["id"]
    ordering = ["-id"]
    action_throttle_scopes = {"verify": throttles.VERIFY}

    @verify_schema("request log")
    @action(detail=False, methods=["get"], filterset_class=None, pagination_class=None)
    def verify(self, request):
        return verification_response(request, REQUEST_CHAIN)

    @extend_schema(
        summary="The last signed checkpoint of the audit chains' heads",
        description="What an external monitor polls: the heads of the request log and the admin-action trail (seq, "
        "hash, and the seq the chain is keyed from) at the time beat last published them, signed with Ed25519. "
        "Verify the signature over `payload` with the public key you pinned (`manage.py audit_checkpoint "
        "--public-key`), then check that the time is recent and that no seq went back, nor a seq's hash changed. "
        "Admins and compliance users, or the monitor's token (`Authorization: Bearer …`, GATEWAY_AUDIT_MONITOR_TOKEN).",
        responses={
            200: CHECKPOINT,
            404: OpenApiResponse(description="No checkpoint has been published yet."),
            503: OpenApiResponse(description="The checkpoint file's last line does not verify."),
        },
    )
    @action(
        detail=False, methods=["get"], filterset_class=None, pagination_class=None,
        permission_classes=[ReadsCheckpoints],
    )  # fmt: skip
    def checkpoint(self, request):
        return checkpoint_response()


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
            "seq",
            "prev_hash",
            "record_hash",
        ]


class AdminActionFilter(filters.FilterSet):
    since = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = datetimes.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AdminAction
        fields = ["since", "until", "actor", "action", "object_type", "object_id", "via"]


class AdminActionViewSet(viewsets.ReadOnlyModelViewSet):
    """The admin-action trail, newest first: every change made through the console or the API (paged by cursor)."""

    queryset = AdminAction.objects.all()
    serializer_class = AdminActionSerializer
    filterset_class = AdminActionFilter
    pagination_class = AppendOnlyCursorPagination
    ordering_fields = ["id"]
    ordering = ["-id"]
    read_roles = roles.EXPORT
    action_throttle_scopes = {"verify": throttles.VERIFY}

    @verify_schema("admin-action trail")
    @action(detail=False, methods=["get"], filterset_class=None, pagination_class=None)
    def verify(self, request):
        return verification_response(request, TRAIL_CHAIN)


class QuarantinedRowSerializer(serializers.ModelSerializer):
    class Meta:
        model = QuarantinedRow
        fields = ["id", "created_at", "model", "request_id", "row", "reason"]
        read_only_fields = fields


class QuarantinedRowViewSet(viewsets.ReadOnlyModelViewSet):
    """Rows the database refused, set aside so the rows around them were written (admins only: values unredacted).

    Strings the database could not take are escaped as ``{"$escaped": "..."}``; the
    list's ``count`` is how many rows are in quarantine. Paged by cursor, newest first.
    """

    queryset = QuarantinedRow.objects.all()
    serializer_class = QuarantinedRowSerializer
    filterset_fields = ["model", "request_id"]
    pagination_class = CountedCursorPagination
    ordering_fields = ["id"]
    ordering = ["-id"]
    read_roles = roles.QUARANTINE


class RedactionRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = RedactionRule
        fields = [
            "id", "name", "pattern", "replacement", "code_check", "enabled", "builtin", "order", "created_at",
            "updated_at",
        ]  # fmt: skip
        read_only_fields = ["code_check", "builtin", "created_at", "updated_at"]

    def validate(self, attrs):
        rule = self.instance
        if rule is not None and rule.builtin:
            fixed = sorted(name for name in BUILTIN_FIXED if name in attrs and attrs[name] != getattr(rule, name))
            if fixed:
                raise ValidationError({name: "A built-in rule can only be switched on or off." for name in fixed})
        return attrs


class RedactionRuleViewSet(TrailedModelViewSet):
    """Rules that redact audit previews. Every role reads them; admins add, change and delete custom ones."""

    queryset = RedactionRule.objects.all()
    serializer_class = RedactionRuleSerializer
    filterset_fields = ["enabled", "builtin"]
    ordering_fields = ["order", "name"]
    ordering = ["order", "id"]
    write_roles = roles.AUDIT_POLICY

    def perform_destroy(self, instance):
        refusal = deletion_refusal(instance)
        if refusal:
            raise ValidationError(refusal)
        super().perform_destroy(instance)
