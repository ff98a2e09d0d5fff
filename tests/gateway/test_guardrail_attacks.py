"""Guardrails after an attack, through a live gateway (the session's Daphne): each test is a finding of the attack,
asserting the behaviour fixed."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.pii import shows_card
from tests.waiting import until

INVOKE = "/v1/agent/invoke"
CHAT = "/v1/chat/completions"
EMAIL = "ada.lovelace@example.com"
AWS = "AKIAIOSFODNN7EXAMPLE"


def in_force(gateway, raw, agent="research"):
    """Wait until the gateway's guardrail table holds the new rule: an input rule blocking EMAIL is asked."""
    with gateway.client(raw) as client:
        until(lambda: client.post(INVOKE, json={"agent": agent, "input": EMAIL}).status_code == 400, "rail in force")


def chat_answer(content=None, **message):
    return {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, **message}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}  # fmt: skip


def test_a_fallbacks_answer_is_checked_as_the_first_agents(gateway, guardrails, make_key, agents, seeded, audit_of):
    first, second = agents(seeded.url), agents(seeded.url)
    primary = agents("http://127.0.0.1:9", fallbacks=[first.slug, second.slug])  # refused: falls back
    raw, key = make_key()
    rail = guardrails(stage="output", detectors=["email"], action="block", clients=[key.client.slug])
    with gateway.client(raw) as client:
        until(lambda: client.post(INVOKE, json={"agent": "research", "input": EMAIL}).status_code == 403, "in force")
        answer = client.post(
            CHAT, json={"model": primary.slug, "messages": [{"role": "user", "content": f"mail {EMAIL}"}]}
        )
    details = audit_of(answer).details
    print(answer.status_code, answer.text[:300], json.dumps(details)[:600])
    assert EMAIL not in answer.text, f"{answer.status_code}: the fallback {second.slug} answered it unchecked"
    assert answer.status_code == 403 and rail.name in answer.text


def test_an_agent_scoped_input_guardrail_applies_when_the_agent_is_a_fallback(
    gateway, guardrails, make_key, agents, seeded
):
    guarded = agents(seeded.url)
    primary = agents("http://127.0.0.1:9", fallbacks=[guarded.slug])
    raw, key = make_key()
    guardrails(detectors=["email"], action="block", agents=[guarded.slug], clients=[key.client.slug])
    in_force(gateway, raw, agent=guarded.slug)
    with gateway.client(raw) as client:
        answer = client.post(INVOKE, json={"agent": primary.slug, "input": f"mail {EMAIL}"})
    print(answer.status_code, answer.headers.get("x-gateway-fallback"), answer.text[:200])
    assert EMAIL not in answer.text, f"the address reached the guarded agent {guarded.slug} through the fallback"


def test_the_audit_output_preview_keeps_no_redacted_secret(gateway, guardrails, make_key, audit_of):
    raw, key = make_key()
    guardrails(stage="output", detectors=["secret"], action="redact", clients=[key.client.slug])
    with gateway.client(raw) as client:
        answer = until(lambda: (r := client.post(INVOKE, json={"agent": "research", "input": f"key {AWS}"}))
                       .status_code == 200 and "[SECRET]" in r.text and r, "in force")  # fmt: skip
    assert AWS not in answer.text
    record = audit_of(answer)
    print("output_preview:", record.output_preview)
    assert AWS not in record.output_preview, "the key the client never saw is in the audit log"


def test_a_blocked_input_leaves_no_secret_in_the_audit_input_preview(gateway, guardrails, make_key, audit_of):
    raw, key = make_key()
    guardrails(detectors=["email", "secret"], action="block", clients=[key.client.slug])
    in_force(gateway, raw)
    with gateway.client(raw) as client:
        answer = client.post(INVOKE, json={"agent": "research", "input": f"key {AWS}"})
    assert answer.status_code == 400
    record = audit_of(answer)
    print("input_preview:", record.input_preview)
    assert AWS not in record.input_preview, "the refused secret is stored in the audit log"


def test_an_event_stream_with_multi_line_data_is_checked(gateway, guardrails, make_key, agents, canned):
    agent = agents(canned.url)
    stream = (b'data: {"choices": [{"delta":\ndata: {"content": "mail ' + EMAIL.encode() + b'"}}]}\n\n'
              b"data: [DONE]\n\n")  # fmt: skip
    canned.set("/events", stream, content_type="text/event-stream")
    raw, key = make_key()
    guardrails(stage="output", detectors=["email"], action="block", clients=[key.client.slug])
    with gateway.client(raw) as client:
        until(lambda: client.post(INVOKE, json={"agent": "research", "input": EMAIL}).status_code == 403, "in force")
        answer = client.get(f"/agents/{agent.slug}/events")
    assert EMAIL not in answer.text, answer.text


def test_anthropic_stream_redaction_keeps_valid_events(gateway, guardrails, make_key):
    raw, key = make_key()
    guardrails(stage="output", detectors=["email", "card"], action="redact", clients=[key.client.slug])
    body = {
        "model": "research",
        "max_tokens": 200,
        "stream": True,
        "messages": [{"role": "user", "content": f"one two {EMAIL} three 4111 1111 1111 1111 four"}],
    }
    with gateway.client(raw) as client:

        def streamed():
            with client.stream("POST", "/v1/messages", json=body) as response:
                text = b"".join(response.iter_raw()).decode()
            return text if "[EMAIL]" in text else None

        text = until(streamed, "in force")
    events = [block for block in text.split("\n\n") if block.strip()]
    deltas = ""
    for block in events:
        data = [line[6:] for line in block.splitlines() if line.startswith("data: ")]
        node = json.loads(data[0])
        if node.get("type") == "content_block_delta":
            deltas += node["delta"].get("text", "")
    print(deltas)
    assert EMAIL not in text and not shows_card(text) and "[CARD]" in deltas
    assert all(block.startswith("event: ") for block in events), "an event lost its event: line"


class DrippingHook:
    """A hook that answers its headers at once, then its body a byte every ``pause`` seconds."""

    def __init__(self, pause=0.4):
        hook = self
        self.calls = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.calls += 1
                self.rfile.read(int(self.headers["content-length"]))
                body = b'{"allow": true}' + b" " * 10
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(pause)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/check"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_the_hook_timeout_bounds_the_whole_call(gateway, guardrails, make_key):
    hook = DrippingHook()
    try:
        raw, key = make_key()
        guardrails(hook_url=hook.url, hook_timeout_ms=1000, action="block", clients=[key.client.slug])
        with gateway.client(raw) as client:
            until(lambda: client.post(INVOKE, json={"agent": "research", "input": "hi"}) and hook.calls, "hook asked")
            started = time.perf_counter()
            answer = client.post(INVOKE, json={"agent": "research", "input": "hello"})
        seconds = time.perf_counter() - started
        print(answer.status_code, f"{seconds:.1f} s")
        assert answer.status_code == 400 and "failed (closed)" in answer.text  # cut off at its 1000 ms, failing closed
        assert seconds < 2.5, f"a 1000 ms hook held the request {seconds:.1f} s (25 bytes, 0.4 s apart)"
    finally:
        hook.server.shutdown()
        hook.server.server_close()
