"""Input the body's size does not show is reserved (issue 12, third attack).

A document given by URL or file id, or an image (by URL, or pixels a small base64
can hold), is billed far more input than four bytes a token: reserved from the
body's size, such a request spent ten times its reservation, past a hard budget, and
its real usage was cut to four times the estimate. Each such part now adds an
allowance (``GATEWAY_IMAGE_INPUT_TOKENS``, ``GATEWAY_DOCUMENT_INPUT_TOKENS``) to
the reservation and to what may be charged.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.protocols import referenced_input_tokens
from tests.servers import json_answer, scripted_upstreams

IMAGE, DOCUMENT = 25_600, 200_000
CHAT = "/v1/chat/completions"


def tokens(payload) -> int:
    return referenced_input_tokens(json.dumps(payload).encode())


def user(*parts) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": list(parts)}]}


TEXT = {"type": "text", "text": "What is in it?"}


def test_plain_text_needs_no_allowance():
    assert tokens(user(TEXT)) == 0
    assert tokens({"model": "m", "messages": [{"role": "user", "content": "describe the image file"}]}) == 0


@pytest.mark.parametrize(
    "part, expected",
    [
        ({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, IMAGE),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}, IMAGE),
        ({"type": "file", "file": {"file_id": "file-abc"}}, DOCUMENT),
        ({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}, IMAGE),
        ({"type": "image", "source": {"type": "file", "file_id": "file_1"}}, IMAGE),  # counted once, as an image
        ({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}, DOCUMENT),
        ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}}, DOCUMENT),
        ({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "in the body"}}, 0),
        ({"type": "input_file", "file_url": "https://example.com/a.pdf"}, DOCUMENT),
    ],
)
def test_each_part_the_body_cannot_size_adds_its_allowance(part, expected):
    assert tokens(user(TEXT, part)) == expected


def test_parts_nested_in_a_tool_result_count_and_every_part_counts():
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [image, image]}
    payload = {"model": "m", "messages": [{"role": "user", "content": [result, image]}]}
    assert tokens(payload) == 3 * IMAGE


def test_images_inside_a_document_of_content_blocks_count():
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    document = {"type": "document", "source": {"type": "content", "content": [TEXT, image]}}
    assert tokens(user(document)) == IMAGE


def test_a_part_type_hidden_behind_json_escapes_still_counts():
    body = b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "\\u0064ocument", "source": {}}]}]}'
    assert referenced_input_tokens(body) == DOCUMENT


def test_malformed_bodies_count_nothing_and_do_not_fail():
    assert referenced_input_tokens(b'{"type": "image"') == 0
    assert referenced_input_tokens(b"[" * 100_000 + b'"image"' + b"]" * 100_000) == 0  # too deep to read


def test_the_allowance_is_a_setting(settings):
    settings.GATEWAY = {**settings.GATEWAY, "IMAGE_INPUT_TOKENS": 7}
    assert tokens(user({"type": "image_url", "image_url": {"url": "https://x"}})) == 7


parts = st.sampled_from(
    [
        ({"type": "image_url", "image_url": {"url": "https://x/a.png"}}, IMAGE),
        ({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}, DOCUMENT),
        ({"type": "document", "source": {"type": "content", "content": [TEXT]}}, 0),
        (TEXT, 0),
        ({"type": "tool_use", "id": "t", "name": "image", "input": {"file": "document"}}, 0),
    ]
)


@given(st.lists(st.lists(parts, max_size=4), max_size=4))
def test_the_allowance_is_the_sum_of_the_parts_wherever_they_are(messages):
    payload = {"model": "m", "messages": [{"role": "user", "content": [p for p, _ in m]} for m in messages]}
    assert tokens(payload) == sum(allowance for m in messages for _, allowance in m)


# --- through a gateway -----------------------------------------------------------------------------------------


def answer(prompt_tokens: int) -> bytes:
    return json_answer(
        {
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "a cat"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 3, "total_tokens": prompt_tokens + 3},
        }
    )


def image_chat(model: str, count: int = 1) -> dict:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    return {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": [TEXT] + [image] * count}]}


def test_an_images_real_input_is_charged_in_full(provider_at, gateway, make_key, audit_of):
    with scripted_upstreams() as upstream:
        agent = provider_at(upstream(answer(20_000)).url)
        raw, _ = make_key()
        response = gateway.client(raw).post(CHAT, json=image_chat(agent.slug))
    assert response.status_code == 200, response.text
    record = audit_of(response)
    assert record.input_tokens == 20_000  # cut to four times the body's estimate (about 4,500) before
    assert "usage_over_reservation" not in record.details


def test_a_hard_budget_refuses_what_its_images_may_cost_before_calling_upstream(provider_at, gateway, make_key):
    # gpt-4o-mini input is $0.15 per million tokens: 40 images may bill about $0.15, the budget is $0.05.
    with scripted_upstreams() as upstream:
        server = upstream(answer(9))
        agent = provider_at(server.url)
        raw, _ = make_key(budget="0.05")
        refused = gateway.client(raw).post(CHAT, json=image_chat(agent.slug, count=40))
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert server.connections == 0
        assert gateway.client(raw).post(CHAT, json=image_chat(agent.slug, count=1)).status_code == 200  # ~$0.004
