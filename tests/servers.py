"""Real servers for the tests: the mock upstream and gateways, as subprocesses on loopback."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection

from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_answer(conn: socket.socket) -> bytes:
    """One whole HTTP/1.1 answer from a raw socket: its head, then as much body as Content-Length says, or all
    until the server closes. A single recv may return the head alone, the body following in a later segment."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    while length is None or len(body) < int(length.group(1)):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {seconds} s")


def stop(proc: subprocess.Popen, sig=signal.SIGTERM, seconds: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def server_env(**extra) -> dict[str, str]:
    """The environment a gateway needs to share the test database and Redis with the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["SQLITE_PATH"] = str(db["NAME"])
    else:
        env["DATABASE_URL"] = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        GATEWAY_CONFIG_REFRESH_SECONDS="0.2",
        GATEWAY_FLUSH_SECONDS="0.05",
        GATEWAY_MAX_BODY_BYTES="65536",
        GATEWAY_LOG_LEVEL="WARNING",
        # Every test calls from 127.0.0.1, and under Redis every server and the tests share one count: tests of the
        # failed-authentication limit and of the sign-in throttle set their own.
        GATEWAY_AUTH_FAILURES_PER_MINUTE="100000",
        GATEWAY_LOGIN_RATE="100000/m",
        GATEWAY_LOGIN_USERNAME_RATE="100000/h",
        # Identity providers' tests rotate keys: a token with a new key id fetches the key set again at once.
        GATEWAY_JWKS_MIN_REFETCH_SECONDS="0.2",
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Gateway:
    """A running ``manage.py rungateway`` with its base URL."""

    def __init__(self, workers: int = 1, server: str = "daphne", **env):
        self.port = free_port()
        self.server = server
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(settings.VAR_DIR) / f"gateway-{self.port}.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "rungateway",
                "--port",
                str(self.port),
                "--workers",
                str(workers),
                "--server",
                server,
            ],
            cwd=ROOT,
            env=server_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.proc)
        # The supervisor listens before its workers run (a connection waits in a worker's queue until it accepts):
        # ready once a worker answers, on a path that is neither the proxy's nor an attempt to authenticate.
        until(self._answers, f"the gateway on port {self.port} answers")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the gateway on port {self.port} exited with {self.proc.returncode}")
        try:
            httpx.get(f"{self.url}/__ready__", timeout=30)
        except httpx.HTTPError:
            return False
        return True

    def client(self, key: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def stop(self, sig=signal.SIGTERM) -> int:
        code = stop(self.proc, sig, seconds=40)  # past the supervisor's own 30 s, so it reaps its workers first
        self.log.close()
        return code


class MockUpstream:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "routing.mock_upstream", "--port", str(self.port)], cwd=ROOT
        )
        wait_for_port(self.port, self.proc)

    def configure(self, **config) -> None:
        httpx.post(f"{self.url}/__mock__/config", json=config).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/__mock__/stats").raise_for_status().json()

    def held(self, name: str) -> int:
        """How many requests the hold ``name`` keeps waiting now (they have reached the upstream)."""
        return self.stats()["held"].get(name, 0)

    def release(self, name: str) -> None:
        httpx.post(f"{self.url}/__mock__/release", json={"hold": name}).raise_for_status()

    @contextmanager
    def hold(self) -> Iterator[str]:
        """A fresh hold name: requests sent with it (``X-Mock-Hold``, ``mock.hold``) wait until the block ends
        or ``release`` is called, so a test holds a slot for exactly as long as it needs to."""
        name = f"hold-{uuid.uuid4().hex[:12]}"
        try:
            yield name
        finally:
            self.release(name)

    def script(self, *faults: dict, always: dict | None = None) -> None:
        """Script the next requests' faults (``routing.mock_upstream``); no arguments: none."""
        httpx.post(f"{self.url}/__mock__/faults", json={"faults": faults, "always": always or {}}).raise_for_status()

    @contextmanager
    def holding_streams(self) -> Iterator[str]:
        """Every streamed answer pauses after its first chunk until the block ends or its hold is released: for
        calls the gateway builds itself, which carry no ``mock`` field or ``X-Mock-*`` header."""
        with self.hold() as name:
            self.script(always={"hold_stream": name})
            try:
                yield name
            finally:
                self.script()

    def stop(self) -> None:
        stop(self.proc)


class LoopbackServer:
    """A raw TCP server on 127.0.0.1 for upstreams that misbehave in ways no HTTP framework would: each connection
    is handed to ``handle`` on a thread of its own (a socket error there just ends it) until ``stop``."""

    def __init__(self, timeout: float = 5):
        self.timeout = timeout
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.timeout)
            try:
                self.handle(conn)
            except OSError:
                pass

    def stop(self):
        self.stopped = True
        self.sock.close()


class ScriptedUpstream(LoopbackServer):
    """Reads a request (kept in ``bodies``; ``arrived`` is set), then plays ``script``: bytes are sent, a
    ``threading.Event`` is waited for (at most 30 s), a float is a pause. It stops at the first write the client's
    side refuses."""

    def __init__(self, *script):
        self.script = script
        self.bodies: list[bytes] = []
        self.arrived = threading.Event()
        super().__init__(timeout=30)

    def handle(self, conn):
        self.bodies.append(conn.recv(65536))
        self.arrived.set()
        for step in self.script:
            if isinstance(step, threading.Event):
                step.wait(30)
            elif isinstance(step, float):
                time.sleep(step)
            else:
                conn.sendall(step)


@contextmanager
def scripted_upstreams(kind=ScriptedUpstream) -> Iterator:
    """``make(*script)`` for a test's scripted upstreams, all stopped after it."""
    made = []

    def make(*script):
        server = kind(*script)
        made.append(server)
        return server

    try:
        yield make
    finally:
        for server in made:
            server.stop()


def json_answer(obj, status: bytes = b"200 OK") -> bytes:
    """A whole HTTP/1.1 answer of ``obj`` as JSON, for a scripted upstream to send."""
    body = json.dumps(obj).encode()
    head = f"HTTP/1.1 {status.decode()}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body
