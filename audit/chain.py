"""Tamper evidence in the database: chain records as they are written, and verify them.

Two chains, each with its own order: the request log (``AuditRecord``) and the
admin-action trail (``AdminAction``). A writer gives its rows their ``seq``
numbers and hashes inside its transaction while it holds the chain's lock (a
PostgreSQL advisory lock; SQLite writes one transaction at a time anyway), so
the order is well-defined with any number of processes writing. The format
lives in ``audit.chain_format``.

The retention job (``audit.retention``) removes old request records after
archiving them; the runs of seq numbers it archived (``ArchivedRun``) keep the
hashes at their two ends, so verification still links the records on either
side of a cut. A gap no archived run accounts for is reported as removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connection, models

from audit.chain_format import CHAIN_FIELDS, GENESIS, REQUESTS, TRAIL, ChainSpec, Finding, Verification, verify_rows
from audit.models import AdminAction, ArchivedRun, AuditRecord

VERIFY_CHUNK = 5000


@dataclass(frozen=True)
class Chain:
    model: type[models.Model]
    spec: ChainSpec
    lock: int  # pg_advisory_xact_lock key
    runs: type[models.Model] | None = None  # where the runs of archived records are kept, if any ever are

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


REQUEST_CHAIN = Chain(AuditRecord, REQUESTS, 0x61756463, runs=ArchivedRun)  # "audc"
TRAIL_CHAIN = Chain(AdminAction, TRAIL, 0x61756474)  # "audt"
CHAINS = {"records": REQUEST_CHAIN, "trail": TRAIL_CHAIN}


def chain_rows(rows: list[dict]) -> None:
    """The writer's preparer for request records."""
    REQUEST_CHAIN.chain_rows(rows)


def verify(since: datetime | None = None, until: datetime | None = None, chain: Chain = REQUEST_CHAIN) -> Verification:
    """Check the chain over the records created in [since, until), reading them in chunks.

    The range is taken by seq, from the first chained record at or after ``since``
    to the last one before ``until``, so a record removed from inside it shows as a
    gap, unless the retention job archived it. Records without a seq in the range
    are reported as inserted.
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
    anchor, removed = _anchor(chain, first)
    if removed is not None:
        return Verification(0, None, None, removed)
    rows = (
        chain.model.objects.filter(seq__gte=first, seq__lte=last)
        .order_by("seq")
        .values(*chain.spec.fields, *CHAIN_FIELDS[1:])
        .iterator(chunk_size=VERIFY_CHUNK)
    )
    bridge = ArchivedRuns(chain.runs, first, last) if chain.runs is not None else None
    result = verify_rows(rows, anchor=anchor, spec=chain.spec, bridge=bridge)
    if result.ok and unchained is not None:
        return verify_rows(_unchained_only(unchained, ident), spec=chain.spec)
    return result


def _anchor(chain: Chain, first: int) -> tuple[str | None, Finding | None]:
    """The hash the record ``first`` must follow (None: only an archive knows it), or the finding that none is left.

    That is the hash of the record before it, or the last hash of the archived run
    ending just before it. Neither, and the records before it were removed.
    """
    if first == 1:
        return GENESIS, None
    before = chain.model.objects.filter(seq=first - 1).values_list("record_hash", flat=True).first()
    if before is not None:
        return before, None
    run = None
    if chain.runs is not None:
        runs = chain.runs.objects.filter(first_seq__lt=first).order_by("-first_seq")
        run = runs.values("last_seq", "last_hash").first()
        if run is not None and run["last_seq"] == first - 1:
            return run["last_hash"], None
        if run is not None and run["last_seq"] >= first:
            return None, None  # the retention job is still deleting this run's records: the one before is archived
    reached = chain.model.objects.filter(seq__lt=first).order_by("-seq").values_list("seq", flat=True).first() or 0
    reached = max(reached, run["last_seq"] if run is not None else 0)
    row = chain.model.objects.filter(seq=first).values(chain.spec.ident or "id").get()
    ident = str(row[chain.spec.ident or "id"]) if chain.spec.ident else ""
    missing = f"seq {reached + 1}" if reached + 1 == first - 1 else f"seq {reached + 1} to {first - 1}"
    message = f"Records were removed before {chain.spec.label(row, first)}: {missing}."
    return None, Finding("removed", first, ident, message)


class ArchivedRuns:
    """Follow the archived runs across the gaps in a range of records: ``verify_rows``'s bridge.

    Runs are read lazily in seq order, once for the whole range, side by side with
    the records (there may be millions of either).
    """

    def __init__(self, model: type[models.Model], first: int, last: int):
        self._runs = (
            model.objects.filter(first_seq__gt=first, first_seq__lt=last)
            .order_by("first_seq")
            .values_list("first_seq", "last_seq", "prev_hash", "last_hash")
            .iterator(chunk_size=VERIFY_CHUNK)
        )
        self._next = None

    def _peek(self):
        if self._next is None:
            self._next = next(self._runs, None)
        return self._next

    def __call__(self, seq: int, hash_: str, until: int) -> tuple[int, str | None] | None:
        """From record ``seq`` (hash ``hash_``) towards record ``until``: how far linked archived runs reach."""
        reached = None
        while (run := self._peek()) is not None and run[0] < until:
            first_seq, last_seq, prev_hash, last_hash = run
            if first_seq <= seq:  # a run whose records the retention job has not finished deleting
                self._next = None
                continue
            if first_seq != seq + 1 or prev_hash != hash_:
                break
            self._next = None
            if last_seq >= until:
                return until - 1, None  # still being deleted: the hash before ``until`` is in the archive only
            seq, hash_ = reached = last_seq, last_hash
        return reached


def _unchained_only(row, ident: str):
    return [] if row is None else [{ident: row[ident], "seq": None}]
