"""Hot shared state: rate counters, concurrency, spend, cached snapshots and key-change announcements.

One small interface with two implementations: ``MemoryHotState`` for the
embedded profile (one process holds everything) and ``RedisHotState`` for
production, where every check-and-commit is one Lua script so that several
gateway processes never over-admit. No other module talks to Redis directly.

Rates use GCRA (the "generic cell rate algorithm"): one number per limit,
the theoretical arrival time, which gives an exact ``Retry-After`` and lets a
request's token estimate be corrected after the fact by moving that time.

A change to an API key is announced to every gateway process (``publish_key_change``,
``key_changes``): a process holding open WebSocket sessions of that key checks them again.
Other news every process must hear goes the same way (``announce``, ``announcements``):
an address blocked for failed authentications, say.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from django.conf import settings

log = logging.getLogger("gateway.hotstate")

PERIOD_MS = 60_000
_SKIP = object()  # a message a subscription does not pass on
KEY_CHANGES = "key-changes"  # the channel's name after the store's prefix
# A subscription silent this long is asked for a PONG; one that does not answer in as long again is reconnected.
SUBSCRIPTION_HEARTBEAT_SECONDS = 15.0
RESUBSCRIBE_PAUSES = (0.1, 0.2, 0.5, 1.0)  # between attempts to subscribe again while Redis cannot be reached


@dataclass(frozen=True, slots=True)
class RateCheck:
    """Spend ``cost`` units of a limit of ``limit`` units per ``period_ms``."""

    name: str
    key: str
    limit: int
    cost: int
    period_ms: int = PERIOD_MS


@dataclass(frozen=True, slots=True)
class ConcurrencySlot:
    """Hold one of ``limit`` slots under ``key`` for the request's whole life (released when it settles)."""

    name: str
    key: str
    limit: int


@dataclass(slots=True)  # not frozen: the hot path builds several a request, and frozen init costs twice as much
class BudgetCheck:
    """Spend against one budget's window (nanodollars; ``limit`` < 0 means count but never refuse).

    ``key`` counts settled spend. An empty counter is never guessed: admission asks
    for it to be seeded (from the database) first. A request reserves ``reserve``
    (its worst-case cost) under ``reservation`` before it is forwarded; it fits only
    if settled + reserved + reserve <= limit. Settling swaps the reservation for the
    real cost; a reservation never settled (a crashed process) lapses after
    ``hold_ms``, so the budget cannot stay blocked.
    """

    key: str
    limit: int
    ttl_seconds: int
    reserve: int = 0
    reservation: str = ""
    hold_ms: int = 0

    @property
    def held_key(self) -> str:
        return self.key + ":held"  # reservation -> expiry (ms), a sorted set

    @property
    def amounts_key(self) -> str:
        return self.key + ":amounts"  # reservation -> amount, a hash

    @property
    def reserved_key(self) -> str:
        return self.key + ":reserved"  # sum of the live reservations

    @property
    def keys(self) -> list[str]:
        return [self.key, self.held_key, self.amounts_key, self.reserved_key]


@dataclass(slots=True)
class Admission:
    ok: bool
    failed: str = ""  # a rate's or concurrency slot's name, "budget" or "seed"
    retry_after_ms: int = 0
    spent: int = 0  # the refusing budget's settled spend
    budget_index: int = -1  # which budget refused
    unseeded: list[int] = field(default_factory=list)  # budgets whose counters must be seeded first
    remaining: dict[str, int] = field(default_factory=dict)
    target: tuple[str, int] | None = None  # the verdict of a target acquire asked with the admission


@dataclass(frozen=True, slots=True)
class RateAdjust:
    """Move a limit's counter by ``delta`` units after the real cost is known."""

    key: str
    limit: int
    delta: int
    period_ms: int = PERIOD_MS


@dataclass(slots=True)
class TargetState:
    """One upstream target's live state: requests in flight, recent latency and errors, its circuit."""

    in_flight: int = 0
    latency_ms: float = -1.0  # moving average; -1 until measured
    error_rate: float = 0.0  # moving average of failures, 0..1
    circuit: str = "closed"  # closed, open or half_open
    open_until_ms: float = 0.0  # an open circuit lets one probe through from then (epoch ms)
    probe_until_ms: float = 0.0  # a half-open circuit's probe holds its lease until then
    failures: int = 0  # consecutive failures in the current window
    now_ms: float = 0.0  # the store's clock when read

    def blocked_ms(self) -> int:
        """How long until this target takes a request (0: now), as far as its circuit goes."""
        if self.circuit == "open" and self.open_until_ms > self.now_ms:
            return math.ceil(self.open_until_ms - self.now_ms)
        if self.circuit in ("open", "half_open") and self.probe_until_ms > self.now_ms:
            return math.ceil(self.probe_until_ms - self.now_ms)
        return 0

    @property
    def shown_circuit(self) -> str:
        """The circuit as a request would find it: an open one whose cool-down is over is half-open."""
        if self.circuit == "open" and self.open_until_ms <= self.now_ms:
            return "half_open"
        return self.circuit


@dataclass(frozen=True, slots=True)
class BreakerRule:
    """When a target's circuit opens: ``failures`` in a row within ``window_ms``; it stays open ``cooldown_ms``."""

    failures: int = 5
    window_ms: int = 60_000
    cooldown_ms: int = 30_000


@dataclass(frozen=True, slots=True)
class TargetAcquire:
    """A target to take (see ``target_acquire``) in the same round trip as an admission."""

    key: str
    lease: str
    max_concurrent: int
    lease_ms: int


@dataclass(frozen=True, slots=True)
class TargetRelease:
    """The end of one attempt on a target (see ``target_release``), when it is handed to ``settle`` to send."""

    key: str
    lease: str
    outcome: str
    latency_ms: float
    probe: bool
    rule: BreakerRule


