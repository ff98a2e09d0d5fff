"""Audit exports too large for one response: requested as a job, written to a gzip file by a Celery task.

The console and the API call ``request_export``; the task calls ``write_export``;
only the requester downloads the file (``open_download``), until it expires and
``delete_expired`` removes it. Each request and each download goes into the
admin-action trail. The file holds the chain fields, so it verifies offline
(``python audit/verify_export.py FILE.csv.gz``).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.exports import ACTION_FIELDS, RECORD_FIELDS, Digesting, export_lines
from audit.filters import AuditFilterForm, TrailFilterForm
from audit.models import AuditExport
from audit.trail import record_event
from gateway_project import background, private_files

log = logging.getLogger("gateway.exports")

RECORDS, TRAIL = AuditExport.RECORDS, AuditExport.TRAIL
FIELDS = {RECORDS: RECORD_FIELDS, TRAIL: ACTION_FIELDS}
NAMES = {RECORDS: "audit-log", TRAIL: "admin-actions"}  # the start of the file's name
FORMATS = dict(AuditExport.FORMAT_CHOICES)
OBJECT_TYPE = AuditExport._meta.label_lower  # how the trail names an export
PROGRESS_SECONDS = 1.0  # progress is saved at least this often, besides every ``progress_every`` rows
WRITE_BATCH = 1000  # lines joined into one write to the gzip stream
STALE_PART_SECONDS = 3600  # a half-written file untouched this long has no writer left
ABANDONED_PART = re.compile(r"-(?P<id>[0-9a-f]{8})\.(?:csv|jsonl)\.gz\.part$")
EXPORT_NAME = re.compile(rf"(?:{'|'.join(NAMES.values())})-\d{{8}}-\d{{6}}-[0-9a-f]{{8}}\.(?:csv|jsonl)\.gz")


FILTER_FORMS = {RECORDS: AuditFilterForm, TRAIL: TrailFilterForm}


class ExportNotReady(Exception):
    """The export has no file to download yet (queued or running), or never will (failed)."""


class ExportGone(Exception):
    """The export's file expired and is deleted, or will be at the next sweep."""


@dataclass(frozen=True)
class Progress:
    """What the console and the API show of a job besides its fields."""

    percent: int
    expired: bool
    downloadable: bool


