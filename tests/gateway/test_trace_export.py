"""Spans exported over OTLP/HTTP by real gateway processes (Daphne and uvicorn) to a receiver on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from django.conf import settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.servers import ROOT, Gateway, free_port, server_env, stop

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def exported_spans(receiver) -> list[dict]:
    """Every span a canned upstream standing in for a collector was sent on ``POST /v1/traces`` (OTLP/HTTP protobuf),
    with its resource's attributes."""
    spans = []
    for (path, body), head in zip(receiver.seen, receiver.heads, strict=True):
        assert (path, head["content-type"]) == ("/v1/traces", "application/x-protobuf")
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                spans += [
                    {
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "resource": resource,
                    }
                    for span in scope_spans.spans
                ]
    return spans


def collector(canned):
    """``canned`` answering OTLP exports as a collector does (an empty ``ExportTraceServiceResponse``)."""
    canned.set("/v1/traces", ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf")
    return canned


def _value(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_gateway_exports_the_requests_spans_and_the_upstream_joins_its_trace(
    server, canned, live_db, seeded, make_key, wait_for_agent
):
    from routing.models import Agent

    agent = Agent.objects.create(slug=f"x-{uuid.uuid4().hex[:8]}", name="x", kind="agent", upstream_url=seeded.url,
                                 timeout_seconds=5)  # fmt: skip
    # Batches wait a minute: what arrives before the gateway stops was flushed by its shutdown.
    receiver = collector(canned)
    gateway = Gateway(server=server, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_SERVICE_NAME="gw-under-test",
                      OTEL_BSP_SCHEDULE_DELAY="60000")  # fmt: skip
    try:
        wait_for_agent(agent.slug, gateway)
        raw, _ = make_key()
        traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
        response = gateway.client(raw).post(f"/agents/{agent.slug}/echo", json={}, headers={"traceparent": traceparent})
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
    finally:
        assert gateway.stop() == 0
        agent.delete()
    spans = [s for s in exported_spans(receiver) if s["attributes"].get("gateway.request_id") == request_id]
    names = sorted(s["name"] for s in spans)
    route = "/agents/{agent}/{path}"
    assert names == sorted([f"POST {route}", "gateway.admission", f"attempt {agent.slug}", "gateway.relay",
                            "gateway.settle"])  # fmt: skip
    (request,) = [s for s in spans if s["name"] == f"POST {route}"]
    assert request["attributes"]["http.route"] == route and request["kind"] == 2  # SPAN_KIND_SERVER
    assert (request["trace_id"], request["parent_span_id"]) == (CLIENT_TRACE, CLIENT_SPAN)
    assert request["resource"]["service.name"] == "gw-under-test"
    assert {s["trace_id"] for s in spans} == {CLIENT_TRACE}
    (attempt,) = [s for s in spans if s["name"] == f"attempt {agent.slug}"]
    assert attempt["parent_span_id"] == request["span_id"]
    seen = response.json()["headers"]["traceparent"]
    assert seen == f"00-{CLIENT_TRACE}-{attempt['span_id']}-01"  # the upstream's parent: the attempt


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_collector_that_is_down_costs_no_request_and_does_not_hold_the_shutdown(
    server, live_db, seeded, make_key, wait_for_agent
):
    from routing.models import Agent

    agent = Agent.objects.create(slug=f"x-{uuid.uuid4().hex[:8]}", name="x", kind="agent", upstream_url=seeded.url,
                                 timeout_seconds=5)  # fmt: skip
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there: every export is refused
    gateway = Gateway(server=server, OTEL_EXPORTER_OTLP_ENDPOINT=down, OTEL_BSP_SCHEDULE_DELAY="20")
    try:
        wait_for_agent(agent.slug, gateway)
        with gateway.client(make_key()[0]) as client:
            statuses = [client.post(f"/agents/{agent.slug}/echo", json={}).status_code for _ in range(30)]
        assert statuses == [200] * 30
    finally:
        started = time.monotonic()
        assert gateway.stop() == 0
        agent.delete()
    assert time.monotonic() - started < 15  # the exporter's retries do not keep the workers from exiting


@pytest.mark.skipif(not settings.REDIS_URL, reason="a worker needs the production profile's Redis broker")
def test_a_job_run_by_a_celery_worker_is_exported_in_the_trace_of_the_request_that_queued_it(
    canned, live_db, seeded, make_key, tmp_path
):
    """A prefork worker's pool process starts its own exporter with its first job, and sends what it holds as it
    stops (batches would otherwise wait a minute here)."""
    from tests.gateway.test_async_jobs import finished, submit

    receiver = collector(canned)
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "gateway_project", "--quiet", "worker", "--pool", "prefork",
             "-c", "1", "-n", f"traced-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=ROOT, env=server_env(CELERY_TASK_ALWAYS_EAGER="0", **otel), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        gateway = Gateway(CELERY_TASK_ALWAYS_EAGER="0", **otel)
        try:
            with gateway.client(make_key()[0]) as client:
                client.headers["traceparent"] = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
                accepted = submit(client, **{"async": True})
                job_id = accepted.json()["id"]
                assert finished(client, job_id)["status"] == "succeeded"
        finally:
            assert gateway.stop() == 0
            assert stop(worker, seconds=30) == 0, log_path.read_text()
    spans = exported_spans(receiver)
    (queued,) = [s for s in spans if s["attributes"].get("gateway.request_id") == accepted.headers["x-request-id"]
                 and s["kind"] == 2]  # fmt: skip
    (run,) = [s for s in spans if s["attributes"].get("gateway.job_id") == job_id]
    assert run["name"] == "invoke_agent research" and run["kind"] == 5  # SPAN_KIND_CONSUMER
    assert (run["trace_id"], run["parent_span_id"]) == (CLIENT_TRACE, queued["span_id"])
    under = {s["name"] for s in spans if s["parent_span_id"] == run["span_id"]}
    assert "gateway.settle" in under and len(under) >= 2, under
