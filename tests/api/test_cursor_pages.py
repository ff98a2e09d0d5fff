"""Append-only lists page by cursor: one pass lists every row once while rows are written and old ones removed."""

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AuditArchive, AuditRecord, QuarantinedRow
from audit.trail import record_event
from billing.models import Budget, BudgetAlert, UsageRecord
from gateway_project.models import AuthEvent
from keys.models import Client

_n = itertools.count(1)


def _audit(**fields):
    defaults = {"request_id": f"page-{next(_n)}", "created_at": timezone.now(), "method": "POST", "status": 200}
    return AuditRecord.objects.create(**{**defaults, **fields})


def _trail(**fields):
    return record_event(None, "api", "update", "keys.client", next(_n), "Acme", {"name": ["a", "b"]})


def _usage(**fields):
    return UsageRecord.objects.create(request_id=f"use-{next(_n)}", created_at=timezone.now(), agent="a", model="m")


def _alert(**fields):
    budget = Budget.objects.filter(scope="organization").first() or Budget.objects.create(
        scope="organization", limit_usd=Decimal("10")
    )
    now = timezone.now()
    return BudgetAlert.objects.create(
        budget=budget, period_key=f"p{next(_n)}", period_start=now, period_end=now + timedelta(days=1),
        threshold_percent=80, spent_usd=Decimal("8"), limit_usd=Decimal("10"),
    )  # fmt: skip


def _quarantined(**fields):
    return QuarantinedRow.objects.create(model="audit.AuditRecord", request_id=f"q-{next(_n)}", reason="NUL")


def _auth_event(**fields):
    return AuthEvent.objects.create(created_at=timezone.now(), outcome="failed", via="console", username=f"u{next(_n)}")


def _archive(**fields):
    n = next(_n)
    return AuditArchive.objects.create(file_name=f"archive-{n}.jsonl.gz", sha256="0" * 64, records=n)


COLLECTIONS = {
    "/api/v1/audit/": _audit,
    "/api/v1/admin-actions/": _trail,
    "/api/v1/usage/": _usage,
    "/api/v1/alerts/": _alert,
    "/api/v1/audit-quarantine/": _quarantined,
    "/api/v1/audit-archives/": _archive,
    "/api/v1/auth-events/": _auth_event,
}


def one_pass(api, url, params, between_pages):
    """Page from the first page to the last, following ``next``; ``between_pages(n, seen)`` runs after page n."""
    seen, response, n = [], api.get(url, params), 0
    while True:
        assert response.status_code == 200, response.content
        page = response.json()
        seen += [row["id"] for row in page["results"]]
        n += 1
        between_pages(n, seen)
        if not page["next"]:
            return seen
        response = api.get(page["next"])


def a_pass_under(api, url, *, writes: int, removals: bool) -> tuple[list, list, set]:
    """30 rows, then one pass of pages of 5 while ``writes`` rows are written after each page and, after the
    second, retention removes some rows already listed and some not yet; (rows at start, ids listed, removed)."""
    make = COLLECTIONS[url]
    model = type(make())
    model.objects.all().delete()
    at_start = [make().pk for _ in range(30)]
    removed = set()

    def traffic(n, seen):
        for _ in range(writes):
            make()
        if removals and n == 2:
            gone = [pk for pk in at_start if pk in seen][:4] + [pk for pk in at_start if pk not in seen][-3:]
            model.objects.filter(pk__in=gone).delete()
            removed.update(gone)

    return at_start, one_pass(api, url, {"limit": 5}, traffic), removed


@pytest.mark.parametrize("url", COLLECTIONS)
def test_rows_written_during_a_pass_list_no_row_twice(api, url):
    at_start, seen, _ = a_pass_under(api, url, writes=3, removals=False)
    assert len(seen) == len(set(seen)), "a row was listed twice"
    assert set(at_start) <= set(seen)
    assert seen == sorted(seen, reverse=True)  # newest first


@pytest.mark.parametrize("url", COLLECTIONS)
def test_rows_removed_during_a_pass_skip_no_other_row(api, url):
    at_start, seen, removed = a_pass_under(api, url, writes=0, removals=True)
    assert removed and set(at_start) - removed <= set(seen), "a row that was there all along was skipped"


@pytest.mark.parametrize("url", COLLECTIONS)
def test_one_pass_under_both_lists_every_lasting_row_exactly_once(api, url):
    at_start, seen, removed = a_pass_under(api, url, writes=3, removals=True)
    assert len(seen) == len(set(seen))
    assert set(at_start) - removed <= set(seen)


def test_filters_hold_across_cursor_pages(api, acme, globex):
    mine = [_audit(client_slug="acme", client_id=acme.pk).pk for _ in range(7)]

    def traffic(n, seen):
        _audit(client_slug="globex", client_id=globex.pk)
        _audit(client_slug="acme", client_id=acme.pk)

    seen = one_pass(api, "/api/v1/audit/", {"client": "acme", "limit": 2}, traffic)
    assert set(mine) <= set(seen) and len(seen) == len(set(seen))
    assert set(AuditRecord.objects.filter(pk__in=seen).values_list("client_slug", flat=True)) == {"acme"}


def test_the_next_link_keeps_the_filters_and_the_page_size(api, acme):
    for _ in range(3):
        _audit(client_slug="acme", status=429)
    page = api.get("/api/v1/audit/", {"status": 429, "limit": 2}).json()
    assert "cursor=" in page["next"] and "status=429" in page["next"] and "limit=2" in page["next"]
    assert page["previous"] is None and "count" not in page
    assert len(api.get(page["next"]).json()["results"]) == 1


def test_oldest_first_pages_by_cursor_too(api):
    made = [_audit().pk for _ in range(5)]
    seen = one_pass(api, "/api/v1/audit/", {"ordering": "id", "limit": 2}, lambda n, seen: None)
    assert seen == made


def test_an_offset_is_refused_on_a_cursor_list_saying_what_to_do(api):
    response = api.get("/api/v1/audit/", {"offset": 50})
    assert response.status_code == 400
    assert "offset" in response.json() and "next" in response.json()["detail"]


# Not base64; p=abc; p=12345678901234567890 (past a bigint); o=-1; p=1&r=x
@pytest.mark.parametrize(
    "cursor", ["garbage", "cD1hYmM=", "cD0xMjM0NTY3ODkwMTIzNDU2Nzg5MA==", "bz0tMQ==", "cD0xJnI9eA=="]
)
def test_a_malformed_cursor_is_a_400_not_a_500(api, cursor):
    _audit()
    response = api.get("/api/v1/audit/", {"cursor": cursor})
    assert response.status_code == 400, response.content
    assert "cursor" in response.json()


def test_the_quarantine_still_counts_its_rows(api):
    for _ in range(3):
        _quarantined()
    page = api.get("/api/v1/audit-quarantine/", {"limit": 2}).json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"]


def test_small_editable_lists_keep_limit_and_offset(api):
    for slug in ("a", "b", "c"):
        Client.objects.create(name=slug, slug=slug)
    page = api.get("/api/v1/clients/", {"limit": 1, "offset": 1}).json()
    assert page["count"] == 3 and len(page["results"]) == 1


def test_the_schema_describes_cursor_pages(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    for url in COLLECTIONS:
        listing = schema["paths"][url]["get"]
        names = {p["name"] for p in listing["parameters"]}
        assert {"cursor", "limit"} <= names and "offset" not in names, url
        paged = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert {"next", "previous", "results"} <= set(schema["components"]["schemas"][paged]["properties"]), url
    assert "offset" in {p["name"] for p in schema["paths"]["/api/v1/clients/"]["get"]["parameters"]}