# Moving averages of a target's latency and error rate weigh the newest outcome this much.
TARGET_AVERAGE_WEIGHT = 0.3
TARGET_STATE_TTL_SECONDS = 86_400


class HotState:
    """Interface both stores implement."""

    # Whether other processes see what this store holds (so snapshots may be shared).
    shared = False

    async def admit(
        self,
        rates: list[RateCheck],
        slots: list[ConcurrencySlot],
        budgets: list[BudgetCheck],
        acquire: TargetAcquire | None = None,
    ) -> Admission:
        """Check and take everything at once, or nothing. Refuses with ``failed="seed"`` (changing
        nothing) while a budget counter is empty: seed those and ask again. ``acquire`` takes a target
        in the same round trip, whatever the admission's answer (``Admission.target`` says how it went):
        the caller gives it back if the request was refused."""
        raise NotImplementedError

    async def seed(self, budgets: list[BudgetCheck], spent: list[int]) -> None:
        """Fill empty budget counters with spend counted elsewhere (the database); never overwrite."""
        raise NotImplementedError

    async def settle(
        self,
        adjusts: list[RateAdjust],
        slot_keys: list[str],
        budgets: list[BudgetCheck],
        spend: int,
        release: TargetRelease | None = None,
    ) -> list[int]:
        """Undo the estimates, release the slots and the reservations, add ``spend`` to every budget; return
        the new totals (-1 where a counter had vanished: the next admission seeds it again). ``release``
        ends the request's last target attempt in the same round trip."""
        raise NotImplementedError

    async def target_states(self, keys: list[str]) -> list[TargetState]:
        """The live state of each target (one round trip)."""
        raise NotImplementedError

    async def target_acquire(self, key: str, lease: str, max_concurrent: int, lease_ms: int) -> tuple[str, int]:
        """Count one request in flight on a target, if its circuit and capacity allow, atomically.

        Returns ``("ok", 0)``, ``("probe", 0)`` (the one request a half-open circuit lets
        through), or a refusal with the milliseconds until it may change: ``("open", ms)``,
        ``("probing", ms)`` (another request is the probe) or ``("busy", ms)`` (at ``max_concurrent``).
        A lease not released within ``lease_ms`` (a crashed process) stops counting.
        """
        raise NotImplementedError

    async def target_release(
        self, key: str, lease: str, outcome: str, latency_ms: float, probe: bool, rule: BreakerRule
    ) -> str:
        """End a request on a target and feed its ``outcome`` ("ok", "fail" or "none": no verdict, e.g. the
        client left) to the averages and the circuit; return the circuit's state after it."""
        raise NotImplementedError

    def target_states_now(self, keys: list[str]) -> list[TargetState]:
        """``target_states`` from synchronous code (console pages, the API)."""
        raise NotImplementedError

    def target_reset_now(self, key: str) -> None:
        """Close a target's circuit by hand (its averages stay)."""
        raise NotImplementedError

    async def get_int(self, key: str) -> int | None:
        raise NotImplementedError

    async def get_json(self, key: str):
        raise NotImplementedError

    async def set_json(self, key: str, value, ttl_seconds: int) -> None:
        raise NotImplementedError

    def delete_now(self, key: str) -> None:
        """Delete from synchronous code (model signals)."""
        raise NotImplementedError

    def get_int_now(self, key: str) -> int | None:
        """Read a counter from synchronous code (console pages)."""
        raise NotImplementedError

    async def cached(self, generation_keys: list[str], entry_key) -> bytes | None:
        """A response-cache entry, if one is stored under ``entry_key(generations)``, where ``generations`` are the
        current values of ``generation_keys`` (0 when unset): bumping one of them leaves its entries unreachable."""
        raise NotImplementedError

    async def cache(self, generation_keys: list[str], entry_key, value: bytes, ttl_seconds: int) -> bool:
        """Store a response-cache entry under ``entry_key(generations)`` (as ``cached`` reads them) for
        ``ttl_seconds``; not when ``entry_key`` returns None (a generation moved on since the answer was asked for).
        Whether it was stored."""
        raise NotImplementedError

    async def generations(self, generation_keys: list[str]) -> list[int]:
        """The current values of response-cache generation counters (0 when unset), as ``cached`` reads them."""
        raise NotImplementedError

    def bump_now(self, key: str) -> int:
        """Add one to a generation counter (``cached``): every entry stored under the old value is gone for good."""
        raise NotImplementedError

    def tally_now(self, key: str, field: str, amount: int = 1) -> None:
        """Add ``amount`` to a named count kept with others under ``key`` (every process sees it); synchronous."""
        raise NotImplementedError

    def tallies_now(self, key: str) -> dict[str, int]:
        """Every count kept under ``key`` (``tally_now``); synchronous."""
        raise NotImplementedError

    def publish_key_change(self, key_id: int) -> None:
        """Announce to every process's ``key_changes`` that a key (or its client) changed; from synchronous code."""
        raise NotImplementedError

    def key_changes(self) -> AsyncIterator[int | None]:
        """The id of every key whose change is announced from now on, by any process, until closed.

        It yields None once it listens, and again after every reconnection: changes
        announced before then may have been missed, so everything watched needs a look.
        """
        raise NotImplementedError

    async def announce(self, topic: str, message: str) -> None:
        """Tell every process listening to ``announcements(topic)``, this one included, ``message``. Best effort:
        a store that cannot be reached loses it (logged), and a listener cannot assume it heard everything."""
        raise NotImplementedError

    def announcements(self, topic: str) -> AsyncIterator[str | None]:
        """Every message announced on ``topic`` from now on, by any process, until closed; None once it listens
        and again after every reconnection (what was announced meanwhile was missed), as ``key_changes``."""
        raise NotImplementedError

    def key(self, *parts) -> str:
        return ":".join([settings.GATEWAY["REDIS_PREFIX"], *map(str, parts)])


