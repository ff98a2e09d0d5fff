"""The open WebSocket sessions of this process by key, so that a session never outlives its key's right to it.

A session is let in once, at its handshake. Every change to a key is announced to
every gateway process (``HotState.key_changes``, fed by the key signals); on one,
this process reads the key afresh and withdraws each of its sessions the key no
longer lets in (revoked, disabled, its client disabled, expired, or its agent out
of scope, or without the role its agent requires): the relay then closes it with 1008.
An expiry is not announced, so each session of an expiring key has a timer for it.
An agent's change is not announced either: each time the routing table may have been
reloaded (``GATEWAY_CONFIG_REFRESH_SECONDS``) every session is checked again against
its agent as the table now holds it (an agent that came to require a role). The
listener starts with the first session and stops with the last, so a process without
sessions listens to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator

from django.conf import settings

from gateway_project.errors import GatewayError
from gateway_project.hotstate import get_hot_state
from gateway_project.logs import background_task
from keys.access import KeySnapshot, authorize, carry_identity, ensure_origin, ensure_usable, key_as_saved

log = logging.getLogger("gateway.ws")

# How long a key change is remembered for the handshakes still under way when it came.
REMEMBER_CHANGES_SECONDS = 60.0
STOP_ATTEMPTS = 50  # a tenth of a second apart


class WatchedSession:
    """One open session: the key it was let in with, its agent (the routing table's entry at the handshake), and the
    future that ends it."""

    def __init__(self, key: KeySnapshot, agent, origin: bytes | None = None):
        self.key = key
        self.agent = agent
        self.origin = origin  # a browser's session: its client must go on allowing it
        # The error code (key_revoked, key_expired, agent_not_allowed, ...) once the key no longer lets it in.
        self.withdrawn: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._expiry: asyncio.TimerHandle | None = None

    def check(self, key: KeySnapshot | None) -> None:
        """Withdraw the session unless ``key``, as it is now, still lets it in; else expect its expiry."""
        if self.withdrawn.done():
            return
        self.stop_timer()
        key = carry_identity(key, self.key)
        if key is None:  # deleted: the handshake would now find no such key
            self.withdrawn.set_result("invalid_api_key")
            return
        try:
            ensure_usable(key)
            authorize(key, self.current_agent())
            ensure_origin(key, self.origin)
        except GatewayError as refusal:
            self.withdrawn.set_result(refusal.code)
            return
        self.key = key
        ends_at = key.ends_at
        if ends_at is not None:
            # Checked again then; a timer that fires a little early only sets another.
            delay = max(0.0, ends_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, self.check, key)

    def current_agent(self):
        """The session's agent as the routing table holds it now (the handshake's, if the table has it no more)."""
        from routing.table import routing_table

        table = routing_table.last()
        route = table.agents.get(self.agent.slug) if table is not None else None
        return route or self.agent

    def stop_timer(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None


class OpenSessions:
    """This process's open sessions by key id, and the listener that checks them when a key changes."""

    def __init__(self):
        self._by_key: dict[int, set[WatchedSession]] = {}
        self._listener: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None  # checks every session against its agent as it now is
        self._listening_since: float | None = None  # perf_counter time of the latest (re)subscription
        self._changed_at: dict[int, float] = {}  # key id -> perf_counter time its latest change was announced

    @contextlib.asynccontextmanager
    async def watch(
        self, key: KeySnapshot, agent, handshake_began: float, origin: bytes | None = None
    ) -> AsyncIterator[WatchedSession]:
        """Watch a session for as long as the block runs; ``handshake_began`` is its ``perf_counter`` time."""
        session = WatchedSession(key, agent, origin)
        self._by_key.setdefault(key.key_id, set()).add(session)
        try:
            self._listen()
            session.check(key)
            if self._may_have_missed(key.key_id, handshake_began):
                session.check(await key_as_saved(key.key_id))
            yield session
        finally:
            session.stop_timer()
            sessions = self._by_key[key.key_id]
            sessions.discard(session)
            if not sessions:
                del self._by_key[key.key_id]
            if not self._by_key:
                await self._stop()

    def _may_have_missed(self, key_id: int, handshake_began: float) -> bool:
        """Whether the handshake may have let the session in on a copy of its key older than a change.

        A process keeps its copy of a key up to KEY_CACHE_SECONDS, so the copy may
        predate the handshake by that much. Changes announced before the listener last
        subscribed are unknown: a subscription that recent counts as a change. Until
        the listener first subscribes there is nothing to do: it then reads every key.
        """
        if self._listening_since is None:
            return False
        changed = max(self._listening_since, self._changed_at.get(key_id, -math.inf))
        return changed >= handshake_began - settings.GATEWAY["KEY_CACHE_SECONDS"]

    def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done() or self._listener.get_loop() is not loop:
            self._listening_since, self._changed_at = None, {}
            self._listener = background_task(self._follow_key_changes(), name="ws-sessions-key-changes")
        if self._sweeper is None or self._sweeper.done() or self._sweeper.get_loop() is not loop:
            self._sweeper = background_task(self._follow_agent_changes(), name="ws-sessions-agent-changes")

    async def _follow_agent_changes(self) -> None:
        while True:
            await asyncio.sleep(settings.GATEWAY["CONFIG_REFRESH_SECONDS"])
            for sessions in list(self._by_key.values()):
                for session in list(sessions):
                    session.check(session.key)

    async def _stop(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper.get_loop() is asyncio.get_running_loop():
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
        listener, self._listener = self._listener, None
        if listener is None or listener.get_loop() is not asyncio.get_running_loop():
            return
        # Python 3.11's asyncio.wait_for, which redis-py connects with, loses a cancellation that lands just as
        # the connection opens (gh-86296): cancel again until the listener has ended.
        for _ in range(STOP_ATTEMPTS):
            listener.cancel()
            done, _ = await asyncio.wait([listener], timeout=0.1)
            if done:
                await asyncio.gather(listener, return_exceptions=True)
                return
        log.error("the listener for key changes did not stop")

    async def _follow_key_changes(self) -> None:
        async with contextlib.aclosing(get_hot_state().key_changes()) as changes:
            async for key_id in changes:
                now = time.perf_counter()
                if key_id is None:  # (re)subscribed: what changed before is unknown, so every key is read again
                    self._listening_since = now
                    key_ids = list(self._by_key)
                else:
                    self._remember(key_id, now)
                    key_ids = [key_id] if key_id in self._by_key else []
                for changed in key_ids:
                    await self._recheck(changed)

    def _remember(self, key_id: int, now: float) -> None:
        if len(self._changed_at) > 10_000:
            self._changed_at = {k: t for k, t in self._changed_at.items() if now - t < REMEMBER_CHANGES_SECONDS}
        self._changed_at[key_id] = now

    async def _recheck(self, key_id: int) -> None:
        try:
            key = await key_as_saved(key_id)
        except Exception:  # the database is away: the sessions stay as they were, the next change tries again
            log.exception("reading key %s after its change failed", key_id)
            return
        for session in list(self._by_key.get(key_id, ())):
            session.check(key)


open_sessions = OpenSessions()
