"""Guardrails on the text frames of WebSocket sessions, under both servers: a client's frame redacted before the agent
sees it or blocked (the session closed with 1008), an agent's frame redacted or withheld, JSON frames kept JSON, a
session no guardrail applies to left alone, and the session's decisions added up in one audit record.

The mock agent echoes a text frame as ``echo: <text>`` (``say <text>`` as ``<text>`` alone) and logs the text frames it
received, so a test sees what the agent got. Guardrails are read when a session opens: a test waits for its guardrail
with sessions of another key of the guardrail's, so the key under test has exactly one session.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from keys.guardrails import detector_for
from routing.guarding import Rule
from routing.ws_guard import FrameBlocked, FrameGuard
from tests.waiting import until, wait_for

EMAIL = "ada.lovelace@example.com"
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def server(either_server):
    return either_server


def session(server, raw: str, query: str = ""):
    url = "ws" + server.url[len("http") :] + f"/agents/research/ws{query}"
    return connect(url, additional_headers={"Authorization": f"Bearer {raw}"}, open_timeout=10)


def reply(server, raw: str, text: str) -> str:
    """The first frame a new session answers ``text`` with (the error frame, when a guardrail blocks it)."""
    with session(server, raw) as ws:
        ws.send(text)
        return ws.recv(timeout=10)


def close_frame(ws):
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    return closed.value.rcvd


def standard_code(server, code: int) -> int:
    """A standard close code as this server's clients receive it (Daphne sends 4000 + code - 1000)."""
    return 4000 + code - 1000 if server.server == "daphne" else code


def agent_log(mock, marker: str) -> dict:
    """The mock agent's log of the one session whose query carried ``marker``."""
    [logged] = [s for s in httpx.get(f"{mock.url}/__mock__/ws").json() if marker in s["query"]]
    return logged


def agent_log_once_closed(mock, marker: str) -> dict:
    """The log of that session once the gateway has closed the agent's connection."""
    return wait_for(lambda: (logged := agent_log(mock, marker))["close_code"] is not None and logged)


def guardrail_error(frame: str, rail, status_type: str) -> dict:
    error = json.loads(frame)["error"]
    assert (error["code"], error["type"]) == ("guardrail_blocked", status_type)
    assert rail.name in error["message"] and "email" in error["message"]
    assert EMAIL not in frame
    return error


def test_a_client_frame_is_redacted_before_the_agent_sees_it_and_the_session_adds_up(
    server, guardrails, make_key, audit_for, seeded
):
    from keys.services import guardrail_activity

    raw, key = make_key()
    waiter_raw, waiter = make_key()
    clients = [key.client.slug, waiter.client.slug]
    flag = guardrails(detectors=["secret"], action="flag", clients=clients)
    redact = guardrails(detectors=["email"], action="redact", clients=clients)
    until(lambda: reply(server, waiter_raw, f"mail {EMAIL}") == "echo: mail [EMAIL]", "the guardrails in force")
    large = "x " * 20_000 + f"last {EMAIL}"  # over 32 K characters: scanned beside the event loop
    marker = "s=" + key.client.slug
    with session(server, raw, f"?{marker}") as ws:
        ws.send(f"mail {EMAIL}")
        assert ws.recv(timeout=10) == "echo: mail [EMAIL]"
        ws.send('{"plain":   "json, untouched"}')
        assert ws.recv(timeout=10) == 'echo: {"plain":   "json, untouched"}'  # nothing found: not rewritten
        ws.send(f"keys {AWS_KEY} and {AWS_KEY}, mail {EMAIL} or {EMAIL}")
        assert ws.recv(timeout=10) == f"echo: keys {AWS_KEY} and {AWS_KEY}, mail [EMAIL] or [EMAIL]"  # flagged
        ws.send(EMAIL.encode())
        assert ws.recv(timeout=10) == EMAIL.encode()  # binary frames are not read
        ws.send(large)
        assert ws.recv(timeout=10) == "echo: " + large.replace(EMAIL, "[EMAIL]")
    received = agent_log(seeded, marker)["received"]
    assert received[:3] == ["mail [EMAIL]", '{"plain":   "json, untouched"}',
                            f"keys {AWS_KEY} and {AWS_KEY}, mail [EMAIL] or [EMAIL]"]  # fmt: skip
    assert EMAIL not in json.dumps(received)
    [record] = audit_for(key)
    assert (record.status, record.error_type) == (101, "")
    assert record.details["guardrails"] == [
        {"guardrail": redact.name, "stage": "input", "action": "redact", "frames": 3, "found": {"email": 4}},
        {"guardrail": flag.name, "stage": "input", "action": "flag", "frames": 1, "found": {"aws_access_key": 2}},
    ]  # one entry per guardrail and action, however many frames: added up
    assert (record.details["frames_in"], record.details["frames_out"]) == (5, 5)
    assert EMAIL not in record.input_preview and EMAIL not in json.dumps(record.details)
    # The Guardrails page counts the session once per entry, like a request: the waiter's session and this one.
    until(lambda: guardrail_activity().get(redact.name, {}).get("redact") == 2, "both sessions counted")
    assert guardrail_activity()[flag.name] == {"block": 0, "redact": 0, "flag": 1}


