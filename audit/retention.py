"""Retention of the request log: archive the records past their time, then delete them from the database.

A record is kept ``GATEWAY_AUDIT_RETENTION_DAYS`` (0: for ever), or its client's
``audit_retention_days`` when the client has one, longer or shorter. Only the
retention job removes request records; the admin-action trail is never removed,
and usage rows are billing's, not touched here. A run (``apply_retention``: hourly
from Celery beat, ``manage.py apply_retention``, or "Run now" in the console):

1. takes the retention lock, so runs never overlap (a PostgreSQL advisory lock; a
   file lock next to the archives on SQLite); a run that finds it taken does nothing;
2. finishes the deletion of an earlier run that died midway, and removes archive files
   no database row names (a run that died before saving its archive row: those records
   are still in the database and are archived again, so nothing is lost or doubled);
3. writes the due records in seq order, every chained field and the chain's own, to one
   gzip JSON Lines file: aside first, fsynced, then renamed; its SHA-256 taken as it is written;
4. saves the ``AuditArchive`` and its ``ArchivedRun`` rows (each run of consecutive seq
   numbers, with the hashes at its two ends) in one short transaction;
5. deletes the archived records in batches of ``GATEWAY_RETENTION_BATCH``, each its own
   short transaction, in ascending seq order: an archive's deletion is complete exactly
   when its last record is gone, which is how step 2 knows.

The chain then still verifies in the database across the cut (``audit.chain.verify``
links the records on either side through the runs), and ``verify_archive`` checks a
file against its recorded SHA-256 and runs (``audit.archive_check``).

An auditor verifies an archive offline, with the file and its runs (the console's
Retention page, or ``GET /api/v1/audit-archives/<id>/runs/``) and nothing but Python::

    sha256sum audit-records-….jsonl.gz                  # the archive's sha256
    python audit/verify_export.py FILE.jsonl.gz --records-only
                                                        # every record matches its own hash
    python audit/verify_export.py FILE.jsonl.gz --seq FIRST-LAST --anchor PREV_HASH
                                                        # one run: its records link from its prev_hash

and the last record of each run has the run's ``last_hash`` as its record_hash. An
archive of one run (the oldest records, all under the default retention) is checked
whole with ``--anchor`` alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, QuerySet
from django.utils import timezone

from audit.exports import RECORD_FIELDS, Digesting, json_default
from audit.models import ArchivedRun, AuditArchive, AuditRecord
from audit.trail import record_event
from gateway_project import private_files
from keys.models import Client

log = logging.getLogger("gateway.retention")

LOCK_KEY = 0x61756472  # "audr": the PostgreSQL advisory lock of retention runs
FILE_PREFIX = "audit-records-"
CHUNK = 2000  # rows read from the database at a time
RANGES_PER_DELETE = 500  # seq ranges in one DELETE statement at most
RUN_INSERT_BATCH = 1000
OBJECT_TYPE = "audit.retention"  # how the trail names a run someone asked for
ARCHIVE_TYPE = AuditArchive._meta.label_lower


@dataclass
class RetentionSummary:
    """What a run did (or, dry, would do)."""

    dry_run: bool = False
    skipped: bool = False  # another run held the lock
    due: int = 0
    archived: int = 0
    deleted: int = 0
    batches: int = 0
    resumed: int = 0  # records of an earlier, interrupted run deleted by this one
    orphans: list[str] = field(default_factory=list)  # files of runs that died before saving their archive
    archive: AuditArchive | None = None
    runs: int = 0
    first_seq: int | None = None  # of the records due (dry) or archived
    last_seq: int | None = None

    def describe(self) -> str:
        if self.skipped:
            return "Another retention run is in progress; nothing done."
        lines = []
        if self.orphans:
            lines.append(f"Removed {len(self.orphans)} unfinished archive file(s): {', '.join(self.orphans)}.")
        if self.resumed:
            lines.append(f"Finished an interrupted run: deleted {self.resumed} already archived records.")
        if self.dry_run and self.due:
            cap = settings.GATEWAY_RETENTION_MAX_RECORDS
            lines.append(
                f"{self.due} records are past their retention (seq {self.first_seq} to {self.last_seq}); a run would "
                f"archive {min(self.due, cap)} of them to one file and delete them from the database."
            )
        elif self.dry_run:
            lines.append("No records are past their retention; a run would archive nothing.")
        elif self.archive is None:
            lines.append("No records are past their retention.")
        else:
            lines.append(
                f"Archived {self.archived} records (seq {self.archive.first_seq} to {self.archive.last_seq}, "
                f"{self.runs} run(s)) to {self.archive.file_name}; deleted {self.deleted} in {self.batches} batches."
            )
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run, "skipped": self.skipped, "due": self.due, "archived": self.archived,
            "deleted": self.deleted, "batches": self.batches, "resumed": self.resumed, "orphans": self.orphans,
            "archive": self.archive.pk if self.archive else None, "runs": self.runs, "first_seq": self.first_seq,
            "last_seq": self.last_seq, "message": self.describe(),
        }  # fmt: skip


def archive_dir() -> Path:
    return Path(settings.GATEWAY_ARCHIVE_DIR)


# The only names this module gives archive files: a database row naming anything else is refused, so that whoever can
# write the database cannot point a download or a check at another file (a key, the checkpoints).
ARCHIVE_NAME = re.compile(rf"{FILE_PREFIX}\d{{8}}-\d{{6}}-seq\d+-\d+\.jsonl\.gz")
ARCHIVE_FIRST_SEQ = re.compile(rf"{FILE_PREFIX}\d{{8}}-\d{{6}}-seq(\d+)-\d+\.jsonl\.gz")


def archive_path(archive: AuditArchive) -> Path:
    """Where the archive's file is; FileNotFoundError when its recorded name is not one an archive is given."""
    if not ARCHIVE_NAME.fullmatch(archive.file_name):
        raise FileNotFoundError(f"{archive.file_name!r} is not the name of an archive file")
    return archive_dir() / archive.file_name