def _gcra(tat: float, now: float, check_limit: int, cost: int, period: int):
    """Return (new_tat, retry_after_ms or None, remaining)."""
    interval = period / check_limit
    tat = max(tat, now)
    new_tat = tat + cost * interval
    allow_at = new_tat - period
    if allow_at > now:
        retry = period if cost > check_limit else math.ceil(allow_at - now)
        return tat, retry, max(0, math.floor((period - (tat - now)) / interval))
    return new_tat, None, math.floor((period - (new_tat - now)) / interval)


# What an in-process cache entry costs beyond its value's bytes: its key, the bytes object's header, the tuple with
# its expiry and the ordered dictionary's slot. Counting values alone let many small entries take several times
# GATEWAY_CACHE_MEMORY_BYTES.
ENTRY_OVERHEAD_BYTES = 250


def _entry_size(key: str, value: bytes) -> int:
    return len(key) + len(value) + ENTRY_OVERHEAD_BYTES


class MemoryHotState(HotState):
    """In-process store: correct for one process, which is all the embedded profile runs."""

    def __init__(self):
        self._values: dict[str, tuple[object, float | None]] = {}
        self._listeners: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}
        self._tallies: dict[str, dict[str, int]] = {}
        self._tally_lock = threading.Lock()
        # The response cache: entries least recently used first, within GATEWAY_CACHE_MEMORY_BYTES in all.
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._entry_bytes = 0
        self._generations: dict[str, int] = {}

    def _get(self, key, now_s):
        item = self._values.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= now_s:
            del self._values[key]
            return None
        return value

    def _set(self, key, value, ttl_s: float | None, now_s: float):
        self._values[key] = (value, None if ttl_s is None else now_s + ttl_s)
        if len(self._values) > 200_000:
            self._values = {k: v for k, v in self._values.items() if v[1] is None or v[1] > now_s}

    async def admit(self, rates, slots, budgets, acquire=None):
        result = self._admit(rates, slots, budgets)
        if acquire is not None:
            result.target = await self.target_acquire(
                acquire.key, acquire.lease, acquire.max_concurrent, acquire.lease_ms
            )
        return result

    def _admit(self, rates, slots, budgets):
        # Not a coroutine: nothing can run between its checks and its takes.
        now_s = time.time()
        now = now_s * 1000
        unseeded = [i for i, budget in enumerate(budgets) if self._get(budget.key, now_s) is None]
        if unseeded:
            return Admission(False, "seed", unseeded=unseeded)
        new_tats = []
        remaining = {}
        for check in rates:
            tat = self._get(check.key, now_s) or 0.0
            new_tat, retry, left = _gcra(tat, now, check.limit, check.cost, check.period_ms)
            if retry is not None:
                return Admission(False, check.name, retry, remaining={check.name: left})
            new_tats.append(new_tat)
            remaining[check.name] = left
        for slot in slots:
            if (self._get(slot.key, now_s) or 0) >= slot.limit:
                return Admission(False, slot.name, 1000)
        helds = []
        for i, budget in enumerate(budgets):
            spent = self._get(budget.key, now_s)
            held = self._held(budget, now)
            reserved = sum(amount for amount, _ in held.values())
            if budget.limit >= 0 and (spent >= budget.limit or spent + reserved + budget.reserve > budget.limit):
                return Admission(False, "budget", 0, spent=spent, budget_index=i)
            helds.append(held)
        for check, new_tat in zip(rates, new_tats, strict=True):
            self._set(check.key, new_tat, (new_tat - now) / 1000 + 0.001, now_s)
        for slot in slots:
            self._set(slot.key, (self._get(slot.key, now_s) or 0) + 1, slot_ttl_seconds(), now_s)
        for budget, held in zip(budgets, helds, strict=True):
            if budget.reserve > 0 and budget.reservation:
                held[budget.reservation] = (budget.reserve, now + budget.hold_ms)
        return Admission(True, remaining=remaining)

    async def seed(self, budgets, spent):
        now_s = time.time()
        for budget, amount in zip(budgets, spent, strict=True):
            if self._get(budget.key, now_s) is None:
                self._set(budget.key, amount, budget.ttl_seconds, now_s)

    def _held(self, budget: BudgetCheck, now: float) -> dict:
        """The live reservations of a budget, lapsed ones dropped."""
        held = self._values.setdefault(budget.held_key, ({}, None))[0]
        for name in [name for name, (_, until) in held.items() if until <= now]:
            del held[name]
        return held

    async def settle(self, adjusts, slot_keys, budgets, spend, release=None):
        if release is not None:
            await self.target_release(*_release_args(release))
        now_s = time.time()
        now = now_s * 1000
        for adj in adjusts:
            if adj.delta == 0:
                continue
            tat = max(self._get(adj.key, now_s) or 0.0, now) + adj.delta * adj.period_ms / adj.limit
            if tat > now:
                self._set(adj.key, tat, (tat - now) / 1000 + 0.001, now_s)
            else:
                self._values.pop(adj.key, None)
        for slot_key in slot_keys:
            current = self._get(slot_key, now_s) or 0
            self._set(slot_key, max(0, current - 1), slot_ttl_seconds(), now_s)
        totals = []
        for budget in budgets:
            if budget.reservation:
                self._held(budget, now).pop(budget.reservation, None)
            spent = self._get(budget.key, now_s)
            if spent is None:
                totals.append(-1)
                continue
            self._set(budget.key, spent + spend, budget.ttl_seconds, now_s)
            totals.append(spent + spend)
        return totals

    # --- targets: in flight, averages, circuit ---------------------------------
    def _target(self, key: str) -> dict:
        return self._values.setdefault(key, ({"leases": {}}, None))[0]

    def _target_state(self, key: str, now: float) -> TargetState:
        target = self._target(key)
        leases = target["leases"]
        for name in [name for name, until in leases.items() if until <= now]:
            del leases[name]
        return TargetState(
            in_flight=len(leases),
            latency_ms=target.get("latency", -1.0),
            error_rate=target.get("error_rate", 0.0),
            circuit=target.get("state", "closed"),
            open_until_ms=target.get("open_until", 0.0),
            probe_until_ms=target.get("probe_until", 0.0),
            failures=target.get("fails", 0),
            now_ms=now,
        )

    async def target_states(self, keys):
        return self.target_states_now(keys)

    def target_states_now(self, keys):
        now = time.time() * 1000
        return [self._target_state(key, now) for key in keys]

    async def target_acquire(self, key, lease, max_concurrent, lease_ms):
        now = time.time() * 1000
        state = self._target_state(key, now)
        target = self._target(key)
        probe = False
        if state.circuit == "open":
            if now < state.open_until_ms:
                return "open", math.ceil(state.open_until_ms - now)
            target["state"] = state.circuit = "half_open"
        if state.circuit == "half_open":
            if state.probe_until_ms > now:
                return "probing", math.ceil(state.probe_until_ms - now)
            target["probe_until"] = now + lease_ms
            probe = True
        elif max_concurrent and state.in_flight >= max_concurrent:
            return "busy", 1000
        target["leases"][lease] = now + lease_ms
        return ("probe" if probe else "ok"), 0

    async def target_release(self, key, lease, outcome, latency_ms, probe, rule):
        now = time.time() * 1000
        target = self._target(key)
        target["leases"].pop(lease, None)
        weight = TARGET_AVERAGE_WEIGHT
        if outcome != "none":
            if latency_ms >= 0:
                old = target.get("latency", -1.0)
                target["latency"] = latency_ms if old < 0 else old + weight * (latency_ms - old)
            failed = 1.0 if outcome == "fail" else 0.0
            target["error_rate"] = target.get("error_rate", 0.0) + weight * (failed - target.get("error_rate", 0.0))
        state = target.get("state", "closed")
        if outcome == "ok":
            target["fails"], target["first_fail"] = 0, 0.0
            if state == "half_open" and probe:
                target["state"] = state = "closed"
                target.pop("probe_until", None)
        elif outcome == "fail":
            if state == "closed":
                fails, first = target.get("fails", 0), target.get("first_fail", 0.0)
                if fails == 0 or now - first > rule.window_ms:
                    fails, first = 1, now
                else:
                    fails += 1
                if fails >= rule.failures:
                    target.update(state="open", open_until=now + rule.cooldown_ms, fails=0, first_fail=0.0)
                    state = "open"
                else:
                    target.update(fails=fails, first_fail=first)
            elif state == "half_open" and probe:
                target.update(state="open", open_until=now + rule.cooldown_ms)
                target.pop("probe_until", None)
                state = "open"
        elif probe:
            target.pop("probe_until", None)  # no verdict: the next request probes instead
        return state

    def target_reset_now(self, key):
        target = self._target(key)
        for name in ("state", "open_until", "probe_until", "fails", "first_fail"):
            target.pop(name, None)

    async def get_int(self, key):
        value = self._get(key, time.time())
        return None if value is None else int(value)

    async def get_json(self, key):
        return self._get(key, time.time())

    async def set_json(self, key, value, ttl_seconds):
        self._set(key, value, ttl_seconds, time.time())

    def delete_now(self, key):
        self._values.pop(key, None)

    def get_int_now(self, key):
        value = self._get(key, time.time())
        return None if value is None else int(value)

    async def cached(self, generation_keys, entry_key):
        key = entry_key([self._generations.get(name, 0) for name in generation_keys])
        item = self._entries.get(key)
        if item is None:
            return None
        value, expires = item
        if expires <= time.time():
            self._forget(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def cache(self, generation_keys, entry_key, value, ttl_seconds):
        key = entry_key(await self.generations(generation_keys))
        if key is None:
            return False
        if key in self._entries:
            self._forget(key)
        budget = settings.GATEWAY["CACHE"]["MEMORY_BYTES"]
        if _entry_size(key, value) > budget:
            return False
        self._entries[key] = (value, time.time() + ttl_seconds)
        self._entry_bytes += _entry_size(key, value)
        while self._entry_bytes > budget:  # the least recently used go first
            self._forget(next(iter(self._entries)))
        return True

    async def generations(self, generation_keys):
        return [self._generations.get(name, 0) for name in generation_keys]

    def _forget(self, key):
        value, _expires = self._entries.pop(key)
        self._entry_bytes -= _entry_size(key, value)

    def bump_now(self, key):
        with self._tally_lock:
            self._generations[key] = self._generations.get(key, 0) + 1
            return self._generations[key]

    def tally_now(self, key, field, amount=1):
        with self._tally_lock:  # tasks run eagerly in the console's threads too
            counts = self._tallies.setdefault(key, {})
            counts[field] = counts.get(field, 0) + amount

    def tallies_now(self, key):
        with self._tally_lock:
            return dict(self._tallies.get(key, {}))

    def _tell(self, channel: str, message) -> None:
        # Saves come from the console's threads; each listener is fed on its own loop.
        for loop, messages in list(self._listeners.get(channel, ())):
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(messages.put_nowait, message)

    async def _listen(self, channel: str):
        listener = (asyncio.get_running_loop(), asyncio.Queue())
        self._listeners.setdefault(channel, set()).add(listener)
        try:
            yield None
            while True:
                yield await listener[1].get()
        finally:
            self._listeners[channel].discard(listener)

    def publish_key_change(self, key_id):
        self._tell(KEY_CHANGES, key_id)

    def key_changes(self):
        return self._listen(KEY_CHANGES)

    async def announce(self, topic, message):
        self._tell(topic, message)

    def announcements(self, topic):
        return self._listen(topic)


# KEYS: n rate keys, c concurrency slot keys, then 4 keys per budget (counter, held, amounts, reserved).
# ARGV: n, (limit, cost, period) per rate, c, limit per slot, m budgets, then per budget
# (limit, ttl, reserve, reservation name, hold ms).
# Reply: {0, 0, 0, remaining per rate...} on success; {-1, 0, 0, unseeded budget indexes...};
# {i, retry ms, 0, remaining} for rate i; {n + s, retry ms} for slot s; {n + c + j, 0, spent} for budget j.
def slot_ttl_seconds() -> int:
    """How long a concurrency slot's count outlives its last change: the longest anything may hold a slot, and a
    minute, so a slot held by a long stream, session or job is never forgotten while it runs (a crashed process's
    lapse then). A request lasts at most ``MAX_ANSWER_SECONDS`` (an agent's timeout is capped to it), a session
    ``MAX_SESSION_SECONDS``, and an async job holds its slots from its submission: its queue time, then its run."""
    gw = settings.GATEWAY
    job = settings.GATEWAY_JOB_MAX_QUEUE_SECONDS + gw["MAX_ANSWER_SECONDS"]
    return math.ceil(max(gw["MAX_ANSWER_SECONDS"], gw["MAX_SESSION_SECONDS"], job)) + 60


_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[1])
local c = tonumber(ARGV[n * 3 + 2])
local base = n * 3 + 2 + c + 1
local m = tonumber(ARGV[base])
local unseeded = {-1, 0, 0}
for j = 1, m do
  if redis.call('EXISTS', KEYS[n + c + (j - 1) * 4 + 1]) == 0 then unseeded[#unseeded + 1] = j - 1 end
end
if #unseeded > 3 then return unseeded end
local new_tats = {}
local result = {0, 0, 0}
for i = 1, n do
  local limit = tonumber(ARGV[i * 3 - 1])
  local cost = tonumber(ARGV[i * 3])
  local period = tonumber(ARGV[i * 3 + 1])
  local interval = period / limit
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  local allow_at = new_tat - period
  if allow_at > now then
    local retry = math.ceil(allow_at - now)
    if cost > limit then retry = period end
    return {i, retry, 0, math.max(0, math.floor((period - (tat - now)) / interval))}
  end
  new_tats[i] = new_tat
  result[3 + i] = math.floor((period - (new_tat - now)) / interval)
end
for s = 1, c do
  local held = tonumber(redis.call('GET', KEYS[n + s]) or '0')
  if held >= tonumber(ARGV[n * 3 + 2 + s]) then return {n + s, 1000, 0} end
end
for j = 1, m do
  local k = n + c + (j - 1) * 4
  local a = base + 1 + (j - 1) * 5
  local lapsed = redis.call('ZRANGEBYSCORE', KEYS[k + 2], '-inf', now)
  if #lapsed > 0 then
    local freed = 0
    for _, amount in ipairs(redis.call('HMGET', KEYS[k + 3], unpack(lapsed))) do
      freed = freed + (tonumber(amount) or 0)
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 2], '-inf', now)
    redis.call('HDEL', KEYS[k + 3], unpack(lapsed))
    redis.call('DECRBY', KEYS[k + 4], freed)
  end
  local limit = tonumber(ARGV[a])
  if limit >= 0 then
    local spent = tonumber(redis.call('GET', KEYS[k + 1]) or '0')
    local reserved = tonumber(redis.call('GET', KEYS[k + 4]) or '0')
    if spent >= limit or spent + reserved + tonumber(ARGV[a + 2]) > limit then return {n + c + j, 0, spent} end
  end
