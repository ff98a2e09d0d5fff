"""Open WebSocket sessions are withdrawn when their key no longer lets them in, on every store."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import pytest
from django.conf import settings

from gateway_project import hotstate
from keys.access import KeySnapshot
from routing import ws_sessions
from routing.table import AgentRoute
from routing.ws_sessions import OpenSessions
from tests.waiting import DEADLINE_SECONDS

STORES = ["memory"] + (["redis"] if settings.REDIS_URL else [])
ACTIVE = KeySnapshot(
    key_id=0, prefix="agk_test", client_id=1, client_slug="c", cost_center_id=None, state="active",
    expires_at=None, allowed_agents=frozenset({"research"}), allowed_models=None, requests_per_minute=60,
    requests_per_day=0, tokens_per_minute=1000, max_concurrent=1, issued_at=0.0, audit_previews=True,
)  # fmt: skip


RESEARCH = AgentRoute(
    slug="research", name="Research", kind="agent", base_url="http://127.0.0.1:9", upstream_api_key="",
    served_models=(), default_model="", capabilities=(), timeout=5.0, cost_center="",
)  # fmt: skip


class SavedKeys(dict):
    """The keys as "the database" holds them, standing in for ``key_as_saved``; counts the reads of each."""

    def __init__(self):
        super().__init__()
        self.reads: dict[int, int] = {}

    async def read(self, key_id: int) -> KeySnapshot | None:
        self.reads[key_id] = self.reads.get(key_id, 0) + 1
        return self.get(key_id)

    def save(self, key: KeySnapshot) -> KeySnapshot:
        self[key.key_id] = key
        return key


@pytest.fixture(params=STORES)
def store(request, settings, monkeypatch):
    settings.GATEWAY = {**settings.GATEWAY, "REDIS_PREFIX": f"t-{uuid.uuid4().hex}"}
    chosen = hotstate.MemoryHotState() if request.param == "memory" else hotstate.RedisHotState(settings.REDIS_URL)
    monkeypatch.setattr(hotstate, "_store", chosen)
    return chosen


@pytest.fixture
def saved(monkeypatch):
    keys = SavedKeys()
    monkeypatch.setattr(ws_sessions, "key_as_saved", keys.read)
    return keys


def key(key_id: int, **fields) -> KeySnapshot:
    return replace(ACTIVE, key_id=key_id, **fields)


async def eventually(predicate, seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


async def listening(saved: SavedKeys, key_id: int) -> None:
    """Until the listener has subscribed and read every watched key once (what it does when it subscribes)."""
    await eventually(lambda: saved.reads.get(key_id))


CHANGES = {
    "key_revoked": {"state": "revoked"},
    "key_disabled": {"state": "disabled"},
    "client_disabled": {"state": "client_disabled"},
    "key_expired": {"expires_at": 1.0},
    "agent_not_allowed": {"allowed_agents": frozenset({"writing"})},
    "invalid_api_key": None,  # deleted
}


@pytest.mark.parametrize("code", CHANGES)
def test_a_change_withdraws_the_sessions_it_no_longer_lets_in_and_no_other(store, saved, code):
    async def scenario():
        sessions = OpenSessions()
        mine, other = saved.save(key(1)), saved.save(key(2))
        async with (
            sessions.watch(mine, RESEARCH, time.perf_counter()) as first,
            sessions.watch(mine, RESEARCH, time.perf_counter()) as second,
            sessions.watch(other, RESEARCH, time.perf_counter()) as bystander,
        ):
            await listening(saved, 1)
            if CHANGES[code] is None:
                del saved[1]
            else:
                saved.save(replace(mine, **CHANGES[code]))
            store.publish_key_change(1)
            results = await asyncio.wait_for(asyncio.gather(first.withdrawn, second.withdrawn), DEADLINE_SECONDS)
            return results, bystander.withdrawn.done()

    assert run(scenario()) == ([code, code], False)


def test_a_change_that_still_lets_the_key_in_keeps_the_session(store, saved):
    async def scenario():
        sessions = OpenSessions()
        mine, witness = saved.save(key(1)), saved.save(key(2))
        async with (
            sessions.watch(mine, RESEARCH, time.perf_counter()) as session,
            sessions.watch(witness, RESEARCH, time.perf_counter()) as witnessed,
        ):
            await listening(saved, 1)
            saved.save(replace(mine, allowed_agents=frozenset({"research", "writing"})))
            saved.save(replace(witness, state="revoked"))
            store.publish_key_change(1)
            store.publish_key_change(2)
            # Changes are handled in order: once 2's session is withdrawn, 1 has been read.
            await asyncio.wait_for(witnessed.withdrawn, DEADLINE_SECONDS)
            return session.withdrawn.done(), session.key.allowed_agents

    assert run(scenario()) == (False, frozenset({"research", "writing"}))


def test_a_session_is_withdrawn_when_its_key_expires(store, saved):
    async def scenario():
        sessions = OpenSessions()
        expires_at = time.time() + 0.3
        async with sessions.watch(saved.save(key(1, expires_at=expires_at)), RESEARCH, time.perf_counter()) as s:
            code = await asyncio.wait_for(s.withdrawn, DEADLINE_SECONDS)
            return code, time.time() - expires_at

    code, late = run(scenario())
    assert code == "key_expired"
    assert 0 <= late < 2  # by the expiry's own timer: never before it, and not by something much later


def test_an_expiry_given_by_a_change_is_kept_too(store, saved):
    async def scenario():
        sessions = OpenSessions()
        mine = saved.save(key(1))
        async with sessions.watch(mine, RESEARCH, time.perf_counter()) as session:
            await listening(saved, 1)
            saved.save(replace(mine, expires_at=time.time() + 0.3))  # the key was rotated: it ends soon
            store.publish_key_change(1)
            return await asyncio.wait_for(session.withdrawn, DEADLINE_SECONDS)

    assert run(scenario()) == "key_expired"


def test_a_session_let_in_just_after_its_key_changed_reads_the_key_again(store, saved, settings):
    settings.GATEWAY = {**settings.GATEWAY, "KEY_CACHE_SECONDS": 0.2}

    async def scenario():
        sessions = OpenSessions()
        keeper = saved.save(key(1))
        async with sessions.watch(keeper, RESEARCH, time.perf_counter()):
            await listening(saved, 1)
            # A clock, not another task: the subscription is now older than any copy a handshake could use.
            await asyncio.sleep(0.3)
            changed, unchanged = key(2), key(3)
            saved.save(replace(changed, state="revoked"))
            saved.save(replace(unchanged, state="revoked"))  # saved without an announcement: not looked at
            store.publish_key_change(2)  # no session of key 2 yet: nothing to read now
            store.publish_key_change(1)
            await eventually(lambda: saved.reads[1] >= 2)  # both changes have been handled
            assert 2 not in saved.reads
            # Handshakes that began a moment ago, on this process's copies of the keys from before.
            async with (
                sessions.watch(changed, RESEARCH, time.perf_counter()) as late,
                sessions.watch(unchanged, RESEARCH, time.perf_counter()) as unaffected,
            ):
                return late.withdrawn.done() and late.withdrawn.result(), unaffected.withdrawn.done()

    assert run(scenario()) == ("key_revoked", False)


def test_the_listener_starts_with_the_first_session_and_stops_with_the_last(store, saved):
    async def tasks_besides_this_one() -> set:
        return asyncio.all_tasks() - {asyncio.current_task()}

    async def scenario():
        sessions = OpenSessions()
        counts = [len(await tasks_besides_this_one())]
        for _ in range(3):  # stopped and started again, however early it is stopped
            async with sessions.watch(saved.save(key(1)), RESEARCH, time.perf_counter()):
                counts.append(len(await tasks_besides_this_one()))
                async with sessions.watch(saved.save(key(2)), RESEARCH, time.perf_counter()):
                    await listening(saved, 2)
                    counts.append(len(await tasks_besides_this_one()))
            counts.append(len(await tasks_besides_this_one()))
        return counts

    assert run(scenario()) == [0] + [2, 2, 0] * 3  # the key changes' listener and the agents' sweep


def run(coro):
    return asyncio.run(coro)


def test_the_listener_stops_however_early_its_last_session_ends(store, saved):
    async def scenario():
        sessions = OpenSessions()
        for step in range(40):  # somewhere in here the last session ends just as the listener connects
            async with sessions.watch(saved.save(key(1)), RESEARCH, time.perf_counter()):
                await asyncio.sleep(step / 4000)
            await eventually(lambda: len(asyncio.all_tasks()) == 1)

    run(scenario())


def test_a_session_whose_agent_comes_to_require_a_role_is_withdrawn_at_the_next_sweep(
    store, saved, monkeypatch, settings
):
    from dataclasses import replace as replaced

    from routing.table import RoutingTable, routing_table

    settings.GATEWAY = {**settings.GATEWAY, "CONFIG_REFRESH_SECONDS": 0.05}
    monkeypatch.setattr(routing_table, "_value", RoutingTable({"research": RESEARCH}, {}))

    async def scenario():
        sessions = OpenSessions()
        async with sessions.watch(saved.save(key(1)), RESEARCH, time.perf_counter()) as session:
            await asyncio.sleep(0.2)
            assert not session.withdrawn.done()  # swept, and still let in
            routing_table._value = RoutingTable({"research": replaced(RESEARCH, required_role="analyst")}, {})
            return await asyncio.wait_for(session.withdrawn, DEADLINE_SECONDS)

    assert run(scenario()) == "role_required"
