"""Check a retention archive's file: its SHA-256 as recorded, and every run's records linking as its hashes say.

How an auditor does the same offline is in ``audit.retention``'s documentation.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from audit.chain import Crossed, key_ring
from audit.chain_format import REQUESTS, Finding, KeyRing, Verification, verify_rows
from audit.models import AuditArchive
from audit.retention import CHUNK, archive_path


def verify_archive(archive: AuditArchive, keys: KeyRing | None = None) -> Verification:
    """Check an archive's file: its SHA-256 as recorded, and each run's records linking from the run's prev_hash.

    Every record of the file must belong to one of the archive's runs, each run must
    be whole and end at its last_hash, and the file must hold as many records as
    the archive says. Reads the file twice, streaming; runs are read lazily. Keyed
    records are checked with ``keys`` (the chain keys of the settings by default).
    """
    keys = keys if keys is not None else key_ring()
    try:
        path = archive_path(archive)
        digest = _sha256_of(path)
    except FileNotFoundError:
        return _failed("removed", f"The archive file {archive.file_name} is missing.")
    if digest != archive.sha256:
        return _failed(
            "altered", f"The archive file {archive.file_name} was altered: its SHA-256 is {digest}, "
            f"not {archive.sha256} as recorded.",
        )  # fmt: skip
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = _Peekable(json.loads(line) for line in handle if line.strip())
        checked = 0
        for run in archive.runs.order_by("first_seq").iterator(chunk_size=CHUNK):
            taken = _RunRows(rows, run.last_seq)
            result = verify_rows(taken, anchor=run.prev_hash, spec=REQUESTS, keys=keys)
            if not result.ok:
                return Verification(checked + result.checked, archive.first_seq, result.last_seq, result.finding)
            if (result.first_seq, result.last_seq, taken.last_hash) != (run.first_seq, run.last_seq, run.last_hash):
                return _failed(
                    "removed", f"The archive file does not hold the run seq {run.first_seq} to {run.last_seq} whole "
                    f"(it holds seq {result.first_seq} to {result.last_seq} there).", checked, run.first_seq,
                )  # fmt: skip
            checked += result.checked
        extra = rows.peek()
        if extra is not None:
            return _failed(
                "inserted", f"The archive file holds seq {extra.get('seq')}, which none of its runs names.", checked
            )
    if checked != archive.records:
        return _failed("removed", f"The archive file holds {checked} records, not {archive.records}.", checked)
    return Verification(checked, archive.first_seq, archive.last_seq, None)


def check_crossed(crossed: Crossed, keys: KeyRing) -> Finding | None:
    """Whether the files of the archives a verification linked the chain through bear out the runs it used.

    The database's run rows say where a cut is and which hashes close it; someone who
    can write the database could add one to hide records they removed. The archive's
    file, outside the database and its records keyed, is what proves the run.
    """
    archives = AuditArchive.objects.in_bulk(list(crossed.runs))
    for archive_id, runs in sorted(crossed.runs.items(), key=lambda item: min(item[1])):
        archive = archives.get(archive_id)
        result = verify_archive(archive, keys) if archive is not None else None
        if result is None or not result.ok:
            at = result.finding.seq if result is not None else None
            first_seq, last_seq = next((run for run in sorted(runs) if at is not None and run[0] <= at <= run[1]),
                                       min(runs))  # fmt: skip
            name = archive.file_name if archive is not None else f"#{archive_id}"
            why = result.finding.message if result is not None else "it is gone."
            return Finding(
                "archive", first_seq, "",
                f"The chain links across seq {first_seq} to {last_seq} through the archived run in {name}, whose "
                f"file does not bear it out: {why}",
            )  # fmt: skip
    return None


def record_at(archive_id: int, seq: int) -> str | None:
    """The record_hash of record ``seq`` in the archive's file (None: the file is gone or lacks it)."""
    archive = AuditArchive.objects.filter(pk=archive_id).first()
    if archive is None:
        return None
    try:
        with gzip.open(archive_path(archive), "rt", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line) if line.strip() else {}
                if _seq(row) == seq:
                    return row.get("record_hash")
    except (OSError, ValueError):
        return None
    return None


def _failed(kind: str, message: str, checked: int = 0, seq: int | None = None) -> Verification:
    return Verification(checked, None, None, Finding(kind, seq, "", message))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _Peekable:
    def __init__(self, items: Iterable[dict]):
        self._items, self._next = iter(items), None

    def peek(self) -> dict | None:
        if self._next is None:
            self._next = next(self._items, None)
        return self._next

    def take(self) -> dict:
        item, self._next = self.peek(), None
        return item


class _RunRows:
    """The file's rows up to ``last_seq`` (one run), remembering the last one's hash."""

    def __init__(self, rows: _Peekable, last_seq: int):
        self._rows, self._last_seq, self.last_hash = rows, last_seq, None

    def __iter__(self) -> Iterator[dict]:
        while (row := self._rows.peek()) is not None and _seq(row) <= self._last_seq:
            self._rows.take()
            self.last_hash = row.get("record_hash")
            yield row


def _seq(row: dict) -> int:
    try:
        return int(row.get("seq"))
    except (TypeError, ValueError):
        return -1
