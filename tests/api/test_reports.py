"""Usage reports in the management API: grouped and filtered rows as JSON or CSV, validated, documented."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import resolve
from freezegun import freeze_time

from tests.billing.usage_rows import acme_and_globex

USAGE = "/api/v1/reports/usage/"
TOP = "/api/v1/reports/top-spenders/"


@pytest.fixture(autouse=True)
def clock():
    resolve(USAGE)  # load the URLconf (and the C extensions it imports) before freezegun swaps the date classes
    with freeze_time("2026-12-02T15:00:00Z"):
        yield


@pytest.fixture
def spend(db):
    return acme_and_globex(hostile_model="+SUM(1,2)")


@pytest.mark.parametrize("persona", ["api", "operator_api", "compliance_api"])
def test_every_role_reads_the_reports(request, persona, spend):
    caller = request.getfixturevalue(persona)
    assert caller.get(USAGE).status_code == 200
    assert caller.get(TOP).status_code == 200


def test_a_user_without_a_role_is_refused_and_an_anonymous_caller_must_authenticate(outsider_api, anonymous_api):
    assert outsider_api.get(USAGE).status_code == 403
    assert outsider_api.get(TOP, {"format": "csv"}).status_code == 403
    assert anonymous_api.get(USAGE).status_code == 401


def test_without_grouping_it_is_one_row_of_totals_for_the_last_30_days(api, spend):
    report = api.get(USAGE).json()
    assert (report["since"], report["until"], report["group_by"]) == ("2026-11-03", "2026-12-02", [])
    assert report["rows"] == [report["totals"]]
    assert report["totals"] == {
        "requests": 4,
        "input_tokens": 310,
        "output_tokens": 200,
        "cost_usd": "5.000000",
        "default_priced_requests": 1,
    }
    assert report["as_of"].startswith("2026-12-02T")


def test_it_groups_by_period_and_dimensions_and_filters(api, spend):
    report = api.get(USAGE, {"since": "2026-11-30", "until": "2026-12-02", "group_by": "day,client"}).json()
    assert report["columns"] == ["day", "client_id", "client", "client_name", "requests", "input_tokens",
                                 "output_tokens", "cost_usd", "default_priced_requests"]  # fmt: skip
    assert [(r["day"], r["client"], r["cost_usd"]) for r in report["rows"]] == [
        ("2026-11-30", "acme", "1.250000"),
        ("2026-12-01", "globex", "2.500000"),
        ("2026-12-01", "acme", "0.750000"),
        ("2026-12-02", "globex", "0.500000"),
    ]
    assert all(list(row) == report["columns"] for row in report["rows"])  # only the groups' own columns
    repeated = api.get(USAGE, {"group_by": "client,agent,client"}).json()
    assert (repeated["group_by"], repeated["columns"][:4]) == (
        ["client", "agent"],
        ["client_id", "client", "client_name", "agent"],
    )
    report = api.get(USAGE, {"since": "2026-11-01", "group_by": "model", "cost_center": "lab"}).json()
    assert [(r["model"], r["requests"]) for r in report["rows"]] == [("gpt-4o", 1), ("gpt-4o-mini", 1)]
    assert report["filters"] == {"cost_center": "lab"}
    by_id = api.get(USAGE, {"group_by": "month,agent", "client": spend["globex"].client_id}).json()
    assert [(r["month"], r["agent"], r["cost_usd"]) for r in by_id["rows"]] == [("2026-12-01", "code", "3.000000")]
    keyed = api.get(USAGE, {"group_by": "key", "key": spend["acme"].prefix, "agent": "writing"}).json()
    assert [(r["key"], r["cost_usd"]) for r in keyed["rows"]] == [(spend["acme"].prefix, "0.750000")]


@pytest.mark.parametrize("how", ["format", "accept"])
def test_it_answers_csv_when_asked_with_formulas_neutralised(api, spend, how):
    query = {"since": "2026-12-01", "until": "2026-12-01", "group_by": "model"}
    if how == "format":
        response = api.get(USAGE, {**query, "format": "csv"})
    else:
        response = api.get(USAGE, query, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="usage-2026-12-01-2026-12-01.csv"'
    table = list(csv.reader(io.StringIO(response.content.decode())))
    assert table == [
        ["model", "requests", "input_tokens", "output_tokens", "cost_usd", "default_priced_requests"],
        ["'+SUM(1,2)", "1", "100", "50", "2.500000", "1"],
        ["gpt-4o-mini", "1", "10", "50", "0.750000", "0"],
    ]


def test_top_spenders_rank_with_shares_of_the_total(api, spend):
    report = api.get(TOP, {"since": "2026-11-01", "by": "agent", "limit": 2}).json()
    assert (report["by"], report["limit"], report["count"]) == ("agent", 2, 2)
    assert [(r["agent"], r["cost_usd"], r["share_percent"]) for r in report["rows"]] == [
        ("code", "3.000000", "60.0"),
        ("research", "1.250000", "25.0"),
    ]
    clients = api.get(TOP, {"since": "2026-11-01", "format": "csv"})
    table = list(csv.reader(io.StringIO(clients.content.decode())))
    assert table[0][-1] == "share_percent" and [row[1] for row in table[1:]] == ["globex", "acme"]


@pytest.mark.parametrize(
    "url, query, field, message",
    [
        (USAGE, {"since": "2026-12-02", "until": "2026-12-01"}, "since", "since must not be after until."),
        (USAGE, {"since": "2/12/2026"}, "since", "Enter a valid date."),
        (USAGE, {"group_by": "day,colour"}, "group_by", "Unknown group “colour”"),
        (USAGE, {"group_by": "week,month"}, "group_by", "Group by at most one of day, week and month."),
        (USAGE, {"client": "nobody"}, "client", "There is no client “nobody”."),
        (USAGE, {"key": "agk_missing"}, "key", "There is no key with the prefix “agk_missing”."),
        (USAGE, {"format": "xml"}, "format", "Use format=json or format=csv."),
        (USAGE, {"since": "2026-13-01", "format": "csv"}, "since", "Enter a valid date."),
        (TOP, {"by": "day"}, "by", "Select a valid choice. day is not one of the available choices."),
        (TOP, {"limit": "0"}, "limit", "Ensure this value is greater than or equal to 1."),
    ],
)
def test_bad_query_parameters_are_a_400_with_messages(api, url, query, field, message):
    response = api.get(url, query)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body[field][0].startswith(message)
    assert body["detail"].startswith(f"{field}: ")


def test_the_schema_documents_the_report_parameters_and_both_formats(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    usage = schema["paths"]["/api/v1/reports/usage/"]["get"]
    names = {p["name"] for p in usage["parameters"]}
    assert names >= {"since", "until", "group_by", "client", "cost_center", "key", "agent", "model", "format"}
    assert set(usage["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    top = schema["paths"]["/api/v1/reports/top-spenders/"]["get"]
    assert {"by", "limit"} <= {p["name"] for p in top["parameters"]}
