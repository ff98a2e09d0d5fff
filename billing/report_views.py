"""The console's Reports page: spend over time, top spenders, cost-center attribution and a grouped table.

Every table on the page downloads as CSV with the same filters (``?format=csv&report=…``).
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import render
from django.views import View

from billing import reports, rollups
from billing.report_forms import ReportPageForm
from gateway_project.console import RoleRequiredMixin, agent_choices

TABLE_PAGE_SIZE = 100
TOP = 5  # spenders in the chart, the rest together as "Other"
TOP_TABLE = 10
# What an empty query shows (over the default range, the last 30 days): spend per client.
DEFAULTS = {"group_by": ["client"], "chart_by": "client"}


NUMBERS = {*reports.METRICS, "share_percent"}


def _cells(row: dict, columns: list[str]) -> list[tuple[str, bool]]:
    """A table row as text, each cell with whether it is a number (right-aligned)."""
    cells = []
    for column in columns:
        value = row[column]
        text = "" if value is None else value.isoformat() if hasattr(value, "isoformat") else str(value)
        cells.append((text, column in NUMBERS))
    return cells


def _series_rows(series: dict) -> tuple[list[dict], list[str]]:
    """The chart's data as a table: a row per day, a column per series."""
    labels = [s.label for s in series["series"]]
    rows = [{"day": day, **{s.label: s.values[i] for s in series["series"]}} for i, day in enumerate(series["days"])]
    return rows, ["day", *labels]


class ReportView(RoleRequiredMixin, View):
    """Any console role may read the reports; what they show is spend, never request content."""

    def get(self, request):
        form = ReportPageForm(request.GET or DEFAULTS, agents=agent_choices())
        if not form.is_valid():
            return render(request, "billing/report.html", {"form": form}, status=400)
        query = form.query()
        span = query.span
        chart_by = form.cleaned_data["chart_by"]
        if request.GET.get("format") == "csv":
            return self._csv(request.GET.get("report", "usage"), query, span, chart_by)
        rows = reports.usage_report(group_by=query.group_by, **span)
        series = reports.spend_series(by=chart_by, top=TOP, **span)
        columns = reports.report_columns(query.group_by)
        label = reports.label_column(chart_by)
        top = reports.top_spenders(by=chart_by, limit=TOP_TABLE, **span)
        page = Paginator(rows, TABLE_PAGE_SIZE).get_page(request.GET.get("page"))
        context = {
            "form": form,
            "query": query,
            "chart_by": chart_by,
            "columns": [column.replace("_", " ") for column in columns],
            "page": page,
            "table": [_cells(row, columns) for row in page.object_list],
            "totals": reports.totals(rows),
            "top": [{**row, "label": row[label]} for row in top],
            "top_label": dict(form.fields["chart_by"].choices)[chart_by],
            "cost_centers": reports.cost_center_attribution(**span),
            "chart": {
                "days": [day.isoformat() for day in series["days"]],
                "series": [{"label": s.label, "values": [float(v) for v in s.values]} for s in series["series"]],
            },
            "as_of": rollups.as_of(query.since, query.until),
            "query_string": self._query_string(form),
        }
        return render(request, "billing/report.html", context)

    @staticmethod
    def _query_string(form: ReportPageForm) -> str:
        """The page's filters as a query string, for its CSV and page links."""
        data = form.cleaned_data
        params = {"since": data["since"].isoformat(), "until": data["until"].isoformat(),
                  "group_by": data["group_by"], "chart_by": data["chart_by"]}  # fmt: skip
        params.update({name: form.data.get(name) for name in reports.DIMENSIONS if form.data.get(name)})
        return urlencode(params, doseq=True)

    @staticmethod
    def _csv(report: str, query, span: dict, chart_by: str):
        if report == "usage":
            columns = reports.report_columns(query.group_by)
            rows = reports.usage_report(group_by=query.group_by, **span)
        elif report == "top":
            columns = [*reports.report_columns([chart_by]), "share_percent"]
            rows = reports.top_spenders(by=chart_by, limit=TOP_TABLE, **span)
        elif report == "cost_centers":
            columns = [*reports.report_columns(["cost_center"]), "share_percent"]
            rows = reports.cost_center_attribution(**span)
        elif report == "series":
            rows, columns = _series_rows(reports.spend_series(by=chart_by, top=TOP, **span))
        else:
            raise Http404("Unknown report.")
        response = StreamingHttpResponse(reports.report_csv(rows, columns), content_type="text/csv")
        name = f"{report.replace('_', '-')}-{query.since}-{query.until}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
