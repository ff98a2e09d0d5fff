"""Batches the database could not take, kept in files on local disk until it can, then replayed in order.

A gateway keeps serving while its database is down: the writer puts each batch
it cannot write here instead of holding it in memory, so a process that stops
or dies meanwhile loses nothing. Files are named by the time they were made, so
replaying them oldest first keeps the order the batches were produced in. Any
process on the host may replay any file: it claims one by renaming it (atomic),
and gives it back if the database refuses it again. Files a dead process had
claimed are given back when another one starts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

from django.apps import apps

from gateway_project import private_files

log = logging.getLogger("gateway.spool")
READY, CLAIMED = ".jsonl", ".claimed"
REJECTED = "rejected"  # rows no database table would take, kept for a person to read


def _encode(value):
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _encode_or_text(value):
    """``_encode``, or the value's ``repr`` for what a spooled row never holds (a rejected row may hold anything)."""
    try:
        return _encode(value)
    except TypeError:
        return {"$repr": repr(value)}


def _decode(obj: dict):
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == "$dt":
            return datetime.fromisoformat(value)
        if tag == "$date":
            return date.fromisoformat(value)
        if tag == "$dec":
            return Decimal(value)
    return obj


def _read_line(raw: bytes) -> tuple:
    """One spooled (model, row); raises when the line is not one."""
    item = json.loads(raw.decode("utf-8"), object_hook=_decode)
    if not isinstance(item, dict) or not isinstance(item.get("model"), str) or not isinstance(item.get("row"), dict):
        raise ValueError("not a spooled row")
    return apps.get_model(item["model"]), item["row"]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Spool:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def put(self, batch: list[tuple]) -> Path:
        """Write ``batch`` ([(model, row), ...]) to a new file, durably, and return its path."""
        private_files.make_dir(self.directory, private_files.OWNER_DIR_MODE)
        name = f"{time.time_ns():020d}-{os.getpid()}"
        temporary = self.directory / f"{name}.tmp"
        with private_files.create(temporary, private_files.OWNER_FILE_MODE, text=True) as handle:
            for model, row in batch:
                handle.write(json.dumps({"model": model._meta.label, "row": row}, default=_encode) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        path = temporary.with_suffix(READY)
        os.replace(temporary, path)  # readers only ever see whole files
        return path

    def reject(self, label: str, row: dict, reason: str) -> Path:
        """Keep a row that neither the database nor its quarantine would take in a file of its own under
        ``rejected/`` (never replayed), durably: its prompt and answer previews stay out of the logs, and it is
        not lost. Returns the file's path, which the log names."""
        directory = self.directory / REJECTED
        private_files.make_dir(self.directory, private_files.OWNER_DIR_MODE)
        private_files.make_dir(directory, private_files.OWNER_DIR_MODE)
        path = directory / f"{time.time_ns():020d}-{os.getpid()}{READY}"
        line = json.dumps({"model": label, "row": row, "reason": reason}, default=_encode_or_text)
        with private_files.create(path, private_files.OWNER_FILE_MODE, text=True) as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return path

    def ready(self) -> list[Path]:
        """Files waiting to be replayed, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob(f"*{READY}"))

    def waiting_rows(self) -> tuple[int, int]:
        """How many files wait to be replayed, and how many rows they hold (one a line)."""
        files = rows = 0
        for path in self.ready():
            try:
                with open(path, "rb") as handle:
                    rows += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
            except FileNotFoundError:  # replayed meanwhile
                continue
            files += 1
        return files, rows

    def claim(self, path: Path, unreadable: list[tuple[str, str]] | None = None) -> tuple[Path, list[tuple]] | None:
        """Take ``path`` for this process and read its batch; None if another process took it first.

        A line that is not a row this code can read (damaged, or for a model that no longer
        exists) goes to ``unreadable`` as (its text, why) when that list is given, so the
        rest of the file is still replayed; without the list it raises ValueError.
        """
        claimed = path.with_name(f"{path.stem}.{os.getpid()}{CLAIMED}")
        try:
            os.rename(path, claimed)
        except FileNotFoundError:
            return None
        batch = []
        with open(claimed, "rb") as handle:
            for raw in handle:
                if not raw.strip():
                    continue
                try:
                    batch.append(_read_line(raw))
                except (ValueError, LookupError, ArithmeticError, RecursionError) as error:
                    if unreadable is None:
                        raise ValueError(f"{claimed.name}: {error}") from error
                    unreadable.append((raw.decode("utf-8", "backslashreplace").rstrip("\n"), f"unreadable: {error}"))
        return claimed, batch

    def done(self, claimed: Path) -> None:
        claimed.unlink(missing_ok=True)

    def give_back(self, claimed: Path) -> None:
        stem = claimed.name.split(".")[0]
        os.replace(claimed, claimed.with_name(stem + READY))

    def recover(self) -> int:
        """Give back the files that processes which no longer run had claimed."""
        if not self.directory.is_dir():
            return 0
        recovered = 0
        for claimed in self.directory.glob(f"*{CLAIMED}"):
            pid = int(claimed.name.split(".")[1])
            if pid != os.getpid() and not process_alive(pid):
                self.give_back(claimed)
                recovered += 1
        return recovered
