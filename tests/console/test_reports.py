"""The console's Reports page: every role reads it, its tables and chart agree, and each downloads as CSV."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.urls import resolve
from freezegun import freeze_time

from tests.billing.usage_rows import acme_and_globex

URL = "/console/reports/"


@pytest.fixture(autouse=True)
def clock():
    resolve(URL)  # load the URLconf (and the C extensions it imports) before freezegun swaps the date classes
    with freeze_time("2026-12-02T15:00:00Z"):
        yield


@pytest.fixture
def spend(db):
    return acme_and_globex(hostile_model="=cmd|'/C calc'!A0")


def csv_table(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize("persona", ["admin", "operator", "compliance"])
def test_every_console_role_reads_the_reports(request, persona, spend):
    response = request.getfixturevalue(persona).get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Usage reports" in html and "Top spenders" in html and "Cost-center attribution" in html
    assert 'href="/console/reports/"' in html  # the budgets area's navigation links here


def test_a_user_without_a_role_is_refused_and_a_stranger_is_sent_to_sign_in(nobody, client):
    assert nobody.get(URL).status_code == 403
    assert nobody.get(URL, {"format": "csv"}).status_code == 403
    response = client.get(URL)
    assert response.status_code == 302 and "/console/login/" in response["Location"]


def test_by_default_it_shows_the_last_30_days_per_client(compliance, spend):
    response = compliance.get(URL)
    context = response.context
    assert (context["query"].since.isoformat(), context["query"].until.isoformat()) == ("2026-11-03", "2026-12-02")
    assert [row[:3] for row in context["table"]] == [
        [(str(spend["globex"].client_id), False), ("globex", False), ("Globex", False)],
        [(str(spend["acme"].client_id), False), ("acme", False), ("Acme", False)],
    ]
    assert context["totals"]["cost_usd"] == pytest.approx(5)
    assert "as of" in response.content.decode()


def test_it_shows_the_chart_top_spenders_and_cost_centers_for_the_filters(admin, spend):
    response = admin.get(URL, {"since": "2026-11-30", "until": "2026-12-02", "group_by": ["day", "agent"],
                               "chart_by": "agent"})  # fmt: skip
    html = response.content.decode()
    chart = json.loads(re.search(r'<script id="spend-series" type="application/json">(.*?)</script>', html).group(1))
    assert chart["days"] == ["2026-11-30", "2026-12-01", "2026-12-02"]
    assert {s["label"]: s["values"] for s in chart["series"]} == {
        "code": [0, 2.5, 0.5],
        "research": [1.25, 0, 0],
        "writing": [0, 0.75, 0],
    }
    assert [(row["label"], str(row["share_percent"])) for row in response.context["top"]] == [
        ("code", "60.0"), ("research", "25.0"), ("writing", "15.0"),
    ]  # fmt: skip
    assert [(row["cost_center"], str(row["share_percent"])) for row in response.context["cost_centers"]] == [
        ("Sales", "60.0"), ("Research lab", "40.0"),
    ]  # fmt: skip
    assert [c[0][0] for c in response.context["table"]] == ["2026-11-30", "2026-12-01", "2026-12-01", "2026-12-02"]
    assert "console/vendor/chart.umd.min.js" in html and "billing/report_chart.js" in html
    assert not re.search(r"""<script[^>]+src=["']?(https?:)?//""", html)


def test_filters_narrow_every_part_of_the_page(operator, spend):
    response = operator.get(URL, {"since": "2026-11-01", "until": "2026-12-02", "client": "acme",
                                  "group_by": "model"})  # fmt: skip
    assert [cells[0][0] for cells in response.context["table"]] == ["gpt-4o", "gpt-4o-mini"]
    assert [row["label"] for row in response.context["top"]] == ["acme"]
    assert [row["cost_center"] for row in response.context["cost_centers"]] == ["Research lab"]
    response = operator.get(URL, {"cost_center": "sales", "agent": "code", "group_by": "client"})
    assert [cells[1][0] for cells in response.context["table"]] == ["globex"]


def test_the_csv_download_is_exactly_the_table_on_the_page(compliance, spend):
    page = compliance.get(URL, {"since": "2026-11-30", "until": "2026-12-02", "group_by": ["day", "client", "model"]})
    link = re.search(r'id="download-csv" href="([^"]+)"', page.content.decode()).group(1).replace("&amp;", "&")
    response = compliance.get(URL + link)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"] == 'attachment; filename="usage-2026-11-30-2026-12-02.csv"'
    table = csv_table(response)
    assert table[0] == [c.replace(" ", "_") for c in page.context["columns"]]
    shown = [[text for text, _number in cells] for cells in page.context["table"]]
    neutralised = [[("'" + c if c.startswith("=") else c) for c in row] for row in shown]
    assert table[1:] == neutralised
    assert "'=cmd|'/C calc'!A0" in [row[4] for row in table[1:]]  # the formula is text, not run


@pytest.mark.parametrize(
    "report, header",
    [
        ("top", ["client_id", "client", "client_name", "requests", "input_tokens", "output_tokens", "cost_usd",
                 "default_priced_requests", "share_percent"]),
        ("cost_centers", ["cost_center_id", "cost_center", "requests", "input_tokens", "output_tokens", "cost_usd",
                          "default_priced_requests", "share_percent"]),
        ("series", ["day", "globex", "acme"]),
    ],
)  # fmt: skip
def test_the_other_tables_and_the_chart_download_as_csv_too(admin, spend, report, header):
    response = admin.get(URL, {"since": "2026-11-30", "until": "2026-12-02", "format": "csv", "report": report})
    table = csv_table(response)
    assert table[0] == header
    assert len(table) == (4 if report == "series" else 3)


def test_an_unknown_csv_report_is_not_found(admin, spend):
    assert admin.get(URL, {"format": "csv", "report": "passwords"}).status_code == 404


@pytest.mark.parametrize(
    "query, field, message",
    [
        ({"since": "2026-12-02", "until": "2026-12-01"}, "since", "since must not be after until."),
        ({"since": "2020-01-01", "until": "2026-12-01"}, "since", "A report covers at most 1096 days."),
        ({"since": "yesterday"}, "since", "Enter a valid date."),
        ({"client": "nobody-here"}, "client", "There is no client “nobody-here”."),
        ({"group_by": ["day", "week"]}, "group_by", "Group by at most one of day, week and month."),
    ],
)
def test_bad_filters_are_shown_on_the_form(admin, query, field, message):
    response = admin.get(URL, query)
    assert response.status_code == 400
    assert response.context["form"].errors[field] == [message]
