"""The failed-authentication limit holds for a client however it spreads its guesses: over the addresses of its IPv6
network, over an IPv4 address and its IPv4-mapped IPv6 form, and over gateway processes (which share the count and
the block through Redis). Once blocked, a right key is refused too: a guess tells nothing.

Each test calls from addresses of its own behind a trusted proxy (``X-Forwarded-For``), as a load balancer would
send them, so the counts of other tests (Redis is shared) never meet its own."""

from __future__ import annotations

import ipaddress
import random
import uuid

import pytest
from django.conf import settings

from tests.servers import Gateway
from tests.waiting import until

LIMITED = {"GATEWAY_AUTH_FAILURES_PER_MINUTE": "2", "GATEWAY_TRUSTED_PROXIES": "1"}


@pytest.fixture(scope="module")
def limited(seeded):
    """A gateway allowing two failed authentications a minute per client."""
    server = Gateway(**LIMITED)
    yield server
    server.stop()


def network(bits: int) -> ipaddress.IPv6Network:
    """A network of ``bits`` bits of the documentation range (2001:db8::/32) that no other test uses."""
    first = int(ipaddress.IPv6Address("2001:db8::")) | random.getrandbits(bits - 32) << (128 - bits)
    return ipaddress.IPv6Network((first, bits))


def next_to(net: ipaddress.IPv6Network) -> ipaddress.IPv6Network:
    """The network of the same size right after ``net``: another client."""
    return ipaddress.IPv6Network((int(net.network_address) + net.num_addresses, net.prefixlen))


def ipv4() -> str:
    """An IPv4 address no other test uses (the shared address space, 100.64.0.0/10)."""
    return f"100.{random.randrange(64, 128)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def call(server: Gateway, key: str, address: str) -> int:
    return server.client(key).get("/v1/models", headers={"X-Forwarded-For": address}).status_code


def guess() -> str:
    return f"sk-guess-{uuid.uuid4().hex}"


def test_an_ipv6_client_cannot_dodge_the_limit_by_moving_within_its_64(limited, make_key):
    raw, _ = make_key()
    net = network(64)
    guesses = [call(limited, guess(), str(net[i])) for i in (1, 2, 3, 2**40)]
    assert guesses == [401, 401, 429, 429]
    assert call(limited, raw, str(net[-1])) == 429  # no oracle, from any address of the /64
    assert call(limited, raw, str(next_to(net)[1])) == 200  # the next /64 is another client


def test_an_ipv4_mapped_address_counts_as_its_ipv4(limited, make_key):
    raw, _ = make_key()
    address = ipv4()
    assert [call(limited, guess(), address), call(limited, guess(), f"::ffff:{address}")] == [401, 401]
    assert call(limited, raw, address) == 429
    assert call(limited, raw, f"::ffff:{ipv4()}") == 200  # another IPv4 client, mapped: counted apart


def test_the_ipv6_network_counted_is_a_setting(seeded, make_key):
    server = Gateway(**LIMITED, GATEWAY_AUTH_FAILURE_IPV6_PREFIX="48")
    try:
        raw, _ = make_key()
        net = network(48)
        in_64 = [str(net[2**64 * n + 1]) for n in (0, 1, 2)]  # an address in each of three /64s of the /48
        assert [call(server, guess(), address) for address in in_64[:2]] == [401, 401]
        assert call(server, raw, in_64[2]) == 429
        assert call(server, raw, str(next_to(net)[1])) == 200
    finally:
        server.stop()


@pytest.mark.skipif(
    not settings.REDIS_URL,
    reason="gateway processes share the count only through Redis; the embedded profile's in-process state is one "
    "process's own (README: run several workers with REDIS_URL)",
)
@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_two_gateway_processes_share_one_count_and_one_block(seeded, make_key, server):
    import redis

    # A prefix of their own: the count, and the channel the block is announced on, are theirs alone.
    env = {**LIMITED, "GATEWAY_REDIS_PREFIX": f"t-{uuid.uuid4().hex[:12]}"}
    first, second = Gateway(server=server, **env), Gateway(server=server, **env)
    try:
        raw, _ = make_key()
        # A process listens for blocks from its first request on: both are listening before the guesses begin.
        assert call(first, raw, ipv4()) == 200 and call(second, raw, ipv4()) == 200
        store = redis.Redis.from_url(settings.REDIS_URL)
        channel = f"{env['GATEWAY_REDIS_PREFIX']}:auth-blocks:db{store.get_connection_kwargs().get('db', 0)}"
        numsub = store.pubsub_numsub
        until(lambda: numsub(channel)[0][1] == 2, "both gateways listen for blocks")

        address = ipv4()
        assert call(first, guess(), address) == 401
        assert call(second, guess(), address) == 401  # the second failure of two a minute, wherever it lands
        assert call(first, raw, address) == 429  # no oracle in the process that did not see the limit spent
        assert call(second, raw, address) == 429
        assert call(first, guess(), address) == 429
        assert call(first, raw, ipv4()) == 200
    finally:
        first.stop()
        second.stop()


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def limited_either(request, seeded):
    server = Gateway(server=request.param, **LIMITED)
    yield server
    server.stop()


def test_a_guess_whose_client_hangs_up_at_once_is_still_counted(limited_either, make_key):
    """The servers report a hang-up to the request at once (``ON_HANG_UP``); before the caller is let in it must not
    cut the key check short, or a guesser who closes each connection after sending would never be counted."""
    import socket

    raw, _ = make_key()
    address = ipv4()
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", limited_either.port), timeout=10) as conn:
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {guess()}\r\n"
                f"X-Forwarded-For: {address}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            conn.sendall(head.encode() + body)  # and gone, without waiting for the answer
    until(lambda: call(limited_either, raw, address) == 429, "the hung-up guesses counted", 10)
