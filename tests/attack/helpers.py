"""Upstreams for the attack probes: each reads a whole request, then answers as a function of it."""

from __future__ import annotations

import json
import socket
import threading

from tests.servers import LoopbackServer, json_answer


def read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """The head and the whole body (Content-Length or chunked) of one request on ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            rest += chunk
        body, data = b"", rest
        while True:
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line, 16)
            if not size:
                break
            body, data = body + data[:size], data[size + 2 :]
        return head, body
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head, rest


class Answering(LoopbackServer):
    """Reads each request whole (``requests``: head and body), waits for ``gate`` when given, answers
    ``answer(head, body)``; counts requests in flight (``max_in_flight``)."""

    def __init__(self, answer, gate: threading.Event | None = None):
        self.answer = answer
        self.gate = gate
        self.requests: list[tuple[bytes, bytes]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        super().__init__(timeout=30)

    def handle(self, conn):
        head, body = read_request(conn)
        with self.lock:
            self.requests.append((head, body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                self.gate.wait(30)
            conn.sendall(self.answer(head, body))
        finally:
            with self.lock:
                self.in_flight -= 1


def chat_answer(prompt_tokens: int, completion_tokens: int = 1, model: str = "gpt-4o-mini") -> bytes:
    return json_answer(
        {
            "id": "x",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def anthropic_answer(usage: dict, model: str = "claude-sonnet") -> bytes:
    return json_answer(
        {
            "id": "msg_x",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "usage": usage,
        }
    )


def body_json(body: bytes):
    return json.loads(body)
