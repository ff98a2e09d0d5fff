"""A client's trace context headers (``traceparent``, ``tracestate``, ``baggage``) are read only when tracing is on:
what the OpenTelemetry API says of a malformed one must not reach the gateway's log."""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings

from tests.gateway.test_trace_export import collector
from tests.servers import Gateway

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_hostile_baggage_or_tracestate_header_writes_no_log_line_and_none_of_its_content(canned, live_db):
    """The API's propagators log a warning with the member for every malformed baggage list-member (every one not in
    ASCII, without the limit of 180 the valid ones have), for a baggage header over 8 KB (the whole header) and for a
    malformed tracestate: one unauthenticated request of 8 KB made thousands of lines, each with a piece of a header,
    and a few filled the 10,000 lines a process keeps waiting, dropping every other request's access line."""
    receiver = collector(canned)
    gateway = Gateway(
        server="uvicorn", GATEWAY_LOG_FORMAT="json", GATEWAY_LOG_LEVEL="", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url
    )
    many = b",".join(b"leak%d\x80=v" % i for i in range(600))  # under 8 KB, every member refused
    hostile = [
        {"baggage": many},
        {"baggage": b"leakwhole=" + b"x" * 9000},
        {"baggage": b"leakbad,leakworse"},
        {"traceparent": TRACEPARENT, "tracestate": b"leakstate=1,leak member"},
    ]
    try:
        with gateway.client() as client:
            answers = [client.get("/v1/models", headers=headers) for headers in hostile]
    finally:
        assert gateway.stop() == 0
    assert [answer.status_code for answer in answers] == [401] * len(hostile)
    text = (Path(settings.VAR_DIR) / f"gateway-{gateway.port}.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert "leak" not in text, len([line for line in lines if "leak" in line["message"]])
    for answer in answers:  # each still has its access line
        assert [line["status"] for line in lines if line.get("request_id") == answer.headers["x-request-id"]] == [401]
