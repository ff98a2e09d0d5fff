"""Buffered, batched writes for records the hot path produces.

The proxy never writes to the database itself: it appends rows (a model and
a dict of column values) here, and one background task per process writes
them every ``FLUSH_SECONDS`` or ``FLUSH_BATCH`` rows. On PostgreSQL a batch is
one ``COPY`` per table, several times cheaper per row than ``bulk_create``
(which builds and prepares a model instance per row while the event loop
waits for the GIL); elsewhere it is ``bulk_create``. A batch the database
refuses (it is down, say) goes to the spool, files on local disk
(``gateway_project.spool``), and every batch after it follows it there until
the database takes the spooled ones again, oldest first, so nothing is lost and
the order holds, even if the process stops meanwhile. At process exit whatever
is left is written synchronously, or spooled.

A batch the database refuses for what is in it (a value no column takes) is not
the database being down: the writer splits it, in fresh transactions, until the
rows it refuses stand alone, writes the rest and sets those aside with the
database's reason (``set_quarantine``). Spooled batches are replayed the same
way, so one bad row never stops the log. ``gateway_project.rows`` makes rows
valid before they are queued; this is the net under it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.db import DataError, IntegrityError, close_old_connections, connection, models, transaction

from gateway_project.logs import background_task
from gateway_project.metrics import AUDIT_QUEUE
from gateway_project.rows import clean_text, is_clean
from gateway_project.spool import Spool

log = logging.getLogger("gateway.writer")
ASYNC_HOOK_SECONDS = 2.0
# How often a writer with nothing spooled itself looks for files other (stopped) processes left.
SPOOL_LOOK_SECONDS = 5.0
REASON_LENGTH = 2000
# Errors that come from a batch's values, not from the database's state: Django's and Python's own.
_DATA_ERRORS = (DataError, IntegrityError, ValueError, TypeError, LookupError, ArithmeticError, FieldDoesNotExist)


def refused_for_its_data(error: BaseException) -> bool:
    """Whether ``error`` says the database (or the driver) will not take a value, rather than that it is unreachable.

    PostgreSQL's data exceptions (SQLSTATE class 22) and integrity violations (23),
    and values psycopg cannot send (no SQLSTATE), are the data's fault; a lost
    connection, a missing table or any other error is not, and the batch waits in the spool.
    """
    if isinstance(error, _DATA_ERRORS):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite-only installs
        return False
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    if not isinstance(cause, psycopg.Error):
        return False
    if cause.sqlstate is None:
        return isinstance(cause, psycopg.DataError | psycopg.ProgrammingError)
    return cause.sqlstate[:2] in ("22", "23")


def describe(error: BaseException) -> str:
    """The database's reason for a refusal, short enough to keep."""
    return clean_text(f"{type(error).__name__}: {error}", REASON_LENGTH)


def headline(reason: str) -> str:
    """A refusal's first line, for the log: PostgreSQL's DETAIL and CONTEXT lines quote the refused row (a prompt's
    preview among its columns); the quarantine, which holds the row anyway, keeps the whole reason."""
    return reason.partition("\n")[0]


