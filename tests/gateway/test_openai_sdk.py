"""The official OpenAI SDK, pointed at the gateway, works as it does against OpenAI."""

from __future__ import annotations

import openai
import pytest


@pytest.fixture
def sdk(gateway, make_key):
    def make(**limits):
        raw, key = make_key(**limits)
        return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=raw, max_retries=0), key

    return make


def test_the_sdk_gets_a_chat_completion(sdk, audit_for):
    client, key = sdk()
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}])
    assert answer.choices[0].message.content == "Mock answer to: Say hello"
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens > 0
    assert audit_for(key)[0].output_tokens == answer.usage.completion_tokens


def test_the_sdk_streams_a_chat_completion(sdk, audit_for):
    client, key = sdk()
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Stream hello"}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == "Mock answer to: Stream hello"
    record = audit_for(key)[0]
    assert record.input_tokens > 0 and record.output_tokens > 0


def test_the_sdk_streams_with_usage_when_asked(sdk):
    client, _ = sdk()
    chunks = list(
        client.chat.completions.create(
            model="claude-haiku",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_the_sdk_lists_models(sdk):
    client, _ = sdk(agents=["research"])
    assert [model.id for model in client.models.list()] == ["research"]


def test_the_sdk_raises_rate_limit_error_on_429(sdk):
    client, _ = sdk(rpm=1)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "two"}])
    assert caught.value.status_code == 429
    assert caught.value.body["code"] == "rate_limit_requests"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_the_sdk_raises_authentication_and_permission_errors(gateway, sdk):
    bad = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="agk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    client, _ = sdk(agents=["research"])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
