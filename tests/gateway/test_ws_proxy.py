"""WebSocket sessions on /agents/<agent>/ws: the handshake's refusals, frames both ways, one audit record each,
and the end of a session whose key no longer lets it in.

Every test runs on Daphne and on uvicorn: they refuse a handshake differently (uvicorn
with the HTTP status and JSON error, Daphne with an error frame and close code 4000 +
status), and Daphne cannot send standard close codes other than 1000 (1001 arrives as 4001).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.servers import Gateway
from tests.waiting import DEADLINE_SECONDS, until, wait_for


@dataclass(frozen=True)
class Server:
    name: str
    url: str

    def ws(self, path: str) -> str:
        return "ws" + self.url[len("http") :] + path

    def standard_code(self, code: int) -> int:
        """A standard close code (1001-1015) as this server's clients receive it."""
        return 4000 + code - 1000 if self.name == "daphne" else code


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def server(request, seeded):
    if request.param == "daphne":
        yield Server("daphne", request.getfixturevalue("gateway").url)
        return
    gateway = Gateway(server="uvicorn")
    yield Server("uvicorn", gateway.url)
    gateway.stop()


@pytest.fixture
def audit_by_id(live_db):
    from audit.models import AuditRecord

    return lambda request_id: wait_for(lambda: AuditRecord.objects.filter(request_id=request_id).first())


def session(server: Server, raw: str | None, agent="research", query="", headers=None, **options):
    headers = {**({"Authorization": f"Bearer {raw}"} if raw else {}), **(headers or {})}
    return connect(server.ws(f"/agents/{agent}/ws{query}"), additional_headers=headers, open_timeout=10, **options)


