"""Paging the request log and the usage over HTTP while traffic flows and retention runs: every record once.

A gateway process answers requests on one thread of the test (its writer adding
records all the while) and serves the management API to another, which pages
through the key's records following ``next``; between pages the reader waits
until traffic has written more, and once, halfway, the retention job removes a
short-lived client's old records, some already listed and some not yet.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from audit.models import AuditRecord
from audit.recorder import record_request
from audit.retention import apply_retention
from billing.models import UsageRecord
from billing.usage import record_usage
from gateway_project.writer import writer
from keys.api_tokens import issue_token
from keys.models import Client
from tests.waiting import in_thread, until

CHAT = "/v1/chat/completions"
SEEDED = 90
PAGE = 15


@pytest.fixture
def ops(live_db, gateway):
    """A management API client of an admin on the gateway process."""
    user = get_user_model().objects.create_user(f"pager-{uuid.uuid4().hex[:8]}", is_superuser=True)
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Token {issue_token(user)[1]}"}) as api:
        yield api


@pytest.fixture
def traffic(gateway):
    """``traffic(raw_key)``: chat requests through the gateway on a thread of their own, until the test ends."""
    stop, futures = threading.Event(), []

    def start(raw: str):
        def run() -> int:
            sent = 0
            with gateway.client(raw) as client:
                while not stop.is_set():
                    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {sent}"}]}
                    assert client.post(CHAT, json=body).status_code == 200
                    sent += 1
            return sent

        futures.append(in_thread(run))

    yield start
    stop.set()
    for future in futures:
        future.result(timeout=30)


def one_pass(api: httpx.Client, url: str, params: dict, between_pages) -> list:
    """Ids of every row listed from the first page to the last, following ``next``."""
    seen, response, n = [], api.get(url, params=params), 0
    while True:
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [row["id"] for row in page["results"]]
        n += 1
        if not page["next"]:
            return seen
        assert n < 4 * SEEDED // PAGE, "the pass never reaches its end: each page's rows are pushed back by new ones"
        between_pages(n, seen)
        response = api.get(page["next"])


def written_since(queryset, count: int):
    """Wait until traffic has written rows past ``count``; the new count."""
    return until(lambda: (now := queryset.count()) > count and now, "the gateway writing records between pages")


def test_a_pass_over_the_log_under_traffic_and_retention_lists_every_lasting_record_once(
    ops, make_key, traffic, settings
):
    settings.GATEWAY_AUDIT_RETENTION_DAYS = 0  # kept for ever, but by the short-lived client
    raw, key = make_key(rpm=1_000_000, tpm=100_000_000)
    short = Client.objects.create(name="Short", slug=f"short-{uuid.uuid4().hex[:8]}", audit_retention_days=1)
    now, removable = timezone.now(), set()
    for i in range(SEEDED):  # over the last four days, every third record the short-lived client's
        owner = short if i % 3 == 0 else key.client
        row = record_request(
            request_id=uuid.uuid4().hex, method="POST", path=CHAT, status=200, latency_ms=1.0, client_id=owner.pk,
            client_slug=owner.slug, api_key_id=key.pk, key_prefix=key.prefix, agent="research", model="gpt-4o-mini",
            input_tokens=1, output_tokens=1, cost_usd=Decimal(0), client_ip="127.0.0.1", user_agent="pytest",
            input_text="seeded", output_text="seeded", details={},
        )  # fmt: skip
        row["created_at"] = now - timedelta(hours=96 * (SEEDED - i) / SEEDED)
        if owner == short and row["created_at"] < now - timedelta(hours=25):
            removable.add(row["request_id"])
    writer.flush_sync()
    removable = set(AuditRecord.objects.filter(request_id__in=removable).values_list("id", flat=True))
    records = AuditRecord.objects.filter(key_prefix=key.prefix)
    at_start = set(records.values_list("id", flat=True))
    assert len(at_start) == SEEDED

    traffic(raw)
    counted, removed, listed_before_removal = written_since(records, SEEDED), set(), set()

    def between_pages(n, seen):
        nonlocal counted
        # Once the pass has listed records retention will delete (however many pages traffic pushed ahead of
        # them), it runs: it then cuts records behind the cursor and records ahead of it.
        if not removed and removable & set(seen):
            before = set(records.values_list("id", flat=True))
            assert apply_retention().deleted > 0
            removed.update(before - set(records.values_list("id", flat=True)))
            listed_before_removal.update(seen)
        counted = written_since(records, counted)

    seen = one_pass(ops, "/api/v1/audit/", {"key_prefix": key.prefix, "limit": PAGE}, between_pages)
    assert len(seen) == len(set(seen)), "a record was listed twice"
    lasting = at_start - removed
    assert lasting <= set(seen), f"{len(lasting - set(seen))} records that were there all along were skipped"
    assert removed & listed_before_removal and removed - listed_before_removal  # retention cut both behind and ahead
    assert records.count() > SEEDED - len(removed) + 3  # traffic was written throughout the pass


def test_a_pass_over_usage_under_traffic_lists_every_record_once(ops, make_key, traffic):
    raw, key = make_key(rpm=1_000_000, tpm=100_000_000)
    for i in range(SEEDED):
        row = record_usage(
            request_id=uuid.uuid4().hex, client_id=key.client_id, key_id=key.pk, agent="research", model="gpt-4o-mini",
            input_tokens=1, output_tokens=1, cost_nanos=0,
        )  # fmt: skip
        row["created_at"] = timezone.now() - timedelta(hours=SEEDED - i)
    writer.flush_sync()
    usage = UsageRecord.objects.filter(api_key_id=key.pk)
    at_start = set(usage.values_list("id", flat=True))
    assert len(at_start) == SEEDED

    traffic(raw)
    counted = written_since(usage, SEEDED)

    def between_pages(n, seen):
        nonlocal counted
        counted = written_since(usage, counted)

    seen = one_pass(ops, "/api/v1/usage/", {"api_key": key.pk, "limit": PAGE}, between_pages)
    assert len(seen) == len(set(seen)), "a usage record was listed twice"
    assert at_start <= set(seen)
