"""Console pages for the request log and the admin-action trail: browse, open, export."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views import View

from audit.chain import CHAINS, verify
from audit.export_jobs import FIELDS, NAMES, request_export, rows_text, too_large_to_stream
from audit.exports import ACTION_FIELDS, RECORD_FIELDS, export_lines  # noqa: F401 - the columns, long imported from here
from audit.filters import AuditFilterForm, TrailFilterForm
from audit.forms import RedactionRuleForm
from audit.models import AuditExport, AuditRecord, QuarantinedRow, RedactionRule
from audit.quarantine import quarantined_count
from audit.redaction_rules import deletion_refusal, set_enabled, try_rule
from audit.trail import record_event
from gateway_project import roles
from gateway_project.console import RoleRequiredMixin, TrailedDeleteView, TrailedEditView, sorted_page

FORMATS = {"csv": ("text/csv", "csv"), "jsonl": ("application/x-ndjson", "jsonl")}


def _export(request, kind: str, queryset, described_filter: dict):
    """Stream the rows in the response, or hand them to a background job when they are many (or ``?background=1``)."""
    fmt = request.GET.get("format", "csv")
    if fmt not in FORMATS:
        raise Http404("Unknown export format.")
    if request.GET.get("background") == "1" or too_large_to_stream(queryset):
        export = request_export(request.user, kind, fmt, described_filter)
        messages.info(request, f"The export ({rows_text(export.rows_total)}) is written to a file in the background; "
                               "this page follows it and offers the file when it is ready.")  # fmt: skip
        return redirect("console:export-detail", export.pk)
    fields, name = FIELDS[kind], NAMES[kind]
    content_type, extension = FORMATS[fmt]
    record_event(request.user, "console", "export", f"audit.{name}", object_repr=f"{name} ({fmt})",
                 changes={"filter": [None, described_filter]})  # fmt: skip
    response = StreamingHttpResponse(export_lines(queryset, fields, fmt), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.{extension}"'
    return response


def _bad_filter(form) -> HttpResponseBadRequest:
    """400 naming the bad fields: an export never covers more than was asked for."""
    errors = "; ".join(f"{name}: {' '.join(problems)}" for name, problems in form.errors.items())
    return HttpResponseBadRequest(f"The export's filter is not valid: {errors}", content_type="text/plain")


class AuditListView(RoleRequiredMixin, View):
    def get(self, request):
        form = AuditFilterForm(request.GET or None)
        records = form.filter()
        page, sort = sorted_page(
            request, records, {"time": "created_at", "status": "status", "latency": "latency_ms", "cost": "cost_usd"},
            "-time",
        )  # fmt: skip
        query = request.GET.copy()
        query.pop("page", None)
        query.pop("sort", None)
        context = {
            "form": form,
            "page": page,
            "sort": sort,
            "query": query.urlencode(),
            "quarantined": quarantined_count(),
            "can_see_quarantine": roles.may(request.user, roles.QUARANTINE),
        }
        return render(request, "audit/audit_list.html", context)


class QuarantineListView(RoleRequiredMixin, View):
    """Rows the database refused, set aside so the log went on: what each row was and the database's reason."""

    needed_roles = roles.QUARANTINE

    def get(self, request):
        sortable = {"time": "created_at", "model": "model"}
        page, sort = sorted_page(request, QuarantinedRow.objects.all(), sortable, "-time")
        return render(request, "audit/quarantine_list.html", {"page": page, "sort": sort})


class AuditDetailView(RoleRequiredMixin, View):
    def get(self, request, pk):
        return render(request, "audit/audit_detail.html", {"record": get_object_or_404(AuditRecord, pk=pk)})


class AuditExportView(RoleRequiredMixin, View):
    needed_roles = roles.EXPORT

    def get(self, request):
        form = AuditFilterForm(request.GET or None)
        if request.GET and not form.is_valid():
            return _bad_filter(form)
        described = {k: str(v) for k, v in form.cleaned_data.items() if v} if form.is_bound else {}
        records = form.filter().order_by("seq", "id")  # chain order
        return _export(request, AuditExport.RECORDS, records, described)


