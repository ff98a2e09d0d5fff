"""A WebSocket client that sends faster than its agent reads must be held back, not buffered in the worker.

The README: "no slow or huge client or upstream can hold a worker or its memory". The agent-to-client direction
was bounded (68a0a33, ef5075c); this is the other one: the relay waits on the agent's socket, and the server must
stop reading the client meanwhile.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time

import pytest
from websockets.sync.client import connect

from tests.gateway.test_slow_readers import MAX_GROWTH, MiB, agent_at, tree_rss_bytes
from tests.servers import Gateway, LoopbackServer

FRAME = 60 * 1024  # under the tests' MAX_BODY_BYTES (64 kB), the largest frame a client may send
FLOOD_BYTES = 160 * MiB


class Sink(LoopbackServer):
    """A WebSocket agent that accepts the handshake and then reads nothing, ever (a small receive buffer)."""

    def __init__(self):
        self.opened = threading.Event()
        super().__init__(timeout=120)

    def handle(self, conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.opened.set()
        while not self.stopped:
            time.sleep(0.2)


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def server(request, seeded):
    """A fresh gateway: a worker that already grew (another test's large body) reuses its heap, hiding growth."""
    gateway = Gateway(server=request.param)
    yield gateway
    gateway.stop()


def test_a_client_flooding_an_agent_that_reads_nothing_does_not_fill_a_workers_memory(server, make_key, wait_for_agent):
    sink = Sink()
    sent = [0]
    try:
        with agent_at(sink, server, wait_for_agent) as slug:
            raw, _ = make_key()
            before = tree_rss_bytes(server.proc.pid)
            url = "ws" + server.url[len("http") :] + f"/agents/{slug}/ws"
            ws = connect(url, additional_headers={"Authorization": f"Bearer {raw}"}, open_timeout=10, compression=None)

            def flood():
                frame = b"x" * FRAME
                try:
                    while sent[0] < FLOOD_BYTES:
                        ws.send(frame)
                        sent[0] += FRAME
                except Exception:
                    pass

            sender = threading.Thread(target=flood, daemon=True)
            sender.start()
            sender.join(20)  # held back, the sender stalls after a few MiB of socket buffers; buffered, it is done
            grown = tree_rss_bytes(server.proc.pid) - before
            ws.close_socket() if hasattr(ws, "close_socket") else ws.socket.close()
    finally:
        sink.stop()
    assert grown < MAX_GROWTH, (
        f"a client sent {sent[0] / MiB:.0f} MiB to an agent that read nothing; the gateway grew {grown / MiB:.0f} MiB"
    )
