"""Server-Sent Events on the way through: read usage and text, translate shapes.

Each scanner takes the upstream's bytes as they arrive and returns the bytes to
send on at once. Only an incomplete event is held back, never the stream.
"""

from __future__ import annotations

import json
import time

from audit.models import PREVIEW_LENGTH
from routing.anthropic_shape import STOP_REASONS, error_payload
from routing.protocols import CACHE_FIELDS, FINISH_REASONS, MAX_REPORTED_TOKENS, anthropic_input, usage_from_json

DONE = b"data: [DONE]\n\n"
MAX_FINISH_REASONS = 16  # kept of a stream's (one a choice), for its trace


# The largest event a stream may send: one past it (an upstream that never ends an event) ends the stream, rather
# than a gateway process holding, and searching again and again, whatever it sends.
MAX_EVENT_BYTES = 4 * 1024 * 1024


class EventTooLarge(Exception):
    """An upstream's stream event grew past ``MAX_EVENT_BYTES`` without ending."""


def _events(buffer: bytearray):
    """Pop complete events (ending in a blank line) off the front of ``buffer``; EventTooLarge past the limit."""
    while True:
        cut, sep_len = -1, 0
        for sep in (b"\n\n", b"\r\n\r\n"):
            at = buffer.find(sep)
            if at != -1 and (cut == -1 or at < cut):
                cut, sep_len = at, len(sep)
        if cut == -1:
            if len(buffer) > MAX_EVENT_BYTES:
                buffer.clear()
                raise EventTooLarge(f"a stream event passed {MAX_EVENT_BYTES} bytes without ending")
            return
        event = bytes(buffer[: cut + sep_len])
        del buffer[: cut + sep_len]
        yield event


def _data(event: bytes) -> bytes:
    lines = [line[5:].strip() for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines)


