"""Provider adapters both ways, through the official SDKs.

Anthropic's SDK calls ``POST /v1/messages`` for any model, whichever provider
serves it; OpenAI's SDK calls ``POST /v1/chat/completions`` for Anthropic's
models. Requests, answers, streams, usage and errors are translated, and each
request is metered and audited once.
"""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest

from tests.conftest import wait_for

PRICES = {  # per million input, output tokens (billing's seeded prices)
    "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
    "claude-sonnet": (Decimal("3.00"), Decimal("15.00")),
    "claude-haiku": (Decimal("0.25"), Decimal("1.25")),
}


def cost(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    price_in, price_out = PRICES[model]
    return (price_in * input_tokens + price_out * output_tokens) / 10**6


@pytest.fixture
def claude(gateway, make_key):
    """``claude(**key_fields) -> (client, key)``: Anthropic's SDK with a fresh key, pointed at the gateway."""

    def make(**fields):
        raw, key = make_key(**fields)
        return anthropic.Anthropic(base_url=gateway.url, api_key=raw, max_retries=0), key

    return make


@pytest.fixture
def gpt(gateway, make_key):
    def make(**fields):
        raw, key = make_key(**fields)
        return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=raw, max_retries=0), key

    return make


def hello(client, model, max_tokens=100, **extra):
    return client.messages.create(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": "Say hello"}], **extra
    )


def assert_metered(record, model, input_tokens, output_tokens):
    from billing.models import UsageRecord

    assert (record.model, record.status, record.error_type) == (model, 200, "")
    assert (record.input_tokens, record.output_tokens) == (input_tokens, output_tokens)
    assert input_tokens > 0 and output_tokens > 0
    assert record.cost_usd == cost(model, input_tokens, output_tokens)
    row = wait_for(lambda: UsageRecord.objects.filter(request_id=record.request_id).first())
    assert (row.model, row.input_tokens, row.output_tokens) == (model, input_tokens, output_tokens)
    assert row.cost_usd == record.cost_usd


# --- Anthropic's SDK -> an OpenAI-compatible provider -----------------------


def test_anthropics_sdk_gets_a_message_from_an_openai_model(claude, audit_for):
    client, key = claude()
    message = hello(client, "gpt-4o", system="be brief")
    assert (message.type, message.role, message.model) == ("message", "assistant", "gpt-4o")
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Mock answer to: be brief Say hello"  # the system prompt went along
    assert message.stop_reason == "end_turn"
    record = audit_for(key)[0]
    assert (record.path, record.agent) == ("/v1/messages", "openai")
    assert message._request_id == record.request_id
    assert_metered(record, "gpt-4o", message.usage.input_tokens, message.usage.output_tokens)


def test_anthropics_sdk_streams_from_an_openai_model(claude, audit_for):
    client, key = claude()
    with client.messages.stream(
        model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "Stream hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Mock answer to: Stream hello"
    assert final.content[0].text == text and final.stop_reason == "end_turn"
    record = audit_for(key)[0]
    assert record.output_preview == text
    assert_metered(record, "gpt-4o", final.usage.input_tokens, final.usage.output_tokens)


def test_the_translated_stream_has_anthropics_event_sequence(claude):
    client, _ = claude()
    events = list(hello(client, "gpt-4o", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2].usage.output_tokens > 0 and events[-2].usage.input_tokens > 0


def test_a_translated_stream_is_not_buffered(claude, mock_upstream):
    client, _ = claude()
    with (
        mock_upstream.holding_streams() as hold,
        client.messages.stream(
            model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "one two three four five six"}]
        ) as stream,
    ):
        texts = iter(stream.text_stream)
        # The upstream sent its first chunk and waits for the test: a gateway that buffered would send nothing yet.
        first = next(texts)
        mock_upstream.release(hold)
        rest = list(texts)
    assert first.startswith("Mock") and len(rest) >= 2
    assert first + "".join(rest) == "Mock answer to: one two three four five six"


def test_a_client_that_leaves_a_translated_stream_is_audited_as_such(claude, mock_upstream, audit_for):
    client, key = claude()
    with mock_upstream.holding_streams():  # the answer stops after its first chunk until the client has left
        with client.messages.stream(
            model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "one two three four five six"}]
        ) as stream:
            next(iter(stream.text_stream))
        record = audit_for(key)[0]
    assert (record.agent, record.error_type) == ("openai", "client_disconnected")