def refusal(server: Server, raw: str | None, agent="research", query="", headers=None) -> dict:
    """The error a refused handshake carried, after checking it came in the server's way; adds its ``status``."""
    if server.name == "uvicorn":
        with pytest.raises(InvalidStatus) as refused:
            session(server, raw, agent, query, headers)
        response = refused.value.response
        assert response.headers["content-type"] == "application/json"
        error = json.loads(response.body)["error"]
        assert response.headers["x-request-id"] == error["request_id"]
        return {**error, "status": response.status_code, "headers": response.headers}
    with session(server, raw, agent, query, headers) as ws:
        error = json.loads(ws.recv(timeout=10))["error"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    return {**error, "status": closed.value.rcvd.code - 4000, "headers": {}}


def closing_code(ws) -> int:
    """Wait for the gateway to close the session; the code the client received."""
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    return closed.value.rcvd.code


def mock_sessions(mock, marker: str) -> list[dict]:
    """The mock agent's log of the sessions whose query carried ``marker``."""
    return [s for s in httpx.get(f"{mock.url}/__mock__/ws").json() if marker in s["query"]]


# --- the handshake -----------------------------------------------------------


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_session_relays_text_and_binary_frames_both_ways(server, make_key, audit_for, header):
    raw, key = make_key(agents=["research"])
    value = f"Bearer {raw}" if header == "Authorization" else raw
    with session(server, None, headers={header: value, "User-Agent": "ws-test/1"}) as ws:
        opened = time.monotonic()
        ws.send("hello agent")
        assert ws.recv(timeout=10) == "echo: hello agent"
        ws.send(b"\x00\x01\x02")
        assert ws.recv(timeout=10) == b"\x00\x01\x02"
        lasted_ms = (time.monotonic() - opened) * 1000
    record = audit_for(key)[0]
    if server.name == "uvicorn":  # Daphne sends no headers of the application's with its 101
        assert ws.response.headers["x-request-id"] == record.request_id
        assert ws.response.headers["x-ratelimit-limit-requests"] == "1000"
    assert (record.method, record.path, record.status, record.agent) == ("WS", "/agents/research/ws", 101, "research")
    assert record.latency_ms >= lasted_ms  # the session's whole duration, from its handshake to its close
    assert record.details == {
        "protocol": "websocket",
        "frames_in": 2,
        "frames_out": 2,
        "bytes_in": len("hello agent") + 3,
        "bytes_out": len("echo: hello agent") + 3,
        "close_code": 1000,
        "closed_by": "client",
        "handshake_ms": record.details["handshake_ms"],
        "context": {"agent": "research", "minute": record.details["context"]["minute"], "model": "gpt-4o-mini",
                    "tokens": 1},  # the policy stage's, kept for what-if replays
    }  # fmt: skip
    assert 0 < record.details["handshake_ms"] < record.latency_ms
    assert (record.input_preview, record.output_preview) == ("hello agent", "echo: hello agent")
    assert (record.user_agent, record.cost_usd, record.error_type) == ("ws-test/1", 0, "")


def test_the_key_may_come_in_the_query_and_never_reaches_the_agent(server, make_key, audit_for, seeded):
    raw, key = make_key()
    marker = uuid.uuid4().hex
    with session(server, None, query=f"?api_key={raw}&session={marker}", subprotocols=["echo.v1"]) as ws:
        assert ws.subprotocol == "echo.v1"  # negotiated with the agent
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo: hi"
    record = audit_for(key)[0]
    [seen] = mock_sessions(seeded, marker)
    assert seen["query"] == f"session={marker}"
    assert raw not in json.dumps(seen["headers"])
    assert "authorization" not in seen["headers"] and "x-api-key" not in seen["headers"]
    assert (seen["headers"]["x-request-id"], seen["headers"]["x-client-id"]) == (record.request_id, key.client.slug)
    assert raw not in record.path


def test_the_agents_own_credential_goes_upstream(server, make_key, live_db, seeded):
    from routing.models import Agent

    Agent.objects.update_or_create(
        slug="ws-keyed",
        defaults={"name": "ws-keyed", "kind": "agent", "upstream_url": seeded.url, "upstream_api_key": "sk-agent"},
    )
    raw, _ = make_key()
    marker = uuid.uuid4().hex
    until(lambda: _opens(server, raw, "ws-keyed", f"?session={marker}"), "a session to ws-keyed opens")
    [seen] = mock_sessions(seeded, marker)
    assert seen["headers"]["authorization"] == "Bearer sk-agent"


def _opens(server, raw, agent, query) -> bool:
    try:
        with session(server, raw, agent, query) as ws:
            ws.send("x")
            return ws.recv(timeout=10) == "echo: x"
    except (InvalidStatus, ConnectionClosed):
        return False  # the routing table has not seen the agent yet


def test_a_machine_client_from_a_foreign_origin_is_not_refused(server, make_key):
    raw, _ = make_key()
    with session(server, raw, headers={"Origin": "https://elsewhere.example"}) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo: hi"


def test_the_console_feed_still_refuses_a_caller_without_a_console_session(server):
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws("/ws/console/feed/"), open_timeout=10)
    assert refused.value.response.status_code == 403


# --- refusals ----------------------------------------------------------------


def test_it_refuses_a_session_without_a_key(server, audit_by_id):
    error = refusal(server, None)
    assert (error["status"], error["code"], error["type"]) == (401, "missing_api_key", "authentication_error")
    assert "api_key" in error["message"]
    record = audit_by_id(error["request_id"])
    assert (record.method, record.status, record.error_type) == ("WS", 401, "missing_api_key")
    assert record.details["closed_by"] == "gateway"
    assert record.details["close_code"] == (4401 if server.name == "daphne" else None)


def test_it_refuses_an_unknown_key(server, audit_by_id):
    error = refusal(server, None, query="?api_key=agk_not-a-real-key")
    assert (error["status"], error["code"]) == (401, "invalid_api_key")
    assert audit_by_id(error["request_id"]).status == 401


def test_it_refuses_a_key_without_the_agent_in_its_scopes(server, make_key, audit_for):
    raw, key = make_key(agents=["writing"])
    error = refusal(server, raw, agent="research")
    assert (error["status"], error["code"], error["type"]) == (403, "agent_not_allowed", "permission_error")
    [record] = audit_for(key)
    assert (record.status, record.error_type, record.agent) == (403, "agent_not_allowed", "research")


