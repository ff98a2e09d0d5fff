#!/usr/bin/env python3
"""The tracing hooks' own CPU per request, in process: tracing off, on but sampled out, and on (spans recorded).

    .venv/bin/python bench/tracing_bench.py [--requests 20000]

One request's hooks, as the proxy calls them: its span begun and ended, the
admission and the settle (``spans.traced``), one attempt with the trace context
put on its upstream request, and the relay. Spans go to an exporter that
drops them, so "on" is the cost on the event loop's thread; encoding and
sending them (the ``BatchSpanProcessor``'s thread) is extra: ``bench/hotpath.py``
with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set measures everything.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def exchange():
    """What the hooks read of an exchange: a chat completion answered by an OpenAI agent."""
    from routing.facts import RequestFacts

    route = SimpleNamespace(slug="research", default_model="gpt-4o-mini", kind="openai")
    return SimpleNamespace(
        request_id="0af7651916cd43dd8448eb211c80319c", method="POST", path="/v1/chat/completions",
        client_ip="127.0.0.1", status=200, error_type="", agent="research", model="gpt-4o-mini", input_tokens=12,
        output_tokens=30, cost_nanos=5_000, details={}, key=None, facts=RequestFacts("r", route=route),
        headers={b"user-agent": b"bench", b"content-type": b"application/json"},
        _scope={"scheme": "http", "http_version": "1.1"}, header=lambda name: "bench",
    ), route  # fmt: skip


async def requests(count: int) -> float:
    """CPU microseconds per request of ``count`` requests' hooks."""
    from gateway_project import tracing
    from routing import spans

    ex, route = exchange()
    target = SimpleNamespace(name="upstream", base_url="http://127.0.0.1:9000")
    entry = {"agent": "research", "target": "upstream", "outcome": "ok", "status": 200}

    @spans.traced("gateway.admission")
    async def admit(ex):
        return None

    @spans.traced("gateway.relay", after=spans.relayed)
    async def relay(ex):
        return None

    @spans.traced("gateway.settle", after=spans.settled)
    async def settle(ex):
        return None

    started = cpu_seconds()
    for _ in range(count):
        began = spans.begin_request(ex)
        await admit(ex)
        attempt = spans.begin_attempt(ex, route, target, 1, 0)
        if tracing.tracer is not None:
            tracing.with_trace_headers({"content-type": "application/json"})
        await relay(ex)
        spans.end_attempt(ex, attempt, entry)
        await settle(ex)
        spans.end_request(ex, began)
    return (cpu_seconds() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    import django

    django.setup()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from gateway_project import tracing

    class Dropped(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    print(f"off: {asyncio.run(requests(args.requests)):.2f} µs a request")
    os.environ["OTEL_TRACES_SAMPLER"] = "always_off"
    tracing.install(SimpleSpanProcessor(Dropped()))
    print(f"on, sampled out: {asyncio.run(requests(args.requests)):.2f} µs a request")
    tracing.uninstall()
    os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
    tracing.install(SimpleSpanProcessor(Dropped()))
    print(f"on, recorded (5 spans, not exported): {asyncio.run(requests(args.requests)):.2f} µs a request")
    tracing.uninstall()


if __name__ == "__main__":
    main()