class AuditVerifyView(RoleRequiredMixin, View):
    """Check the hash chain over the filter's time range (all of it by default) and say where it breaks."""

    def get(self, request):
        form = AuditFilterForm(request.GET or None)
        data = form.cleaned_data if form.is_valid() else {}
        name = request.GET.get("chain", "records")
        chain = CHAINS.get(name)
        if chain is None:
            return HttpResponseBadRequest("Unknown chain: choose records or trail.")
        result = verify(data.get("since"), data.get("until"), chain=chain)
        context = {"form": form, "result": result, "chain": name, "chain_name": chain.spec.name}
        return render(
            request, "audit/audit_verify.html", context, status=200 if form.is_valid() or not request.GET else 400
        )


class TrailListView(RoleRequiredMixin, View):
    needed_roles = roles.EXPORT

    def get(self, request):
        form = TrailFilterForm(request.GET or None)
        page, sort = sorted_page(request, form.filter(), {"time": "created_at", "actor": "actor"}, "-time")
        query = request.GET.copy()
        query.pop("page", None)
        query.pop("sort", None)
        context = {"form": form, "page": page, "sort": sort, "query": query.urlencode()}
        return render(
            request, "audit/trail_list.html", context, status=400 if request.GET and not form.is_valid() else 200
        )


class TrailExportView(RoleRequiredMixin, View):
    needed_roles = roles.EXPORT

    def get(self, request):
        form = TrailFilterForm(request.GET or None)
        if request.GET and not form.is_valid():
            return _bad_filter(form)
        described = {k: str(v) for k, v in form.cleaned_data.items() if v} if form.is_bound else {}
        actions = form.filter().order_by("seq", "id")  # chain order
        return _export(request, AuditExport.TRAIL, actions, described)


class RedactionRuleListView(RoleRequiredMixin, View):
    """The rules that redact audit previews; every role reads them, admins change them."""

    def get(self, request):
        context = {
            "rules": RedactionRule.objects.order_by("order", "id"),
            "can_edit_rules": roles.may(request.user, roles.AUDIT_POLICY),
        }
        return render(request, "audit/redaction_list.html", context)


class RedactionRuleToggleView(RoleRequiredMixin, View):
    needed_roles = write_roles = roles.AUDIT_POLICY

    def post(self, request, pk):
        rule = set_enabled(get_object_or_404(RedactionRule, pk=pk), request.POST.get("enabled") == "1",
                           request.user, "console")  # fmt: skip
        messages.success(request, f"“{rule}” switched {'on' if rule.enabled else 'off'}.")
        return redirect("console:audit-redaction")


class RedactionRuleEditView(TrailedEditView):
    """Add or edit a rule; "Test this rule" shows what it does to sample text without saving anything."""

    model = RedactionRule
    form_class = RedactionRuleForm
    template_name = "audit/redaction_form.html"
    context_name = "rule"
    success_url_name = "console:audit-redaction"
    needed_roles = write_roles = roles.AUDIT_POLICY

    def post(self, request, pk=None):
        if "test" not in request.POST:
            return super().post(request, pk)
        obj = get_object_or_404(RedactionRule, pk=pk) if pk else None
        form = self.form_class(request.POST, instance=obj)
        if not form.is_valid():
            return self._render(request, form, obj, status=400)
        tried = try_rule(form.instance, form.cleaned_data["sample"])
        context = {"form": form, "rule": obj, "tried": tried}
        return render(request, self.template_name, context)


class RedactionRuleDeleteView(TrailedDeleteView):
    model = RedactionRule
    success_url_name = "console:audit-redaction"
    needed_roles = write_roles = roles.AUDIT_POLICY

    def refusal(self, obj) -> str:
        return deletion_refusal(obj)
