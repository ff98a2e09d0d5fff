"""Under Daphne a body that does not arrive in time is answered by the channel, before the application runs.

The 413 from a request's head was withdrawn (f32d947) because it "answered before the key was checked, in the
OpenAI shape on /v1/messages, and with no audit record". The 408 ``request_body_timeout`` of
``daphne_protocol.BoundedHTTPChannel`` (its body deadline starts when the head has arrived, before any key is read)
has the same three faults; under uvicorn the same 408 comes from the application (``Exchange.ensure_size``), after
the key, in the API's shape, and audited. Probes for both servers: uvicorn is the control.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.servers import Gateway, read_answer
from tests.waiting import wait_for


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def impatient(request, seeded):
    server = Gateway(server=request.param, GATEWAY_BODY_READ_SECONDS="1")
    yield server
    server.stop()


def _slow_post(server, path: str, key: str, extra: str = "") -> tuple[bytes, dict]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n{extra}"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as conn:
        conn.sendall(head + b'{"model"')  # and nothing more
        answer = read_answer(conn)
    status_line, _, rest = answer.partition(b"\r\n")
    return status_line, json.loads(rest.partition(b"\r\n\r\n")[2] or b"{}")


def test_a_request_whose_body_is_too_slow_has_its_audit_record(impatient, make_key):
    from audit.models import AuditRecord

    raw, key = make_key()
    status_line, body = _slow_post(impatient, "/v1/chat/completions", raw)
    assert status_line.startswith(b"HTTP/1.1 408"), (status_line, body)
    record = wait_for(lambda: AuditRecord.objects.filter(api_key_id=key.pk).first(), 5)
    assert record is not None, "an authenticated request refused 408 left no audit record (one a request)"


def test_an_unknown_key_is_refused_401_before_its_slow_body_is_waited_for(impatient):
    status_line, body = _slow_post(impatient, "/v1/chat/completions", "agk_not_a_key_at_all")
    assert status_line.startswith(b"HTTP/1.1 401"), (status_line, body)


def test_a_too_slow_body_on_the_messages_api_is_refused_in_anthropics_shape(impatient, make_key):
    raw, _ = make_key()
    status_line, body = _slow_post(impatient, "/v1/messages", raw)
    assert status_line.startswith(b"HTTP/1.1 408"), (status_line, body)
    assert body.get("type") == "error" and isinstance(body.get("error"), dict), body  # Anthropic's SDK reads this


def test_a_too_slow_body_to_the_console_is_refused_in_time(impatient):
    """The console's and the API's bodies are Django's: the server bounds them (no key to check first)."""
    head = (
        b"POST /console/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 1000\r\n\r\nusername=a"
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=15) as conn:
        conn.sendall(head)
        answer = read_answer(conn)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert time.monotonic() - started < 5
