"""Target choice, circuit states and retry rules, on both hot-state stores."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter

import pytest
from django.conf import settings

from gateway_project.hotstate import BreakerRule, MemoryHotState, RedisHotState, TargetState
from routing.balance import order
from routing.resilience import backoff, verdict
from routing.table import AgentRoute, TargetRoute
from routing.upstream import UpstreamError

STORES = ["memory"] + (["redis"] if settings.REDIS_URL else [])
# A cool-down long enough that nothing but a stalled machine could see it end between two calls; tests wait for
# it by polling the circuit's state (``until_half_open``), not by sleeping.
RULE = BreakerRule(failures=3, window_ms=60_000, cooldown_ms=1000)


@pytest.fixture(params=STORES)
def store(request):
    return MemoryHotState() if request.param == "memory" else RedisHotState(settings.REDIS_URL)


def key():
    return f"t:target:{uuid.uuid4().hex}"


def run(coro):
    return asyncio.run(coro)


async def until_half_open(store, k: str, seconds: float = 30.0) -> None:
    """Poll the target's state until its circuit's cool-down is over: the next request is the probe."""
    deadline = time.monotonic() + seconds
    while (await store.target_states([k]))[0].shown_circuit != "half_open":
        assert time.monotonic() < deadline, "the circuit's cool-down never ended"
        await asyncio.sleep(0.01)


A, B = TargetRoute("a", "http://a", weight=100, max_concurrent=4), TargetRoute("b", "http://b", weight=100)


def test_weighted_order_follows_the_weights_and_never_picks_a_zero_weight():
    rng = random.Random(7)
    canary = TargetRoute("canary", "http://c", weight=5)
    stable = TargetRoute("stable", "http://s", weight=95)
    drained = TargetRoute("drained", "http://d", weight=0)
    firsts = Counter(order("weighted", [canary, stable, drained], None, rng)[0].name for _ in range(4000))
    assert firsts["drained"] == 0
    assert 100 <= firsts["canary"] <= 320  # about 5 % of 4000
    assert order("weighted", [drained], None, rng) == [drained]  # all at zero: shared equally


def test_least_busy_prefers_the_lower_share_of_capacity():
    busy = TargetState(in_flight=2)  # 2 of a's 4
    idle_ish = TargetState(in_flight=10)  # 10 of b's unlimited (counted as 100)
    assert [t.name for t in order("least_busy", [A, B], [busy, idle_ish])] == ["b", "a"]
    assert [t.name for t in order("least_busy", [A, B], [TargetState(), idle_ish])] == ["a", "b"]


def test_latency_aware_order_weighs_latency_and_errors():
    fast = TargetState(latency_ms=50, error_rate=0.0)
    slow = TargetState(latency_ms=500, error_rate=0.0)
    failing = TargetState(latency_ms=50, error_rate=0.9)
    assert [t.name for t in order("latency", [A, B], [slow, fast])] == ["b", "a"]
    assert [t.name for t in order("latency", [A, B], [failing, slow])] == ["b", "a"]
    assert order("latency", [A, B], [TargetState(), slow])[0].name == "a"  # not measured yet: tried


def test_a_target_counts_in_flight_and_refuses_past_its_max(store):
    k = key()

    async def scenario():
        taken = [await store.target_acquire(k, f"l{i}", 2, 60_000) for i in range(3)]
        before = (await store.target_states([k]))[0].in_flight
        await store.target_release(k, "l0", "none", -1, False, RULE)
        after = (await store.target_states([k]))[0].in_flight
        return taken, before, after, await store.target_acquire(k, "l3", 2, 60_000)

    taken, before, after, again = run(scenario())
    assert [verdict for verdict, _ in taken] == ["ok", "ok", "busy"]
    assert (before, after, again[0]) == (2, 1, "ok")


def test_a_lease_never_released_lapses(store):
    k = key()

    async def scenario():
        await store.target_acquire(k, "crashed", 1, 100)
        await asyncio.sleep(0.2)  # the lease's 100 ms (a clock, not another task): a loaded machine only waits longer
        return await store.target_acquire(k, "next", 1, 60_000)

    assert run(scenario())[0] == "ok"


def test_the_circuit_opens_after_consecutive_failures_then_probes_once_and_closes(store):
    k = key()

    async def scenario():
        states = []
        for i in range(3):
            await store.target_acquire(k, f"f{i}", 0, 60_000)
            states.append(await store.target_release(k, f"f{i}", "fail", 10, False, RULE))
        refused = await store.target_acquire(k, "x", 0, 60_000)
        await until_half_open(store, k)
        probe = await store.target_acquire(k, "p", 0, 60_000)
        second = await store.target_acquire(k, "q", 0, 60_000)
        closed = await store.target_release(k, "p", "ok", 10, True, RULE)
        after = await store.target_acquire(k, "r", 0, 60_000)
        return states, refused, probe, second, closed, after

    states, refused, probe, second, closed, after = run(scenario())
    assert states == ["closed", "closed", "open"]
    assert refused[0] == "open" and 0 < refused[1] <= 1000
    assert probe == ("probe", 0)
    assert second[0] == "probing"
    assert (closed, after[0]) == ("closed", "ok")


def test_a_success_resets_the_count_and_a_failed_probe_reopens(store):
    k = key()

    async def scenario():
        for outcome in ("fail", "fail", "ok", "fail", "fail"):
            await store.target_acquire(k, "l", 0, 60_000)
            state = await store.target_release(k, "l", outcome, 10, False, RULE)
        assert state == "closed"  # two, a success, two: never three in a row
        await store.target_acquire(k, "l", 0, 60_000)
        assert await store.target_release(k, "l", "fail", 10, False, RULE) == "open"
        await until_half_open(store, k)
        assert (await store.target_acquire(k, "p", 0, 60_000))[0] == "probe"
        assert await store.target_release(k, "p", "fail", 10, True, RULE) == "open"
        return (await store.target_states([k]))[0]

    state = run(scenario())
    assert state.circuit == "open" and state.blocked_ms() > 0
    assert 0 < state.error_rate < 1 and state.latency_ms == pytest.approx(10)


def test_failures_outside_the_window_do_not_add_up(store):
    k = key()
    rule = BreakerRule(failures=2, window_ms=100, cooldown_ms=1000)

    async def scenario():
        await store.target_acquire(k, "a", 0, 60_000)
        await store.target_release(k, "a", "fail", 1, False, rule)
        await asyncio.sleep(0.2)  # the window (a clock, not another task): a loaded machine only waits longer
        await store.target_acquire(k, "b", 0, 60_000)
        return await store.target_release(k, "b", "fail", 1, False, rule)

    assert run(scenario()) == "closed"


def test_a_probe_that_ends_without_a_verdict_lets_the_next_request_probe(store):
    k = key()
    rule = BreakerRule(failures=1, window_ms=60_000, cooldown_ms=50)

    async def scenario():
        await store.target_acquire(k, "a", 0, 60_000)
        await store.target_release(k, "a", "fail", 1, False, rule)
        await until_half_open(store, k)
        assert (await store.target_acquire(k, "p", 0, 60_000))[0] == "probe"
        await store.target_release(k, "p", "none", -1, True, rule)  # the client left
        return await store.target_acquire(k, "q", 0, 60_000)

    assert run(scenario())[0] == "probe"


def test_a_reset_closes_the_circuit(store):
    k = key()
    rule = BreakerRule(failures=1, window_ms=60_000, cooldown_ms=60_000)

    async def scenario():
        await store.target_acquire(k, "a", 0, 60_000)
        await store.target_release(k, "a", "fail", 1, False, rule)
        store.target_reset_now(k)
        return await store.target_acquire(k, "b", 0, 60_000)

    assert run(scenario())[0] == "ok"


@pytest.mark.skipif(not settings.REDIS_URL, reason="atomicity across connections needs Redis")
def test_exactly_one_probe_among_many_concurrent_callers():
    k = key()
    rule = BreakerRule(failures=1, window_ms=60_000, cooldown_ms=50)
    stores = [RedisHotState(settings.REDIS_URL) for _ in range(4)]

    async def scenario():
        await stores[0].target_acquire(k, "a", 0, 60_000)
        await stores[0].target_release(k, "a", "fail", 1, False, rule)
        await until_half_open(stores[0], k)
        return await asyncio.gather(*(stores[i % 4].target_acquire(k, f"c{i}", 0, 60_000) for i in range(40)))

    verdicts = Counter(verdict for verdict, _ in run(scenario()))
    assert verdicts == Counter({"probe": 1, "probing": 39})


def test_what_is_retried_and_what_falls_back():
    route = AgentRoute("a", "A", "agent", "http://a", "", (), "", (), 10.0, "")

    def error(kind, status=None):
        return UpstreamError(502, "upstream_error", "x", "x", kind=kind, upstream_status=status)

    assert verdict(error("connect"), route) == "retry"
    assert verdict(error("timeout"), route) == "retry"
    assert [verdict(error("status", s), route) for s in (502, 503, 529)] == ["retry"] * 3
    assert verdict(error("status", 500), route) == "fail"
    assert verdict(error("invalid"), route) == "fail"
    assert verdict(error("status", 429), route) == "answer"
    from gateway_project.errors import bad_request

    assert verdict(bad_request("no"), route) == "answer"


def test_backoff_is_full_jitter_and_capped():
    rng = random.Random(1)
    waits = [backoff(n, rng) for n in range(12) for _ in range(50)]
    assert all(0 <= w <= 2.0 for w in waits)
    assert max(backoff(0, rng) for _ in range(200)) <= 0.1


# --- a target taken with the admission, released with the settle (one round trip each) ---------------------


def test_a_target_is_taken_with_the_admission_even_when_it_is_refused(store):
    from gateway_project.hotstate import RateCheck, TargetAcquire

    k, rpm = key(), f"t:{uuid.uuid4().hex}:rpm"

    async def scenario():
        admitted = await store.admit([RateCheck("requests", rpm, 1, 1)], [], [], TargetAcquire(k, "l0", 1, 60_000))
        refused = await store.admit([RateCheck("requests", rpm, 1, 1)], [], [], TargetAcquire(k, "l1", 1, 60_000))
        return admitted, refused, (await store.target_states([k]))[0].in_flight

    admitted, refused, in_flight = run(scenario())
    assert (admitted.ok, admitted.target) == (True, ("ok", 0))
    # The acquire ran beside the refused admission and found the target full: the caller gives back what it took.
    assert (refused.ok, refused.target[0]) == (False, "busy")
    assert in_flight == 1


def test_a_settle_ends_the_last_attempt_in_the_same_call(store):
    from gateway_project.hotstate import TargetRelease

    k = key()

    async def scenario():
        await store.target_acquire(k, "l0", 0, 60_000)
        await store.settle([], [], [], 0, TargetRelease(k, "l0", "ok", 12.0, False, RULE))
        return (await store.target_states([k]))[0]

    state = run(scenario())
    assert (state.in_flight, state.latency_ms, state.error_rate) == (0, 12.0, 0.0)


@pytest.mark.skipif(not settings.REDIS_URL, reason="Redis scripts")
def test_scripts_redis_lost_are_loaded_again_and_run_once():
    import redis

    from gateway_project.hotstate import RateCheck, TargetAcquire

    store, k, rpm = RedisHotState(settings.REDIS_URL), key(), f"t:{uuid.uuid4().hex}:rpm"

    async def scenario():
        await store.admit([RateCheck("requests", rpm, 5, 1)], [], [])  # loads the scripts
        redis.Redis.from_url(settings.REDIS_URL).script_flush()  # as a Redis restart would
        admitted = await store.admit([RateCheck("requests", rpm, 5, 1)], [], [], TargetAcquire(k, "l0", 0, 60_000))
        return admitted, (await store.target_states([k]))[0].in_flight

    admitted, in_flight = run(scenario())
    assert (admitted.ok, admitted.target, admitted.remaining["requests"], in_flight) == (True, ("ok", 0), 3, 1)
