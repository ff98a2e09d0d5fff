"""A client that reads its answer slowly, or not at all, must not make a gateway worker hold that answer.

The README: "no slow or huge client or upstream can hold a worker or its memory". uvicorn writes a body only as
fast as its client takes it; Daphne's Twisted transport buffered whatever the application sent, so the relay read
an agent's whole answer into a worker whose client read nothing (an attacker grew a worker by 415 MiB with a
400 MiB download). Daphne's sends now wait while the client is behind, and a client that takes nothing for
``GATEWAY_CLIENT_WRITE_SECONDS`` is cut off, its request settled and audited like any client that hung up.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import connect
from websockets.sync.server import serve as ws_serve

from tests.servers import Gateway, LoopbackServer
from tests.waiting import wait_for

MiB = 1024 * 1024
# Past what the kernel's socket buffers on both sides of the client's connection hold (a few MiB on loopback):
# the rest, if nothing holds the upstream back, is in the worker.
ANSWER_BYTES = 200 * MiB
MAX_GROWTH = 64 * MiB


def chunks(total: int):
    """``total`` bytes in 1 MiB chunks, each unlike the others (a chunk lost, doubled or swapped shows)."""
    filler = os.urandom(MiB - 8)
    for index in range(total // MiB):
        yield index.to_bytes(8, "big") + filler


class Download(LoopbackServer):
    """An agent answering every request with ``size`` bytes as fast as the gateway takes them; ``sent`` counts
    them, ``digest`` is their SHA-256."""

    def __init__(self, size: int = ANSWER_BYTES):
        self.size = size
        self.sent = 0
        self.hash = hashlib.sha256()
        self.data = list(chunks(size))
        for chunk in self.data:
            self.hash.update(chunk)
        super().__init__(timeout=60)

    @property
    def digest(self) -> str:
        return self.hash.hexdigest()

    def handle(self, conn):
        while b"\r\n\r\n" not in conn.recv(65536):
            pass
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {self.size}\r\n\r\n"
        conn.sendall(head.encode())
        for chunk in self.data:
            conn.sendall(chunk)
            self.sent += len(chunk)


class Flood:
    """A WebSocket agent that sends ``size`` bytes in 1 MiB binary frames as fast as the gateway takes them, then
    holds its session open until the gateway ends it; ``sent`` counts the bytes, ``ended`` is set at the end."""

    def __init__(self, size: int = ANSWER_BYTES):
        self.size = size
        self.sent = 0
        self.ended = threading.Event()
        self.server = ws_serve(self.handle, "127.0.0.1", 0, max_size=None, compression=None)
        self.url = f"http://127.0.0.1:{self.server.socket.getsockname()[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, ws):
        try:
            for chunk in chunks(self.size):
                ws.send(chunk)
                self.sent += len(chunk)
            for _ in ws:  # until the gateway closes the session
                pass
        except Exception:
            pass
        finally:
            self.ended.set()

    def stop(self):
        self.server.shutdown()


def tree_rss_bytes(pid: int) -> int:
    """The resident memory of ``pid`` and all its descendants: the supervisor and its worker processes."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def stalled(upstream) -> bool:
    """The upstream has sent something and then nothing more for half a second: it is held back, or done."""
    now = upstream.sent
    time.sleep(0.5)
    return upstream.sent == now and now > 0


@contextmanager
def agent_at(upstream, server, wait_for_agent):
    from routing.models import Agent

    agent = Agent.objects.create(
        slug=f"slow-reader-{uuid.uuid4().hex[:8]}", name="big answers", kind="agent", upstream_url=upstream.url,
        timeout_seconds=60,
    )  # fmt: skip
    try:
        wait_for_agent(agent.slug, server)
        yield agent.slug
    finally:
        agent.delete()


