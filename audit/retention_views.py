"""Console pages of audit retention: the policy, the archives, verifying and downloading one, running it now."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View

from audit.archive_check import verify_archive
from audit.models import AuditArchive
from audit.retention import due_records, open_archive, policy, request_run
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin, sorted_page
from keys.models import Client

RUNS_SHOWN = 100  # an archive's runs listed on its page; the API pages through all of them


class RetentionView(RoleRequiredMixin, View):
    """The policy (default and client overrides), what is due now, and the archives made so far."""

    needed_roles = roles.EXPORT

    def get(self, request):
        sortable = {"time": "created_at", "seq": "first_seq", "records": "records"}
        page, sort = sorted_page(request, AuditArchive.objects.all(), sortable, "-time")
        overrides = Client.objects.filter(audit_retention_days__isnull=False).order_by("audit_retention_days", "name")
        context = {
            "policy": policy(),
            "overrides": overrides,
            "due": due_records().count(),
            "page": page,
            "sort": sort,
            "archive_dir": settings.GATEWAY_ARCHIVE_DIR,
            "can_run": roles.may(request.user, roles.AUDIT_POLICY),
        }
        return render(request, "audit/retention.html", context)


class RetentionRunView(RoleRequiredMixin, View):
    """Run the retention job now (admins): queued to a worker, or run at once without one."""

    needed_roles = write_roles = roles.AUDIT_POLICY

    def post(self, request):
        done = request_run(request.user, "console")
        messages.success(request, done or "Retention run queued; its archive appears here when it is done.")
        return redirect("console:retention")


class ArchiveView(RoleRequiredMixin, View):
    """One archive: its file, its runs (the numbers and hashes an offline check needs), and a check of the file."""

    needed_roles = roles.EXPORT
    check = False

    def get(self, request, pk):
        archive = get_object_or_404(AuditArchive, pk=pk)
        runs = Paginator(archive.runs.order_by("first_seq"), RUNS_SHOWN).get_page(1)
        context = {"archive": archive, "runs": runs, "result": verify_archive(archive) if self.check else None}
        return render(request, "audit/archive_detail.html", context)


class ArchiveDownloadView(RoleRequiredMixin, View):
    """The archive's file; the download goes into the admin-action trail."""

    needed_roles = roles.EXPORT

    def get(self, request, pk):
        archive = get_object_or_404(AuditArchive, pk=pk)
        try:
            handle = open_archive(archive, request.user, "console")
        except FileNotFoundError:
            raise Http404("The archive's file is missing.") from None
        return FileResponse(handle, as_attachment=True, filename=archive.file_name, content_type="application/gzip")