end
for i = 1, n do
  redis.call('SET', KEYS[i], string.format('%.3f', new_tats[i]), 'PX', math.ceil(new_tats[i] - now) + 1)
end
for s = 1, c do
  redis.call('INCR', KEYS[n + s])
  redis.call('EXPIRE', KEYS[n + s], SLOT_TTL)
end
for j = 1, m do
  local k = n + c + (j - 1) * 4
  local a = base + 1 + (j - 1) * 5
  local reserve = tonumber(ARGV[a + 2])
  if reserve > 0 and ARGV[a + 3] ~= '' then
    local name, ttl = ARGV[a + 3], ARGV[a + 1]
    redis.call('ZADD', KEYS[k + 2], now + tonumber(ARGV[a + 4]), name)
    redis.call('HSET', KEYS[k + 3], name, reserve)
    redis.call('INCRBY', KEYS[k + 4], reserve)
    for i = 2, 4 do redis.call('EXPIRE', KEYS[k + i], ttl) end
  end
end
return result
"""

# KEYS: budget counters. ARGV: (value, ttl) per counter. SET NX: a counter already there wins.
_SEED_LUA = """
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i * 2 - 1], 'EX', ARGV[i * 2], 'NX')
end
return 0
"""

# KEYS as for admit. ARGV: n, (limit, delta, period) per rate, c (slots to release), spend, m,
# then per budget (ttl, reservation name). Reply: the budgets' new totals (-1 where the counter is gone).
_SETTLE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[1])
for i = 1, n do
  local limit = tonumber(ARGV[i * 3 - 1])
  local delta = tonumber(ARGV[i * 3])
  local period = tonumber(ARGV[i * 3 + 1])
  if delta ~= 0 then
    local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
    if tat < now then tat = now end
    tat = tat + delta * period / limit
    if tat > now then
      redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
local base = n * 3 + 2
local c = tonumber(ARGV[base])
for s = 1, c do
  if redis.call('DECR', KEYS[n + s]) < 0 then redis.call('SET', KEYS[n + s], 0, 'EX', SLOT_TTL) end
end
local spend = tonumber(ARGV[base + 1])
local m = tonumber(ARGV[base + 2])
local totals = {}
for j = 1, m do
  local k = n + c + (j - 1) * 4
  local a = base + 3 + (j - 1) * 2
  local name = ARGV[a + 1]
  if name ~= '' then
    local amount = redis.call('HGET', KEYS[k + 3], name)
    if amount then
      redis.call('HDEL', KEYS[k + 3], name)
      redis.call('ZREM', KEYS[k + 2], name)
      redis.call('DECRBY', KEYS[k + 4], amount)
    end
  end
  if redis.call('EXISTS', KEYS[k + 1]) == 1 then
    totals[j] = redis.call('INCRBY', KEYS[k + 1], spend)
  else
    totals[j] = -1
  end
end
return totals
"""