def _counted(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _str(value) -> str:
    """A string an upstream sent, or "" for anything else (an upstream's JSON is not trusted to be well-typed)."""
    return value if isinstance(value, str) else ""


class _TextCollector:
    """The start of an answer's text (for the audit preview) and an estimate of all of it in tokens.

    The estimate is what a stream cut before its usage is charged for its output: at
    least a token per text event (providers send about one each), and at least a token
    per four ASCII characters or per other character, whichever is more.
    """

    def __init__(self):
        self.parts: list[str] = []
        self.length = 0
        self.pieces = 0
        self.ascii_chars = 0
        self.other_chars = 0

    def add(self, text) -> None:
        if not isinstance(text, str) or not text:
            return
        self.count(text)
        if self.length < PREVIEW_LENGTH * 2:
            self.parts.append(text)
            self.length += len(text)

    def count(self, text) -> None:
        """Count ``text`` in the estimate only: tool-call arguments and reasoning are output too, not preview."""
        if not isinstance(text, str) or not text:
            return
        self.pieces += 1
        if text.isascii():
            self.ascii_chars += len(text)
        else:
            other = sum(1 for char in text if ord(char) > 127)
            self.other_chars += other
            self.ascii_chars += len(text) - other

    def count_delta(self, delta: dict) -> None:
        """The parts of an OpenAI stream's ``delta`` besides its text that the answer's output tokens pay for."""
        for name in ("reasoning_content", "reasoning", "refusal"):
            self.count(delta.get(name))
        for call in _list(delta.get("tool_calls")):
            self.count(_dict(_dict(call).get("function")).get("arguments"))

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def tokens_estimate(self) -> int:
        return max(self.pieces, -(-self.ascii_chars // 4) + self.other_chars)


def openai_error_event(error_type: str, message: str) -> bytes:
    """An error in an OpenAI stream: a chunk that carries ``error`` (OpenAI's SDKs raise on it)."""
    return b"data: " + json.dumps({"error": {"type": error_type, "message": message}}).encode() + b"\n\n"


class OpenAIStreamScanner:
    """Pass an OpenAI chat stream through, noting usage and the start of the answer.

    The gateway asks the upstream for a final usage chunk; when the client did
    not ask for it, that chunk is dropped so the client sees what it asked for.
    """

    def __init__(self, keep_usage_chunk: bool):
        self.keep_usage_chunk = keep_usage_chunk
        self.usage: tuple[int, int] | None = None
        self.model = ""
        self.finish_reasons: list[str] = []  # each choice's, as the upstream said it (for the trace)
        self._text = _TextCollector()
        self._buffer = bytearray()

    @property
    def text(self) -> str:
        return self._text.text

    @property
    def output_estimate(self) -> int:
        return self._text.tokens_estimate

    @property
    def complete(self) -> bool:
        """Whether the final usage chunk came: a stream cut before it is charged from what was relayed."""
        return self.usage is not None

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = []
        for event in _events(self._buffer):
            if self._inspect(_data(event)):
                out.append(event)
        return b"".join(out)

    error_event = staticmethod(openai_error_event)

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
        self.model = _str(obj.get("model")) or self.model
        usage = usage_from_json(obj)
        if usage is not None:
            self.usage = usage
        choices = _list(obj.get("choices"))
        for choice in choices:
            if isinstance(choice, dict):
                delta = _dict(choice.get("delta"))
                self._text.add(delta.get("content"))
                self._text.count_delta(delta)
                reason = _str(choice.get("finish_reason"))
                if reason and len(self.finish_reasons) < MAX_FINISH_REASONS:  # an upstream may send one an event
                    self.finish_reasons.append(reason)
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


class _AnthropicReading:
    """What an Anthropic stream's events say: model, usage, text and any error, as they pass."""

    def __init__(self, model: str):
        self.model = model
        self.input_tokens = 0
        self.output_tokens = 0
        self.error = ""  # the error type of an ``error`` event, which ends the stream
        self.finish_reasons: list[str] = []  # the stop reason, as the upstream said it (for the trace)
        self._seen_usage = False
        self.complete = False  # whether the final usage (``message_delta``'s) came, not only ``message_start``'s
        self._text = _TextCollector()

    @property
    def usage(self) -> tuple[int, int] | None:
        return (self.input_tokens, self.output_tokens) if self._seen_usage else None

    @property
    def text(self) -> str:
        return self._text.text

    @property
    def output_estimate(self) -> int:
        return self._text.tokens_estimate

    def note(self, obj: dict) -> None:
        kind = obj.get("type")
        if kind == "message_start":
            message = _dict(obj.get("message"))
            self.model = _str(message.get("model")) or self.model
            self._note_usage(message.get("usage"))
        elif kind == "content_block_delta":
            delta = _dict(obj.get("delta"))
            self._text.add(delta.get("text"))
            self._text.count(delta.get("partial_json"))  # a tool call's input
            self._text.count(delta.get("thinking"))
        elif kind == "message_delta":
            self.complete = self._note_usage(obj.get("usage")) or self.complete  # cumulative: replace, never add
            stop = _str(_dict(obj.get("delta")).get("stop_reason"))
            self.finish_reasons = [stop] if stop else self.finish_reasons
        elif kind == "error":
            error = obj.get("error")
            self.error = _str(error.get("type") if isinstance(error, dict) else "") or "api_error"

    def _note_usage(self, usage) -> bool:
        if not isinstance(usage, dict):
            return False
        noted = False
        if any(_counted(usage.get(name)) for name in ("input_tokens", *CACHE_FIELDS)):
            self.input_tokens = anthropic_input(usage)  # the prompt cache's writes and reads included
            self._seen_usage = noted = True
        value = usage.get("output_tokens")
        if _counted(value):
            self.output_tokens = min(value, MAX_REPORTED_TOKENS)
            self._seen_usage = noted = True
        return noted


def _json_of(event: bytes):
    try:
        obj = json.loads(_data(event) or b"null")
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class AnthropicStreamScanner(_AnthropicReading):
    """Pass an Anthropic messages stream through as it is, noting usage and text."""

    def __init__(self, model: str):
        super().__init__(model)
        self._buffer = bytearray()

    @staticmethod
    def error_event(error_type: str, message: str) -> bytes:
        return anthropic_event(error_payload(error_type, message))

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        out = []
        for event in _events(self._buffer):
            obj = _json_of(event)
            if obj is not None:
                self.note(obj)
            out.append(event)
        return b"".join(out)

    def finish(self) -> bytes:
        rest, self._buffer = bytes(self._buffer), bytearray()
        return rest


class AnthropicToOpenAIStream(_AnthropicReading):
    """Translate an Anthropic messages stream into an OpenAI chat stream."""

    def __init__(self, request_id: str, model: str, include_usage: bool):
        super().__init__(model)
        self.request_id = request_id
        self.include_usage = include_usage
        self._buffer = bytearray()

    error_event = staticmethod(openai_error_event)

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        return b"".join(self._translate(event) for event in _events(self._buffer))

    def finish(self) -> bytes:
        self._buffer.clear()
        return b""

    def _translate(self, event: bytes) -> bytes:
        obj = _json_of(event)
        if obj is None:
            return b""
        self.note(obj)
        kind = obj.get("type")
        if kind == "message_start":
            return openai_chunk(self.request_id, self.model, {"role": "assistant", "content": ""})
        if kind == "content_block_delta":
            text = _str(_dict(obj.get("delta")).get("text"))
            return openai_chunk(self.request_id, self.model, {"content": text}) if text else b""
        if kind == "message_delta":
            reason = FINISH_REASONS.get(_str(_dict(obj.get("delta")).get("stop_reason")), "stop")
            return openai_chunk(self.request_id, self.model, {}, reason)
        if kind == "message_stop":
            tail = b""
            if self.include_usage:
                tail = openai_chunk(self.request_id, self.model, {}, usage=(self.input_tokens, self.output_tokens))
            return tail + DONE
        if kind == "error":
            # OpenAI's SDKs raise on a chunk that carries an ``error``.
            error = obj.get("error") if isinstance(obj.get("error"), dict) else {}
            detail = {"type": self.error, "message": str(error.get("message") or "The upstream stream failed.")}
            return b"data: " + json.dumps({"error": detail}).encode() + b"\n\n"
        return b""


# --- OpenAI chat stream -> Anthropic message events ------------------------


def anthropic_event(obj: dict) -> bytes:
    return b"event: " + obj["type"].encode() + b"\ndata: " + json.dumps(obj).encode() + b"\n\n"


def _message_start(message_id: str, model: str, input_tokens: int) -> bytes:
    message = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 0},
    }
    start = anthropic_event({"type": "message_start", "message": message})
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    return start + anthropic_event(block)


def _text_delta(text: str) -> bytes:
    return anthropic_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})


