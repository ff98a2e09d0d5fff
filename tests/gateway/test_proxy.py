"""Answers through the gateway: shapes, streaming, routing, metering and the audit trail."""

from __future__ import annotations

import json
from decimal import Decimal

from tests.waiting import until, wait_for

CHAT = "/v1/chat/completions"


def chat_body(model="gpt-4o-mini", text="hello", **extra):
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def sse_events(text: str) -> list:
    events = []
    for block in text.split("\n\n"):
        data = "".join(line[5:].strip() for line in block.splitlines() if line.startswith("data:"))
        if data:
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_a_chat_completion_is_metered_from_the_upstreams_usage(gateway, make_key, audit_for):
    from billing.models import UsageRecord

    raw, key = make_key()
    response = gateway.client(raw).post(CHAT, json=chat_body(model="gpt-4o", text="what is an otter?"))
    assert response.status_code == 200
    answer = response.json()
    usage = answer["usage"]
    assert answer["choices"][0]["message"]["content"].startswith("Mock answer to:")
    record = audit_for(key)[0]
    assert (record.agent, record.model, record.status) == ("openai", "gpt-4o", 200)
    assert (record.input_tokens, record.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    expected = (Decimal("2.50") * usage["prompt_tokens"] + Decimal("10.00") * usage["completion_tokens"]) / 10**6
    assert record.cost_usd == expected
    assert record.latency_ms > 0
    assert record.client_slug == key.client.slug
    row = wait_for(lambda: UsageRecord.objects.filter(request_id=record.request_id).first())
    assert (row.client_id, row.api_key_id, row.cost_usd) == (key.client_id, key.pk, expected)


def test_an_unknown_model_is_priced_at_the_default_price(gateway, make_key, audit_of, live_db):
    from routing.models import Agent

    Agent.objects.filter(slug="openai").update(served_models=["gpt-4o", "gpt-4o-mini", "gpt-new"])
    try:
        raw, _ = make_key()
        client = gateway.client(raw)
        # The gateway serves the model once it has re-read its routing table (every 0.2 s in the tests).
        response = until(lambda: (r := client.post(CHAT, json=chat_body(model="gpt-new"))).status_code == 200 and r,
                         "the gateway routes gpt-new")  # fmt: skip
        usage = response.json()["usage"]
        record = audit_of(response)
        assert (
            record.cost_usd
            == (Decimal("2.50") * usage["prompt_tokens"] + Decimal("10") * usage["completion_tokens"]) / 10**6
        )
    finally:
        Agent.objects.filter(slug="openai").update(served_models=["gpt-4o", "gpt-4o-mini"])


def test_a_stream_passes_through_and_is_metered_from_its_usage_chunk(gateway, make_key, audit_for):
    raw, key = make_key()
    with gateway.client(raw).stream("POST", CHAT, json=chat_body(text="tell me a story", stream=True)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        body = response.read().decode()
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    # The client did not ask for usage, so the chunk the gateway asked for is not shown to it.
    assert all(event == "[DONE]" or event["choices"] for event in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "Mock answer to: tell me a story"
    record = audit_for(key)[0]
    assert record.input_tokens > 0 and record.output_tokens > 0
    assert record.output_preview == text


def test_a_stream_keeps_the_usage_chunk_when_the_client_asks_for_it(gateway, make_key, audit_for):
    raw, key = make_key()
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = sse_events(gateway.client(raw).post(CHAT, json=body).text)
    usage_chunks = [e for e in events if e != "[DONE]" and e.get("usage")]
    assert len(usage_chunks) == 1
    record = audit_for(key)[0]
    assert record.output_tokens == usage_chunks[0]["usage"]["completion_tokens"]


def test_a_stream_is_not_buffered(gateway, make_key, seeded):
    raw, _ = make_key()
    text = "one two three four five six seven eight nine ten"
    with seeded.hold() as hold:
        body = chat_body(text=text, stream=True, mock={"hold_stream": hold})
        with gateway.client(raw).stream("POST", CHAT, json=body) as response:
            chunks = response.iter_text()
            # The upstream sends its first chunk, then waits until the test releases it: a gateway that buffered
            # the answer would send nothing before that (and the read would time out).
            first = next(chunks)
            assert "data:" in first
            seeded.release(hold)
            events = sse_events(first + "".join(chunks))
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1]) == f"Mock answer to: {text}"


def test_a_client_that_leaves_mid_stream_is_audited_as_such(gateway, make_key, audit_for, seeded):
    raw, key = make_key()
    with seeded.hold() as hold:  # the answer stops after its first chunk until the client has left
        body = chat_body(
            text="one two three four five six seven eight nine ten", stream=True, mock={"hold_stream": hold}
        )
        with gateway.client(raw).stream("POST", CHAT, json=body) as response:
            next(response.iter_bytes())
        record = audit_for(key)[0]
    assert record.error_type == "client_disconnected"


def test_anthropic_models_answer_in_the_openai_shape(gateway, make_key, audit_for):
    raw, key = make_key()
    body = {
        "model": "claude-sonnet",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    }
    answer = gateway.client(raw).post(CHAT, json=body).json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "Mock answer to: be brief hi"
    record = audit_for(key)[0]
    assert (record.agent, record.model) == ("anthropic", "claude-sonnet")
    assert (
        record.cost_usd
        == (Decimal("3") * answer["usage"]["prompt_tokens"] + Decimal("15") * answer["usage"]["completion_tokens"])
        / 10**6
    )


def test_anthropic_streams_are_translated_with_usage(gateway, make_key, audit_for):
    raw, key = make_key()
    body = chat_body(model="claude-haiku", text="stream it", stream=True, stream_options={"include_usage": True})
    events = sse_events(gateway.client(raw).post(CHAT, json=body).text)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e["choices"])
    assert text == "Mock answer to: stream it"
    assert events[-2]["usage"]["completion_tokens"] == audit_for(key)[0].output_tokens


