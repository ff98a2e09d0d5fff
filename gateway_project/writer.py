"""Buffered, batched writes for records the hot path produces.

The proxy never writes to the database itself: it appends rows (a model and
a dict of column values) here, and one background task per process writes
them every ``FLUSH_SECONDS`` or ``FLUSH_BATCH`` rows. On PostgreSQL a batch is
one ``COPY`` per table, several times cheaper per row than ``bulk_create``
(which builds and prepares a model instance per row while the event loop
waits for the GIL); elsewhere it is ``bulk_create``. On a database error the
batch goes back to the front of the buffer and is retried; at process exit
whatever is left is written synchronously.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection, transaction

log = logging.getLogger("gateway.writer")
ASYNC_HOOK_SECONDS = 2.0


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
            if self._buffer and not await self.flush():
                await asyncio.sleep(min(5.0, interval * 10))

    async def flush(self) -> bool:
        """Write everything queued so far; return False if the database refused it."""
        batch, self._buffer = self._buffer, []
        if not batch:
            return True
        try:
            by_model = await database_sync_to_async(self._write)(batch)
        except Exception:
            log.exception("writing %d records failed; keeping them to retry", len(batch))
            self._buffer[:0] = batch
            return False
        for hook in self._async_hooks:
            try:
                await asyncio.wait_for(hook(by_model), timeout=ASYNC_HOOK_SECONDS)
            except Exception:  # the batch is saved; a slow or failing side effect must not undo that
                log.exception("writer hook %s failed", getattr(hook, "__name__", hook))
        return True

    def flush_sync(self) -> None:
        """Write what is left, from synchronous code (process exit, commands, tests)."""
        batch, self._buffer = self._buffer, []
        if batch:
            try:
                self._write(batch)
            finally:
                close_old_connections()

    def _write(self, batch: list) -> dict:
        by_model: dict[type, list[dict]] = {}
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


def _copy(model, rows: list[dict]) -> None:
    """Stream rows into the model's table with PostgreSQL's COPY."""
    columns = list(rows[0])
    names = ", ".join(connection.ops.quote_name(model._meta.get_field(c).column) for c in columns)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, under Django's wrapper
        with raw.copy(f"COPY {connection.ops.quote_name(model._meta.db_table)} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])


writer = BufferedWriter()
