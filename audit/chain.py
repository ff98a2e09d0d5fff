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

Against someone who can write the database (issue 13): hashes are keyed with a
chain key that is not in it (``GATEWAY_AUDIT_CHAIN_KEY``, see ``audit.chain_format``),
so a rewritten record cannot be given a hash that verifies; the heads are pinned by
signed checkpoints outside it (``audit.checkpoints``), so removing the newest records
is named; and the archived runs the chain links through are checked against their
files (``audit.archive_check``), so a forged run cannot hide a cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from django.conf import settings
from django.db import connection, models

from audit.chain_format import (
    CHAIN_FIELDS,
    GENESIS,
    KEY_FIELD,
    REQUESTS,
    TRAIL,
    ChainSpec,
    Finding,
    KeyRing,
    Verification,
    verify_rows,
)
from audit.models import AdminAction, ArchivedRun, AuditRecord

VERIFY_CHUNK = 5000


def key_ring() -> KeyRing:
    """The chain keys from the settings, newest first."""
    return KeyRing(settings.GATEWAY_AUDIT_CHAIN_KEYS)


@dataclass(frozen=True)
class Chain:
    name: str  # as checkpoints and the command name it
    model: type[models.Model]
    spec: ChainSpec
    lock: int  # pg_advisory_xact_lock key
    runs: type[models.Model] | None = None  # where the runs of archived records are kept, if any ever are

    def chain_rows(self, rows: list[dict]) -> None:
        """Give ``rows`` (about to be inserted, in this order) their seq and keyed hashes, inside the transaction."""
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [self.lock])
        seq, prev = self.head()
        keys = key_ring()
        for row in rows:
            seq += 1
            row["seq"] = seq
            row["prev_hash"] = prev
            row[KEY_FIELD] = keys.current_id
            row["record_hash"] = prev = self.spec.record_hash(prev, row, keys)

    def head(self) -> tuple[int, str]:
        """The chain's last seq and hash: its newest record's, or the end of the last archived run past it.

        The retention job may archive and delete the newest records too (no traffic for
        longer than the retention); the chain goes on from the archive, not from the start.
        One statement (the writer asks before every batch): an index probe on each table.
        """
        quote = connection.ops.quote_name
        sql = (
            f"SELECT seq, record_hash FROM (SELECT seq, record_hash FROM {quote(self.model._meta.db_table)} "
            "WHERE seq IS NOT NULL ORDER BY seq DESC LIMIT 1) newest"
        )
        if self.runs is not None:  # runs never overlap: the one that starts last ends last
            sql += (
                f" UNION ALL SELECT last_seq, last_hash FROM (SELECT last_seq, last_hash FROM "
                f"{quote(self.runs._meta.db_table)} ORDER BY first_seq DESC LIMIT 1) archived"
            )
        with connection.cursor() as cursor:
            cursor.execute(sql + " ORDER BY 1 DESC LIMIT 1")
            found = cursor.fetchone()
        return (found[0], found[1]) if found is not None else (0, GENESIS)


REQUEST_CHAIN = Chain("records", AuditRecord, REQUESTS, 0x61756463, runs=ArchivedRun)  # "audc"
TRAIL_CHAIN = Chain("trail", AdminAction, TRAIL, 0x61756474)  # "audt"
CHAINS = {chain.name: chain for chain in (REQUEST_CHAIN, TRAIL_CHAIN)}


def chain_rows(rows: list[dict]) -> None:
    """The writer's preparer for request records."""
    REQUEST_CHAIN.chain_rows(rows)


def verify(since: datetime | None = None, until: datetime | None = None, chain: Chain = REQUEST_CHAIN) -> Verification:
    """Check the chain over the records created in [since, until), and the chain's head and archives.

    Three checks, the first finding named: every record in the range against its keyed
    hash and its link to the one before (``_walk``); the head against the last signed
    checkpoint, which must not be ahead of it and whose record must still hash to what
    it pinned (``audit.checkpoints``); and every archived run the range links through
    against its archive's file (``audit.archive_check``).
    """
    from audit import archive_check, checkpoints  # both import this module

    keys = key_ring()
    pin, broken = checkpoints.last_pin(chain)
    if broken is not None:
        return Verification(0, None, None, broken)
    crossed = Crossed()
    result = _walk(since, until, chain, keys, pin.keyed_from if pin is not None else None, crossed)
    if not result.ok:
        return result
    finding = checkpoints.check_head(chain, pin, keys, crossed)
    if finding is None:
        finding = archive_check.check_crossed(crossed, keys)
    if finding is not None:
        return replace(result, finding=finding)
    return replace(result, note=checkpoints.describe_pin(chain, pin))


