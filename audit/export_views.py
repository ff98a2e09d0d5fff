"""Console pages of background audit exports: the requester's list, one job's progress, its status, its file."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views import View

from audit.export_jobs import ExportGone, ExportNotReady, open_download, progress
from audit.models import AuditExport
from gateway_project import roles
from gateway_project.console import PAGE_SIZE, RoleRequiredMixin


class OwnExportMixin(RoleRequiredMixin):
    """Pages of one export, for the person who requested it and nobody else.

    Anyone else gets 404, admins included: an export is a copy of audit data taken under
    its requester's name, filter and role, and the trail records it as theirs. Someone
    else who needs the same rows requests an export of their own, which the trail then
    records under their name. 404 rather than 403 also keeps the ids of others' exports secret.
    """

    needed_roles = roles.EXPORT

    def own_export(self, request, pk) -> AuditExport:
        return get_object_or_404(AuditExport, pk=pk, requester=request.user)


def status_json(export: AuditExport) -> dict:
    state = progress(export)
    return {
        "id": str(export.pk),
        "status": export.status,
        "status_display": export.get_status_display(),
        "percent": state.percent,
        "rows_written": export.rows_written,
        "rows_total": export.rows_total,
        "file_size": export.file_size,
        "expires_at": export.expires_at.isoformat() if export.expires_at else None,
        "expired": state.expired,
        "error": export.error,
        "download_url": reverse("console:export-download", args=[export.pk]) if state.downloadable else None,
    }


class ExportListView(RoleRequiredMixin, View):
    """The signed-in user's own exports, newest first."""

    needed_roles = roles.EXPORT

    def get(self, request):
        exports = AuditExport.objects.filter(requester=request.user).order_by("-created_at")
        page = Paginator(exports, PAGE_SIZE).get_page(request.GET.get("page"))
        for export in page:
            export.progress = progress(export)
        context = {
            "page": page,
            "stream_max_rows": settings.GATEWAY_EXPORT_STREAM_MAX_ROWS,
            "ttl_hours": settings.GATEWAY_EXPORT_TTL_HOURS,
        }
        return render(request, "audit/export_list.html", context)


class ExportDetailView(OwnExportMixin, View):
    def get(self, request, pk):
        export = self.own_export(request, pk)
        export.progress = progress(export)
        return render(request, "audit/export_detail.html", {"export": export})


class ExportStatusView(OwnExportMixin, View):
    """The job's progress as JSON, polled by its page while it runs."""

    def get(self, request, pk):
        return JsonResponse(status_json(self.own_export(request, pk)))


class ExportDownloadView(OwnExportMixin, View):
    """The finished file, for its requester until it expires (410 after); the download goes into the trail."""

    def get(self, request, pk):
        export = self.own_export(request, pk)
        try:
            handle = open_download(export, request.user, "console")
        except ExportNotReady:
            messages.info(request, "The export has no file to download yet.")
            return redirect("console:export-detail", export.pk)
        except ExportGone:
            return render(request, "audit/export_gone.html", {"export": export}, status=410)
        return FileResponse(handle, as_attachment=True, filename=export.file_name, content_type="application/gzip")