def test_it_refuses_a_revoked_key(server, make_key):
    from django.utils import timezone

    raw, _ = make_key(revoked_at=timezone.now())
    error = refusal(server, raw)
    assert (error["status"], error["code"]) == (403, "key_revoked")


def test_it_refuses_an_unknown_agent_and_an_unknown_path(server, make_key):
    raw, _ = make_key()
    error = refusal(server, raw, agent="no-such-agent")
    assert (error["status"], error["code"]) == (404, "agent_not_found")
    error = refusal(server, raw, agent="research/ws/more")
    assert (error["status"], error["code"]) == (404, "unknown_endpoint")


def test_it_refuses_a_session_of_a_client_whose_hard_budget_is_spent(server, make_key):
    """A session spends no tokens, so it reserves nothing; but a key whose budget is gone gets no session either."""
    raw, _ = make_key(budget=0)
    error = refusal(server, raw)
    assert (error["status"], error["code"]) == (402, "budget_exceeded")


def test_it_refuses_a_session_with_a_provider_agent_it_cannot_meter(server, make_key):
    raw, _ = make_key()
    error = refusal(server, raw, agent="openai")
    assert (error["status"], error["code"]) == (403, "unmetered_pass_through")


def test_it_refuses_a_session_over_the_requests_per_minute_limit(server, make_key, audit_for):
    raw, key = make_key(rpm=1)
    with session(server, raw) as ws:
        ws.send("one")
        assert ws.recv(timeout=10) == "echo: one"
    error = refusal(server, raw)
    assert (error["status"], error["code"], error["type"]) == (429, "rate_limit_requests", "rate_limit_error")
    if server.name == "uvicorn":
        assert int(error["headers"]["retry-after"]) >= 1
    statuses = sorted(record.status for record in audit_for(key, 2))
    assert statuses == [101, 429]


def test_a_session_holds_its_concurrency_slot_until_it_ends(server, make_key, audit_for):
    raw, key = make_key(concurrent=1)
    with session(server, raw) as first:
        first.send("one")
        assert first.recv(timeout=10) == "echo: one"
        error = refusal(server, raw)
        assert (error["status"], error["code"]) == (429, "concurrency_limit")
    audit_for(key, 2)  # the first session's record is written once it has settled and freed its slot
    with session(server, raw) as again:
        again.send("two")
        assert again.recv(timeout=10) == "echo: two"


def test_an_unreachable_agent_refuses_the_session_with_502(server, make_key, audit_for):
    raw, key = make_key()
    error = refusal(server, raw, agent="dead")
    assert (error["status"], error["code"], error["type"]) == (502, "upstream_unreachable", "upstream_error")
    [record] = audit_for(key)
    assert (record.status, record.error_type, record.target) == (502, "upstream_unreachable", "http://127.0.0.1:9")


def test_an_agent_that_refuses_the_handshake_is_a_bad_gateway(server, make_key):
    raw, _ = make_key()
    error = refusal(server, raw, headers={"X-Mock-Status": "500"})
    assert (error["status"], error["code"]) == (502, "upstream_error")
    error = refusal(server, raw, headers={"X-Mock-Status": "403"})
    assert (error["status"], error["code"]) == (403, "upstream_rejected")


def test_an_agent_too_slow_to_answer_the_handshake_is_a_timeout(server, make_key):
    raw, _ = make_key()
    error = refusal(server, raw, agent="slow", headers={"X-Mock-Delay-Ms": "2000"})
    assert (error["status"], error["code"]) == (504, "upstream_timeout")


# --- the session's end -------------------------------------------------------


def test_the_client_closing_closes_the_agent_with_the_same_code(server, make_key, audit_for, seeded):
    raw, key = make_key()
    marker = uuid.uuid4().hex
    with session(server, raw, query=f"?session={marker}") as ws:
        ws.send("hi")
        ws.recv(timeout=10)
        ws.close(4100, "done here")
    assert wait_for(lambda: mock_sessions(seeded, marker)[0]["close_code"]) == 4100
    record = audit_for(key)[0]
    assert (record.details["closed_by"], record.details["close_code"]) == ("client", 4100)
    assert record.details["context"]["minute"] > 0, "the policy stage's context (what-if replays it) was kept"


