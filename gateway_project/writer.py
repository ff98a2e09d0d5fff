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
from django.db import close_old_connections, connection, models, transaction

from gateway_project.spool import Spool

log = logging.getLogger("gateway.writer")
ASYNC_HOOK_SECONDS = 2.0
# How often a writer with nothing spooled itself looks for files other (stopped) processes left.
SPOOL_LOOK_SECONDS = 5.0


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
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # synchronous caller (a command, a test): flush_sync writes it
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        interval = settings.GATEWAY["FLUSH_SECONDS"]
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            except TimeoutError:
                pass
            self._wake.clear()
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
        """Write every spooled batch this process can claim, oldest first; stop at the first refusal."""
        spool = self.spool
        spool.recover()
        for path in spool.ready():
            claimed = spool.claim(path)
            if claimed is None:
                continue  # another process took it
            claimed_path, batch = claimed
            try:
                self._write(_not_yet_written(batch))
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
        by_model: dict[type, list[dict]] = {}
        if not batch:
            return by_model
        for model, row in batch:
            by_model.setdefault(model, []).append(row)
        with self._lock, transaction.atomic():
            for model, rows in by_model.items():
                prepare = self._preparers.get(model)
                if prepare is not None:
                    prepare(rows)
                if connection.vendor == "postgresql":
                    _copy(model, rows)
                else:
                    model.objects.bulk_create([model(**row) for row in rows], batch_size=500)
        for hook in self._hooks:
            try:
                hook(by_model)
            except Exception:
                log.exception("writer hook %s failed", getattr(hook, "__name__", hook))
        return by_model


def _not_yet_written(batch: list) -> list:
    """``batch`` without the rows whose request id is already saved.

    A batch can be committed while the connection dies before the commit is
    acknowledged; it is then spooled too, and replaying it must not write it twice.
    """
    by_model: dict[type, set[str]] = {}
    for model, row in batch:
        if "request_id" in row:
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
