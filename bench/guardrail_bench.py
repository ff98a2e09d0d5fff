#!/usr/bin/env python3
"""The guardrail stage's cost: the built-in input guardrails on a 2 KB prompt, and a streamed answer through the
output guard against none.

    .venv/bin/python bench/guardrail_bench.py [--requests 2000] [--answers 200]

Runs in this process what the hot path runs (``routing.guarding``), with one guardrail of
every built-in detector (email, phone, card, IBAN, the four national IDs, secrets, and the
prompt-injection score):

- **input, clean**: a 2 KB chat request with nothing to find: the strings of its body read,
  every detector and the injection cues run over them;
- **input, redact**: the same with an e-mail address, a card number and a key in it, redacted;
- **stream**: a 2 KB answer streamed as OpenAI events of one word (about 5 characters), through
  the output guard (redacting) against straight through: CPU per event, and how far the first
  event is held back (characters sent before the client gets its first byte: its TTFB in
  text; the live TTFB on both servers is ``bench/stream_bench.py --guardrails``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django

django.setup()

from keys.guardrails import DETECTORS, NATIONAL_ID_CHOICES, detector_for  # noqa: E402
from routing import guarding  # noqa: E402
from routing.guarding import OutputGuard, Rule  # noqa: E402

WORDS = ("the quarterly report shows revenue growth across every region while costs stayed flat and the team "
         "plans to expand the support desk in the spring ").split()  # fmt: skip


def text_of(size: int, extra: str = "") -> str:
    words, out = iter(WORDS * 100), []
    while sum(len(w) + 1 for w in out) < size - len(extra):
        out.append(next(words))
    return " ".join(out) + extra


def rule(stage: str, action: str) -> Rule:
    matching = tuple(name for name in DETECTORS if name != "injection")
    return Rule(f"all {stage}", frozenset({stage}), detector_for(matching, NATIONAL_ID_CHOICES), True, 50, action,
                frozenset(), frozenset(), frozenset(), "", 1.0, False)  # fmt: skip


class Ex:
    def __init__(self, body: bytes):
        self.body, self.details, self.request_id, self.dialect = body, {}, "bench", "openai"
        self.input_text, self.output_text, self.output_guard, self.error_type = "", "", None, ""


async def input_cost(payload: dict, requests: int) -> float:
    """µs per request of ``guard_input`` with the input guardrail."""
    rules = (rule("input", "redact"),)

    async def table():
        return rules

    guarding.guardrail_table.get = table
    body = json.dumps(payload).encode()
    for _ in range(50):
        await guarding.guard_input(Ex(body), None, "research", payload)
    started = time.perf_counter()
    for _ in range(requests):
        await guarding.guard_input(Ex(body), None, "research", payload)
    return (time.perf_counter() - started) / requests * 1e6


def events_of(answer: str) -> list[bytes]:
    words = answer.split(" ")
    return [b"data: " + json.dumps({"choices": [{"delta": {"content": (" " if i else "") + w}}]}).encode() + b"\n\n"
            for i, w in enumerate(words)]  # fmt: skip


def stream_cost(answer: str, answers: int, guarded: bool) -> tuple[float, int, int]:
    """µs per event, characters held before the first byte goes out, events."""
    events = events_of(answer)
    held_first = 0
    started = time.perf_counter()
    for n in range(answers):
        guard = OutputGuard(Ex(b""), [rule("output", "redact")]) if guarded else None
        if guard is not None:
            guard.started([(b"content-type", b"text/event-stream")])
        sent_chars, first = 0, None
        for event in events:
            out = guard.feed(event, final=False) if guard is not None else event
            sent_chars += len(json.loads(event[6:])["choices"][0]["delta"]["content"])
            if out and first is None:
                first = sent_chars
        if guard is not None:
            guard.feed(b"data: [DONE]\n\n", final=True)
        if n == 0:
            held_first = first or 0
    elapsed = time.perf_counter() - started
    return elapsed / (answers * len(events)) * 1e6, held_first, len(events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--answers", type=int, default=200)
    args = parser.parse_args()
    clean = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are a helpful analyst."},
                                                   {"role": "user", "content": text_of(2048)}]}  # fmt: skip
    pii = " Mail ada@example.com, card 4111 1111 1111 1111, key AKIAIOSFODNN7EXAMPLE."
    dirty = {**clean, "messages": [clean["messages"][0], {"role": "user", "content": text_of(2048, pii)}]}
    print(f"prompt: {len(json.dumps(clean))} bytes of JSON; detectors: {', '.join(DETECTORS)}")
    print(f"input, clean:  {asyncio.run(input_cost(clean, args.requests)):8.1f} µs a request")
    print(f"input, redact: {asyncio.run(input_cost(dirty, args.requests)):8.1f} µs a request")
    answer = text_of(2048, " Reach me at ada@example.com or 4111 1111 1111 1111 today.")
    off, _, events = stream_cost(answer, args.answers, guarded=False)
    on, held, _ = stream_cost(answer, args.answers, guarded=True)
    print(f"stream of {events} events: {off:.2f} µs an event without, {on:.2f} µs with output guardrails "
          f"(+{on - off:.1f} µs); the first byte goes out after {held} characters of the answer")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