@pytest.mark.parametrize(("command", "code"), [("bye", 1000), ("close 4321", 4321)])
def test_the_agent_closing_closes_the_client_with_the_same_code(server, make_key, audit_for, command, code):
    raw, key = make_key()
    with session(server, raw) as ws:
        ws.send(command)
        assert closing_code(ws) == code
    record = audit_for(key)[0]
    assert (record.status, record.error_type) == (101, "")
    assert record.details | {"handshake_ms": 0, "context": {}} == {
        "context": {},
        "protocol": "websocket",
        "frames_in": 1,
        "frames_out": 0,
        "bytes_in": len(command),
        "bytes_out": 0,
        "close_code": code,
        "closed_by": "upstream",
        "handshake_ms": 0,
    }


def test_a_standard_close_code_reaches_the_client_as_the_server_can_send_it(server, make_key):
    raw, _ = make_key()
    with session(server, raw) as ws:
        ws.send("close 1001")
        assert closing_code(ws) == server.standard_code(1001)


def test_an_agent_that_drops_the_connection_closes_the_client_as_a_bad_gateway(server, make_key, audit_for):
    raw, key = make_key()
    with session(server, raw) as ws:
        ws.send("drop")
        assert closing_code(ws) == server.standard_code(1014)
    record = audit_for(key)[0]
    assert (record.status, record.error_type) == (101, "upstream_disconnected")
    assert (record.details["closed_by"], record.details["close_code"]) == ("upstream", 1006)


def test_a_frame_over_the_size_limit_ends_the_session(server, make_key, audit_for):
    raw, key = make_key()
    with session(server, raw) as ws:
        ws.send(b"x" * 65_537)  # the tests' gateways take 64 KiB
        assert closing_code(ws) == server.standard_code(1009)
    record = audit_for(key)[0]
    assert (record.status, record.error_type) == (101, "frame_too_large")
    assert record.details["closed_by"] == "gateway"
    assert (record.details["frames_in"], record.details["bytes_in"]) == (0, 0)


# --- the key changes while the session is open ---------------------------------


def closed(ws, seconds: float = 10):
    """Wait for the gateway to close the session; the close frame the client received."""
    with pytest.raises(ConnectionClosed) as closing:
        ws.recv(timeout=seconds)
    return closing.value.rcvd


@contextlib.contextmanager
def open_session(server: Server, raw: str, **options):
    """A session that has relayed one frame each way, so the agent's side is surely up."""
    with session(server, raw, **options) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"
        yield ws


KEY_CHANGES = {
    # name: (the change through the management API, the error code that ends the session)
    "revoked": (lambda api, key: api.post(f"/api/v1/keys/{key.pk}/revoke/"), "key_revoked"),
    "disabled": (lambda api, key: api.patch(f"/api/v1/keys/{key.pk}/", json={"is_active": False}), "key_disabled"),
    "descoped": (
        lambda api, key: api.patch(f"/api/v1/keys/{key.pk}/", json={"allowed_agents": ["writing"]}),
        "agent_not_allowed",
    ),
    "client_disabled": (
        lambda api, key: api.patch(f"/api/v1/clients/{key.client_id}/", json={"is_active": False}),
        "client_disabled",
    ),
}


@pytest.mark.parametrize("change", KEY_CHANGES)
def test_a_session_is_closed_as_soon_as_its_key_no_longer_lets_it_in(server, make_key, audit_for, admin_api, change):
    make_change, code = KEY_CHANGES[change]
    raw, key = make_key(agents=["research", "writing"])
    with open_session(server, raw) as ws:
        response = make_change(admin_api(server), key)
        assert response.status_code == 200, response.text
        # Nothing but the announced change closes a session of a key with no expiry: closing at all is the proof.
        frame = closed(ws, seconds=DEADLINE_SECONDS)
    assert frame.code == server.standard_code(1008)
    if server.name == "uvicorn":  # Daphne drops close reasons
        assert frame.reason == code
    record = audit_for(key)[0]
    assert (record.status, record.error_type) == (101, code)
    assert (record.details["closed_by"], record.details["close_code"]) == ("gateway", 1008)
    assert (record.details["frames_in"], record.details["frames_out"]) == (1, 1)