def _message_end(stop_reason: str, usage: tuple[int, int]) -> bytes:
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    }
    return anthropic_event(delta) + anthropic_event({"type": "message_stop"})


def anthropic_stream_of(request_id: str, model: str, text: str, usage: tuple[int, int]) -> bytes:
    """A whole answer as an Anthropic stream, for upstreams that cannot stream."""
    parts = [_message_start(f"msg_{request_id}", model, usage[0])]
    if text:
        parts.append(_text_delta(text))
    parts += [anthropic_event({"type": "content_block_stop", "index": 0}), _message_end("end_turn", usage)]
    return b"".join(parts)


class OpenAIToAnthropicStream:
    """Translate an OpenAI chat stream, asked for its final usage chunk, into Anthropic message events.

    The usage chunk comes after the finishing chunk, so ``message_delta`` (which
    carries the stop reason and the usage) waits for ``[DONE]``.
    """

    def __init__(self, request_id: str, model: str):
        self.request_id = request_id
        self.model = model
        self.usage: tuple[int, int] | None = None
        self.error = ""
        self.finish_reasons: list[str] = []  # the upstream's own, before translation (for the trace)
        self._stop_reason = ""
        self._started = False
        self._block_open = False
        self._ended = False
        self._text = _TextCollector()
        self._buffer = bytearray()

    @property
    def text(self) -> str:
        return self._text.text

    @property
    def output_estimate(self) -> int:
        return self._text.tokens_estimate

    @property
    def complete(self) -> bool:
        return self.usage is not None

    def feed(self, chunk: bytes) -> bytes:
        self._buffer += chunk
        return b"".join(self._translate(_data(event)) for event in _events(self._buffer))

    @staticmethod
    def error_event(error_type: str, message: str) -> bytes:
        return anthropic_event(error_payload(error_type, message))

    def finish(self) -> bytes:
        self._buffer.clear()
        return b""

    def _translate(self, data: bytes) -> bytes:
        if self._ended or not data:
            return b""
        if data == b"[DONE]":
            return self._end()
        try:
            obj = json.loads(data)
        except ValueError:
            return b""
        if not isinstance(obj, dict):
            return b""
        if obj.get("error"):
            self._ended = True
            error = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
            self.error = str(error.get("type") or error.get("code") or "api_error")
            text = str(error.get("message") or "The upstream stream failed.")
            return anthropic_event(error_payload("api_error", text))
        self.model = _str(obj.get("model")) or self.model
        out = [self._start()]
        usage = usage_from_json(obj)
        if usage is not None:
            self.usage = usage
        for choice in _list(obj.get("choices")):
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self._text.count_delta(_dict(choice.get("delta")))
            text = _str(_dict(choice.get("delta")).get("content"))
            if text:
                self._text.add(text)
                out.append(_text_delta(text))
            if choice.get("finish_reason"):
                self.finish_reasons = [_str(choice["finish_reason"])]
                self._stop_reason = STOP_REASONS.get(_str(choice["finish_reason"]), "end_turn")
                out.append(self._close_block())
        return b"".join(out)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = self._block_open = True
        return _message_start(f"msg_{self.request_id}", self.model, 0)  # input tokens come with the usage chunk

    def _close_block(self) -> bytes:
        if not self._block_open:
            return b""
        self._block_open = False
        return anthropic_event({"type": "content_block_stop", "index": 0})

    def _end(self) -> bytes:
        self._ended = True
        out = self._start() + self._close_block()
        return out + _message_end(self._stop_reason or "end_turn", self.usage or (0, 0))