class BufferedWriter:
    def __init__(self):
        self._buffer: list = []
        self._hooks: list[Callable[[list], None]] = []
        self._async_hooks: list[Callable[[dict], Awaitable[None]]] = []
        self._preparers: dict[type, Callable[[list[dict]], None]] = {}
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._lock = threading.Lock()  # held while a batch is being written
        self._exit_registered = False
        self._spool: Spool | None = None
        self._spool_pending = True  # look at start-up: an earlier process may have left files
        self._spool_looked_at = 0.0
        self._quarantine: Callable[[str, dict, str], None] | None = None
        self.quarantined_total = 0  # rows this process set aside since it started, for /metrics

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            self._spool = Spool(settings.GATEWAY["SPOOL_DIR"])
        return self._spool

    def add_hook(self, hook: Callable[[dict], None]) -> None:
        """Run ``hook({model: [row, ...]})`` in the writer's thread after each batch is saved."""
        if hook not in self._hooks:
            self._hooks.append(hook)

    def add_async_hook(self, hook: Callable[[dict], Awaitable[None]]) -> None:
        """Await ``hook({model: [row, ...]})`` on the event loop after each batch the loop saved.

        For work that belongs to the loop (the channel layer): run from the writer's thread it
        would wait on a loop that may be shutting down, and hang the process's exit. Batches
        written synchronously at exit skip these hooks.
        """
        if hook not in self._async_hooks:
            self._async_hooks.append(hook)

    def set_preparer(self, model, prepare: Callable[[list[dict]], None]) -> None:
        """Run ``prepare(rows)`` on each batch of ``model`` inside its write transaction, just before the insert."""
        self._preparers[model] = prepare

    def set_quarantine(self, keep: Callable[[str, dict, str], None]) -> None:
        """Hand each row the database refuses to ``keep(model_label, row, reason)``, inside its own transaction."""
        self._quarantine = keep

    def add(self, model, row: dict) -> None:
        """Queue one row of ``model`` (column name -> value); never blocks, never touches the database."""
        self._buffer.append((model, row))
        self._ensure_running()
        if len(self._buffer) >= settings.GATEWAY["FLUSH_BATCH"] and self._wake is not None:
            self._wake.set()

    def pending(self) -> int:
        return len(self._buffer)

    def _ensure_running(self) -> None:
        if not self._exit_registered:
            atexit.register(self.flush_sync)
            self._exit_registered = True
        if self._task is not None and not self._task.done():
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # synchronous caller (a command, a test): flush_sync writes it
        self._wake = asyncio.Event()
        self._task = background_task(self._run())

    async def _run(self) -> None:
        interval = settings.GATEWAY["FLUSH_SECONDS"]
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                pass
            self._wake.clear()
            AUDIT_QUEUE.set(len(self._buffer))  # sampled before each flush: the most it held meanwhile
            if (self._buffer or self._spool_pending) and not await self.flush():
                await asyncio.sleep(min(1.0, interval * 5))  # the database is down: try again soon

    async def flush(self) -> bool:
        """Write everything queued so far; return False if the database refused it (it is spooled then)."""
        if not await self._replay():
            batch, self._buffer = self._buffer, []
            if batch:  # behind the batches already spooled, to keep the order
                await asyncio.to_thread(self._spool_batch, batch)
            return False
        batch, self._buffer = self._buffer, []
        if not batch:
            return True
        try:
            by_model = await database_sync_to_async(self._write)(batch)
        except Exception:
            log.exception("writing %d records failed; spooling them to disk", len(batch))
            await asyncio.to_thread(self._spool_batch, batch)
            return False
        for hook in self._async_hooks:
            try:
                await asyncio.wait_for(hook(by_model), timeout=ASYNC_HOOK_SECONDS)
            except Exception:  # the batch is saved; a slow or failing side effect must not undo that
                log.exception("writer hook %s failed", getattr(hook, "__name__", hook))
        return True

    def flush_sync(self) -> None:
        """Write what is left, from synchronous code (process exit, commands, tests); spool it if that fails."""
        batch, self._buffer = self._buffer, []
        if batch:
            try:
                self._write(batch)
            except Exception:
                log.exception("writing %d records at exit failed; spooling them to disk", len(batch))
                self._spool_batch(batch)
            finally:
                close_old_connections()

    def _spool_batch(self, batch: list) -> None:
        path = self.spool.put(batch)
        self._spool_pending = True
        log.warning("spooled %d records to %s", len(batch), path)

    async def _replay(self) -> bool:
        """Write the spooled batches, oldest first; False while the database still refuses one."""
        now = time.monotonic()
        if not self._spool_pending and now - self._spool_looked_at < SPOOL_LOOK_SECONDS:
            return True
        self._spool_looked_at = now
        return await database_sync_to_async(self.replay_spool)()

    def replay_spool(self) -> bool:
        """Write every spooled batch this process can claim, oldest first; stop while the database is unreachable.

        Rows (and lines of a file) the database refuses are quarantined as in any batch,
        so a file never blocks the ones after it.
        """
        spool = self.spool
        spool.recover()
        for path in spool.ready():
            unreadable: list[tuple[str, str]] = []
            claimed = spool.claim(path, unreadable)
            if claimed is None:
                continue  # another process took it
            claimed_path, batch = claimed
            try:
                self._write(_not_yet_written(batch))
                with self._lock:
                    for line, reason in unreadable:
                        self._set_aside("", {"spool_file": claimed_path.name, "line": line}, reason)
            except Exception:
                spool.give_back(claimed_path)
                self._spool_pending = True
                log.warning("replaying %s failed; the database still refuses it", claimed_path.name)
                return False
            spool.done(claimed_path)
            log.warning("replayed %d spooled records from %s", len(batch), claimed_path.name)
        self._spool_pending = False
        return True

    def _write(self, batch: list) -> dict:
        """Save ``batch``, quarantining the rows the database refuses; raise if it cannot be reached."""
        by_model: dict[type, list[dict]] = {}
        if not batch:
            return by_model
        with self._lock:
            self._save_splitting(batch, by_model)
        for hook in self._hooks:
            try:
                hook(by_model)
            except Exception:
                log.exception("writer hook %s failed", getattr(hook, "__name__", hook))
        return by_model

    def _save_splitting(self, batch: list, saved: dict[type, list[dict]]) -> None:
        """Save ``batch`` in one transaction; if its data is refused, save each half anew, down to the single bad rows.

        Each try is a transaction of its own (a savepoint inside an outer one), so the
        preparers (the audit hash chain) run again over exactly the rows that are saved.
        """
        try:
            self._save(batch)
        except Exception as error:
            if not refused_for_its_data(error):
                raise
            if len(batch) == 1:
                model, row = batch[0]
                self._set_aside(model._meta.label, row, describe(error))
                return
            middle = len(batch) // 2
            self._save_splitting(batch[:middle], saved)
            self._save_splitting(batch[middle:], saved)
            return
        for model, row in batch:
            saved.setdefault(model, []).append(row)

    def _save(self, batch: list) -> None:
        by_model: dict[type, list[dict]] = {}
        for model, row in batch:
            by_model.setdefault(model, []).append(row)
        with transaction.atomic():
            for model, rows in by_model.items():
                prepare = self._preparers.get(model)
                if prepare is not None:
                    prepare(rows)
                if connection.vendor == "postgresql":
                    _copy(model, rows)
                else:
                    model.objects.bulk_create([model(**row) for row in rows], batch_size=500)

    def _set_aside(self, label: str, row: dict, reason: str) -> None:
        """Quarantine a row the database refused (or a spool line no one can read): the rows around it are written."""
        log.error("setting aside a %s row: %s", label or "spooled", headline(reason))
        if self._quarantine is None:
            self._reject(label, row, reason, "no quarantine is set")
        else:
            try:
                with transaction.atomic():
                    self._quarantine(label, row, reason)
            except Exception as error:
                if not refused_for_its_data(error):
                    raise  # the database went away: the batch is spooled and tried again
                refused = describe(error)
                why = f"the quarantine refused it too ({headline(refused)})"
                self._reject(label, row, f"{reason}\nthe quarantine refused it too: {refused}", why)
        self.quarantined_total += 1

    def _reject(self, label: str, row: dict, reason: str, why: str) -> None:
        """Keep a row no table takes in a file (``Spool.reject``) with the whole ``reason``: the log says ``why``
        and names the file, never the row's text (its previews are a prompt and an answer). Only if the file
        cannot be written either is the row logged."""
        try:
            path = self.spool.reject(label, row, reason)
        except Exception:
            log.exception("%s; the row could not be kept in a file either: %r", why, row)
            return
        log.error("%s; the row is kept in %s", why, path)


