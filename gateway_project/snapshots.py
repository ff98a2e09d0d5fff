"""Caches that keep the hot path off the database.

``SnapshotCache`` holds small per-identity records (a key, a client's budget)
for a short local time, shares them across processes through the hot state
when it is shared (Redis), and loads them from the database on a miss.
``RefreshingTable`` holds a whole table (agents, prices) in memory and reloads
it in the background every interval, so changes apply without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from channels.db import database_sync_to_async

from gateway_project.hotstate import get_hot_state
from gateway_project.logs import background_task

log = logging.getLogger("gateway.snapshots")
_MISSING = object()
# What the shared store holds for an identity that does not exist, so a stream of unknown keys costs each
# process one look-up in Redis, not one in the database.
ABSENT = {"$absent": True}


class SnapshotCache:
    def __init__(
        self,
        name: str,
        load: Callable[[str], dict | None],
        decode: Callable[[dict], object],
        local_seconds: Callable[[], float],
        shared_seconds: int = 300,
        absent_seconds: int = 60,
    ):
        self.name = name
        self._load = database_sync_to_async(load)
        self._decode = decode
        self._local_seconds = local_seconds
        self._shared_seconds = shared_seconds
        self._absent_seconds = absent_seconds
        self._local: dict[str, tuple[object, float]] = {}

    async def get(self, ident: str):
        """Return the decoded snapshot for ``ident``, or None when it does not exist."""
        now = time.monotonic()
        hit = self._local.get(ident)
        if hit is not None and hit[1] > now:
            return hit[0]
        store = get_hot_state()
        shared_key = store.key(self.name, ident)
        raw = await store.get_json(shared_key) if store.shared else None
        if raw is None:
            raw = await self._load(ident)
            if store.shared:
                if raw is None:
                    await store.set_json(shared_key, ABSENT, self._absent_seconds)
                else:
                    await store.set_json(shared_key, raw, self._shared_seconds)
        value = None if raw is None or raw == ABSENT else self._decode(raw)
        if len(self._local) > 50_000:
            self._local.clear()
        self._local[ident] = (value, now + self._local_seconds())
        return value

    def forget(self, ident: str) -> None:
        """Drop ``ident`` here and in the shared store, so every process reloads it."""
        self._local.pop(ident, None)
        store = get_hot_state()
        if store.shared:
            store.delete_now(store.key(self.name, ident))


class RefreshingTable:
    def __init__(self, name: str, load: Callable[[], object], interval: Callable[[], float]):
        self.name = name
        self._load = database_sync_to_async(load)
        self._interval = interval
        self._value = _MISSING
        self._refresher: asyncio.Task | None = None
        self.loaded_at = 0.0  # wall-clock time the current value was read from the database
        self._pending: tuple[float, asyncio.Future] | None = None  # a reload under way and when it began
        self._started = self._accepted = 0  # numbers of the loads begun and of the one whose value is kept

    async def get(self):
        """The table as last loaded; the first call loads it and starts the periodic refresh."""
        if self._value is _MISSING:
            await self.reload()
        if self._refresher is None or self._refresher.done():
            self._refresher = background_task(self._refresh_forever())
        return self._value

    def last(self, default=None):
        """The table as last loaded, or ``default`` before the first load, without waiting (for synchronous code)."""
        return default if self._value is _MISSING else self._value

    async def reload(self):
        self._started += 1
        number, started = self._started, time.time()
        value = await self._load()
        if number > self._accepted:  # a slower load that began earlier must not overwrite a newer one
            self._value, self.loaded_at, self._accepted = value, started, number
        return self._value

    async def get_fresh_since(self, moment: float):
        """The table, reloaded first if it was read before ``moment`` (something newer must be in it).

        Requests that need the same reload share it: a burst on a new key costs one query.
        """
        if moment > self.loaded_at:
            pending = self._pending
            if pending is None or pending[0] < moment or pending[1].done():
                pending = (time.time(), asyncio.ensure_future(self.reload()))
                self._pending = pending
            await asyncio.shield(pending[1])
        return await self.get()

    def expire(self) -> None:
        """Reload on the next ``get`` (a change was saved in this process)."""
        self._value, self.loaded_at = _MISSING, 0.0

    async def _refresh_forever(self):
        while True:
            await asyncio.sleep(self._interval())
            try:
                await self.reload()
            except Exception:  # keep serving the last good table; try again next interval
                log.exception("reloading %s failed", self.name)
