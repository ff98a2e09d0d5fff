"""Coverage-guided fuzzing (atheris) of every parser a client or an upstream can feed.

    .venv/bin/python tests/fuzz/fuzz_parsers.py -max_total_time=60

Each input is split by its first byte into one of the entry points below. A parser
may answer or refuse with ``GatewayError``; anything else (a KeyError, a
RecursionError, a TypeError) is a finding and stops the run with the input saved.
``tests/fuzz/test_fuzz.py`` runs this for a bounded time in the test suite.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import atheris
import django

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
django.setup()

with atheris.instrument_imports(include=["routing", "gateway_project"]):
    from gateway_project.errors import GatewayError
    from routing import anthropic_shape, auto_route, protocols
    from routing.adapters import ADAPTERS
    from routing.exchange import client_address, parse_json
    from routing.sse import (
        AnthropicStreamScanner,
        AnthropicToOpenAIStream,
        OpenAIStreamScanner,
        OpenAIToAnthropicStream,
    )
    from routing.table import AgentRoute
    from routing.upstream_url import upstream_url

ROUTES = {
    kind: AgentRoute(slug="a", name="a", kind=kind, base_url="http://up:9/base", upstream_api_key="", served_models=(),
                     default_model="", capabilities=(), timeout=1.0, cost_center="")
    for kind in ("agent", "openai", "anthropic")
}  # fmt: skip


def _json_entry(data: bytes, handle) -> None:
    try:
        payload = parse_json(data)
    except GatewayError:
        return
    handle(payload)


def _chat(payload) -> None:
    protocols.validate_chat(payload)
    protocols.chat_to_anthropic(payload)
    auto_route.signals_of(payload, protocols.last_user_text(payload["messages"]), 1)  # what auto-routing reads


def _messages(payload) -> None:
    anthropic_shape.validate_messages(payload)
    anthropic_shape.ensure_translatable(payload, "m")
    anthropic_shape.messages_to_chat(payload, "m")
    auto_route.signals_of(payload, protocols.last_user_text(payload["messages"]), 1)


def _invoke(payload) -> None:
    protocols.validate_invoke(payload)


def _answers(payload) -> None:
    protocols.usage_from_json(payload)
    if isinstance(payload, dict):
        protocols.chat_text(payload)
        protocols.agent_text(payload)
        protocols.anthropic_text(payload)
        anthropic_shape.chat_to_message(payload, "m", "r")
        protocols.anthropic_to_chat(payload, "m", "r")


def _streams(data: bytes) -> None:
    half = len(data) // 2
    for scanner in (OpenAIStreamScanner(True), AnthropicStreamScanner("m"), AnthropicToOpenAIStream("r", "m", True),
                    OpenAIToAnthropicStream("r", "m")):  # fmt: skip
        scanner.feed(data[:half])
        scanner.feed(data[half:])
        scanner.finish()


def _url(data: bytes) -> None:
    path, _, query = data.partition(b"?")
    upstream_url("http://up:9/base", path, query)


def _address(data: bytes) -> None:
    client_address("10.0.0.1", data.split(b"\n"), data[0] % 4 if data else 1)


def _plan(data: bytes) -> None:
    kind = ("agent", "openai", "anthropic")[data[0] % 3] if data else "openai"
    path, _, body = data[1:].partition(b"\n")
    ADAPTERS[kind].plan(ROUTES[kind], "POST", path, body, 100)


def _headers(data: bytes) -> None:
    text = data.decode("latin-1")
    protocols.usage_from_headers({"x-usage-input-tokens": text[:10], "x-usage-output-tokens": text[10:20]})


ENTRIES = [
    lambda d: _json_entry(d, _chat),
    lambda d: _json_entry(d, _messages),
    lambda d: _json_entry(d, _invoke),
    lambda d: _json_entry(d, _answers),
    _streams,
    _url,
    _address,
    _plan,
    _headers,
]


def test_one_input(data: bytes) -> None:
    if not data:
        return
    entry = ENTRIES[data[0] % len(ENTRIES)]
    try:
        entry(data[1:])
    except GatewayError as refused:
        assert refused.status < 500, refused.code


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
