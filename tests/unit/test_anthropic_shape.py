"""Translating between OpenAI's chat API and Anthropic's messages API, both ways, without a server."""

import json

import pytest

from gateway_project.errors import GatewayError, bad_request
from routing.anthropic_shape import chat_to_message, messages_to_chat, validate_messages
from routing.protocols import anthropic_to_chat, chat_to_anthropic
from routing.sse import AnthropicStreamScanner, AnthropicToOpenAIStream, OpenAIToAnthropicStream, anthropic_stream_of


def message_body(**extra):
    return {"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], **extra}


def feed_in_pieces(scanner, data: bytes, size: int) -> bytes:
    return b"".join(scanner.feed(data[i : i + size]) for i in range(0, len(data), size)) + scanner.finish()


def anthropic_events(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def openai_chunk(delta=None, finish=None, usage=None) -> bytes:
    obj = {"model": "gpt-4o", "choices": [] if usage else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]}
    if usage:
        obj["usage"] = usage
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


# --- validating /v1/messages ----------------------------------------------


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"model": None}, "'model' is required"),
        ({"max_tokens": None}, "'max_tokens' must be a positive integer"),
        ({"max_tokens": 0}, "'max_tokens' must be a positive integer"),
        ({"messages": []}, "'messages' is required"),
        ({"messages": [{"role": "system", "content": "x"}]}, "'messages.0.role' must be 'user' or 'assistant'"),
        ({"messages": [{"role": "user", "content": 5}]}, "'messages.0.content' must be a string or"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "'messages.0.content.0' must be a content"),
        ({"system": [{"type": "image"}]}, "'system.0' must be a text block"),
        ({"stop_sequences": "END"}, "'stop_sequences' must be a list"),
        ({"temperature": 1.5}, "'temperature' must be a number from 0 to 1"),
        ({"top_p": "high"}, "'top_p' must be a number from 0 to 1"),
        ({"stream": "yes"}, "'stream' must be true or false"),
        ({"metadata": {"user_id": 7}}, "'metadata' must be an object"),
    ],
)
def test_it_refuses_a_malformed_messages_request(change, says):
    with pytest.raises(GatewayError) as caught:
        validate_messages(message_body(**change))
    assert caught.value.status == 400 and says in caught.value.message


def test_it_requires_max_tokens_as_anthropic_does():
    body = message_body()
    del body["max_tokens"]
    with pytest.raises(GatewayError) as caught:
        validate_messages(body)
    assert caught.value.code == "missing_field"


def test_it_accepts_the_whole_request_shape():
    validate_messages(
        message_body(
            system=[{"type": "text", "text": "be brief"}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}]},
            ],
            stop_sequences=["END"],
            temperature=0.2,
            top_p=1,
            top_k=5,
            stream=False,
            metadata={"user_id": "u-1"},
        )
    )


# --- Anthropic request -> OpenAI chat -------------------------------------


def test_an_anthropic_request_becomes_a_chat_request():
    body = messages_to_chat(
        message_body(
            system=[{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                {"role": "user", "content": "go on"},
            ],
            stop_sequences=["END"],
            temperature=0.2,
            top_p=0.9,
            top_k=5,
            metadata={"user_id": "u-1"},
            stream=True,
        ),
        "gpt-4o",
    )
    assert body == {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief\nbe kind"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "go on"},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_images_are_translated_and_tool_blocks_refused():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    body = messages_to_chat(message_body(messages=[{"role": "user", "content": [image]}]), "gpt-4o")
    assert body["messages"][0]["content"] == [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    tool_result = {"type": "tool_result", "tool_use_id": "t", "content": "x"}
    with pytest.raises(GatewayError) as caught:
        messages_to_chat(message_body(messages=[{"role": "user", "content": [tool_result]}]), "gpt-4o")
    assert caught.value.code == "unsupported_content" and "messages.0.content.0" in caught.value.message
    with pytest.raises(GatewayError) as caught:
        messages_to_chat(message_body(tools=[{"name": "t", "input_schema": {}}]), "gpt-4o")
    assert caught.value.code == "unsupported_parameter"


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal"), (None, "end_turn")],
)
def test_a_chat_answer_becomes_an_anthropic_message(finish, stop_reason):
    answer = {
        "model": "gpt-4o-2024",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }
    assert chat_to_message(answer, "gpt-4o", "rid") == {
        "id": "msg_rid",
        "type": "message",
        "role": "assistant",
        "model": "gpt-4o-2024",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 2},
    }


# --- OpenAI chat -> Anthropic (the existing direction) -----------------------


def test_a_chat_request_becomes_an_anthropic_request():
    body = chat_to_anthropic(
        {
            "model": "claude-haiku",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "be kind"}]},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": None},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            ],
            "max_completion_tokens": 20,
            "temperature": 0.5,
            "top_p": None,
            "stop": "END",
            "user": "u-1",
            "stream": True,
        }
    )
    assert body == {
        "model": "claude-haiku",
        "system": "be brief\nbe kind",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]},
        ],
        "max_tokens": 20,
        "temperature": 0.5,
        "stream": True,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }


@pytest.mark.parametrize(
    "change",
    [
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"n": 2},
        {"messages": [{"role": "tool", "tool_call_id": "c", "content": "42"}]},
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
    ],
)
def test_what_anthropic_cannot_take_is_refused_not_dropped(change):
    payload = {"model": "claude-haiku", "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(GatewayError) as caught:
        chat_to_anthropic(payload)
    assert caught.value.status == 400 and caught.value.code.startswith("unsupported_")


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")],
)
def test_anthropic_stop_reasons_become_finish_reasons(stop_reason, finish):
    answer = {"content": [{"type": "text", "text": "x"}], "stop_reason": stop_reason, "usage": {"input_tokens": 1}}
    assert anthropic_to_chat(answer, "claude-haiku", "rid")["choices"][0]["finish_reason"] == finish


# --- streams --------------------------------------------------------------


def test_an_openai_stream_becomes_anthropic_events_across_chunk_boundaries():
    upstream = b"".join(
        [
            openai_chunk({"role": "assistant", "content": ""}),
            openai_chunk({"content": "Hel"}),
            openai_chunk({"content": "lo"}),
            openai_chunk({}, "length"),
            openai_chunk(usage={"prompt_tokens": 5, "completion_tokens": 2}),
            b"data: [DONE]\n\n",
        ]
    )
    stream = OpenAIToAnthropicStream("rid", "gpt-4o")
    events = anthropic_events(feed_in_pieces(stream, upstream, 9))
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == data["type"] for name, data in events)
    assert events[0][1]["message"]["id"] == "msg_rid"
    assert [data["delta"]["text"] for name, data in events if name == "content_block_delta"] == ["Hel", "lo"]
    assert events[5][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[5][1]["usage"] == {"input_tokens": 5, "output_tokens": 2}
    assert stream.usage == (5, 2) and stream.text == "Hello" and not stream.error


def test_an_openai_stream_error_becomes_an_anthropic_error_event():
    stream = OpenAIToAnthropicStream("rid", "gpt-4o")
    out = stream.feed(
        openai_chunk({"content": "Hi"}) + b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n'
    )
    name, data = anthropic_events(out)[-1]
    assert (name, data) == ("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})
    assert stream.error == "server_error"
    assert stream.feed(b"data: [DONE]\n\n") == b""  # nothing after the error


ANTHROPIC_STREAM = [
    b'event: message_start\ndata: {"type": "message_start", "message": {"model": "claude-haiku", '
    b'"usage": {"input_tokens": 5, "output_tokens": 1}}}\n\n',
    b"event: ping\ndata: {}\n\n",
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"text": "Hi"}}\n\n',
    b'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, '
    b'"usage": {"input_tokens": 6, "output_tokens": 4}}\n\n',
    b'event: message_stop\ndata: {"type": "message_stop"}\n\n',
]


def test_an_anthropic_stream_passes_through_untouched_and_metered():
    scanner = AnthropicStreamScanner("claude-haiku")
    assert feed_in_pieces(scanner, b"".join(ANTHROPIC_STREAM), 5) == b"".join(ANTHROPIC_STREAM)
    assert scanner.usage == (6, 4)  # message_delta's counts are cumulative: they replace message_start's
    assert scanner.text == "Hi" and scanner.model == "claude-haiku"


def test_an_anthropic_error_event_reaches_an_openai_client_as_an_error_chunk():
    error = b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    stream = AnthropicToOpenAIStream("rid", "claude-haiku", include_usage=False)
    out = stream.feed(ANTHROPIC_STREAM[0] + ANTHROPIC_STREAM[2] + error).decode()
    last = json.loads(out.strip().split("\n\n")[-1].removeprefix("data: "))
    assert last == {"error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert stream.error == "overloaded_error"


def test_a_whole_answer_is_played_as_an_anthropic_stream():
    events = anthropic_events(anthropic_stream_of("rid", "gpt-4o-mini", "Hello", (3, 1)))
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[2][1]["delta"] == {"type": "text_delta", "text": "Hello"}
    assert events[-2][1]["usage"] == {"input_tokens": 3, "output_tokens": 1}


# --- errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (bad_request("no"), "invalid_request_error"),
        (GatewayError(401, "authentication_error", "invalid_api_key", "no"), "authentication_error"),
        (GatewayError(402, "insufficient_quota", "budget_exceeded", "no"), "billing_error"),
        (GatewayError(413, "invalid_request_error", "request_too_large", "no"), "request_too_large"),
        (GatewayError(429, "rate_limit_error", "rate_limit_requests", "no"), "rate_limit_error"),
        (GatewayError(502, "upstream_error", "upstream_error", "no"), "api_error"),
        (GatewayError(504, "timeout_error", "upstream_timeout", "no"), "timeout_error"),
    ],
)
def test_errors_render_in_anthropics_shape(error, kind):
    body = json.loads(error.anthropic_body("rid"))
    assert body == {"type": "error", "error": {"type": kind, "message": "no", "code": error.code}, "request_id": "rid"}