def test_an_agent_slug_works_as_a_model(gateway, make_key, audit_for):
    raw, key = make_key()
    answer = gateway.client(raw).post(CHAT, json=chat_body(model="research", text="find otters")).json()
    assert answer["choices"][0]["message"]["content"] == "Mock answer to: find otters"
    assert audit_for(key)[0].agent == "research"
    streamed = gateway.client(raw).post(CHAT, json=chat_body(model="code", stream=True)).text
    assert sse_events(streamed)[-1] == "[DONE]"


def test_invoke_routes_by_content_when_no_agent_is_named(gateway, make_key):
    raw, _ = make_key()
    client = gateway.client(raw)
    cases = {
        "please research the history of otters": "research",
        "draft an email to my team": "writing",
        "debug this python function": "code",
    }
    for text, agent in cases.items():
        response = client.post("/v1/agent/invoke", json={"input": text})
        assert response.status_code == 200
        answer = response.json()
        assert answer["agent_used"] == agent, text
        assert response.headers["x-gateway-route-reason"] == answer["route_reason"]
        assert answer["route_reason"].startswith(f"capability={agent}; keywords=")
        assert set(answer) >= {"request_id", "output", "agent_used", "tokens_used", "cost_usd", "latency_ms"}
        assert answer["request_id"] == response.headers["x-request-id"]
        assert answer["tokens_used"] > 0 and answer["cost_usd"] > 0


def test_invoke_falls_back_to_the_default_agent(gateway, make_key):
    raw, _ = make_key()
    response = gateway.client(raw).post("/v1/agent/invoke", json={"input": "hello there"})
    assert response.json()["agent_used"] == "research"
    assert response.headers["x-gateway-route-reason"] == "least_loaded; no capability keywords"


def test_content_routing_only_picks_agents_the_key_may_use(gateway, make_key):
    raw, _ = make_key(agents=["writing"])
    answer = gateway.client(raw).post("/v1/agent/invoke", json={"input": "debug my code"}).json()
    assert answer["agent_used"] == "writing"


def test_invoke_honours_agent_model_and_max_tokens(gateway, make_key):
    raw, _ = make_key()
    client = gateway.client(raw)
    answer = client.post("/v1/agent/invoke", json={"input": "hello", "agent": "writing", "max_tokens": 2}).json()
    assert (answer["agent_used"], answer["output"]) == ("writing", "Mock answer")
    answer = client.post("/v1/agent/invoke", json={"input": "hello", "model": "claude-haiku"}).json()
    assert (answer["agent_used"], answer["model"]) == ("anthropic", "claude-haiku")
    answer = client.post("/v1/agent/invoke", json={"input": "hello", "model": "gpt-4o"}).json()
    assert answer["output"] == "Mock answer to: hello"


def test_pass_through_keeps_method_query_body_and_headers(gateway, make_key, audit_for):
    raw, key = make_key()
    response = gateway.client(raw).request(
        "PUT",
        "/agents/writing/docs/42?draft=1&lang=en",
        content=b'{"title": "Otters"}',
        headers={"content-type": "application/json", "x-custom": "kept", "connection": "keep-alive", "te": "trailers"},
    )
    assert response.status_code == 200
    echo = response.json()
    assert (echo["method"], echo["path"], echo["query"]) == ("PUT", "/docs/42", "draft=1&lang=en")
    assert echo["body"] == '{"title": "Otters"}'
    headers = echo["headers"]
    assert headers["x-custom"] == "kept"
    assert "authorization" not in headers and "te" not in headers
    assert headers["x-request-id"] == response.headers["x-request-id"]
    assert headers["x-client-id"] == key.client.slug
    record = audit_for(key)[0]
    assert (record.method, record.path, record.agent) == ("PUT", "/agents/writing/docs/42", "writing")
    assert (record.input_tokens, record.output_tokens) == (5, 2)  # from the agent's usage headers


