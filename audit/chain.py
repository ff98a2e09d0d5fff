"""Tamper evidence in the database: chain records as they are written, and verify them.

Two chains, each with its own order: the request log (``AuditRecord``) and the
admin-action trail (``AdminAction``). A writer gives its rows their ``seq``
numbers and hashes inside its transaction while it holds the chain's lock (a
PostgreSQL advisory lock; SQLite writes one transaction at a time anyway), so
the order is well-defined with any number of processes writing. The format
lives in ``audit.chain_format``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection, models

from audit.chain_format import CHAIN_FIELDS, GENESIS, REQUESTS, TRAIL, ChainSpec, Verification, verify_rows
from audit.models import AdminAction, AuditRecord

VERIFY_CHUNK = 5000


@dataclass(frozen=True)
class Chain:
    model: type[models.Model]
    spec: ChainSpec
    lock: int  # pg_advisory_xact_lock key

    def chain_rows(self, rows: list[dict]) -> None:
        """Give ``rows`` (about to be inserted, in this order) their seq and hashes; call inside the transaction."""
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [self.lock])
        last = self.model.objects.filter(seq__isnull=False).order_by("-seq").values_list("seq", "record_hash").first()
        seq, prev = last if last is not None else (0, GENESIS)
        for row in rows:
            seq += 1
            row["seq"] = seq
            row["prev_hash"] = prev
            row["record_hash"] = prev = self.spec.record_hash(prev, row)


REQUEST_CHAIN = Chain(AuditRecord, REQUESTS, 0x61756463)  # "audc"
TRAIL_CHAIN = Chain(AdminAction, TRAIL, 0x61756474)  # "audt"
CHAINS = {"records": REQUEST_CHAIN, "trail": TRAIL_CHAIN}


def chain_rows(rows: list[dict]) -> None:
    """The writer's preparer for request records."""
    REQUEST_CHAIN.chain_rows(rows)


def verify(since: datetime | None = None, until: datetime | None = None, chain: Chain = REQUEST_CHAIN) -> Verification:
    """Check the chain over the records created in [since, until), reading them in chunks.

    The range is taken by seq, from the first chained record at or after ``since``
    to the last one before ``until``, so a record removed from inside it shows as a
    gap. Records without a seq in the range are reported as inserted.
    """
    records = chain.model.objects.all()
    if since is not None:
        records = records.filter(created_at__gte=since)
    if until is not None:
        records = records.filter(created_at__lt=until)
    ident = chain.spec.ident or "id"
    unchained = records.filter(seq__isnull=True).values(ident).first()
    bounds = records.filter(seq__isnull=False).order_by("seq").values_list("seq", flat=True)
    first, last = bounds.first(), bounds.last()
    if first is None:
        return verify_rows(_unchained_only(unchained, ident), spec=chain.spec)
    before = chain.model.objects.filter(seq=first - 1).values_list("record_hash", flat=True).first()
    rows = (
        chain.model.objects.filter(seq__gte=first, seq__lte=last)
        .order_by("seq")
        .values(*chain.spec.fields, *CHAIN_FIELDS[1:])
        .iterator(chunk_size=VERIFY_CHUNK)
    )
    result = verify_rows(rows, anchor=before if first > 1 else GENESIS, spec=chain.spec)
    if result.ok and unchained is not None:
        return verify_rows(_unchained_only(unchained, ident), spec=chain.spec)
    return result


def _unchained_only(row, ident: str):
    return [] if row is None else [{ident: row[ident], "seq": None}]