def unread_download(server, slug: str, raw: str) -> socket.socket:
    """A connection that asks for the download and will read nothing (a small receive buffer, as an attacker's)."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", server.port))
    conn.sendall(f"GET /agents/{slug}/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {raw}\r\n\r\n".encode())
    return conn


@pytest.fixture(scope="module")
def server(either_server):
    return either_server


@pytest.fixture(scope="module")
def quick_cut(seeded):
    """A Daphne gateway that cuts off a client that takes nothing of its answer for a second."""
    gateway = Gateway(server="daphne", GATEWAY_CLIENT_WRITE_SECONDS="1")
    yield gateway
    gateway.stop()


def test_a_client_that_reads_nothing_does_not_fill_a_workers_memory(server, make_key, wait_for_agent):
    upstream = Download()
    try:
        with agent_at(upstream, server, wait_for_agent) as slug:
            raw, _ = make_key()
            before = tree_rss_bytes(server.proc.pid)
            conn = unread_download(server, slug, raw)
            try:
                wait_for(lambda: stalled(upstream), 60, interval=0.5)
                grown = tree_rss_bytes(server.proc.pid) - before
            finally:
                conn.close()
    finally:
        upstream.stop()
    assert grown < MAX_GROWTH, f"a client reading nothing made the gateway hold {grown / MiB:.0f} MiB"
    assert upstream.sent < ANSWER_BYTES  # held back, not read whole


def test_a_fast_client_gets_a_large_answer_whole(server, make_key, wait_for_agent, audit_of):
    upstream = Download(64 * MiB)
    try:
        with agent_at(upstream, server, wait_for_agent) as slug:
            raw, _ = make_key()
            digest, size = hashlib.sha256(), 0
            with server.client(raw) as client, client.stream("GET", f"/agents/{slug}/download") as answer:
                assert answer.status_code == 200
                for chunk in answer.iter_raw():
                    digest.update(chunk)
                    size += len(chunk)
            record = audit_of(answer)
    finally:
        upstream.stop()
    assert (size, digest.hexdigest()) == (upstream.size, upstream.digest)
    assert (record.status, record.error_type) == (200, "")


def test_a_client_that_takes_nothing_is_cut_off_and_its_request_audited(quick_cut, make_key, wait_for_agent, live_db):
    from audit.models import AuditRecord

    upstream = Download(64 * MiB)
    try:
        with agent_at(upstream, quick_cut, wait_for_agent) as slug:
            raw, key = make_key()
            conn = unread_download(quick_cut, slug, raw)
            try:
                # The client still holds its connection open: only the gateway can end the request.
                record = wait_for(lambda: AuditRecord.objects.filter(api_key_id=key.pk).first(), 30)
                assert record is not None, "the request never ended"
                conn.settimeout(10)
                with pytest.raises(ConnectionResetError):  # aborted: what was buffered for it is dropped
                    while conn.recv(MiB):
                        pass
            finally:
                conn.close()
    finally:
        upstream.stop()
    assert (record.status, record.error_type) == (200, "client_disconnected")
    assert record.agent == slug
    assert upstream.sent < upstream.size


def test_a_websocket_client_that_reads_nothing_holds_the_agent_back_and_is_cut_off(
    quick_cut, make_key, wait_for_agent, audit_for
):
    flood = Flood()
    try:
        with agent_at(flood, quick_cut, wait_for_agent) as slug:
            raw, key = make_key()
            before = tree_rss_bytes(quick_cut.proc.pid)
            url = "ws" + quick_cut.url[len("http") :] + f"/agents/{slug}/ws"
            with connect(url, additional_headers={"Authorization": f"Bearer {raw}"}, max_size=None, open_timeout=10):
                # The client reads nothing; the gateway must end the session, and the agent's with it.
                assert flood.ended.wait(30), "the session was never ended"
                grown = tree_rss_bytes(quick_cut.proc.pid) - before
            # Written once the session has wound down: the key-change listener it was the last to need stops first
            # (up to 5 s against a busy Redis), then the settle.
            [record] = audit_for(key, seconds=30)
    finally:
        flood.stop()
    assert grown < MAX_GROWTH, f"a WebSocket client reading nothing made the gateway hold {grown / MiB:.0f} MiB"
    assert flood.sent < ANSWER_BYTES
    assert (record.status, record.details["closed_by"], record.details["close_code"]) == (101, "client", 1006)