def test_pass_through_drops_the_x_api_key_header(gateway, make_key):
    raw, _ = make_key()
    echo = gateway.client().get("/agents/research/ping", headers={"X-API-Key": raw}).json()
    assert "x-api-key" not in echo["headers"]
    assert raw not in json.dumps(echo)


def test_pass_through_keeps_the_upstreams_status(gateway, make_key):
    raw, _ = make_key()
    response = gateway.client(raw).get("/agents/research/missing", headers={"x-mock-status": "404"})
    assert response.status_code == 404


def test_models_lists_what_the_key_may_use(gateway, make_key):
    raw, _ = make_key(agents=["research", "openai"], models=["gpt-4o-mini"])
    listing = gateway.client(raw).get("/v1/models").json()
    assert listing["object"] == "list"
    ids = {item["id"] for item in listing["data"]}
    assert ids == {"research", "openai", "gpt-4o-mini"}
    assert all(item["object"] == "model" for item in listing["data"])


def test_usage_reports_this_months_spend_by_agent_and_model(gateway, make_key):
    raw, key = make_key(budget="50")
    client = gateway.client(raw)
    client.post(CHAT, json=chat_body(model="gpt-4o"))
    client.post(CHAT, json=chat_body(model="gpt-4o-mini"))
    client.post("/v1/agent/invoke", json={"input": "write a haiku", "agent": "writing"})
    report = client.get("/v1/usage").json()
    assert report["client"] == key.client.slug
    assert report["requests"] == 3
    assert {row["agent"] for row in report["by_agent"]} == {"openai", "writing"}
    assert {row["model"] for row in report["by_model"]} >= {"gpt-4o", "gpt-4o-mini"}
    total = sum(Decimal(row["cost_usd"]) for row in report["by_model"])
    assert abs(total - Decimal(report["cost_usd"])) <= Decimal("0.000003")
    [budget] = [b for b in report["budgets"] if b["scope"] != "organization"]
    assert (budget["scope"], budget["period"], budget["limit_usd"]) == ("client", "monthly", "50.00")
    assert Decimal(budget["remaining_usd"]) < Decimal("50")


def test_audit_previews_are_redacted_and_short(gateway, make_key, audit_for):
    raw, key = make_key()
    secret_text = "mail jane.doe@example.com, card 4111 1111 1111 1111, ssn 123-45-6789 " + "z" * 400
    gateway.client(raw).post(CHAT, json=chat_body(text=secret_text))
    record = audit_for(key)[0]
    assert "jane.doe" not in record.input_preview and "[EMAIL]" in record.input_preview
    assert "4111" not in record.input_preview and "[CARD]" in record.input_preview
    assert "123-45-6789" not in record.input_preview and "[SSN]" in record.input_preview
    assert len(record.input_preview) <= 200 and len(record.output_preview) <= 200
    assert "jane.doe" not in record.output_preview


def test_the_raw_key_is_never_stored(gateway, make_key, audit_for):
    from audit.models import AuditRecord
    from keys.models import ApiKey

    raw, key = make_key()
    gateway.client(raw).post(CHAT, json=chat_body(text=f"my key is {raw}"))
    record = audit_for(key)[0]
    stored = json.dumps(list(AuditRecord.objects.filter(pk=record.pk).values()), default=str)
    stored += json.dumps(list(ApiKey.objects.filter(pk=key.pk).values()), default=str)
    assert raw not in stored
    assert record.key_prefix == raw[:12]


def test_last_used_at_is_kept_up_to_date(gateway, make_key, audit_for):
    raw, key = make_key()
    gateway.client(raw).get("/v1/models")
    audit_for(key)
    key.refresh_from_db()
    assert wait_for(lambda: key.refresh_from_db() or key.last_used_at) is not None


def test_every_request_writes_exactly_one_audit_record(gateway, make_key, audit_for, audit_of):
    raw, key = make_key(rpm=5)
    client = gateway.client(raw)
    responses = [client.post(CHAT, json=chat_body()) for _ in range(7)]
    responses.append(client.post(CHAT, content=b"nope"))
    records = audit_for(key, 8)
    # A later request's record is written after theirs: once it is there, a duplicate of theirs would be too.
    assert audit_of(gateway.client(make_key()[0]).post(CHAT, json=chat_body())) is not None
    records = audit_for(key, 8)
    assert len(records) == 8
    assert sorted(r.request_id for r in records) == sorted(r.headers["x-request-id"] for r in responses)
