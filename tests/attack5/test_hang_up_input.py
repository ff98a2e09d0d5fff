"""A client that hangs up is charged the input an honest upstream bills for its prompt, not a quarter of it.

The fourth attack showed a body's estimate (four bytes a token) can be a quarter of the input billed, and the
reservation now covers a token a byte (``input_bound``); but a prompt whose answer is never read, or whose stream
is cut before its final usage, is still charged the estimate. The README: "A prompt sent is a prompt paid for ...
charged its worst case".
"""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from tests.attack.helpers import Answering, chat_answer
from tests.servers import ScriptedUpstream, scripted_upstreams

CHAT = "/v1/chat/completions"
TEXT = "0 " * 29_900  # the fourth attack's dense prompt: " 0" is one token, so 29,900 tokens in 59,800 bytes
BILLED_INPUT = 29_900


def _body(model: str, **extra) -> dict:
    return {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": TEXT}], **extra}


def test_a_client_that_hangs_up_before_the_answer_pays_the_prompt_billed(provider_at, gateway, make_key, audit_of):
    gate = threading.Event()
    with scripted_upstreams(Answering) as make:
        upstream = make(lambda head, body: chat_answer(BILLED_INPUT), gate)
        agent = provider_at(upstream.url, timeout_seconds=20)
        raw, key = make_key()
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {raw}"}, timeout=3) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post(CHAT, json=_body(agent.slug))
        from audit.models import AuditRecord
        from tests.waiting import wait_for

        record = wait_for(lambda: AuditRecord.objects.filter(api_key_id=key.pk).first(), 15)
        gate.set()
    assert upstream.requests, "the prompt never reached the upstream"
    assert record is not None
    charged = record.details.get("unread_attempts_charged") or [{}]
    assert record.input_tokens >= BILLED_INPUT, (
        f"the upstream bills {BILLED_INPUT} input tokens for the prompt it was sent; the client that hung up was "
        f"charged {record.input_tokens} ({charged})"
    )


def _chunk(text: str) -> bytes:
    obj = {"id": "x", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}  # fmt: skip
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_a_stream_cut_before_its_usage_pays_the_prompt_billed(provider_at, gateway, make_key):
    """OpenAI sends a stream's usage in its last chunk: a client that leaves after the first chunk is charged its
    input as estimated from the body, half what this prompt bills."""
    held = threading.Event()
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    first = _chunk("Hello")
    with scripted_upstreams(ScriptedUpstream) as make:
        upstream = make(head, b"%x\r\n" % len(first) + first + b"\r\n", held)
        agent = provider_at(upstream.url, timeout_seconds=20)
        raw, key = make_key()
        with gateway.client(raw) as client:
            with client.stream("POST", CHAT, json=_body(agent.slug, stream=True)) as response:
                assert response.status_code == 200
                next(response.iter_raw())  # the first chunk: then the client leaves
        from audit.models import AuditRecord
        from tests.waiting import wait_for

        record = wait_for(lambda: AuditRecord.objects.filter(api_key_id=key.pk).first(), 15)
        held.set()
    assert record is not None
    assert record.input_tokens >= BILLED_INPUT, (record.input_tokens, record.details)
