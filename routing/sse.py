"""Server-Sent Events on the way through: read usage and text, translate shapes.

Each scanner takes the upstream's bytes as they arrive and returns the bytes to
send on at once. Only an incomplete event is held back, never the stream.
"""

from __future__ import annotations

import json
import time

from audit.models import PREVIEW_LENGTH
from routing.protocols import usage_from_json

DONE = b"data: [DONE]\n\n"


def _events(buffer: bytearray):
    """Pop complete events (ending in a blank line) off the front of ``buffer``."""
    while True:
        buffer_bytes = bytes(buffer)
        cut, sep_len = -1, 0
        for sep in (b"\n\n", b"\r\n\r\n"):
            at = buffer_bytes.find(sep)
            if at != -1 and (cut == -1 or at < cut):
                cut, sep_len = at, len(sep)
        if cut == -1:
            return
        event = buffer_bytes[: cut + sep_len]
        del buffer[: cut + sep_len]
        yield event


def _data(event: bytes) -> bytes:
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines)


class _TextCollector:
    def __init__(self):
        self.parts: list[str] = []
        self.length = 0

    def add(self, text) -> None:
        if isinstance(text, str) and text and self.length < PREVIEW_LENGTH * 2:
            self.parts.append(text)
            self.length += len(text)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class OpenAIStreamScanner:
    """Pass an OpenAI chat stream through, noting usage and the start of the answer.

    The gateway asks the upstream for a final usage chunk; when the client did
    not ask for it, that chunk is dropped so the client sees what it asked for.
    """

    def __init__(self, keep_usage_chunk: bool):
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: tuple[int, int] | None = None
        self.model = ""
        self._text = _TextCollector()
        self._buffer = bytearray()

    @property
    def text(self) -> str:
        return self._text.text

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = []
        for event in _events(self._buffer):
            if self._inspect(_data(event)):
                out.append(event)
        return b"".join(out)

    def finish(self) -> bytes:
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest

    def _inspect(self, data: bytes) -> bool:
        """Note what the event says; return whether to forward it."""
        if not data or data == b"[DONE]":
            return True
        try:
            obj = json.loads(data)
        except ValueError:
            return True
        if not isinstance(obj, dict):
            return True
        self.model = obj.get("model") or self.model
        usage = usage_from_json(obj)
        if usage is not None:
            self.usage = usage
        choices = obj.get("choices") or []
        for choice in choices:
            if isinstance(choice, dict):
                self._text.add((choice.get("delta") or {}).get("content"))
        return bool(choices) or usage is None or self.keep_usage_chunk


def openai_chunk(request_id: str, model: str, delta: dict, finish_reason=None, usage=None) -> bytes:
    obj = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage:
        obj["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def openai_stream_of(request_id, model, text, usage, include_usage) -> bytes:
    """A whole answer as an OpenAI stream, for upstreams that cannot stream."""
    parts = [
        openai_chunk(request_id, model, {"role": "assistant", "content": text}),
        openai_chunk(request_id, model, {}, "stop"),
    ]
    if include_usage:
        parts.append(openai_chunk(request_id, model, {}, usage=usage))
    parts.append(DONE)
    return b"".join(parts)


_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


class AnthropicToOpenAIStream:
    """Translate an Anthropic messages stream into an OpenAI chat stream."""

    def __init__(self, request_id: str, model: str, include_usage: bool):
        self.request_id = request_id
        self.model = model
        self.include_usage = include_usage
        self.input_tokens = 0
        self.output_tokens = 0
        self._seen_usage = False
        self._text = _TextCollector()
        self._buffer = bytearray()

    @property
    def usage(self) -> tuple[int, int] | None:
        return (self.input_tokens, self.output_tokens) if self._seen_usage else None

    @property
    def text(self) -> str:
        return self._text.text

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        return b"".join(self._translate(_data(event)) for event in _events(self._buffer))

    def finish(self) -> bytes:
        self._buffer.clear()
        return b""

    def _translate(self, data: bytes) -> bytes:
        try:
            obj = json.loads(data) if data else {}
        except ValueError:
            return b""
        kind = obj.get("type")
        if kind == "message_start":
            message = obj.get("message", {})
            self.model = message.get("model", self.model)
            usage = usage_from_json(message)
            if usage:
                self._seen_usage = True
                self.input_tokens, self.output_tokens = usage
            return openai_chunk(self.request_id, self.model, {"role": "assistant", "content": ""})
        if kind == "content_block_delta":
            text = (obj.get("delta") or {}).get("text", "")
            self._text.add(text)
            return openai_chunk(self.request_id, self.model, {"content": text}) if text else b""
        if kind == "message_delta":
            usage = obj.get("usage") or {}
            if "output_tokens" in usage:
                self._seen_usage = True
                self.output_tokens = int(usage["output_tokens"])
            reason = _FINISH.get((obj.get("delta") or {}).get("stop_reason"), "stop")
            return openai_chunk(self.request_id, self.model, {}, reason)
        if kind == "message_stop":
            tail = b""
            if self.include_usage:
                tail = openai_chunk(self.request_id, self.model, {}, usage=(self.input_tokens, self.output_tokens))
            return tail + DONE
        return b""
