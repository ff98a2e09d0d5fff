"""Retention archives in the management API (read-only): list them, list an archive's runs, verify its file."""

from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from audit.archive_check import verify_archive
from audit.models import ArchivedRun, AuditArchive
from gateway_project import roles, throttles
from gateway_project.pagination import AppendOnlyCursorPagination, BoundedLimitOffsetPagination


class AuditArchiveSerializer(serializers.ModelSerializer):
    run_count = serializers.IntegerField(read_only=True, help_text="Runs of consecutive records the file holds.")

    class Meta:
        model = AuditArchive
        fields = [
            "id", "created_at", "file_name", "file_size", "sha256", "records", "first_seq", "last_seq", "oldest_at",
            "newest_at", "policy", "run_count",
        ]  # fmt: skip
        read_only_fields = fields


class ArchivedRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = ArchivedRun
        fields = ["first_seq", "last_seq", "prev_hash", "last_hash"]
        read_only_fields = fields


ARCHIVE_VERIFICATION = inline_serializer(
    "AuditArchiveVerification",
    {
        "ok": serializers.BooleanField(),
        "checked": serializers.IntegerField(help_text="Records of the file checked."),
        "message": serializers.CharField(),
        "kind": serializers.CharField(allow_null=True, help_text="altered, inserted or removed; null when all holds."),
    },
)


class AuditArchiveViewSet(viewsets.ReadOnlyModelViewSet):
    """Archives the retention job wrote: request records past their retention, removed from the database.

    Each archive is one gzip JSON Lines file with every chained field; its runs give the
    seq numbers and hashes that link it to the chain (``python audit/verify_export.py
    FILE --seq FIRST-LAST --anchor PREV_HASH`` checks one run offline).
    """

    queryset = AuditArchive.objects.annotate(run_count=Count("runs"))
    serializer_class = AuditArchiveSerializer
    filterset_fields = ["first_seq", "last_seq"]
    pagination_class = AppendOnlyCursorPagination  # every retention run may add one
    ordering_fields = ["id"]
    ordering = ["-id"]
    read_roles = roles.EXPORT
    action_throttle_scopes = {"verify": throttles.VERIFY}

    @extend_schema(summary="The archive's runs", responses=ArchivedRunSerializer(many=True))
    # An archive's runs are written with it and never change: limit/offset pages hold still.
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=BoundedLimitOffsetPagination)
    def runs(self, request, pk=None):
        """The runs of consecutive records in the file, in seq order, with the hashes at their two ends."""
        runs = self.get_object().runs.order_by("first_seq")
        page = self.paginate_queryset(runs)
        return self.get_paginated_response(ArchivedRunSerializer(page, many=True).data)

    @extend_schema(summary="Verify the archive's file", responses={200: ARCHIVE_VERIFICATION, 429: throttles.THROTTLED})
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def verify(self, request, pk=None):
        """Check the file's SHA-256 as recorded, and that each run's records link from its previous hash to its last."""
        result = verify_archive(self.get_object())
        finding = result.finding
        return Response({"ok": result.ok, "checked": result.checked, "message": result.describe(),
                         "kind": finding.kind if finding else None})  # fmt: skip
