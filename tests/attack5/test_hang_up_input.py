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
# (prompt, the input tokens an honest upstream bills for it)
PROMPTS = [
    # The fourth attack's dense prompt: " 0" is one token, so 29,900 tokens in 59,800 bytes.
    pytest.param("0 " * 29_900, 29_900, id="small-numbers"),
    # The sixth attack's: OpenAI's tokenizers never merge a letter with a digit (``\p{L}+`` and ``\p{N}{1,3}`` are
    # separate alternatives of their split pattern), so "a1a1..." is at least a token a character; counted four
    # characters a token it was charged a quarter.
    pytest.param("a1" * 29_000, 58_000, id="letters-and-digits"),
]


def _body(model: str, text: str, **extra) -> dict:
    return {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(("text", "billed"), PROMPTS)
def test_a_client_that_hangs_up_before_the_answer_pays_the_prompt_billed(provider_at, gateway, make_key, text, billed):
    gate = threading.Event()
    with scripted_upstreams(Answering) as make:
        upstream = make(lambda head, body: chat_answer(billed), gate)
        agent = provider_at(upstream.url, timeout_seconds=20)
        raw, key = make_key()
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {raw}"}, timeout=3) as client:
            with pytest.raises(httpx.ReadTimeout):
                client.post(CHAT, json=_body(agent.slug, text))
        from audit.models import AuditRecord
        from tests.waiting import wait_for

        record = wait_for(lambda: AuditRecord.objects.filter(api_key_id=key.pk).first(), 15)
        gate.set()
    assert upstream.requests, "the prompt never reached the upstream"
    assert record is not None
    charged = record.details.get("unread_attempts_charged") or [{}]
    assert record.input_tokens >= billed, (
        f"the upstream bills {billed} input tokens for the prompt it was sent; the client that hung up was "
        f"charged {record.input_tokens} ({charged})"
    )


def _chunk(text: str) -> bytes:
    obj = {"id": "x", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
           "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}  # fmt: skip
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


@pytest.mark.parametrize(("text", "billed"), PROMPTS)
def test_a_stream_cut_before_its_usage_pays_the_prompt_billed(provider_at, gateway, make_key, text, billed):
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
            with client.stream("POST", CHAT, json=_body(agent.slug, text, stream=True)) as response:
                assert response.status_code == 200
                next(response.iter_raw())  # the first chunk: then the client leaves
        from audit.models import AuditRecord
        from tests.waiting import wait_for

        record = wait_for(lambda: AuditRecord.objects.filter(api_key_id=key.pk).first(), 15)
        held.set()
    assert record is not None
    assert record.input_tokens >= billed, (record.input_tokens, record.details)