@dataclass
class Crossed:
    """The archives whose runs a verification linked the chain through, with those runs."""

    runs: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # archive id -> [(first_seq, last_seq)]

    def add(self, archive_id: int, first_seq: int, last_seq: int) -> None:
        self.runs.setdefault(archive_id, []).append((first_seq, last_seq))


def _walk(since, until, chain: Chain, keys: KeyRing, keyed_from: int | None, crossed: Crossed) -> Verification:
    """Check the records in [since, until) in seq order, reading them in chunks.

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
    anchor, keyed_before, removed = _anchor(chain, first, crossed)
    if removed is not None:
        return Verification(0, None, None, removed)
    if keyed_before:  # a range that starts after keyed records: it must be keyed from its first
        keyed_from = first if keyed_from is None else min(keyed_from, first)
    rows = (
        chain.model.objects.filter(seq__gte=first, seq__lte=last)
        .order_by("seq")
        .values(*chain.spec.fields, *CHAIN_FIELDS[1:], KEY_FIELD)
        .iterator(chunk_size=VERIFY_CHUNK)
    )
    bridge = ArchivedRuns(chain.runs, first, last, crossed) if chain.runs is not None else None
    result = verify_rows(rows, anchor=anchor, spec=chain.spec, bridge=bridge, keys=keys, keyed_from=keyed_from)
    if result.ok and unchained is not None:
        return verify_rows(_unchained_only(unchained, ident), spec=chain.spec)
    return result


def _anchor(chain: Chain, first: int, crossed: Crossed) -> tuple[str | None, bool, Finding | None]:
    """What the record ``first`` must follow: the hash (None: only an archive knows it), whether that record was
    keyed, or the finding that none is left.

    That is the hash of the record before it, or the last hash of the archived run
    ending just before it. Neither, and the records before it were removed.
    """
    if first == 1:
        return GENESIS, False, None
    before = chain.model.objects.filter(seq=first - 1).values_list("record_hash", KEY_FIELD).first()
    if before is not None:
        return before[0], bool(before[1]), None
    run = None
    if chain.runs is not None:
        runs = chain.runs.objects.filter(first_seq__lt=first).order_by("-first_seq")
        run = runs.values("archive_id", "first_seq", "last_seq", "last_hash").first()
        if run is not None and run["last_seq"] == first - 1:
            crossed.add(run["archive_id"], run["first_seq"], run["last_seq"])
            return run["last_hash"], False, None
        if run is not None and run["last_seq"] >= first:
            return None, False, None  # the retention job is still deleting this run: the one before is archived
    reached = chain.model.objects.filter(seq__lt=first).order_by("-seq").values_list("seq", flat=True).first() or 0
    reached = max(reached, run["last_seq"] if run is not None else 0)
    row = chain.model.objects.filter(seq=first).values(chain.spec.ident or "id").get()
    ident = str(row[chain.spec.ident or "id"]) if chain.spec.ident else ""
    missing = f"seq {reached + 1}" if reached + 1 == first - 1 else f"seq {reached + 1} to {first - 1}"
    message = f"Records were removed before {chain.spec.label(row, first)}: {missing}."
    return None, False, Finding("removed", first, ident, message)


class ArchivedRuns:
    """Follow the archived runs across the gaps in a range of records: ``verify_rows``'s bridge.

    Runs are read lazily in seq order, once for the whole range, side by side with
    the records (there may be millions of either).
    """

    def __init__(self, model: type[models.Model], first: int, last: int, crossed: Crossed):
        self._runs = (
            model.objects.filter(first_seq__gt=first, first_seq__lt=last)
            .order_by("first_seq")
            .values_list("first_seq", "last_seq", "prev_hash", "last_hash", "archive_id")
            .iterator(chunk_size=VERIFY_CHUNK)
        )
        self._next = None
        self._crossed = crossed

    def _peek(self):
        if self._next is None:
            self._next = next(self._runs, None)
        return self._next

    def __call__(self, seq: int, hash_: str, until: int) -> tuple[int, str | None] | None:
        """From record ``seq`` (hash ``hash_``) towards record ``until``: how far linked archived runs reach."""
        reached = None
        while (run := self._peek()) is not None and run[0] < until:
            first_seq, last_seq, prev_hash, last_hash, archive_id = run
            if first_seq <= seq:  # a run whose records the retention job has not finished deleting
                self._next = None
                continue
            if first_seq != seq + 1 or prev_hash != hash_:
                break
            self._next = None
            self._crossed.add(archive_id, first_seq, last_seq)
            if last_seq >= until:
                return until - 1, None  # still being deleted: the hash before ``until`` is in the archive only
            seq, hash_ = reached = last_seq, last_hash
        return reached


def _unchained_only(row, ident: str):
    return [] if row is None else [{ident: row[ident], "seq": None}]
