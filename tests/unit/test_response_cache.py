"""The response cache's own logic: the normalised request its key hashes, the client's Cache-Control, the
temperature rule, entries read back whole or not at all, and the in-process store's bounds."""

from __future__ import annotations

import asyncio
import json
import time

from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_project.hotstate import MemoryHotState
from routing import response_cache as rc
from routing.cache_policy import CachePolicy

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=12).filter(lambda k: k not in rc.IGNORED_FIELDS), json_values, max_size=6)
POLICY = CachePolicy(ttl_seconds=60, shared=False, streams=False, max_entry_bytes=1000, any_temperature=False)


@settings(max_examples=200)
@given(payload=payloads, ignored=st.dictionaries(st.sampled_from(sorted(rc.IGNORED_FIELDS)), json_values))
def test_the_key_ignores_key_order_and_answer_neutral_fields(payload, ignored):
    reordered = dict(reversed(list({**ignored, **payload}.items())))
    assert rc.normalised("/v1/chat", reordered) == rc.normalised("/v1/chat", payload)


@settings(max_examples=200)
@given(payload=payloads, name=st.text(max_size=12).filter(lambda k: k not in rc.IGNORED_FIELDS), value=json_values)
def test_any_other_change_is_another_request(payload, name, value):
    changed = {**payload, name: value}
    same = name in payload and json.dumps(payload[name], sort_keys=True) == json.dumps(value, sort_keys=True)
    assert (rc.normalised("/v1/chat", changed) == rc.normalised("/v1/chat", payload)) == same
    assert rc.normalised("/v1/messages", payload) != rc.normalised("/v1/chat", payload)


@settings(max_examples=300)
@given(value=st.binary(max_size=120))
def test_cache_control_never_raises_and_finds_its_directives(value):
    directives = rc.cache_control({b"cache-control": value})
    assert all(d == d.lower() and "," not in d for d in directives)
    text = value.decode("latin-1").lower()
    if "no-store" in [part.split("=")[0].strip() for part in text.split(",")]:
        assert "no-store" in directives


def test_cache_control_reads_directives_as_sent():
    assert rc.cache_control({b"cache-control": b"Max-Age=0, NO-CACHE"}) == {"max-age", "no-cache"}
    assert "no-store" not in rc.cache_control({b"cache-control": b"no-storex"})
    assert rc.cache_control({}) == frozenset()


@override_settings(GATEWAY={"CACHE": {"MAX_TEMPERATURE": 0.5, "MEMORY_BYTES": 1000}})
def test_only_requests_at_or_below_the_temperature_threshold_are_cached():
    assert not rc.too_hot({"temperature": 0}, POLICY)
    assert not rc.too_hot({"temperature": 0.5}, POLICY)
    assert rc.too_hot({"temperature": 0.51}, POLICY)
    assert rc.too_hot({}, POLICY)  # the providers' default, 1
    assert rc.too_hot({"temperature": None}, POLICY)
    assert rc.too_hot({"temperature": "0"}, POLICY) and rc.too_hot({"temperature": True}, POLICY)
    assert not rc.too_hot({"temperature": 2}, CachePolicy(60, False, False, 1000, any_temperature=True))


@settings(max_examples=300)
@given(entry=st.binary(max_size=200))
def test_an_entry_is_read_whole_or_not_at_all(entry):
    read = rc._read_entry(entry)
    assert read is None or (read[0]["v"] == rc.FORMAT and entry.endswith(read[1]))


def _run(coroutine):
    return asyncio.run(coroutine)


@override_settings(GATEWAY={"CACHE": {"MEMORY_BYTES": 3600, "MAX_TEMPERATURE": 1.0}})
def test_the_in_process_store_stays_within_its_bytes_dropping_the_least_recently_used():
    store = MemoryHotState()

    def key(name):
        return lambda generations: f"{name}:{generations}"

    for index in range(30):
        _run(store.cache(["g"], key(index), b"x" * 100, 60))
        assert store._entry_bytes <= 3600
    assert _run(store.cached(["g"], key(29))) == b"x" * 100
    assert _run(store.cached(["g"], key(0))) is None  # gone first
    _run(store.cached(["g"], key(20)))  # used: kept over the rest
    for index in range(30, 38):
        _run(store.cache(["g"], key(index), b"x" * 100, 60))
    assert _run(store.cached(["g"], key(20))) is not None
    _run(store.cache(["g"], key("huge"), b"x" * 3601, 60))  # larger than the whole store: not kept
    assert _run(store.cached(["g"], key("huge"))) is None and store._entry_bytes <= 3600


@override_settings(GATEWAY={"CACHE": {"MEMORY_BYTES": 1000, "MAX_TEMPERATURE": 1.0}})
def test_bumping_a_generation_leaves_its_entries_unreachable_and_entries_expire():
    store = MemoryHotState()

    def entry(generations):
        return f"e:{generations}"

    _run(store.cache(["agent", "client"], entry, b"kept", 60))
    assert _run(store.cached(["agent", "client"], entry)) == b"kept"
    store.bump_now("client")
    assert _run(store.cached(["agent", "client"], entry)) is None
    _run(store.cache(["agent"], entry, b"short", 1))
    store._entries[entry([store._generations.get("agent", 0)])] = (b"short", time.time() - 1)
    assert _run(store.cached(["agent"], entry)) is None
