"""Date-time filters of the management API: an offset no place uses, or a moment beyond the years 1 to 9999 in UTC,
is a 400 naming the filter (PostgreSQL refuses offsets past ±15:59, and Python cannot move such a moment to UTC)."""

from datetime import UTC, datetime

import pytest
from django.core.cache import cache

from audit.models import AdminAction

NO_PLACES_OFFSET = "0022-12-05T10:53:51.91-23:47"  # what the schema fuzzer sent: a 500 on PostgreSQL
BEFORE_YEAR_1 = "0001-01-01T00:00:00+01:00"  # the year 0 in UTC
AFTER_YEAR_9999 = "9999-12-31T23:00:00-05:00"  # the year 10000 in UTC


def date_time_filters(api) -> list[tuple[str, str]]:
    """Every (list path, query parameter) that the schema declares as a date-time."""
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]
    return [
        (path, parameter["name"])
        for path, item in paths.items()
        for parameter in item.get("get", {}).get("parameters", [])
        if parameter["in"] == "query" and parameter["schema"].get("format") == "date-time"
    ]


def test_the_trail_refuses_an_until_with_an_offset_no_place_uses(api):
    response = api.get("/api/v1/admin-actions/", {"until": NO_PLACES_OFFSET})
    assert response.status_code == 400
    assert response.json()["until"] == ["Give a UTC offset from -12:00 to +14:00 (or Z), as places use."]


@pytest.mark.parametrize("value", [NO_PLACES_OFFSET, BEFORE_YEAR_1, AFTER_YEAR_9999])
def test_every_date_time_filter_refuses_what_no_database_takes(api, value):
    filters = date_time_filters(api)
    assert {
        ("/api/v1/admin-actions/", "until"),
        ("/api/v1/audit/", "since"),
        ("/api/v1/usage/", "created_after"),
    } <= set(filters)
    for path, name in filters:
        response = api.get(path, {name: value})
        assert (response.status_code, name in response.json()) == (400, True), (path, name, response.json())


def test_an_offset_a_place_uses_filters_by_the_moment_it_names(api):
    def action_at(moment: datetime) -> AdminAction:
        return AdminAction.objects.create(created_at=moment, actor="ada", via="api", action="create", object_type="x")

    action_at(datetime(2025, 12, 31, 23, 59, tzinfo=UTC))
    new_year = action_at(datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    for since in ("2026-01-01T05:30:00+05:30", "2025-12-31T12:00:00-12:00", "2026-01-01T14:00:00+14:00"):
        listed = api.get("/api/v1/admin-actions/", {"since": since})
        assert [action["id"] for action in listed.json()["results"]] == [new_year.pk], since


def test_an_export_filter_with_an_offset_no_place_uses_is_refused(api):
    cache.clear()  # the export rate is counted per user, and users' ids repeat across tests
    response = api.post("/api/v1/audit-exports/", {"filters": {"until": NO_PLACES_OFFSET}}, format="json")
    assert response.status_code == 400
    assert "until" in response.json()["filters"]
