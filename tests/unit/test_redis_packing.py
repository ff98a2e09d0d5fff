"""The hot-state client packs its commands with hiredis: the same bytes as redis-py's own packer, for any
arguments it takes, and the same refusal for what it does not."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from gateway_project.hotstate import RedisHotState, packing_with_hiredis

# What the hot state's scripts pass: key names and text (any text UTF-8 encodes), bytes, integers of any size,
# finite and non-finite floats.
ARGUMENT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"])),
    st.binary(),
    st.integers(),
    st.floats(),
)
NAME = st.sampled_from(["EVALSHA", "CONFIG GET", b"CLIENT SETNAME", "GET", b"SET"])


@given(NAME, st.lists(ARGUMENT, max_size=40))
def test_it_packs_exactly_what_redis_py_packs(name, arguments):
    ours = packing_with_hiredis(Connection)().pack_command(name, *arguments)
    theirs = Connection().pack_command(name, *arguments)
    assert b"".join(ours) == b"".join(theirs)


@pytest.mark.parametrize("argument", [None, True, object(), ["a"]])
def test_it_refuses_what_redis_py_refuses_with_the_same_error(argument):
    with pytest.raises(DataError):
        Connection().pack_command("SET", "k", argument)
    with pytest.raises(DataError):
        packing_with_hiredis(Connection)().pack_command("SET", "k", argument)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6380/0", SSLConnection),
        ("unix:///run/redis.sock?db=0", UnixDomainSocketConnection),
    ],
)
def test_the_stores_client_keeps_the_connection_kind_its_url_names(url, kind):
    async def pool_class():
        return RedisHotState(url)._client().connection_pool.connection_class

    chosen = asyncio.run(pool_class())
    assert issubclass(chosen, kind)
    assert chosen.pack_command is not kind.pack_command


@pytest.mark.skipif(not settings.REDIS_URL, reason="the production profile's Redis")
def test_a_script_runs_through_the_hiredis_packed_client():
    store = RedisHotState(settings.REDIS_URL)

    async def echo():
        client = store._client()
        script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2], ARGV[3]}")
        return await script(keys=["k:é"], args=[7, 2.5, b"\x00raw"])

    assert asyncio.run(echo()) == [b"k:\xc3\xa9", b"7", b"2.5", b"\x00raw"]