def _not_yet_written(batch: list) -> list:
    """``batch`` without the rows whose request id is already saved.

    A batch can be committed while the connection dies before the commit is
    acknowledged; it is then spooled too, and replaying it must not write it twice.
    """
    by_model: dict[type, set[str]] = {}
    for model, row in batch:
        if is_clean(row.get("request_id")):  # an id the database cannot even compare is not saved, and is quarantined
            by_model.setdefault(model, set()).add(row["request_id"])
    written = {
        (model, request_id)
        for model, ids in by_model.items()
        for request_id in model.objects.filter(request_id__in=ids).values_list("request_id", flat=True)
    }
    return [(model, row) for model, row in batch if (model, row.get("request_id")) not in written]


def _copy(model, rows: list[dict]) -> None:
    """Stream rows into the model's table with PostgreSQL's COPY."""
    from psycopg.types.json import Jsonb

    columns = list(rows[0])
    fields = [model._meta.get_field(c) for c in columns]
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    as_json = [i for i, f in enumerate(fields) if isinstance(f, models.JSONField)]
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, under Django's wrapper
        with raw.copy(f"COPY {connection.ops.quote_name(model._meta.db_table)} ({names}) FROM STDIN") as copy:
            for row in rows:
                values = [row[c] for c in columns]
                for i in as_json:
                    values[i] = Jsonb(values[i])
                copy.write_row(values)


writer = BufferedWriter()
