"""The hot-state stores admit and settle the same way; Redis does it atomically across callers. Both announce
key changes, and news on any topic, to every listener."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest
from django.conf import settings

from gateway_project.hotstate import BudgetCheck, ConcurrencySlot, MemoryHotState, RateAdjust, RateCheck, RedisHotState
from tests.waiting import DEADLINE_SECONDS

STORES = ["memory"] + (["redis"] if settings.REDIS_URL else [])


@pytest.fixture(params=STORES)
def store(request):
    return MemoryHotState() if request.param == "memory" else RedisHotState(settings.REDIS_URL)


def ids():
    unique = uuid.uuid4().hex
    return f"t:{unique}:rpm", f"t:{unique}:tpm", f"t:{unique}:conc", f"t:{unique}:spend"


def no_budget(key):
    """A budget that counts but never refuses, already seeded by the scenarios below."""
    return []


def run(coro):
    return asyncio.run(coro)


def test_it_admits_up_to_the_limit_then_says_when_to_retry(store):
    rpm, _, _, spend = ids()

    async def scenario():
        results = [await store.admit([RateCheck("requests", rpm, 5, 1)], [], no_budget(spend)) for _ in range(6)]
        return results

    results = run(scenario())
    assert [r.ok for r in results] == [True] * 5 + [False]
    assert [r.remaining["requests"] for r in results[:5]] == [4, 3, 2, 1, 0]
    refused = results[-1]
    assert refused.failed == "requests"
    assert 11_000 <= refused.retry_after_ms <= 12_000  # one slot frees every 60/5 s


def test_a_refused_check_commits_nothing(store):
    rpm, tpm, _, spend = ids()

    async def scenario():
        checks = [RateCheck("requests", rpm, 10, 1), RateCheck("tokens", tpm, 100, 80)]
        first = await store.admit(checks, [], no_budget(spend))
        second = await store.admit(checks, [], no_budget(spend))
        small = await store.admit(
            [RateCheck("requests", rpm, 10, 1), RateCheck("tokens", tpm, 100, 20)], [], no_budget(spend)
        )
        return first, second, small

    first, second, small = run(scenario())
    assert first.ok and not second.ok and second.failed == "tokens"
    assert small.ok and small.remaining["requests"] == 8  # the refused request used no request slot


def test_settling_returns_unused_tokens(store):
    _, tpm, _, spend = ids()

    async def scenario():
        check = [RateCheck("tokens", tpm, 100, 90)]
        assert (await store.admit(check, [], no_budget(spend))).ok
        assert not (await store.admit(check, [], no_budget(spend))).ok
        await store.settle([RateAdjust(tpm, 100, -80)], [], no_budget(spend), 0)
        return await store.admit(check, [], no_budget(spend))

    assert run(scenario()).ok


def test_it_limits_requests_in_flight(store):
    _, _, conc, spend = ids()

    async def scenario():
        first = await store.admit([], [ConcurrencySlot("concurrency", conc, 2)], no_budget(spend))
        second = await store.admit([], [ConcurrencySlot("concurrency", conc, 2)], no_budget(spend))
        third = await store.admit([], [ConcurrencySlot("concurrency", conc, 2)], no_budget(spend))
        await store.settle([], [conc], no_budget(spend), 0)
        fourth = await store.admit([], [ConcurrencySlot("concurrency", conc, 2)], no_budget(spend))
        return first, second, third, fourth

    first, second, third, fourth = run(scenario())
    assert (first.ok, second.ok, third.ok, fourth.ok) == (True, True, False, True)
    assert third.failed == "concurrency"


def test_every_slot_must_have_room_and_a_refusal_takes_none(store):
    """A key's own slot and an agent's shared one: the full one refuses, by name, and the other is not taken."""
    rpm, _, conc, spend = ids()
    key_slot, agent_slot = ConcurrencySlot("concurrency", conc, 5), ConcurrencySlot("agent_concurrency", spend, 1)
    budget = BudgetCheck(spend + ":b", 100, 60, reserve=10, reservation="r", hold_ms=60_000)

    async def scenario():
        await store.seed([budget], [95])
        rate = [RateCheck("requests", rpm, 10, 1)]
        first = await store.admit(rate, [key_slot, agent_slot], [])
        full = await store.admit(rate, [key_slot, agent_slot], [budget])
        await store.settle([], [key_slot.key, agent_slot.key], [], 0)
        over_budget = await store.admit(rate, [key_slot, agent_slot], [budget])  # 95 + 10 > 100
        held = await store.get_int(key_slot.key), await store.get_int(agent_slot.key)
        return first, full, over_budget, held

    first, full, over_budget, held = run(scenario())
    assert first.ok
    assert (full.ok, full.failed, full.retry_after_ms) == (False, "agent_concurrency", 1000)
    assert (over_budget.failed, over_budget.budget_index, over_budget.spent) == ("budget", 0, 95)
    assert held == (0, 0)  # the refusals took nothing; the one admitted was settled


def test_an_empty_budget_counter_is_seeded_before_anything_is_taken(store):
    rpm, _, _, spend = ids()
    budget = BudgetCheck(spend, 1_000, 60)
    rate = [RateCheck("requests", rpm, 10, 1)]

    async def scenario():
        unseeded = await store.admit(rate, [], [budget])
        await store.seed([budget], [900])
        await store.seed([budget], [0])  # a second seeder loses: the counter is there
        first = await store.admit(rate, [], [budget])
        totals = await store.settle([], [], [budget], 150)
        second = await store.admit(rate, [], [budget])
        return unseeded, first, totals, second

    unseeded, first, totals, second = run(scenario())
    assert not unseeded.ok and unseeded.failed == "seed" and unseeded.unseeded == [0]
    assert first.ok and first.remaining["requests"] == 9  # the unseeded attempt took no slot
    assert totals == [1_050]
    assert not second.ok and second.failed == "budget" and second.spent == 1_050 and second.budget_index == 0


def test_a_request_must_fit_every_budget_and_settles_into_all_of_them(store):
    _, _, _, spend = ids()
    wide = BudgetCheck(spend + ":org", 10_000, 60, reserve=400, reservation="r1", hold_ms=60_000)
    narrow = BudgetCheck(spend + ":client", 500, 60, reserve=400, reservation="r1", hold_ms=60_000)
    soft = BudgetCheck(spend + ":soft", -1, 60)  # counts, never refuses

    async def scenario():
        await store.seed([wide, narrow, soft], [0, 0, 5_000_000])
        first = await store.admit([], [], [wide, narrow, soft])
        second_wide = BudgetCheck(wide.key, 10_000, 60, reserve=400, reservation="r2", hold_ms=60_000)
        second_narrow = BudgetCheck(narrow.key, 500, 60, reserve=400, reservation="r2", hold_ms=60_000)
        second = await store.admit([], [], [second_wide, second_narrow, soft])
        totals = await store.settle([], [], [wide, narrow, soft], 300)
        return first, second, totals

    first, second, totals = run(scenario())
    assert first.ok
    assert not second.ok and second.failed == "budget" and second.budget_index == 1  # the client's, not the org's
    assert totals == [300, 300, 5_000_300]


def test_settling_into_a_vanished_counter_reports_it_instead_of_guessing(store):
    _, _, _, spend = ids()
    budget = BudgetCheck(spend, 1_000, 60)
    assert run(store.settle([], [], [budget], 100)) == [-1]
    assert run(store.admit([], [], [budget])).failed == "seed"


@pytest.mark.parametrize(
    ("session", "queue", "longest"),
    [(3600.0, 600.0, 3600), (60.0, 1800.0, 1800 + 60)],  # a session; an async job queued, then run
    ids=["session", "job"],
)
def test_a_slot_is_counted_as_long_as_anything_holding_it_may_last(store, settings, session, queue, longest):
    """A WebSocket session holds its slots as long as it runs, and an async job from its submission through its
    queue time and its run: their count must not lapse before they may end."""
    settings.GATEWAY = {**settings.GATEWAY, "MAX_ANSWER_SECONDS": 60.0, "MAX_SESSION_SECONDS": session}
    settings.GATEWAY_JOB_MAX_QUEUE_SECONDS = queue
    _, _, conc, _ = ids()
    assert run(store.admit([], [ConcurrencySlot("concurrency", conc, 1)], [])).ok
    if isinstance(store, RedisHotState):
        lasts = store._sync.pttl(conc) / 1000
    else:
        lasts = store._values[conc][1] - time.time()
    assert longest + 60 - 5 < lasts <= longest + 60


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")
def test_redis_never_over_admits_concurrent_callers():
    store = RedisHotState(settings.REDIS_URL)
    rpm, _, _, spend = ids()

    async def scenario():
        calls = [store.admit([RateCheck("requests", rpm, 25, 1)], [], no_budget(spend)) for _ in range(200)]
        return await asyncio.gather(*calls)

    assert sum(result.ok for result in run(scenario())) == 25


def test_reservations_hold_budget_until_settled_or_lapsed(store):
    _, _, _, spend = ids()

    def check(name, reserve, hold_ms=60_000):
        return [BudgetCheck(spend, 1_000, 60, reserve=reserve, reservation=name, hold_ms=hold_ms)]

    async def scenario():
        await store.seed(check("", 0), [0])
        first = await store.admit([], [], check("a", 600))
        second = await store.admit([], [], check("b", 600))  # 600 + 600 > 1000
        small = await store.admit([], [], check("c", 300, hold_ms=1))  # lapses almost at once
        await asyncio.sleep(0.01)
        await store.settle([], [], check("a", 600), 100)  # real cost 100: frees 500
        third = await store.admit([], [], check("d", 800))  # 100 spent + 800 <= 1000
        fourth = await store.admit([], [], check("e", 200))  # 100 + 800 + 200 > 1000
        return first, second, small, third, fourth

    first, second, small, third, fourth = run(scenario())
    assert (first.ok, second.ok, small.ok, third.ok, fourth.ok) == (True, False, True, True, False)
    assert second.failed == fourth.failed == "budget"


# --- key changes ---------------------------------------------------------------


@pytest.fixture
def own_channel(settings):
    """A prefix of this test's own, so no other gateway's key changes (Redis is shared) reach its listeners."""
    settings.GATEWAY = {**settings.GATEWAY, "REDIS_PREFIX": f"t-{uuid.uuid4().hex}"}
    return settings.GATEWAY["REDIS_PREFIX"]


async def next_change(changes, seconds: float = DEADLINE_SECONDS):
    return await asyncio.wait_for(anext(changes), seconds)


def test_a_key_change_reaches_every_listener_after_it_says_it_listens(store, own_channel):
    async def scenario():
        async with contextlib.aclosing(store.key_changes()) as one, contextlib.aclosing(store.key_changes()) as two:
            assert (await next_change(one), await next_change(two)) == (None, None)
            # Announced from another thread, as the console's saves are.
            await asyncio.to_thread(store.publish_key_change, 42)
            await asyncio.to_thread(store.publish_key_change, 7)
            return [await next_change(one), await next_change(one)], [await next_change(two), await next_change(two)]

    assert run(scenario()) == ([42, 7], [42, 7])


def test_an_announcement_reaches_every_listener_of_its_topic_and_no_other(store, own_channel):
    async def scenario():
        async with (
            contextlib.aclosing(store.announcements("blocks")) as one,
            contextlib.aclosing(store.announcements("blocks")) as two,
            contextlib.aclosing(store.announcements("other")) as other,
        ):
            assert (await next_change(one), await next_change(two), await next_change(other)) == (None, None, None)
            await store.announce("blocks", "20 2001:db8::/64")
            await store.announce("other", "x")
            return await next_change(one), await next_change(two), await next_change(other)

    assert run(scenario()) == ("20 2001:db8::/64", "20 2001:db8::/64", "x")


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")
def test_announcements_stay_within_their_redis_database(own_channel):
    """Redis hands a channel's messages to every database's subscribers: another database's store must not hear."""
    import redis

    url = settings.REDIS_URL
    database = redis.Redis.from_url(url).get_connection_kwargs().get("db", 0)
    ours, theirs = RedisHotState(url), RedisHotState(url.rsplit("/", 1)[0] + f"/{(database + 1) % 16}")

    async def scenario():
        async with (
            contextlib.aclosing(ours.announcements("blocks")) as mine,
            contextlib.aclosing(theirs.announcements("blocks")) as foreign,
        ):
            assert (await next_change(mine), await next_change(foreign)) == (None, None)
            await theirs.announce("blocks", "theirs")
            await ours.announce("blocks", "ours")
            assert await next_change(mine) == "ours"
            assert await next_change(foreign) == "theirs"

    run(scenario())


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")
def test_the_redis_listener_subscribes_again_after_losing_its_connection(own_channel):
    import redis

    store = RedisHotState(settings.REDIS_URL)
    admin = redis.Redis.from_url(settings.REDIS_URL)

    def kill_listener() -> int:
        name = f"{own_channel}:key-changes"
        return sum(admin.client_kill_filter(_id=c["id"]) for c in admin.client_list() if c["name"] == name)

    async def scenario():
        async with contextlib.aclosing(store.key_changes()) as changes:
            assert await next_change(changes) is None
            assert await asyncio.to_thread(kill_listener) == 1
            assert await next_change(changes) is None  # subscribed again: changes in between may be lost
            store.publish_key_change(42)
            assert await next_change(changes) == 42
        return await asyncio.to_thread(kill_listener)

    assert run(scenario()) == 0  # closing the listener closed its connection
