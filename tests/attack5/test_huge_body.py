"""A body past ``GATEWAY_MAX_BODY_BYTES`` must never be held by a worker, and an unauthenticated one never read.

``Exchange.read_body``: "an unauthenticated request is refused without its body ever being read; a declared
``Content-Length`` over the limit is refused without reading a byte". Under Daphne, Twisted read the whole body
(to a temporary file) before the application ran, and Daphne then queued all of it for the application at once
(``daphne_protocol.BoundedHTTPChannel`` now ends such a body early).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.gateway.test_slow_readers import MAX_GROWTH, MiB, tree_rss_bytes
from tests.servers import Gateway

BODY_BYTES = 200 * MiB


@pytest.fixture(
    scope="module",
    params=["daphne", "uvicorn"],
)
def server(request, seeded):
    """A fresh gateway: a worker that already grew (another test's large body) reuses its heap, hiding growth."""
    gateway = Gateway(server=request.param)
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_unauthenticated_huge_body_is_never_taken_into_a_worker(server, chunked):
    before = tree_rss_bytes(server.proc.pid)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_bytes(server.proc.pid) - before)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    sent = 0
    conn = socket.create_connection(("127.0.0.1", server.port))
    conn.settimeout(10)
    try:
        length = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % BODY_BYTES
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n\r\n" % length
        )
        block = b"%x\r\n%s\r\n" % (MiB, b" " * MiB) if chunked else b" " * MiB
        while sent < BODY_BYTES:
            conn.sendall(block)
            sent += len(block)
    except OSError:
        pass  # refused and closed: as promised
    finally:
        time.sleep(1.0)
        done.set()
        sampler.join()
        conn.close()
    assert peak[0] < MAX_GROWTH, (
        f"an unauthenticated client sent {sent / MiB:.0f} MiB of a body the gateway refuses; the gateway grew "
        f"{peak[0] / MiB:.0f} MiB"
    )