def test_a_blocked_client_frame_closes_the_session_and_never_reaches_the_agent(
    server, guardrails, make_key, audit_for, seeded
):
    raw, key = make_key()
    waiter_raw, waiter = make_key()
    rail = guardrails(detectors=["email"], action="block", clients=[key.client.slug, waiter.client.slug])
    until(lambda: "guardrail_blocked" in reply(server, waiter_raw, EMAIL), "the guardrail in force")
    marker = "s=" + key.client.slug
    with session(server, raw, f"?{marker}") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"
        ws.send(f"mail {EMAIL}")
        error = guardrail_error(ws.recv(timeout=10), rail, "invalid_request_error")  # the client is told why
        closing = close_frame(ws)
    assert closing.code == standard_code(server, 1008)
    if server.server == "uvicorn":  # Daphne drops close reasons
        assert closing.reason == "guardrail_blocked"
    logged = agent_log_once_closed(seeded, marker)
    assert logged["received"] == ["hello"] and logged["close_code"] == 1001  # the agent's connection closed too
    [record] = audit_for(key)
    assert record.request_id == error["request_id"]
    assert (record.status, record.error_type) == (101, "guardrail_blocked")
    assert (record.details["closed_by"], record.details["close_code"]) == ("gateway", 1008)
    assert (record.details["frames_in"], record.details["frames_out"]) == (1, 1)  # the blocked frame was not relayed
    assert record.details["guardrails"] == [
        {"guardrail": rail.name, "stage": "input", "action": "block", "frames": 1, "found": {"email": 1}}
    ]
    assert record.input_preview == "hello"


def test_an_agents_frame_is_redacted_then_withheld_by_an_output_guardrail(
    server, guardrails, make_key, audit_for, seeded
):
    raw, key = make_key()
    waiter_raw, waiter = make_key()
    rail = guardrails(stage="output", detectors=["email"], action="redact",
                      clients=[key.client.slug, waiter.client.slug])  # fmt: skip
    until(lambda: reply(server, waiter_raw, f"say {EMAIL}") == "[EMAIL]", "the guardrail in force")
    answer = {"type": "message", "id": "m-1", "content": [{"text": f"write to {EMAIL}, café"}], "n": 3}
    marker = "s=" + key.client.slug
    with session(server, raw, f"?{marker}") as ws:
        ws.send(f"say mail {EMAIL}")
        assert ws.recv(timeout=10) == "mail [EMAIL]"
        ws.send("say " + json.dumps(answer))
        redacted = json.loads(ws.recv(timeout=10))  # still JSON
        assert redacted == {**answer, "content": [{"text": "write to [EMAIL], café"}]}
    assert EMAIL in agent_log(seeded, marker)["received"][0]  # input was not guarded: the agent got it
    [record] = audit_for(key)
    assert record.details["guardrails"] == [
        {"guardrail": rail.name, "stage": "output", "action": "redact", "frames": 2, "found": {"email": 2}}
    ]
    assert EMAIL not in record.output_preview

    rail.action = "block"
    rail.save()
    until(lambda: "guardrail_blocked" in reply(server, waiter_raw, f"say {EMAIL}"), "blocking in force")
    marker = "t=" + key.client.slug
    with session(server, raw, f"?{marker}") as ws:
        ws.send("say hi")
        assert ws.recv(timeout=10) == "hi"
        ws.send(f"say {EMAIL}")
        guardrail_error(ws.recv(timeout=10), rail, "permission_error")
        assert close_frame(ws).code == standard_code(server, 1008)
    assert agent_log_once_closed(seeded, marker)["close_code"] == 1001  # the agent's connection closed too
    blocked = audit_for(key, 2)[1]
    assert (blocked.error_type, blocked.details["closed_by"], blocked.details["frames_out"]) == (
        "guardrail_blocked", "gateway", 1,
    )  # fmt: skip
    assert blocked.details["guardrails"] == [
        {"guardrail": rail.name, "stage": "output", "action": "block", "frames": 1, "found": {"email": 1}}
    ]


def test_a_json_frame_stays_json_with_only_its_text_redacted(server, guardrails, make_key):
    raw, key = make_key()
    guardrails(detectors=["email", "card"], action="redact", clients=[key.client.slug])
    message = {"role": "user", "content": f"card {CARD}, mail {EMAIL} ✓"}
    frame = {"type": "chat", "model": "m", "id": EMAIL, "messages": [message], "n": 1.5, "ok": True}  # ids read too

    def sent() -> dict | None:
        echoed = reply(server, raw, json.dumps(frame))
        return json.loads(echoed.removeprefix("echo: ")) if "[EMAIL]" in echoed else None

    got = until(sent, "the guardrail in force")
    assert got == {**frame, "id": "[EMAIL]", "messages": [{"role": "user", "content": "card [CARD], mail [EMAIL] ✓"}]}


