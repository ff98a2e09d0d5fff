"""What a whole JSON answer says on the spans is bounded as a stream's is."""

from __future__ import annotations

from routing.sse import MAX_FINISH_REASONS
from tests.gateway.test_tracing import (  # noqa: F401  (the in-process gateway, traced)
    CHAT,
    agent,
    chat_answer,
    exporter,
    spans_of,
    traced,
    tree,
)


def test_a_whole_answers_finish_reasons_are_bounded_on_its_spans(traced, exporter, agent, canned, make_key):  # noqa: F811
    """A stream's are kept to 16, but a whole answer's were all kept: an upstream answering 20,000 choices put
    20,000 strings (up to 1,024 characters each) on the attempt's span and the request's, every one exported."""
    served = agent(canned.url)
    choices = [{"index": i, "finish_reason": f"r{i}"} for i in range(20_000)]
    canned.set(CHAT, {**chat_answer(served.default_model), "choices": choices})
    body = {"model": served.default_model, "messages": [{"role": "user", "content": "hello"}]}
    response = traced.client(make_key()[0]).post(CHAT, json=body)
    assert response.status_code == 200, response.text
    server, children = tree(spans_of(exporter, response))
    for span in (server, children[1]):
        assert list(span.attributes["gen_ai.response.finish_reasons"]) == [f"r{i}" for i in range(MAX_FINISH_REASONS)]