def policy() -> dict:
    """The retention that applies now: the default and every client's override."""
    overrides = Client.objects.filter(audit_retention_days__isnull=False).order_by("slug")
    return {
        "default_days": settings.GATEWAY_AUDIT_RETENTION_DAYS,
        "overrides": [
            {"client_id": pk, "client": slug, "days": days}
            for pk, slug, days in overrides.values_list("pk", "slug", "audit_retention_days")
        ],
    }


def due_records(now: datetime | None = None) -> QuerySet[AuditRecord]:
    """The chained request records past their retention at ``now``.

    A record of a client with an override is due after that many days; any other
    record (no client, a client without an override, or one since deleted) after the
    default, and never while the default is 0. Unchained records (no seq) are never
    due: they are a finding, left for verification to name.
    """
    now = now or timezone.now()
    overridden = Client.objects.filter(audit_retention_days__isnull=False)
    parts = [
        Q(
            client_id__in=overridden.filter(audit_retention_days=days).values("pk"),
            created_at__lt=now - timedelta(days=days),
        )
        for days in overridden.order_by().values_list("audit_retention_days", flat=True).distinct()
    ]
    default = settings.GATEWAY_AUDIT_RETENTION_DAYS
    if default:
        not_overridden = Q(client_id__isnull=True) | ~Q(client_id__in=overridden.values("pk"))
        parts.append(not_overridden & Q(created_at__lt=now - timedelta(days=default)))
    if not parts:
        return AuditRecord.objects.none()
    return AuditRecord.objects.filter(reduce(or_, parts), seq__isnull=False)