def rows_text(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def export_dir() -> Path:
    return Path(settings.GATEWAY_EXPORT_DIR)


def export_path(export: AuditExport) -> Path:
    """Where the export's finished file is (or was, once expired).

    FileNotFoundError when the recorded name is not one ``write_export`` gives: whoever can
    write the database must not point a download or the sweep at another file.
    """
    if not EXPORT_NAME.fullmatch(export.file_name):
        raise FileNotFoundError(f"{export.file_name!r} is not the name of an export file")
    return export_dir() / export.file_name


def progress(export: AuditExport, now=None) -> Progress:
    if export.status == AuditExport.DONE:
        percent = 100
    elif export.rows_total:
        percent = min(99, export.rows_written * 100 // export.rows_total)
    else:
        percent = 0
    expired = export.expires_at is not None and export.expires_at <= (now or timezone.now())
    downloadable = export.status == AuditExport.DONE and bool(export.file_name) and not expired
    return Progress(percent, expired, downloadable)


def clean_filters(kind: str, filters) -> dict:
    """The filter as the job keeps it: known fields with valid values, as JSON; ValidationError otherwise.

    Unknown names are refused rather than ignored, so a mistyped filter never exports everything.
    """
    if not isinstance(filters, dict):
        raise ValidationError({"filters": "Give the filter as an object of field names and values."})
    form = FILTER_FORMS[kind](data=filters)
    unknown = sorted(set(filters) - set(form.fields))
    if unknown:
        known = ", ".join(form.fields)
        raise ValidationError({name: f"Not a filter of this export (use {known})." for name in unknown})
    if not form.is_valid():
        raise ValidationError(form.errors.as_data())
    return {
        name: value.isoformat() if hasattr(value, "isoformat") else value
        for name, value in form.cleaned_data.items()
        if value not in (None, "")
    }


def export_queryset(kind: str, filters: dict):
    """The rows of a kind matching a filter, in chain order (the order the offline check reads them in)."""
    form = FILTER_FORMS[kind](data=filters)
    if not form.is_valid():  # the forms ignore invalid fields when filtering: never export more than was asked
        raise ValidationError(form.errors.as_data())
    return form.filter().order_by("seq", "id")


def too_large_to_stream(queryset) -> bool:
    """Whether the rows are more than one response should stream (counts no further than the limit)."""
    limit = settings.GATEWAY_EXPORT_STREAM_MAX_ROWS
    return queryset.order_by()[: limit + 1].count() > limit


def request_export(user, kind: str, fmt: str, filters: dict, *, via: str = "console") -> AuditExport:
    """Validate, create the job, record it in the trail and queue its task once the job is committed."""
    errors = {}
    if kind not in FIELDS:
        errors["kind"] = f"Choose one of {', '.join(FIELDS)}."
    if fmt not in FORMATS:
        errors["format"] = f"Choose one of {', '.join(FORMATS)}."
    if errors:
        raise ValidationError(errors)
    cleaned = clean_filters(kind, filters)
    rows = export_queryset(kind, cleaned).count()
    with transaction.atomic():
        export = AuditExport.objects.create(requester=user, kind=kind, format=fmt, filters=cleaned, rows_total=rows)
        record_event(user, via, "export", OBJECT_TYPE, export.pk, f"{NAMES[kind]} ({fmt}, {rows_text(rows)})",
                     changes={"filter": [None, cleaned], "format": [None, fmt]})  # fmt: skip
        transaction.on_commit(lambda: _enqueue(export.pk))
    export.refresh_from_db()  # an eager task (the embedded profile) has already run it
    return export


def _enqueue(export_id) -> None:
    from audit.tasks import write_audit_export

    background.queue(write_audit_export, AuditExport, export_id, "export")


def claim(export_id) -> AuditExport | None:
    """Take a queued job for this worker; None when it is gone or another run took it (a task may run twice)."""
    return background.claim(AuditExport, export_id)


def write_export(export: AuditExport, progress_every: int = 5000) -> None:
    """Write the export's rows to its gzip file, saving progress as it goes; the job ends done, or failed.

    Rows stream from the database in chunks (``iterator``), so memory stays flat at any size.
    The file appears under its final name only when complete (written aside, then renamed);
    a failed write leaves no file and the error on the job. Runs outside a transaction, so
    each progress update commits and the console sees it.
    """
    started = timezone.now()
    jobs = AuditExport.objects.filter(pk=export.pk)
    directory = export_dir()
    name = f"{NAMES[export.kind]}-{started:%Y%m%d-%H%M%S}-{export.pk.hex[:8]}.{export.format}.gz"
    final, part = directory / name, directory / f".{name}.part"
    try:
        queryset = export_queryset(export.kind, export.filters)
        total = queryset.count()
        jobs.update(status=AuditExport.RUNNING, started_at=export.started_at or started, rows_total=total,
                    rows_written=0, error="")  # fmt: skip
        private_files.make_dir(directory)
        written = 0
        with private_files.create(part) as raw:  # 0640: the request log is not for every account on the host
            digesting = Digesting(raw)
            # Level 6: a 1M-row export takes ~40% less time than at 9 for a file a few percent larger.
            gz = gzip.GzipFile(filename=name.removesuffix(".gz"), mode="wb", fileobj=digesting, compresslevel=6)
            with gz as stream:
                lines = iter(export_lines(queryset, FIELDS[export.kind], export.format))
                if export.format == "csv":
                    stream.write(next(lines).encode())  # the header is not a row
                batch, saved_at = [], time.monotonic()
                for line in lines:
                    batch.append(line)
                    written += 1
                    if len(batch) >= WRITE_BATCH:
                        stream.write("".join(batch).encode())
                        batch.clear()
                    if written % progress_every == 0 or time.monotonic() - saved_at >= PROGRESS_SECONDS:
                        jobs.update(rows_written=written)
                        saved_at = time.monotonic()
                stream.write("".join(batch).encode())
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(part, final)
        finished = timezone.now()
        done = jobs.update(
            status=AuditExport.DONE, rows_written=written, file_name=name, file_size=digesting.size,
            sha256=digesting.sha256.hexdigest(), finished_at=finished,
            expires_at=finished + timedelta(hours=settings.GATEWAY_EXPORT_TTL_HOURS),
        )  # fmt: skip
        if not done:  # the job was deleted meanwhile: nobody may download the file
            final.unlink(missing_ok=True)
    except Exception as exc:
        log.exception("audit export %s failed", export.pk)
        for path in (part, final):
            with contextlib.suppress(OSError):  # there may be no file, nor even a directory
                path.unlink(missing_ok=True)
        jobs.update(status=AuditExport.FAILED, error=f"{type(exc).__name__}: {exc}", file_name="", file_size=0,
                    sha256="", finished_at=timezone.now())  # fmt: skip


def open_download(export: AuditExport, user, via: str) -> BinaryIO:
    """The export's file opened for reading, the download recorded in the trail.

    The caller has checked that ``user`` requested it. Raises ExportNotReady or ExportGone.
    """
    if export.status != AuditExport.DONE:
        raise ExportNotReady(export.error or f"The export is {export.get_status_display().lower()}.")
    if progress(export).expired or not export.file_name:
        raise ExportGone(export.expires_at)
    try:
        handle = open(export_path(export), "rb")
    except FileNotFoundError:
        raise ExportGone(export.expires_at) from None
    try:
        record_event(user, via, "download", OBJECT_TYPE, export.pk, export.file_name,
                     changes={"file": [None, export.file_name], "sha256": [None, export.sha256]})  # fmt: skip
    except Exception:
        handle.close()
        raise
    return handle


def delete_expired(now=None) -> int:
    """Delete the files of expired exports (the jobs stay, without a file name); return how many.

    Also removes the half-written files of writes that never finished (a worker killed
    mid-export): a writer touches its file continually, so one untouched for an hour is abandoned,
    and its job, still "running", is failed so that its requester sees it ended and can ask again.
    """
    now = now or timezone.now()
    directory = export_dir()
    deleted = 0
    for export in AuditExport.objects.filter(expires_at__lte=now).exclude(file_name="").only("pk", "file_name"):
        with contextlib.suppress(FileNotFoundError):
            export_path(export).unlink()
        deleted += AuditExport.objects.filter(pk=export.pk, file_name=export.file_name).update(file_name="")
    if directory.is_dir():
        cutoff = time.time() - STALE_PART_SECONDS
        for part in directory.glob(".*.part"):
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_mtime < cutoff:
                    part.unlink()
                    _fail_abandoned(part.name)
    return deleted


def _fail_abandoned(part_name: str) -> None:
    """Fail the running job whose half-written file (``….<id prefix>.<format>.gz.part``) was abandoned."""
    found = ABANDONED_PART.search(part_name)
    if found is None:
        return
    AuditExport.objects.filter(status=AuditExport.RUNNING, id__startswith=found["id"]).update(
        status=AuditExport.FAILED, error="The worker writing this export stopped before it finished; ask again.",
        finished_at=timezone.now(),
    )  # fmt: skip
