"""Tamper evidence for the request log, in the database: chain records as they are written, and verify them.

The writer gives each batch of records its ``seq`` numbers and hashes inside the
batch's transaction while it holds the chain's lock (a PostgreSQL advisory lock;
SQLite writes one transaction at a time anyway), so the chain's order is
well-defined with any number of gateway processes writing. The format lives in
``audit.chain_format``.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from audit.chain_format import CHAIN_FIELDS, CHAINED_FIELDS, GENESIS, Verification, record_hash, verify_rows
from audit.models import AuditRecord

# pg_advisory_xact_lock key of the audit chain: "audc" as a number.
CHAIN_LOCK = 0x61756463
VERIFY_CHUNK = 5000


def chain_rows(rows: list[dict]) -> None:
    """Give ``rows`` (about to be inserted, in this order) their seq and hashes; call inside the write's transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK])
    last = AuditRecord.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "record_hash").first()
    seq, prev = last if last is not None else (0, GENESIS)
    for row in rows:
        seq += 1
        row["seq"] = seq
        row["prev_hash"] = prev
        row["record_hash"] = prev = record_hash(prev, row)


def verify(since: datetime | None = None, until: datetime | None = None) -> Verification:
    """Check the chain over the records created in [since, until), reading them in chunks.

    The range is taken by seq, from the first chained record at or after ``since``
    to the last one before ``until``, so a record removed from inside it shows as a
    gap. Records without a seq in the range are reported as inserted.
    """
    records = AuditRecord.objects.all()
    if since is not None:
        records = records.filter(created_at__gte=since)
    if until is not None:
        records = records.filter(created_at__lt=until)
    unchained = records.filter(seq__isnull=True).values("request_id").first()
    bounds = records.filter(seq__isnull=False).order_by("seq").values_list("seq", flat=True)
    first, last = bounds.first(), bounds.last()
    if first is None:
        return verify_rows(_unchained_only(unchained))
    before = AuditRecord.objects.filter(seq=first - 1).values_list("record_hash", flat=True).first()
    rows = (
        AuditRecord.objects.filter(seq__gte=first, seq__lte=last)
        .order_by("seq")
        .values(*CHAINED_FIELDS, *CHAIN_FIELDS[1:])
        .iterator(chunk_size=VERIFY_CHUNK)
    )
    result = verify_rows(rows, anchor=before if first > 1 else GENESIS)
    if result.ok and unchained is not None:
        return verify_rows(_unchained_only(unchained))
    return result


def _unchained_only(row):
    return [] if row is None else [{"request_id": row["request_id"], "seq": None}]
