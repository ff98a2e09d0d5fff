import json

from routing.sse import MAX_FINISH_REASONS, AnthropicToOpenAIStream, OpenAIStreamScanner, OpenAIToAnthropicStream


def event(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


CHUNKS = [
    event({"model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
    event({"model": "m", "choices": [{"index": 0, "delta": {"content": "lo"}}]}),
    event({"model": "m", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
    b"data: [DONE]\n\n",
]


def feed_in_pieces(scanner, data: bytes, size: int) -> bytes:
    out = b"".join(scanner.feed(data[i : i + size]) for i in range(0, len(data), size))
    return out + scanner.finish()


def test_the_scanner_reads_usage_and_text_across_chunk_boundaries():
    scanner = OpenAIStreamScanner(keep_usage_chunk=True)
    out = feed_in_pieces(scanner, b"".join(CHUNKS), 7)
    assert out == b"".join(CHUNKS)
    assert scanner.usage == (3, 2)
    assert scanner.text == "Hello"


def test_the_scanner_drops_the_usage_chunk_the_client_did_not_ask_for():
    scanner = OpenAIStreamScanner(keep_usage_chunk=False)
    out = feed_in_pieces(scanner, b"".join(CHUNKS), 11)
    assert out == CHUNKS[0] + CHUNKS[1] + CHUNKS[3]
    assert scanner.usage == (3, 2)


def test_anthropic_events_become_openai_chunks():
    anthropic = [
        b'event: message_start\ndata: {"type": "message_start", "message": {"model": "claude-haiku", '
        b'"usage": {"input_tokens": 5, "output_tokens": 1}}}\n\n',
        b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"text": "Hi"}}\n\n',
        b'event: message_delta\ndata: {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, '
        b'"usage": {"output_tokens": 4}}\n\n',
        b'event: message_stop\ndata: {"type": "message_stop"}\n\n',
    ]
    stream = AnthropicToOpenAIStream("rid", "claude-haiku", include_usage=True)
    out = feed_in_pieces(stream, b"".join(anthropic), 13).decode()
    events = [block[6:] for block in out.split("\n\n") if block]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    assert chunks[2]["choices"][0]["finish_reason"] == "length"
    assert chunks[3]["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert stream.usage == (5, 4) and stream.text == "Hi"
    assert stream.finish_reasons == ["max_tokens"]  # the upstream's own words, for the trace


def test_each_scanner_keeps_the_finish_reasons_its_upstream_sent():
    finished = event({"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    stream = b"".join([*CHUNKS[:2], finished, *CHUNKS[2:]])
    scanner = OpenAIStreamScanner(keep_usage_chunk=False)
    feed_in_pieces(scanner, stream, 5)
    assert scanner.finish_reasons == ["length"]
    translated = OpenAIToAnthropicStream("rid", "m")
    feed_in_pieces(translated, stream, 5)
    assert translated.finish_reasons == ["length"]  # not Anthropic's "max_tokens" it was translated to
    unfinished = OpenAIStreamScanner(keep_usage_chunk=True)
    feed_in_pieces(unfinished, b"".join(CHUNKS), 5)
    assert unfinished.finish_reasons == []


def test_a_stream_that_finishes_every_event_keeps_a_bounded_few():
    finished = event({"model": "m", "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}]})
    scanner = OpenAIStreamScanner(keep_usage_chunk=False)
    feed_in_pieces(scanner, finished * 1000, 4096)
    assert scanner.finish_reasons == ["stop"] * MAX_FINISH_REASONS
