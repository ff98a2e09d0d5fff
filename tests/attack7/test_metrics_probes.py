"""Attack 7's probes of ``/metrics``: each asserts a promise of the README's "Metrics" section."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.attack.helpers import Answering, chat_answer
from tests.servers import Gateway, json_answer
from tests.waiting import until

REAL = "gpt-fresh-model"


@pytest.fixture(scope="module")
def few_models(seeded):
    """A gateway that keeps five model labels, as one would keep its 200 (a made-up name needs a request each)."""
    server = Gateway(GATEWAY_METRICS_MAX_MODELS="5")
    yield server
    server.stop()


def _provider(head: bytes, body: bytes) -> bytes:
    """A provider as real ones are: a model it does not know is a 404."""
    model = json.loads(body or b"{}").get("model")
    if model == REAL:
        return chat_answer(10, 5, model=REAL)
    error = {"error": {"type": "invalid_request_error", "code": "model_not_found", "message": f"no model {model}"}}
    return json_answer(error, b"404 Not Found")


def _models_counted(server) -> set[str]:
    answer = httpx.get(f"{server.url}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    return {
        sample.labels["model"]
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "gateway_requests_total"
    }


def test_made_up_model_names_do_not_push_real_models_into_other(few_models, make_key, live_db, wait_for_agent):
    """README: "A model name a client makes up cannot grow the series past the cap". It could not grow them, but
    the first names a process saw took the cap: a key holder sending made-up names through an agent that serves
    any model (its upstream refusing each, 404) had every real model after them counted as ``other``."""
    from routing.models import Agent

    upstream = Answering(_provider)
    agent, real = (
        Agent.objects.create(
            slug=f"{name}-{uuid.uuid4().hex[:8]}",
            name=name,
            kind="openai",
            upstream_url=upstream.url,
            served_models=served,
            default_model="",
            timeout_seconds=5,
            max_retries=0,
        )
        for name, served in (("any", []), ("real", [REAL]))
    )
    try:
        wait_for_agent(agent.slug, few_models)
        wait_for_agent(real.slug, few_models)
        raw, _ = make_key()
        with few_models.client(raw) as client:
            for n in range(8):
                made_up = {"model": f"made-up-{n}", "messages": [{"role": "user", "content": "hi"}]}
                refused = client.post(f"/agents/{agent.slug}/v1/chat/completions", json=made_up)
                assert refused.status_code == 404, refused.text
            asked = {"model": REAL, "messages": [{"role": "user", "content": "hi"}]}
            assert client.post("/v1/chat/completions", json=asked).status_code == 200
        until(lambda: REAL in _models_counted(few_models) or "other" in _models_counted(few_models), "counted")
        counted = _models_counted(few_models)
        assert REAL in counted, f"the real model was counted as other: {sorted(counted)}"
    finally:
        agent.delete()
        real.delete()
        upstream.stop()