def test_a_session_is_closed_when_its_key_expires(server, make_key, audit_for):
    from django.utils import timezone

    raw, key = make_key(expires_at=timezone.now() + timedelta(seconds=2))
    with open_session(server, raw) as ws:
        frame = closed(ws)
        closed_at = time.time()
    assert frame.code == server.standard_code(1008)
    # Closed by the expiry's own timer: never before it, and not by something much later.
    assert 0 <= closed_at - key.expires_at.timestamp() < 5
    record = audit_for(key)[0]
    assert (record.error_type, record.details["closed_by"], record.details["close_code"]) == (
        "key_expired", "gateway", 1008,
    )  # fmt: skip


def test_a_change_that_still_lets_the_key_in_and_another_keys_change_leave_the_session_open(
    server, make_key, audit_for, admin_api
):
    raw, key = make_key(agents=["research"])
    other_raw, other = make_key()
    api = admin_api(server)
    with open_session(server, raw) as ws, open_session(server, other_raw) as witness:
        renamed = api.patch(f"/api/v1/keys/{key.pk}/", json={"name": "renamed", "allowed_agents": ["research", "x"]})
        assert renamed.status_code == 200, renamed.text
        assert api.post(f"/api/v1/keys/{other.pk}/revoke/").status_code == 200
        # Changes are handled in the order announced: once the witness is closed, the renaming has been looked at.
        assert closed(witness).code == server.standard_code(1008)
        ws.send("still here")
        assert ws.recv(timeout=10) == "echo: still here"
    record = audit_for(key)[0]
    assert (record.error_type, record.details["closed_by"], record.details["close_code"]) == ("", "client", 1000)


# --- the longest a session may last --------------------------------------------


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def short_sessions(request, seeded):
    gateway = Gateway(server=request.param, GATEWAY_MAX_SESSION_SECONDS="2")
    yield Server(request.param, gateway.url)
    gateway.stop()


def test_a_session_is_closed_once_it_has_lasted_the_longest_a_session_may(short_sessions, make_key, audit_for):
    """A session's concurrency slots are counted only so long: one held open past that must not be left running."""
    raw, key = make_key(concurrent=1)
    with open_session(short_sessions, raw) as ws:
        frame = closed(ws)
    assert frame.code == short_sessions.standard_code(1008)
    if short_sessions.name == "uvicorn":  # Daphne drops close reasons
        assert frame.reason == "session_deadline"
    [record] = audit_for(key)
    assert (record.status, record.error_type) == (101, "session_deadline")
    assert record.details["closed_by"] == "gateway" and record.details["close_code"] == 1008
    assert record.details["session_deadline_seconds"] == 2
    assert record.latency_ms >= 2000  # from its handshake, not before
    with open_session(short_sessions, raw):  # settled: the key's one slot is free again
        pass


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def two_workers(request, seeded):
    if not settings.REDIS_URL:
        pytest.skip("worker processes share key changes through Redis")
    gateway = Gateway(workers=2, server=request.param)
    yield Server(request.param, gateway.url)
    gateway.stop()


def test_every_worker_closes_its_sessions_of_a_revoked_key(two_workers, make_key, audit_for):
    from keys.services import revoke_key

    raw, key = make_key()
    with contextlib.ExitStack() as stack:
        sessions = [stack.enter_context(open_session(two_workers, raw, query=f"?n={n}")) for n in range(6)]
        revoke_key(key)  # announced from this process, like a change made in a Celery worker or a shell
        codes = [closed(ws, seconds=DEADLINE_SECONDS).code for ws in sessions]  # spread over both workers
    assert codes == [two_workers.standard_code(1008)] * 6
    assert {record.error_type for record in audit_for(key, 6)} == {"key_revoked"}
