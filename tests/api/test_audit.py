"""The audit log over the management API: filterable, and read-only."""

from datetime import timedelta

import pytest
from django.utils import timezone


@pytest.fixture
def log(make_audit, acme):
    return {
        "old": make_audit(ago=timedelta(days=2), client_slug="acme", client_id=acme.pk, agent="research", latency_ms=5),
        "refused": make_audit(
            ago=timedelta(hours=1), client_slug="acme", client_id=acme.pk, status=429, key_prefix="agk_abcdefgh"
        ),
        "new": make_audit(ago=timedelta(minutes=1), client_slug="globex", agent="coder", status=502, latency_ms=900),
    }


def ids(api, **params):
    response = api.get("/api/v1/audit/", params)
    assert response.status_code == 200, response.content
    return [r["request_id"] for r in response.json()["results"]]


def test_it_lists_the_newest_records_first(api, log):
    assert ids(api) == [log["new"].request_id, log["refused"].request_id, log["old"].request_id]


def test_it_filters_by_time_with_since_and_until(api, log):
    now = timezone.now()
    assert ids(api, since=(now - timedelta(days=1)).isoformat()) == [log["new"].request_id, log["refused"].request_id]
    assert ids(api, until=(now - timedelta(minutes=30)).isoformat()) == [
        log["refused"].request_id,
        log["old"].request_id,
    ]
    window = {"since": (now - timedelta(hours=2)).isoformat(), "until": (now - timedelta(minutes=30)).isoformat()}
    assert ids(api, **window) == [log["refused"].request_id]


def test_it_filters_by_client_agent_and_status(api, log, acme):
    assert ids(api, client="globex") == [log["new"].request_id]
    assert ids(api, client_id=acme.pk) == [log["refused"].request_id, log["old"].request_id]
    assert ids(api, agent="research") == [log["old"].request_id]
    assert ids(api, status=429) == [log["refused"].request_id]
    assert ids(api, status_min=400) == [log["new"].request_id, log["refused"].request_id]
    assert ids(api, status_max=499) == [log["refused"].request_id, log["old"].request_id]


def test_it_filters_by_key_prefix_and_request_id(api, log):
    assert ids(api, key_prefix="agk_abcdefgh") == [log["refused"].request_id]
    assert ids(api, request_id=log["old"].request_id) == [log["old"].request_id]


def test_it_lists_oldest_first_on_request(api, log):
    assert ids(api, ordering="id") == [log["old"].request_id, log["refused"].request_id, log["new"].request_id]


def test_it_refuses_an_ordering_a_cursor_cannot_keep(api, log):
    response = api.get("/api/v1/audit/", {"ordering": "-latency_ms"})
    assert response.status_code == 400
    assert "ordering" in response.json() and "-id" in response.json()["detail"]


def test_it_refuses_a_malformed_since(api, log):
    response = api.get("/api/v1/audit/", {"since": "yesterday"})
    assert response.status_code == 400
    assert "since" in response.json()


def test_it_retrieves_one_record(api, log):
    body = api.get(f"/api/v1/audit/{log['refused'].pk}/").json()
    assert (body["status"], body["key_prefix"], body["client_slug"]) == (429, "agk_abcdefgh", "acme")


def test_it_refuses_to_create_change_or_delete_records(api, log):
    url = f"/api/v1/audit/{log['old'].pk}/"
    assert api.post("/api/v1/audit/", {"request_id": "forged"}, format="json").status_code == 405
    assert api.put(url, {"status": 200}, format="json").status_code == 405
    assert api.patch(url, {"status": 200}, format="json").status_code == 405
    assert api.delete(url).status_code == 405
    assert api.get(url).json()["status"] == 200