def test_a_session_no_guardrail_applies_to_is_left_alone(server, guardrails, make_key, audit_for):
    raw, key = make_key()
    other_raw, other = make_key()
    guardrails(detectors=["email"], action="block", clients=[other.client.slug])
    guardrails(detectors=["email"], action="block", agents=["writing"], clients=[key.client.slug])
    until(lambda: "guardrail_blocked" in reply(server, other_raw, EMAIL), "the guardrails in force")
    odd = f'{{"mail":   "{EMAIL}"}}'
    with session(server, raw) as ws:  # research, not writing
        for text in (EMAIL, odd):
            ws.send(text)
            assert ws.recv(timeout=10) == f"echo: {text}"  # byte for byte
    [record] = audit_for(key)
    assert "guardrails" not in record.details and record.error_type == ""


# --- the guard alone ------------------------------------------------------------------------------------------------


def rule(name: str, action: str, detectors: tuple[str, ...]) -> Rule:
    none = frozenset()
    return Rule(name, frozenset({"input", "output"}), detector_for(detectors, ()), False, 50, action, none, none, none,
                "", 1.0, False)  # fmt: skip


WORDS = ["hello", "café", EMAIL, "bob@mail.org", AWS_KEY, "[EMAIL]"]
FINDS = {EMAIL: "email", "bob@mail.org": "email", AWS_KEY: "secret"}
texts = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
keys = st.sampled_from(["content", "text", "x", "id", "type", "model", "role"])
values = st.recursive(
    texts | st.integers() | st.booleans() | st.none(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


def planted(node, key: str = "") -> list[str]:
    """The words a guard must find in ``node``: those of every string (identifiers too)."""
    if isinstance(node, str):
        return [w for w in node.split(" ") if w in FINDS]
    if isinstance(node, dict):
        return [w for k, v in node.items() for w in planted(v, k)]
    if isinstance(node, list):
        return [w for item in node for w in planted(item, key)]
    return []


def without_findings(node, key: str = ""):
    if isinstance(node, str):
        return " ".join("[EMAIL]" if FINDS.get(w) == "email" else w for w in node.split(" "))
    if isinstance(node, dict):
        return {k: without_findings(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [without_findings(item, key) for item in node]
    return node


@given(st.lists(st.lists(values, min_size=1, max_size=3) | texts, min_size=1, max_size=6))
def test_frames_are_redacted_in_their_json_and_the_decisions_add_up(frames):
    """Any frames, JSON or text: each passes as JSON with exactly its e-mail addresses replaced (ids and types too),
    untouched when nothing is found, and the session's entries sum what each frame found, one per guardrail."""
    guard = FrameGuard([rule("mail", "redact", ("email",)), rule("keys", "flag", ("secret",))], [])
    emails = secrets = frames_mailed = frames_keyed = 0
    for frame in frames:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        passed = asyncio.run(guard.inbound(text))
        words = planted(frame)
        mailed, keyed = [w for w in words if FINDS[w] == "email"], [w for w in words if FINDS[w] == "secret"]
        emails, secrets = emails + len(mailed), secrets + len(keyed)
        frames_mailed, frames_keyed = frames_mailed + bool(mailed), frames_keyed + bool(keyed)
        if not mailed:
            assert passed is text
        elif isinstance(frame, str):
            assert passed == without_findings(frame)
        else:
            assert json.loads(passed) == without_findings(frame)
    expected = []
    if emails:
        expected.append({"guardrail": "mail", "stage": "input", "action": "redact", "frames": frames_mailed,
                         "found": {"email": emails}})  # fmt: skip
    if secrets:
        expected.append({"guardrail": "keys", "stage": "input", "action": "flag", "frames": frames_keyed,
                         "found": {"aws_access_key": secrets}})  # fmt: skip
    assert sorted(guard.entries, key=lambda e: e["guardrail"]) == sorted(expected, key=lambda e: e["guardrail"])


def test_a_block_raises_with_the_error_and_is_counted_once_per_frame():
    guard = FrameGuard([], [rule("out", "block", ("email",))], "req-1")
    for _ in range(2):
        with pytest.raises(FrameBlocked) as refused:
            asyncio.run(guard.outbound(f"to {EMAIL} and {EMAIL}"))
        assert EMAIL not in refused.value.notice and "'out'" in refused.value.notice
    assert asyncio.run(guard.inbound(EMAIL)) == EMAIL  # no input guardrail
    assert guard.entries == [{"guardrail": "out", "stage": "output", "action": "block", "frames": 2,
                              "found": {"email": 4}}]  # fmt: skip
