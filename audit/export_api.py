"""Background audit exports in the management API: request one, follow it, download its file.

Each caller sees only the exports they requested (see ``audit.export_views.OwnExportMixin`` for why).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from audit.export_jobs import ExportGone, ExportNotReady, open_download, progress, request_export
from audit.models import AuditExport
from gateway_project import roles, throttles
from gateway_project.api import AcceptOnlyNegotiation


class AuditExportSerializer(serializers.ModelSerializer):
    percent = serializers.SerializerMethodField(help_text="Rows written out of the rows matching, 0 to 100.")
    expired = serializers.SerializerMethodField(help_text="The file's time is up: it is (or is about to be) deleted.")
    download_url = serializers.SerializerMethodField(
        help_text="Where the file downloads while it may; null before it is written, after it failed or expired."
    )

    class Meta:
        model = AuditExport
        fields = [
            "id", "kind", "format", "filters", "status", "percent", "rows_total", "rows_written", "file_name",
            "file_size", "sha256", "error", "created_at", "started_at", "finished_at", "expires_at", "expired",
            "download_url",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.INT)
    def get_percent(self, export) -> int:
        return progress(export).percent

    def get_expired(self, export) -> bool:
        return progress(export).expired

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_download_url(self, export) -> str | None:
        if not progress(export).downloadable:
            return None
        url = reverse("auditexport-download", args=[export.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url


class AuditExportRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=AuditExport.KIND_CHOICES, default=AuditExport.RECORDS)
    format = serializers.ChoiceField(choices=AuditExport.FORMAT_CHOICES, default="csv")
    filters = serializers.DictField(
        required=False,
        default=dict,
        help_text="Request log: since, until, client, key_prefix, agent, status, text, request_id. "
        "Admin-action trail: since, until, actor, action, object_type.",
    )


class AuditExportViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Exports of the request log or the admin-action trail, written to a gzip file in the background."""

    queryset = AuditExport.objects.all()
    serializer_class = AuditExportSerializer
    filterset_fields = ["kind", "format", "status"]
    content_negotiation_class = AcceptOnlyNegotiation  # ?format= filters by the file's format
    ordering_fields = ["created_at"]
    ordering = ["-created_at"]
    read_roles = write_roles = roles.EXPORT
    action_throttle_scopes = {"create": throttles.EXPORT}

    def get_queryset(self):
        return super().get_queryset().filter(requester=self.request.user)

    @extend_schema(
        summary="Request an export",
        request=AuditExportRequestSerializer,
        responses={
            202: AuditExportSerializer,
            400: OpenApiResponse(description="An unknown or invalid filter."),
            429: throttles.THROTTLED,
        },
    )
    def create(self, request, *args, **kwargs):
        asked = AuditExportRequestSerializer(data=request.data)
        asked.is_valid(raise_exception=True)
        data = asked.validated_data
        try:
            export = request_export(request.user, data["kind"], data["format"], data["filters"], via="api")
        except DjangoValidationError as error:
            raise ValidationError({"filters": error.message_dict}) from None
        serializer = self.get_serializer(export)
        return Response(serializer.data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Download the export's file",
        responses={
            (200, "application/gzip"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No export of yours has this id."),
            409: OpenApiResponse(description="The export is still running, or failed."),
            410: OpenApiResponse(description="The export expired and its file was deleted."),
        },
    )
    @action(detail=True, methods=["get"], filterset_fields=None)
    def download(self, request, pk=None):
        export = self.get_object()
        try:
            handle = open_download(export, request.user, "api")
        except ExportNotReady as reason:
            return Response({"detail": str(reason)}, status=status.HTTP_409_CONFLICT)
        except ExportGone:
            expired = f" at {export.expires_at.isoformat()}" if export.expires_at else ""
            return Response(
                {"detail": f"This export expired{expired} and its file was deleted; request it again."},
                status=status.HTTP_410_GONE,
            )
        return FileResponse(handle, as_attachment=True, filename=export.file_name, content_type="application/gzip")