def test_max_tokens_and_stop_sequences_reach_an_openai_model(claude):
    client, _ = claude()
    cut = hello(client, "gpt-4o", max_tokens=2)
    assert (cut.content[0].text, cut.stop_reason) == ("Mock answer", "max_tokens")
    stopped = hello(client, "gpt-4o", stop_sequences=["hello"])
    assert stopped.content[0].text == "Mock answer to: Say "
    streamed = hello(client, "gpt-4o", max_tokens=2, stream=True)
    assert [e.delta.stop_reason for e in streamed if e.type == "message_delta"] == ["max_tokens"]


def test_anthropic_only_features_are_refused_for_an_openai_model(claude, audit_for):
    client, key = claude()
    tool = {"name": "weather", "input_schema": {"type": "object", "properties": {}}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        hello(client, "gpt-4o", tools=[tool])
    assert caught.value.body["error"]["code"] == "unsupported_parameter"
    assert "'tools' needs an Anthropic model" in caught.value.message
    record = audit_for(key)[0]
    assert (record.status, record.error_type, record.input_tokens) == (400, "unsupported_parameter", 0)


# --- Anthropic's SDK -> an Anthropic provider --------------------------------


def test_anthropics_sdk_gets_a_message_from_an_anthropic_model(claude, audit_for):
    client, key = claude()
    message = hello(client, "claude-sonnet", system=[{"type": "text", "text": "be brief"}], stop_sequences=["hello"])
    assert message.content[0].text == "Mock answer to: be brief Say "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "hello")
    record = audit_for(key)[0]
    assert (record.path, record.agent) == ("/v1/messages", "anthropic")
    assert_metered(record, "claude-sonnet", message.usage.input_tokens, message.usage.output_tokens)