def apply_retention(now: datetime | None = None, *, dry_run: bool = False) -> RetentionSummary:
    """Archive the records past their retention to one file, then delete them in batches (see the module's doc)."""
    now = now or timezone.now()
    if dry_run:
        due = due_records(now).aggregate(count=Count("pk"), first=Min("seq"), last=Max("seq"))
        return RetentionSummary(dry_run=True, due=due["count"], first_seq=due["first"], last_seq=due["last"])
    with retention_lock() as held:
        if not held:
            return RetentionSummary(skipped=True)
        summary = RetentionSummary()
        summary.orphans = _remove_orphan_files()
        summary.resumed = _finish_interrupted()
        archive = _write_archive(now)
        if archive is not None:
            summary.archive, summary.archived = archive, archive.records
            summary.first_seq, summary.last_seq = archive.first_seq, archive.last_seq
            summary.runs = archive.runs.count()
            summary.deleted, summary.batches = delete_archived(archive)
        return summary


@contextlib.contextmanager
def retention_lock() -> Iterator[bool]:
    """Hold the lock of retention runs if it is free; yield whether this process got it (never waits)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
            held = cursor.fetchone()[0]
        try:
            yield held
        finally:
            if held:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        return
    directory = archive_dir()
    private_files.make_dir(directory)
    with open(directory / ".retention.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_orphan_files() -> list[str]:
    """Delete archive files no archive row names that runs left behind: unfinished ``.part`` files, and finished
    files whose records are still in the database (the run died before saving its row).

    A run deletes records only after its row is saved, so a finished file whose first
    record is gone lost its row some other way: someone deleted it. That file is the
    evidence of what was archived; it is kept, and logged as an error.
    """
    directory = archive_dir()
    if not directory.is_dir():
        return []
    names = sorted(p.name for p in directory.iterdir() if p.name.startswith((FILE_PREFIX, f".{FILE_PREFIX}")))
    saved = set()
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        saved.update(AuditArchive.objects.filter(file_name__in=chunk).values_list("file_name", flat=True))
    removed = []
    for name in (name for name in names if name not in saved):
        finished = ARCHIVE_FIRST_SEQ.fullmatch(name)
        if finished and not AuditRecord.objects.filter(seq=int(finished[1])).exists():
            log.error("archive file %s has no archive row and its records are gone from the database: kept", name)
            continue
        log.warning("removing %s: its run ended before saving the archive; its records are still kept", name)
        (directory / name).unlink(missing_ok=True)
        removed.append(name)
    return removed


def _finish_interrupted() -> int:
    """Delete the records of the last archive that a run died before deleting; return how many.

    Runs delete in ascending seq order and never start a new archive before the
    last one's deletion is done, so only the last archive can be unfinished, and it
    is exactly when its last record is still there.
    """
    last = AuditArchive.objects.order_by("-id").first()
    if last is None or last.last_seq is None or not AuditRecord.objects.filter(seq=last.last_seq).exists():
        return 0
    log.warning("finishing the deletion of %s, interrupted in an earlier run", last.file_name)
    return delete_archived(last)[0]


@dataclass
class _Written:
    records: int = 0
    runs: list[list] = field(default_factory=list)  # [first_seq, last_seq, prev_hash, last_hash]
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, row: dict) -> None:
        seq, created = row["seq"], row["created_at"]
        self.records += 1
        self.oldest = created if self.oldest is None else min(self.oldest, created)
        self.newest = created if self.newest is None else max(self.newest, created)
        if self.runs and self.runs[-1][1] == seq - 1:
            self.runs[-1][1], self.runs[-1][3] = seq, row["record_hash"]
        else:
            self.runs.append([seq, seq, row["prev_hash"], row["record_hash"]])


def _write_archive(now: datetime) -> AuditArchive | None:
    """Write the due records to a new archive file and save its row and runs; None when nothing is due."""
    applied = {**policy(), "cut_at": now.isoformat()}
    rows = due_records(now).order_by("seq").values(*RECORD_FIELDS)[: settings.GATEWAY_RETENTION_MAX_RECORDS]
    directory = archive_dir()
    private_files.make_dir(directory)
    part = directory / f".{FILE_PREFIX}{now:%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}.part"
    written = _Written()
    try:
        with private_files.create(part) as raw:  # 0640: the request log is not for every account on the host
            digesting = Digesting(raw)
            with gzip.GzipFile(filename="", mode="wb", fileobj=digesting) as stream:
                for lines in _batched(_lines(rows.iterator(chunk_size=CHUNK), written), CHUNK):
                    stream.write("".join(lines).encode())
            raw.flush()
            os.fsync(raw.fileno())
        if not written.records:
            part.unlink()
            return None
        first, last = written.runs[0][0], written.runs[-1][1]
        name = f"{FILE_PREFIX}{now:%Y%m%d-%H%M%S}-seq{first}-{last}.jsonl.gz"
        final = directory / name
        os.replace(part, final)
        _fsync_dir(directory)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    try:
        with transaction.atomic():
            archive = AuditArchive.objects.create(
                file_name=name, file_size=digesting.size, sha256=digesting.sha256.hexdigest(),
                records=written.records, first_seq=first, last_seq=last, oldest_at=written.oldest,
                newest_at=written.newest, policy=applied,
            )  # fmt: skip
            ArchivedRun.objects.bulk_create(
                (ArchivedRun(archive=archive, first_seq=f, last_seq=la, prev_hash=p, last_hash=h)
                 for f, la, p, h in written.runs),
                batch_size=RUN_INSERT_BATCH,
            )  # fmt: skip
    except BaseException:
        final.unlink(missing_ok=True)  # no row names it: the records stay, for the next run
        raise
    return archive


def _lines(rows: Iterable[dict], written: _Written) -> Iterator[str]:
    for row in rows:
        written.add(row)
        yield json.dumps(row, default=json_default, ensure_ascii=False) + "\n"


def _batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def delete_archived(archive: AuditArchive) -> tuple[int, int]:
    """Delete the records of the archive's runs that are still in the database; return (records, batches).

    Each batch is its own short transaction over at most ``GATEWAY_RETENTION_BATCH``
    seq numbers, taken in ascending order, so other writers never wait long.
    """
    batch_size = settings.GATEWAY_RETENTION_BATCH
    deleted = batches = 0
    for ranges in _delete_batches(archive, batch_size):
        deleted += _delete_batch(ranges)
        batches += 1
    return deleted, batches


def _delete_batches(archive: AuditArchive, size: int) -> Iterator[list[tuple[int, int]]]:
    """The archive's runs as lists of seq ranges, each list covering at most ``size`` seq numbers."""
    runs = archive.runs.order_by("first_seq").values_list("first_seq", "last_seq").iterator(chunk_size=CHUNK)
    batch, count = [], 0
    for first, last in runs:
        start = first
        while start <= last:
            end = min(last, start + size - count - 1)
            batch.append((start, end))
            count += end - start + 1
            start = end + 1
            if count >= size or len(batch) >= RANGES_PER_DELETE:
                yield batch
                batch, count = [], 0
    if batch:
        yield batch


def _delete_batch(ranges: list[tuple[int, int]]) -> int:
    with transaction.atomic():
        return AuditRecord.objects.filter(reduce(or_, (Q(seq__range=r) for r in ranges))).delete()[0]


def request_run(user, via: str) -> str | None:
    """Queue a retention run now on someone's request, recorded in the trail; what it did when it ran at once."""
    from audit.tasks import apply_audit_retention  # the task module imports this one

    record_event(user, via, "run", OBJECT_TYPE, object_repr="retention run", changes={"policy": [None, policy()]})
    result = apply_audit_retention.delay()
    return result.get()["message"] if result.ready() else None


def open_archive(archive: AuditArchive, user, via: str) -> BinaryIO:
    """The archive's file opened for reading, the download recorded in the trail; FileNotFoundError if it is gone."""
    handle = open(archive_path(archive), "rb")
    try:
        record_event(user, via, "download", ARCHIVE_TYPE, archive.pk, archive.file_name,
                     changes={"file": [None, archive.file_name], "sha256": [None, archive.sha256]})  # fmt: skip
    except Exception:
        handle.close()
        raise
    return handle
