"""The connections the hot path opens to upstreams: nothing of one client's exchange rides on another's, and the
address connected to is the one the outbound policy allows, whatever a name resolves to by then."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from gateway_project.outbound import AllowList, CheckedResolver
from tests.servers import LoopbackServer

ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: session=client-a-secret; Path=/\r\n"
    b"X-Usage-Input-Tokens: 1\r\nX-Usage-Output-Tokens: 1\r\nContent-Length: 2\r\n\r\n{}"
)


class RecordingUpstream(LoopbackServer):
    """Answers every request with ``ANSWER`` on a kept-alive connection, and keeps each request's head."""

    def __init__(self):
        self.heads: list[bytes] = []
        super().__init__()
        # By name: aiohttp's cookie jar keeps no cookies of an address literal, only of a host name (a provider's).
        self.url = f"http://localhost:{self.port}"

    def handle(self, conn):
        while data := conn.recv(65536):
            self.heads.append(data.split(b"\r\n\r\n")[0].lower())
            conn.sendall(ANSWER)


@pytest.fixture
def recording_agent(live_db, seeded, gateway, wait_for_agent):
    from routing.models import Agent

    upstream = RecordingUpstream()
    agent = Agent.objects.create(
        slug=f"c-{uuid.uuid4().hex[:8]}", name="c", kind="agent", upstream_url=upstream.url, max_retries=0
    )
    wait_for_agent(agent.slug, gateway)
    yield agent, upstream
    agent.delete()
    upstream.stop()


def test_a_cookie_an_upstream_sets_never_comes_back_on_another_clients_request(
    recording_agent, gateway, make_key, audit_of
):
    agent, upstream = recording_agent
    first = gateway.client(make_key()[0]).post(f"/agents/{agent.slug}/work", content=b"{}")
    assert first.status_code == 200
    assert "set-cookie" not in first.headers  # not relayed to the client either
    for _ in range(3):
        assert gateway.client(make_key()[0]).post(f"/agents/{agent.slug}/work", content=b"{}").status_code == 200
    assert len(upstream.heads) == 4
    assert not [head for head in upstream.heads if b"\r\ncookie:" in head]


# --- the resolver that checks the address connected to -------------------------------------------------------


class FixedResolver:
    """Resolves every name to ``addresses`` (a DNS answer an attacker controls)."""

    def __init__(self, *addresses: str):
        self.addresses = addresses

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [
            {"hostname": host, "host": a, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self):
        pass


def resolve(resolver, host="api.example.com"):
    return asyncio.run(resolver.resolve(host, 443))


@pytest.mark.parametrize(
    "address", ["169.254.169.254", "127.0.0.1", "10.0.0.5", "::ffff:169.254.169.254", "fd00:ec2::254"]
)
def test_a_name_that_resolves_to_a_forbidden_address_when_called_is_not_connected_to(address):
    resolver = CheckedResolver(lambda: AllowList(), FixedResolver(address))
    with pytest.raises(OSError, match="may not call"):
        resolve(resolver)


def test_only_the_allowed_addresses_of_a_mixed_answer_are_connected_to():
    resolver = CheckedResolver(lambda: AllowList(), FixedResolver("169.254.169.254", "93.184.216.34"))
    assert [r["host"] for r in resolve(resolver)] == ["93.184.216.34"]


def test_an_allow_listed_network_or_name_may_be_connected_to_but_never_the_metadata_address():
    networks = CheckedResolver(lambda: AllowList.of(["10.0.0.0/8"]), FixedResolver("10.1.2.3"))
    assert [r["host"] for r in resolve(networks)] == ["10.1.2.3"]
    named = CheckedResolver(lambda: AllowList.of(["api.internal"]), FixedResolver("10.9.9.9", "169.254.169.254"))
    assert [r["host"] for r in resolve(named, "api.internal")] == ["10.9.9.9"]


def test_the_gateways_own_transports_check_the_address_they_connect_to(settings, monkeypatch):
    """Both transports: a name that resolves to loopback (not allow-listed) when called is refused."""
    import httpx

    from gateway_project import outbound
    from routing import upstream

    monkeypatch.setattr(outbound, "ThreadedResolver", lambda: FixedResolver("127.0.0.1"))  # DNS, as rebound
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = []
    for transport in ("aiohttp", "httpx"):
        settings.GATEWAY = {**settings.GATEWAY, "HTTP_TRANSPORT": transport}

        async def call():
            upstream._transports.clear()
            timeout = {"connect": 2, "read": 2}
            request = httpx.Request("GET", "http://upstream.example:9/", extensions={"timeout": timeout})
            try:
                await upstream.send(request)
            except upstream.TRANSPORT_ERRORS as refused:
                return refused
            finally:
                await upstream._transport().aclose()
                upstream._transports.clear()

        error = asyncio.run(call())
        assert error is not None and "may not call" in repr(error) + repr(error.__cause__) + str(error), transport
