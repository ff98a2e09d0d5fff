"""The span tree of a request, read from an in-memory exporter: the gateway runs under uvicorn on a thread of the
test process (real HTTP on loopback, the real application), its upstreams are real loopback servers."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import uuid

import httpx
import hypothesis
import pytest
from django.conf import settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway_project import logs, tracing
from tests.gateway.test_proxy import sse_events
from tests.servers import MockUpstream, free_port
from tests.waiting import until

CHAT = "/v1/chat/completions"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


class ThreadedGateway:
    """The gateway application under uvicorn, with rungateway's protocol, on a thread of the test process: its spans
    reach this process's exporter."""

    def __init__(self):
        import uvicorn

        from gateway_project.asgi import application
        from gateway_project.uvicorn_protocol import BoundedHttpToolsProtocol

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application, host="127.0.0.1", port=self.port, http=BoundedHttpToolsProtocol, lifespan="on",
            log_config=None, access_log=False,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self.thread.start()
        until(lambda: self.server.started, "the in-process gateway listens")

    async def _serve(self) -> None:
        from routing import upstream

        try:
            await self.server.serve()
        finally:  # the loop's upstream connections, before the loop goes
            for pool in upstream._transports.values():
                await pool.aclose()
            upstream._transports.clear()

    def client(self, key: str | None = None, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def exporter():
    made = InMemorySpanExporter()
    tracing.install(SimpleSpanProcessor(made))
    yield made
    tracing.uninstall()


@pytest.fixture(scope="module")
def traced(exporter, seeded, django_db_blocker):
    """The in-process gateway, re-reading its tables as often as the tests' gateway processes do."""
    refresh = settings.GATEWAY["CONFIG_REFRESH_SECONDS"]
    settings.GATEWAY["CONFIG_REFRESH_SECONDS"] = 0.2
    with django_db_blocker.unblock():
        server = ThreadedGateway()
        yield server
        server.stop()
    settings.GATEWAY["CONFIG_REFRESH_SECONDS"] = refresh


@pytest.fixture(scope="module")
def failing():
    """A mock upstream of the module's own, told to fail."""
    mock = MockUpstream()
    yield mock
    mock.stop()


@pytest.fixture
def agent(traced, provider_at):
    """``agent(url, kind="openai", **fields)``: a new agent serving a model of its own, once the gateway has it."""

    def make(url, kind="openai", **fields):
        model = f"m-{uuid.uuid4().hex[:8]}"
        return provider_at(url, kind, on=traced, **{"served_models": [model], "default_model": model, **fields})

    return make


def spans_of(exporter, response) -> list:
    """The finished spans of the request that answered ``response``, once its server span has ended."""
    request_id = response.headers["x-request-id"]
    return until(lambda: spans_of_id(exporter, request_id), f"the spans of {request_id}")


def spans_of_id(exporter, request_id: str) -> list | None:
    found = [s for s in exporter.get_finished_spans() if s.attributes.get("gateway.request_id") == request_id]
    return found if any(s.kind == SpanKind.SERVER for s in found) else None


def tree(spans) -> tuple:
    """The server span and its children by name, in the order they started."""
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    children = sorted((s for s in spans if s.parent and s.parent.span_id == server.context.span_id),
                      key=lambda s: s.start_time)  # fmt: skip
    return server, children


def chat_answer(model: str) -> dict:
    return {
        "id": "c1", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }  # fmt: skip


def test_a_chat_completion_is_a_server_span_under_the_clients_trace_with_admission_attempt_and_settle(
    traced, exporter, agent, canned, make_key
):
    served = agent(canned.url)
    model = served.default_model
    canned.set(CHAT, chat_answer(f"{model}-2026"))
    raw, _ = make_key()
    body = {"model": model, "messages": [{"role": "user", "content": "secret prompt"}]}
    response = traced.client(raw).post(CHAT, json=body, headers={"traceparent": TRACEPARENT, "tracestate": "v=1"})
    assert response.status_code == 200, response.text
    spans = spans_of(exporter, response)
    server, children = tree(spans)

    assert f"{server.context.trace_id:032x}" == CLIENT_TRACE
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN and server.parent.is_remote
    assert server.name == f"POST {CHAT}"
    assert [s.name for s in children] == ["gateway.admission", f"chat {model}", "gateway.settle"]
    assert all(s.context.trace_id == server.context.trace_id for s in spans)
    assert len(spans) == 4  # no relay: a whole JSON answer
    attrs = server.attributes
    assert attrs["http.request.method"] == "POST" and attrs["http.route"] == CHAT
    assert attrs["http.response.status_code"] == 200
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == model
    assert attrs["gen_ai.response.model"] == f"{model}-2026"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (7, 3)
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "openai"
    assert list(attrs["gen_ai.response.finish_reasons"]) == ["length"]
    assert attrs["gateway.agent"] == served.slug and attrs["gateway.client"].startswith("c-")
    assert server.status.status_code == StatusCode.UNSET

    attempt = children[1]
    assert attempt.kind == SpanKind.CLIENT
    a = attempt.attributes
    assert (a["gateway.attempt"], a["gateway.retry"], a["gateway.outcome"]) == (1, 0, "ok")
    assert a["gateway.agent"] == served.slug and a["gateway.target"] == "upstream"
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == int(canned.url.rsplit(":", 1)[1])
    assert a["http.response.status_code"] == 200 and a["gen_ai.response.model"] == f"{model}-2026"
    assert list(a["gen_ai.response.finish_reasons"]) == ["length"]
    settle = children[2]
    assert settle.attributes["gen_ai.usage.output_tokens"] == 3

    # The upstream's parent is the attempt, in the client's trace, its tracestate kept.
    (heads,) = canned.heads
    assert heads["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.context.span_id:016x}-01"
    assert heads["tracestate"] == "v=1"
    # Nothing a collector keeps holds the prompt or the key.
    exported = json.dumps([dict(s.attributes) for s in spans])
    assert "secret prompt" not in exported and raw not in exported


def test_what_an_upstream_says_is_cut_short_on_a_span(traced, exporter, agent, canned, make_key):
    served = agent(canned.url)
    canned.set(CHAT, {**chat_answer("m" * 5000), "choices": [{"index": 0, "finish_reason": "x" * 5000}]})
    body = {"model": served.default_model, "messages": [{"role": "user", "content": "hello"}]}
    response = traced.client(make_key()[0]).post(CHAT, json=body)
    assert response.status_code == 200, response.text
    server, children = tree(spans_of(exporter, response))
    for span in (server, children[1]):
        assert span.attributes["gen_ai.response.model"] == "m" * 1024
        assert list(span.attributes["gen_ai.response.finish_reasons"]) == ["x" * 1024]


def test_a_streamed_answer_has_a_relay_span_under_its_attempt(traced, exporter, agent, seeded, make_key):
    served = agent(seeded.url)
    raw, _ = make_key()
    body = {"model": served.default_model, "messages": [{"role": "user", "content": "stream me"}], "stream": True}
    with traced.client(raw).stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    spans = spans_of(exporter, response)
    server, children = tree(spans)
    assert [s.name for s in children] == ["gateway.admission", f"chat {served.default_model}", "gateway.settle"]
    attempt = children[1]
    (relay,) = [s for s in spans if s.name == "gateway.relay"]
    assert relay.parent.span_id == attempt.context.span_id
    assert relay.status.status_code == StatusCode.UNSET
    assert relay.start_time >= attempt.start_time and relay.end_time <= attempt.end_time
    assert server.attributes["gen_ai.usage.output_tokens"] > 0
    assert list(server.attributes["gen_ai.response.finish_reasons"]) == ["stop"]
    assert list(attempt.attributes["gen_ai.response.finish_reasons"]) == ["stop"]
    assert all(s.attributes["gateway.request_id"] == response.headers["x-request-id"] for s in spans)


def test_a_retry_and_a_fallback_are_attempt_spans_of_their_own(traced, exporter, agent, seeded, failing, make_key):
    backup = agent(seeded.url)
    primary = agent(failing.url, max_retries=1, fallbacks=[backup.slug])
    failing.script(always={"status": 503})
    try:
        raw, _ = make_key()
        body = {"model": primary.default_model, "messages": [{"role": "user", "content": "hello"}]}
        response = traced.client(raw).post(CHAT, json=body)
    finally:
        failing.script()
    assert response.status_code == 200, response.text
    server, children = tree(spans_of(exporter, response))
    attempts = [s for s in children if s.kind == SpanKind.CLIENT]
    assert [
        (s.attributes["gateway.attempt"], s.attributes["gateway.retry"], s.attributes["gateway.agent"],
         s.attributes["gateway.outcome"], s.attributes["http.response.status_code"], s.status.status_code)
        for s in attempts
    ] == [
        (1, 0, primary.slug, "upstream_error", 503, StatusCode.ERROR),
        (2, 1, primary.slug, "upstream_error", 503, StatusCode.ERROR),
        (3, 0, backup.slug, "ok", 200, StatusCode.UNSET),
    ]  # fmt: skip
    assert attempts[0].status.description == "upstream_error"
    assert "gateway.fallback_for" not in attempts[1].attributes
    assert attempts[2].attributes["gateway.fallback_for"] == primary.slug
    assert attempts[2].name == f"chat {backup.default_model}"
    assert server.attributes["gateway.agent"] == backup.slug and server.status.status_code == StatusCode.UNSET


def test_a_retry_that_then_answers(traced, exporter, agent, failing, make_key):
    served = agent(failing.url, max_retries=2)
    failing.script({"status": 503})  # the first request fails, the next is answered
    raw, _ = make_key()
    body = {"model": served.default_model, "messages": [{"role": "user", "content": "hello"}]}
    response = traced.client(raw).post(CHAT, json=body)
    assert response.status_code == 200, response.text
    _, children = tree(spans_of(exporter, response))
    outcomes = [(s.attributes["gateway.attempt"], s.attributes["gateway.outcome"]) for s in children
                if s.kind == SpanKind.CLIENT]  # fmt: skip
    assert outcomes == [(1, "upstream_error"), (2, "ok")]


def test_a_request_without_a_key_is_an_error_span_with_the_gateways_code(traced, exporter):
    response = traced.client().post(CHAT, json={"model": "x", "messages": []}, headers={"traceparent": TRACEPARENT})
    assert response.status_code == 401
    code = response.json()["error"]["code"]
    server, children = tree(spans_of(exporter, response))
    assert children == []  # refused before anything was admitted
    assert server.status.status_code == StatusCode.ERROR and server.status.description == code
    assert server.attributes["error.type"] == code
    assert server.attributes["http.response.status_code"] == 401
    assert f"{server.context.trace_id:032x}" == CLIENT_TRACE


def test_a_rate_limited_request_has_a_failed_admission_span(traced, exporter, agent, seeded, make_key):
    served = agent(seeded.url)
    raw, _ = make_key(rpm=1)
    body = {"model": served.default_model, "messages": [{"role": "user", "content": "hello"}]}
    with traced.client(raw) as client:
        assert client.post(CHAT, json=body).status_code == 200
        response = client.post(CHAT, json=body)
    assert response.status_code == 429
    server, children = tree(spans_of(exporter, response))
    assert [s.name for s in children] == ["gateway.admission"]
    (admission,) = children
    assert admission.status.status_code == StatusCode.ERROR
    assert admission.attributes["error.type"] == "rate_limit_requests" == server.attributes["error.type"]
    assert server.attributes["http.response.status_code"] == 429


def test_a_pass_through_sends_the_attempts_traceparent_in_place_of_the_clients(
    traced, exporter, agent, seeded, make_key
):
    served = agent(seeded.url, kind="agent", served_models=[])
    raw, _ = make_key()
    response = traced.client(raw).post(
        f"/agents/{served.slug}/anything", content=b"{}", headers={"traceparent": TRACEPARENT, "tracestate": "v=2"}
    )
    assert response.status_code == 200, response.text
    seen = response.json()["headers"]
    spans = spans_of(exporter, response)
    (attempt,) = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert seen["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.context.span_id:016x}-01"
    assert seen["tracestate"] == "v=2"
    server, _ = tree(spans)
    assert server.attributes["http.route"] == "/agents/{agent}/{path}"
    (relay,) = [s for s in spans if s.name == "gateway.relay"]
    assert relay.parent.span_id == attempt.context.span_id


def test_an_error_log_line_names_the_request_and_its_trace(traced, exporter, make_key, monkeypatch):
    from routing import endpoints

    async def broken(ex):
        raise RuntimeError("a bug")

    monkeypatch.setitem(endpoints.ENDPOINTS, "/v1/models", ("GET", broken))
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.RequestContext())
    proxy_log = logging.getLogger("gateway.proxy")
    proxy_log.addHandler(handler)
    try:
        response = traced.client(make_key()[0]).get("/v1/models")
    finally:
        proxy_log.removeHandler(handler)
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    server, _ = tree(spans_of(exporter, response))
    (line,) = [json.loads(line) for line in lines]
    assert line["level"] == "ERROR" and line["logger"] == "gateway.proxy"
    assert line["request_id"] == response.headers["x-request-id"]
    assert line["trace_id"] == f"{server.context.trace_id:032x}"
    assert "RuntimeError: a bug" in line["exc_info"]
    assert server.status.description == "internal_error"


def test_with_tracing_off_no_span_is_made_and_a_pass_through_forwards_the_clients_traceparent_as_sent(
    traced, exporter, agent, seeded, canned, make_key, monkeypatch
):
    on = tracing.tracer
    monkeypatch.setattr(tracing, "tracer", None)  # as a process with no OTLP endpoint runs
    composed, passed = agent(canned.url), agent(seeded.url, kind="agent", served_models=[])
    canned.set(CHAT, chat_answer(composed.default_model))
    raw, _ = make_key()
    context = {"traceparent": TRACEPARENT, "tracestate": "v=3"}
    with traced.client(raw) as client:
        body = {"model": composed.default_model, "messages": [{"role": "user", "content": "hello"}]}
        answered = client.post(CHAT, json=body, headers=context)
        echoed = client.post(f"/agents/{passed.slug}/anything", content=b"{}", headers=context)
    assert answered.status_code == echoed.status_code == 200
    # The gateway is then a transparent proxy: the client's context goes on as any other header where the client's
    # headers go on (pass-through), and a call the gateway composes itself carries none.
    seen = echoed.json()["headers"]
    assert (seen["traceparent"], seen["tracestate"]) == (TRACEPARENT, "v=3")
    assert "traceparent" not in canned.heads[-1]
    monkeypatch.setattr(tracing, "tracer", on)
    spans_of(exporter, traced.client(raw).post(CHAT, json=body))  # a request after them, traced: theirs are done
    ids = {answered.headers["x-request-id"], echoed.headers["x-request-id"]}
    assert not [s for s in exporter.get_finished_spans() if s.attributes.get("gateway.request_id") in ids]


def test_a_trace_the_client_did_not_sample_is_not_recorded_but_its_context_goes_upstream(
    traced, exporter, agent, seeded, make_key
):
    served = agent(seeded.url, kind="agent", served_models=[])
    unsampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"
    raw, _ = make_key()
    response = traced.client(raw).post(f"/agents/{served.slug}/anything", content=b"{}",
                                       headers={"traceparent": unsampled})  # fmt: skip
    assert response.status_code == 200, response.text
    version, trace_id, parent_id, flags = response.json()["headers"]["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "00")  # the client's decision, passed on
    assert parent_id != CLIENT_SPAN  # the gateway's own (unrecorded) span is the upstream's parent
    spans_of(exporter, traced.client(raw).post(f"/agents/{served.slug}/anything", content=b"{}"))  # after it
    assert not [s for s in exporter.get_finished_spans() if s.context.trace_id == int(CLIENT_TRACE, 16)
                and s.attributes.get("gateway.request_id") == response.headers["x-request-id"]]  # fmt: skip


HEX_CONTEXT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
PRINTABLE = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


@st.composite
def traceparents(draw):
    """Any short printable text, or the W3C example with one character changed (sometimes still valid)."""
    if draw(st.booleans()):
        return draw(st.text(PRINTABLE, min_size=1, max_size=60))
    at = draw(st.integers(0, len(TRACEPARENT) - 1))
    return TRACEPARENT[:at] + draw(PRINTABLE) + TRACEPARENT[at + 1 :]


def accepted(value: str) -> bool:
    """What the W3C specification lets a receiver take (no other version's fields are drawn here)."""
    found = HEX_CONTEXT.fullmatch(value)
    return bool(found) and found[1] != "ff" and set(found[2]) != {"0"} and set(found[3]) != {"0"}


@hypothesis.given(value=traceparents())
@hypothesis.settings(max_examples=30, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_a_malformed_traceparent_is_ignored_and_the_request_starts_a_trace_of_its_own(traced, exporter, value):
    response = traced.client().get("/v1/models", headers={"traceparent": value})
    assert response.status_code == 401  # the gateway's own refusal, whatever the header said
    server, _ = tree(spans_of(exporter, response))
    if accepted(value):
        assert f"{server.parent.span_id:016x}" == value.split("-")[2]
    else:
        assert server.parent is None


def test_a_queued_job_runs_as_a_span_in_the_trace_of_the_request_that_queued_it(traced, exporter, make_key):
    """The request that queued the job and the job's run are one trace: the run a consumer span under the
    request's server span, with the run's attempts and settle under it, and its outcome on it."""
    from tests.gateway.test_async_jobs import finished, submit

    client = traced.client(make_key()[0])
    client.headers["traceparent"] = TRACEPARENT
    accepted = submit(client, **{"async": True})
    job_id = accepted.json()["id"]
    assert finished(client, job_id)["status"] == "succeeded"
    queued, _ = tree(spans_of(exporter, accepted))

    def run_span():
        found = [s for s in exporter.get_finished_spans() if s.attributes.get("gateway.job_id") == job_id]
        return found or None

    (run,) = until(run_span, "the job's span")
    assert run.kind == SpanKind.CONSUMER and run.name == "invoke_agent research"
    assert f"{run.context.trace_id:032x}" == CLIENT_TRACE
    assert run.parent.span_id == queued.context.span_id
    a = run.attributes
    assert a["gateway.submitted_request_id"] == accepted.headers["x-request-id"]
    assert a["gateway.request_id"] == uuid.UUID(job_id).hex  # the run's audit record
    assert a["gen_ai.agent.name"] == a["gateway.agent"] == "research"
    assert a["gen_ai.usage.output_tokens"] > 0 and run.status.status_code == StatusCode.UNSET
    under = [s for s in exporter.get_finished_spans() if s.parent and s.parent.span_id == run.context.span_id]
    assert min(under, key=lambda s: s.start_time).kind == SpanKind.CLIENT  # its attempt first
    assert "gateway.settle" in {s.name for s in under}
    assert all(s.attributes["gateway.request_id"] == a["gateway.request_id"] for s in under)


def test_a_websocket_session_is_one_server_span_from_handshake_to_close(traced, exporter, make_key):
    from websockets.sync.client import connect

    raw, _ = make_key()
    url = traced.url.replace("http://", "ws://") + "/agents/research/ws"
    headers = {"Authorization": f"Bearer {raw}", "traceparent": TRACEPARENT}
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        ws.send("say hi")
        assert ws.recv(timeout=10) == "hi"
        session_id = ws.response.headers["x-request-id"]

    session, children = tree(until(lambda: spans_of_id(exporter, session_id), "the session's span"))
    assert session.name == "WS /agents/{agent}/{path}"
    assert [s.name for s in children] == ["gateway.admission", "gateway.settle"]
    assert f"{session.context.trace_id:032x}" == CLIENT_TRACE
    a = session.attributes
    assert a["http.response.status_code"] == 101 and a["gateway.agent"] == "research"
    assert (a["gateway.ws.frames_in"], a["gateway.ws.frames_out"]) == (1, 1)
    assert (a["gateway.ws.close_code"], a["gateway.ws.closed_by"]) == (1000, "client")
    assert raw not in json.dumps(dict(a))