def test_anthropics_sdk_streams_from_an_anthropic_model(claude, audit_for):
    client, key = claude()
    with client.messages.stream(
        model="claude-haiku", max_tokens=100, messages=[{"role": "user", "content": "Stream hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Mock answer to: Stream hello"
    record = audit_for(key)[0]
    assert record.output_preview == text
    assert_metered(record, "claude-haiku", final.usage.input_tokens, final.usage.output_tokens)


def test_an_agent_slug_names_the_anthropic_agents_default_model(claude, audit_for):
    client, key = claude()
    message = hello(client, "anthropic")
    assert message.model == "claude-haiku"
    assert (audit_for(key)[0].agent, audit_for(key)[0].model) == ("anthropic", "claude-haiku")


def test_an_anthropic_providers_refusal_reaches_the_sdk_in_its_shape(claude, audit_for):
    client, key = claude()
    with pytest.raises(anthropic.BadRequestError) as caught:
        hello(client, "claude-haiku", extra_body={"mock": {"status": 400}})
    assert "mock upstream told to fail with 400" in caught.value.message
    assert caught.value.type == "invalid_request_error"
    assert audit_for(key)[0].error_type == "upstream_rejected"


def test_an_error_event_mid_stream_raises_in_the_sdk_and_is_audited(claude, audit_for):
    client, key = claude()
    stream = hello(client, "claude-haiku", stream=True, extra_body={"mock": {"fail_mid_stream": True}})
    with pytest.raises(anthropic.APIStatusError) as caught:
        list(stream)
    assert "Overloaded" in str(caught.value)
    record = audit_for(key)[0]
    assert (record.status, record.error_type) == (200, "upstream_error")
    assert record.details["upstream_stream_error"] == "overloaded_error"


def test_a_client_that_leaves_mid_stream_is_audited_as_such(claude, audit_for, mock_upstream):
    client, key = claude()
    long_text = "one two three four five six seven eight nine ten eleven twelve"
    with mock_upstream.hold() as hold:  # the answer stops after its first chunk until the client has left
        with client.messages.stream(
            model="claude-haiku",
            max_tokens=100,
            messages=[{"role": "user", "content": long_text}],
            extra_body={"mock": {"hold_stream": hold}},
        ) as stream:
            next(iter(stream.text_stream))
        record = audit_for(key)[0]
    assert record.error_type == "client_disconnected"
    assert record.agent == "anthropic"


# --- Anthropic's SDK -> an agent --------------------------------------------


def test_anthropics_sdk_talks_to_an_agent(claude, audit_for):
    client, key = claude()
    message = client.messages.create(
        model="research", max_tokens=100, messages=[{"role": "user", "content": "find otters"}]
    )
    assert message.content[0].text == "Mock answer to: find otters"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    with client.messages.stream(
        model="research", max_tokens=100, messages=[{"role": "user", "content": "find otters"}]
    ) as stream:
        assert "".join(stream.text_stream) == "Mock answer to: find otters"
        assert stream.get_final_message().usage.output_tokens == message.usage.output_tokens
    records = audit_for(key, 2)
    assert [(r.agent, r.status, r.output_tokens) for r in records] == [
        ("research", 200, message.usage.output_tokens)
    ] * 2


# --- refusals, as Anthropic's SDK raises them --------------------------------


def test_a_bad_key_raises_authentication_error(gateway):
    client = anthropic.Anthropic(base_url=gateway.url, api_key="agk_wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        hello(client, "gpt-4o")
    body = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_api_key"
    assert caught.value.request_id == body["request_id"] == caught.value.response.headers["x-request-id"]


def test_a_model_outside_the_keys_scope_raises_permission_denied(claude):
    client, _ = claude(models=["gpt-4o-mini"])
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        hello(client, "gpt-4o")
    assert caught.value.type == "permission_error"
    assert caught.value.body["error"]["code"] == "model_not_allowed"


def test_an_unknown_model_raises_not_found(claude):
    client, _ = claude()
    with pytest.raises(anthropic.NotFoundError) as caught:
        hello(client, "claude-nope")
    assert caught.value.type == "not_found_error"
    assert "'claude-nope' does not exist" in caught.value.message


def test_an_invalid_body_raises_bad_request(claude, audit_for):
    client, key = claude()
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="gpt-4o", max_tokens=10, messages=[{"role": "system", "content": "x"}])
    assert caught.value.type == "invalid_request_error"
    assert "'messages.0.role' must be 'user' or 'assistant'" in caught.value.message
    assert audit_for(key)[0].status == 400


def test_a_body_over_the_limit_raises_content_too_large(claude):
    client, _ = claude()
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        client.messages.create(model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "x" * 70_000}])
    assert caught.value.type == "request_too_large"


def test_the_rate_limit_raises_rate_limit_error_with_retry_after(claude):
    client, _ = claude(rpm=1)
    hello(client, "claude-haiku")
    with pytest.raises(anthropic.RateLimitError) as caught:
        hello(client, "claude-haiku")
    assert caught.value.type == "rate_limit_error"
    assert caught.value.body["error"]["code"] == "rate_limit_requests"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_an_endpoint_the_gateway_lacks_raises_not_found_in_anthropics_shape(claude):
    client, _ = claude()
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.count_tokens(model="claude-haiku", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["error"]["code"] == "unknown_endpoint"


# --- OpenAI's SDK -> an Anthropic provider -----------------------------------


def test_openais_sdk_gets_a_completion_from_an_anthropic_model(gpt, audit_for):
    client, key = gpt()
    answer = client.chat.completions.create(
        model="claude-sonnet",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Say hello"}],
    )
    assert answer.object == "chat.completion" and answer.model == "claude-sonnet"
    assert answer.choices[0].message.content == "Mock answer to: be brief Say hello"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    record = audit_for(key)[0]
    assert (record.path, record.agent) == ("/v1/chat/completions", "anthropic")
    assert_metered(record, "claude-sonnet", answer.usage.prompt_tokens, answer.usage.completion_tokens)


def test_openais_sdk_streams_from_an_anthropic_model_with_usage(gpt, audit_for):
    client, key = gpt()
    chunks = list(
        client.chat.completions.create(
            model="claude-haiku",
            messages=[{"role": "user", "content": "Stream hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "Mock answer to: Stream hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert_metered(audit_for(key)[0], "claude-haiku", usage.prompt_tokens, usage.completion_tokens)


def test_max_tokens_and_stop_reach_an_anthropic_model(gpt):
    client, _ = gpt()
    message = [{"role": "user", "content": "Say hello"}]
    cut = client.chat.completions.create(model="claude-haiku", messages=message, max_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("Mock answer", "length")
    stopped = client.chat.completions.create(model="claude-haiku", messages=message, stop=["hello"])
    assert (stopped.choices[0].message.content, stopped.choices[0].finish_reason) == ("Mock answer to: Say ", "stop")


def test_openais_sdk_gets_its_own_error_shape_from_an_anthropic_model(gpt):
    client, _ = gpt()
    tool = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude-haiku", messages=[{"role": "user", "content": "hi"}], tools=[tool])
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.body["request_id"] == caught.value.response.headers["x-request-id"]