# A target: KEYS[1] a hash (state, open_until, probe_until, fails, first_fail, latency, error_rate),
# KEYS[2] a sorted set of the leases in flight (lease -> expiry ms).
_TARGET_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max, lease_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local probe = 0
if state == 'open' then
  local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
  if now < open_until then return {'open', math.ceil(open_until - now)} end
  state = 'half_open'
  redis.call('HSET', KEYS[1], 'state', state)
end
if state == 'half_open' then
  local held = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
  if held > now then return {'probing', math.ceil(held - now)} end
  redis.call('HSET', KEYS[1], 'probe_until', now + lease_ms)
  probe = 1
elseif max > 0 and redis.call('ZCARD', KEYS[2]) >= max then
  return {'busy', 1000}
end
redis.call('ZADD', KEYS[2], now + lease_ms, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if probe == 1 then return {'probe', 0} end
return {'ok', 0}
"""

# ARGV: lease, outcome (ok, fail, none), latency ms (-1: none), probe (0/1), failures, window ms, cooldown ms,
# average weight, ttl. Reply: the circuit's state after.
_TARGET_RELEASE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local k = KEYS[1]
redis.call('ZREM', KEYS[2], ARGV[1])
local outcome, latency, probe = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local weight = tonumber(ARGV[8])
if outcome ~= 'none' then
  if latency >= 0 then
    local old = tonumber(redis.call('HGET', k, 'latency') or '-1')
    if old < 0 then old = latency end
    redis.call('HSET', k, 'latency', tostring(old + weight * (latency - old)))
  end
  local failed = 0
  if outcome == 'fail' then failed = 1 end
  local rate = tonumber(redis.call('HGET', k, 'error_rate') or '0')
  redis.call('HSET', k, 'error_rate', tostring(rate + weight * (failed - rate)))
end
local state = redis.call('HGET', k, 'state') or 'closed'
if outcome == 'ok' then
  redis.call('HSET', k, 'fails', 0, 'first_fail', 0)
  if state == 'half_open' and probe == 1 then
    state = 'closed'
    redis.call('HSET', k, 'state', state)
    redis.call('HDEL', k, 'probe_until')
  end
elseif outcome == 'fail' then
  if state == 'closed' then
    local fails = tonumber(redis.call('HGET', k, 'fails') or '0')
    local first = tonumber(redis.call('HGET', k, 'first_fail') or '0')
    if fails == 0 or now - first > tonumber(ARGV[6]) then
      fails, first = 1, now
    else
      fails = fails + 1
    end
    if fails >= tonumber(ARGV[5]) then
      state = 'open'
      redis.call('HSET', k, 'state', state, 'open_until', now + tonumber(ARGV[7]), 'fails', 0, 'first_fail', 0)
    else
      redis.call('HSET', k, 'fails', fails, 'first_fail', first)
    end
  elseif state == 'half_open' and probe == 1 then
    state = 'open'
    redis.call('HSET', k, 'state', state, 'open_until', now + tonumber(ARGV[7]))
    redis.call('HDEL', k, 'probe_until')
  end
elseif probe == 1 then
  redis.call('HDEL', k, 'probe_until')
end
redis.call('EXPIRE', k, ARGV[9])
return state
"""

# KEYS: (hash, leases) per target. Reply: now, then per target (in flight, state, open_until, probe_until,
# fails, latency, error_rate).
_TARGET_STATES_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reply = {tostring(now)}
for i = 1, #KEYS, 2 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i + 1], '-inf', now)
  reply[#reply + 1] = redis.call('ZCARD', KEYS[i + 1])
  local fields = redis.call('HMGET', KEYS[i], 'state', 'open_until', 'probe_until', 'fails', 'latency', 'error_rate')
  for j = 1, 6 do reply[#reply + 1] = fields[j] or false end
end
return reply
"""


def _admission(reply, rates, slots) -> Admission:
    """The admission script's reply as an ``Admission``."""
    failed = int(reply[0])
    if failed == 0:
        remaining = {check.name: int(reply[3 + i]) for i, check in enumerate(rates)}
        return Admission(True, remaining=remaining)
    if failed == -1:
        return Admission(False, "seed", unseeded=[int(i) for i in reply[3:]])
    if failed <= len(rates):
        name = rates[failed - 1].name
        return Admission(False, name, int(reply[1]), remaining={name: int(reply[3])})
    if failed <= len(rates) + len(slots):
        return Admission(False, slots[failed - len(rates) - 1].name, int(reply[1]))
    return Admission(False, "budget", 0, spent=int(reply[2]), budget_index=failed - len(rates) - len(slots) - 1)


def _verdict(reply) -> tuple[str, int]:
    verdict, wait_ms = reply
    return (verdict.decode() if isinstance(verdict, bytes) else verdict), int(wait_ms)


def _target_acquire_argv(acquire: TargetAcquire) -> list:
    return [acquire.lease, acquire.max_concurrent, acquire.lease_ms, TARGET_STATE_TTL_SECONDS]


def _release_args(release: TargetRelease) -> tuple:
    return release.key, release.lease, release.outcome, release.latency_ms, release.probe, release.rule


def _target_release_argv(lease, outcome, latency_ms, probe, rule) -> list:
    return [
        lease, outcome, round(latency_ms, 2), int(probe), rule.failures, rule.window_ms, rule.cooldown_ms,
        TARGET_AVERAGE_WEIGHT, TARGET_STATE_TTL_SECONDS,
    ]  # fmt: skip


def _target_keys(keys: list[str]) -> list[str]:
    return [part for key in keys for part in (key, key + ":leases")]


def _target_states(reply) -> list[TargetState]:
    def text(value, default):
        return default if value is None else value.decode() if isinstance(value, bytes) else str(value)

    now = float(text(reply[0], "0"))
    states = []
    for i in range(1, len(reply), 7):
        in_flight, state, open_until, probe_until, fails, latency, error_rate = reply[i : i + 7]
        states.append(
            TargetState(
                in_flight=int(in_flight),
                latency_ms=float(text(latency, "-1")),
                error_rate=float(text(error_rate, "0")),
                circuit=text(state, "closed"),
                open_until_ms=float(text(open_until, "0")),
                probe_until_ms=float(text(probe_until, "0")),
                failures=int(text(fails, "0")),
                now_ms=now,
            )
        )
    return states


class _HiredisPacking:
    """Packs commands with hiredis (C), as redis-py's synchronous connections do; its asyncio ones pack in
    Python, by concatenation per argument: about 33 µs for an admission script's 34 arguments against 6.
    Arguments are str, bytes, int or float (this client's scripts pass nothing else)."""

    _pack: Callable[[tuple], bytes]
    _refused: type[Exception]

    def pack_command(self, *args) -> list[bytes]:
        if type(args[0]) is str:  # a name may hold literal arguments ("CONFIG GET"): the server wants them apart
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [self._pack(args)]
        except TypeError as error:  # what redis-py's own encoder refuses too (a bool, None, an object)
            raise self._refused(str(error)) from error


@functools.cache
def packing_with_hiredis(connection_class: type) -> type:
    """``connection_class`` (TCP, TLS or Unix socket, as the URL chose) packing its commands with hiredis."""
    import hiredis
    from redis.exceptions import DataError

    attributes = {"_pack": staticmethod(hiredis.pack_command), "_refused": DataError}
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), attributes)


class RedisHotState(HotState):
    """Redis store: each admit and each settle is a single Lua script, one round trip."""

    shared = True

    def __init__(self, url: str):
        import redis
        import redis.asyncio as aioredis

        self._url = url
        self._sync = redis.Redis.from_url(url)
        # Redis hands a channel's messages to subscribers of every database: announcements name theirs, so two
        # deployments on one server (other databases, the same prefix) do not hear each other.
        self._database = self._sync.connection_pool.connection_kwargs.get("db", 0)
        self._async_clients: dict[int, object] = {}
        self._aioredis = aioredis
        self._no_script = redis.exceptions.NoScriptError
        self._unreachable = (redis.exceptions.RedisError, OSError)

    def _client(self):
        # redis.asyncio connections belong to the loop that made them.
        import asyncio

        loop = asyncio.get_running_loop()
        client = self._async_clients.get(id(loop))
        if client is None:
            client = self._aioredis.Redis.from_url(self._url, max_connections=256)
            pool = client.connection_pool
            pool.connection_class = packing_with_hiredis(pool.connection_class)
            client._admit = client.register_script(_ADMIT_LUA.replace("SLOT_TTL", str(slot_ttl_seconds())))
            client._seed = client.register_script(_SEED_LUA)
            client._settle = client.register_script(_SETTLE_LUA.replace("SLOT_TTL", str(slot_ttl_seconds())))
            client._target_acquire = client.register_script(_TARGET_ACQUIRE_LUA)
            client._target_release = client.register_script(_TARGET_RELEASE_LUA)
            client._target_states = client.register_script(_TARGET_STATES_LUA)
            self._async_clients = {id(loop): client}
        return client

    async def admit(self, rates, slots, budgets, acquire=None):
        client = self._client()
        keys = [check.key for check in rates] + [slot.key for slot in slots]
        args = [len(rates)]
        for check in rates:
            args += [check.limit, check.cost, check.period_ms]
        args += [len(slots), *(slot.limit for slot in slots), len(budgets)]
        for budget in budgets:
            keys += budget.keys
            args += [budget.limit, budget.ttl_seconds, budget.reserve, budget.reservation, budget.hold_ms]
        if acquire is None:
            return _admission(await client._admit(keys=keys, args=args), rates, slots)
        reply, verdict = await self._scripts(
            (client._admit, keys, args),
            (client._target_acquire, _target_keys([acquire.key]), _target_acquire_argv(acquire)),
        )
        result = _admission(reply, rates, slots)
        result.target = _verdict(verdict)
        return result

    async def seed(self, budgets, spent):
        args = []
        for budget, amount in zip(budgets, spent, strict=True):
            args += [amount, budget.ttl_seconds]
        await self._client()._seed(keys=[budget.key for budget in budgets], args=args)

    async def settle(self, adjusts, slot_keys, budgets, spend, release=None):
        client = self._client()
        keys = [adj.key for adj in adjusts] + list(slot_keys)
        args = [len(adjusts)]
        for adj in adjusts:
            args += [adj.limit, adj.delta, adj.period_ms]
        args += [len(slot_keys), spend, len(budgets)]
        for budget in budgets:
            keys += budget.keys
            args += [budget.ttl_seconds, budget.reservation]
        if release is None:
            return [int(total) for total in await client._settle(keys=keys, args=args)]
        totals, _ = await self._scripts(
            (client._settle, keys, args),
            (client._target_release, _target_keys([release.key]), _target_release_argv(*_release_args(release)[1:])),
        )
        return [int(total) for total in totals]

    async def _scripts(self, *calls):
        """Run registered scripts in one round trip (a pipeline of EVALSHA); a script Redis lost is loaded
        and run again on its own, so no script runs twice. Raises the first error after all have run."""
        pipe = self._client().pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, self._no_script):
                script, keys, args = calls[i]
                replies[i] = await script(keys=keys, args=args)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def target_states(self, keys):
        if not keys:
            return []
        return _target_states(await self._client()._target_states(keys=_target_keys(keys)))

    def target_states_now(self, keys):
        if not keys:
            return []
        return _target_states(self._sync.eval(_TARGET_STATES_LUA, len(keys) * 2, *_target_keys(keys)))

    async def target_acquire(self, key, lease, max_concurrent, lease_ms):
        args = _target_acquire_argv(TargetAcquire(key, lease, max_concurrent, lease_ms))
        return _verdict(await self._client()._target_acquire(keys=_target_keys([key]), args=args))

    async def target_release(self, key, lease, outcome, latency_ms, probe, rule):
        args = _target_release_argv(lease, outcome, latency_ms, probe, rule)
        state = await self._client()._target_release(keys=_target_keys([key]), args=args)
        return state.decode() if isinstance(state, bytes) else state

    def target_reset_now(self, key):
        self._sync.hdel(key, "state", "open_until", "probe_until", "fails", "first_fail")

    async def get_int(self, key):
        value = await self._client().get(key)
        return None if value is None else int(value)

    async def get_json(self, key):
        value = await self._client().get(key)
        return None if value is None else json.loads(value)

    async def set_json(self, key, value, ttl_seconds):
        await self._client().set(key, json.dumps(value), ex=ttl_seconds)

    def delete_now(self, key):
        self._sync.delete(key)

    def get_int_now(self, key):
        value = self._sync.get(key)
        return None if value is None else int(value)

    async def cached(self, generation_keys, entry_key):
        client = self._client()
        generations = await client.mget(generation_keys)
        return await client.get(entry_key([int(value or 0) for value in generations]))

    async def cache(self, generation_keys, entry_key, value, ttl_seconds):
        key = entry_key(await self.generations(generation_keys))
        if key is None:
            return False
        await self._client().set(key, value, ex=ttl_seconds)
        return True

    async def generations(self, generation_keys):
        return [int(value or 0) for value in await self._client().mget(generation_keys)]

    def bump_now(self, key):
        return self._sync.incr(key)

    def tally_now(self, key, field, amount=1):
        self._sync.hincrby(key, field, amount)

    def tallies_now(self, key):
        return {name.decode(): int(count) for name, count in self._sync.hgetall(key).items()}

    def publish_key_change(self, key_id):
        self._sync.publish(self.key(KEY_CHANGES), key_id)

    def key_changes(self):
        return self._listen(self.key(KEY_CHANGES), lambda data: int(data) if data.isdigit() else _SKIP)

    def _announcement_channel(self, topic: str) -> str:
        return self.key(topic, f"db{self._database}")

    async def announce(self, topic, message):
        try:
            await self._client().publish(self._announcement_channel(topic), message)
        except self._unreachable as error:
            log.warning("announcing on %s failed (%s)", topic, error)

    def announcements(self, topic):
        return self._listen(self._announcement_channel(topic), lambda data: data.decode("utf-8", "replace"))

    async def _listen(self, channel: str, parse):
        """Each message on ``channel`` as ``parse`` reads it (``_SKIP``: none); None after each (re)subscription."""
        # Its own connection, named after the channel (CLIENT LIST shows it), held while it listens.
        failures = 0
        while True:
            client = self._aioredis.Redis.from_url(self._url, client_name=channel)
            subscription = client.pubsub()
            try:
                await subscription.subscribe(channel)
                pinged = False
                while True:
                    message = await subscription.get_message(timeout=SUBSCRIPTION_HEARTBEAT_SECONDS)
                    if message is None:
                        if pinged:
                            raise TimeoutError("the subscription did not answer a ping")
                        await subscription.ping()
                        pinged = True
                        continue
                    pinged, failures = False, 0
                    # redis-py subscribes again by itself after a reconnection: each confirmation may follow a gap.
                    if message["type"] == "subscribe":
                        yield None
                    elif message["type"] == "message" and (value := parse(message["data"])) is not _SKIP:
                        yield value
            except self._unreachable as error:
                if not failures:
                    log.warning("listening on %s failed (%s); subscribing again", channel, error)
                failures += 1
            finally:
                await subscription.aclose()
                await client.aclose()
            await asyncio.sleep(RESUBSCRIBE_PAUSES[min(failures, len(RESUBSCRIBE_PAUSES)) - 1])


_store: HotState | None = None


def get_hot_state() -> HotState:
    """Return this process's store, chosen by ``REDIS_URL``."""
    global _store
    if _store is None:
        _store = RedisHotState(settings.REDIS_URL) if settings.REDIS_URL else MemoryHotState()
    return _store


def reset_hot_state() -> None:
    global _store
    _store = None
