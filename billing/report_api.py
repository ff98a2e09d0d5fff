"""Usage reports in the management API: read-only views over ``billing.reports``, as JSON or CSV.

``?format=csv`` (or ``Accept: text/csv``) answers with the same rows as a CSV
download; errors are JSON whatever was asked for.
"""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import reports, rollups
from billing.report_forms import TopSpendersForm, UsageReportForm


class CSVRenderer(BaseRenderer):
    """A report's rows as CSV, in its column order, spreadsheet formulas neutralised."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return "".join(reports.report_csv(data["rows"], data["columns"])).encode(self.charset)


class UsageRowSerializer(serializers.Serializer):
    """One group of a report; only the columns of the groups asked for are present."""

    day = serializers.DateField(required=False)
    week = serializers.DateField(required=False, help_text="The Monday the week starts on.")
    month = serializers.DateField(required=False, help_text="The first day of the month.")
    client_id = serializers.IntegerField(required=False, allow_null=True)
    client = serializers.CharField(required=False, help_text="The client's slug.")
    client_name = serializers.CharField(required=False)
    cost_center_id = serializers.IntegerField(required=False, allow_null=True)
    cost_center = serializers.CharField(required=False, help_text="The cost center's name.")
    key_id = serializers.IntegerField(required=False, allow_null=True)
    key = serializers.CharField(required=False, help_text="The key's prefix.")
    agent = serializers.CharField(required=False)
    model = serializers.CharField(required=False)
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=20, decimal_places=6)
    default_priced_requests = serializers.IntegerField(help_text="Requests priced at the default price.")

    def to_representation(self, instance):
        return {name: value for name, value in super().to_representation(instance).items() if name in instance}


class SpenderRowSerializer(UsageRowSerializer):
    share_percent = serializers.DecimalField(max_digits=5, decimal_places=1, help_text="Share of the total spend.")


class TotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=20, decimal_places=6)
    default_priced_requests = serializers.IntegerField()


class ReportSerializer(serializers.Serializer):
    since = serializers.DateField()
    until = serializers.DateField()
    filters = serializers.DictField(child=serializers.CharField(), help_text="The filters as given.")
    as_of = serializers.DateTimeField(help_text="Usage up to this moment is counted (the rollups' age).")
    columns = serializers.ListField(child=serializers.CharField(), help_text="The rows' columns, in CSV order.")
    totals = TotalsSerializer()
    count = serializers.IntegerField()


class UsageReportSerializer(ReportSerializer):
    group_by = serializers.ListField(child=serializers.CharField())
    rows = UsageRowSerializer(many=True)


class TopSpendersSerializer(ReportSerializer):
    by = serializers.CharField()
    limit = serializers.IntegerField()
    rows = SpenderRowSerializer(many=True)


FILTER_PARAMETERS = [
    OpenApiParameter("since", OpenApiTypes.DATE, description="First day, in the gateway's time zone (default: "
                     "29 days before until)."),
    OpenApiParameter("until", OpenApiTypes.DATE, description="Last day, included (default: today)."),
    OpenApiParameter("client", str, description="Only this client: slug or id."),
    OpenApiParameter("cost_center", str, description="Only this cost center (attribution at request time): slug "
                     "or id."),
    OpenApiParameter("key", str, description="Only this API key: prefix or id."),
    OpenApiParameter("agent", str, description="Only this agent (slug)."),
    OpenApiParameter("model", str, description="Only this model."),
    OpenApiParameter("format", str, enum=["json", "csv"], description="csv downloads the rows as CSV (as does "
                     "Accept: text/csv)."),
]  # fmt: skip
GROUP_BY_PARAMETER = OpenApiParameter(
    "group_by", str, description="Comma-separated groups: at most one of day, week, month, and any of client, "
    "cost_center, key, agent, model. None: one row of totals.",
)  # fmt: skip
CSV_RESPONSE = {(200, "text/csv"): OpenApiTypes.STR, (400, "application/json"): OpenApiTypes.OBJECT}


class ReportView(APIView):
    """A report read from the daily rollups; any console role may read it."""

    renderer_classes = [JSONRenderer, CSVRenderer]
    form_class = UsageReportForm
    name = "report"

    def perform_content_negotiation(self, request, force=False):
        try:
            return super().perform_content_negotiation(request, force)
        except Http404:  # what DRF raises for an unknown ?format=
            raise ValidationError({"format": ["Use format=json or format=csv."]}) from None

    def handle_exception(self, exc):
        # Errors are JSON even when CSV was asked for: a CSV of an error is no use to anyone.
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return super().handle_exception(exc)

    def validated(self, request):
        form = self.form_class(request.query_params)
        if not form.is_valid():
            raise ValidationError(form.messages_by_field())
        given = {name: form.data[name] for name in reports.DIMENSIONS if form.data.get(name)}
        return form, given

    def respond(self, request, payload: dict, serializer_class) -> Response:
        response = Response(serializer_class(payload).data)
        if request.accepted_renderer.format == "csv":
            name = f"{self.name}-{payload['since']}-{payload['until']}.csv"
            response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class UsageReportView(ReportView):
    name = "usage"

    @extend_schema(
        summary="Usage report",
        description="Requests, tokens and cost per group from the daily rollups, optionally filtered.",
        parameters=[*FILTER_PARAMETERS, GROUP_BY_PARAMETER],
        responses={(200, "application/json"): UsageReportSerializer, **CSV_RESPONSE},
    )
    def get(self, request):
        form, given = self.validated(request)
        query = form.query()
        rows = reports.usage_report(group_by=query.group_by, **query.span)
        payload = {
            "since": query.since,
            "until": query.until,
            "group_by": query.group_by,
            "filters": given,
            "as_of": rollups.as_of(query.since, query.until),
            "columns": reports.report_columns(query.group_by),
            "totals": reports.totals(rows),
            "count": len(rows),
            "rows": rows,
        }
        return self.respond(request, payload, UsageReportSerializer)


class TopSpendersView(ReportView):
    form_class = TopSpendersForm
    name = "top-spenders"

    @extend_schema(
        summary="Top spenders",
        description="The biggest spenders in the range, with their share of the total spend.",
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter("by", str, enum=list(reports.DIMENSIONS), description="Rank these (default: client)."),
            OpenApiParameter("limit", int, description="How many (1-100, default 10)."),
        ],
        responses={(200, "application/json"): TopSpendersSerializer, **CSV_RESPONSE},
    )
    def get(self, request):
        form, given = self.validated(request)
        query, by, limit = form.query(), form.cleaned_data["by"], form.cleaned_data["limit"]
        rows = reports.top_spenders(by=by, limit=limit, **query.span)
        payload = {
            "since": query.since,
            "until": query.until,
            "by": by,
            "limit": limit,
            "filters": given,
            "as_of": rollups.as_of(query.since, query.until),
            "columns": [*reports.report_columns([by]), "share_percent"],
            "totals": reports.totals(rows),
            "count": len(rows),
            "rows": rows,
        }
        return self.respond(request, payload, TopSpendersSerializer)
