#!/usr/bin/env python3
"""What metrics cost on the hot path: the gateway's CPU per request with metrics on and off, in one run.

    .venv/bin/python bench/metrics_bench.py [--requests 4000] [--rounds 5] [--concurrency 16]

The same driver as ``bench/hotpath.py`` (the ASGI application in one process, on
uvloop, a real mock upstream, PostgreSQL and Redis), in prometheus-client's
multiprocess mode as ``rungateway`` runs it (values in files). Rounds alternate
metrics on and off (``routing.observe.ENABLED``), so drift in the machine's speed
falls on both alike; the figure is the difference of the two medians, in
microseconds of CPU per request. Target: under 20 µs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import hotpath  # noqa: E402


async def rounds(args, key: str) -> dict:
    from gateway_project.asgi import application
    from gateway_project.writer import writer
    from routing import observe

    await hotpath.drive(application, key, args.warmup, args.concurrency)
    figures: dict[bool, list[float]] = {True: [], False: []}
    for round_ in range(args.rounds * 2):
        observe.ENABLED = round_ % 2 == 0
        await writer.flush()
        started = hotpath.cpu_seconds()
        ok, bad = await hotpath.drive(application, key, args.requests, args.concurrency)
        await writer.flush()
        if bad:
            raise SystemExit(f"{bad} of {ok + bad} requests were not answered 200")
        figures[observe.ENABLED].append((hotpath.cpu_seconds() - started) / args.requests * 1e6)
    return figures


def observer_cost(requests: int = 50_000) -> dict:
    """The observers alone, per request, in this process (multiprocess mode): one chat answer with one upstream
    attempt, and one streamed answer, each with its share of the hand-over to prometheus-client (a flush a
    second at 1,000 requests a second)."""
    import time as clock
    from decimal import Decimal
    from types import SimpleNamespace

    from gateway_project import metrics
    from routing import observe

    observe.ENABLED = True
    started = clock.perf_counter()
    ex = SimpleNamespace(path="/v1/chat/completions", started=started - 0.05, response_at=started - 0.01,
                         upstream_seconds=0.03, streaming=False, first_byte_at=0.0)  # fmt: skip
    row = {"agent": "openai", "model": "gpt-4o-mini", "error_type": "", "status": 200, "client_slug": "acme",
           "input_tokens": 12, "output_tokens": 30, "cost_usd": Decimal("0.000021"), "details": {}}  # fmt: skip
    figures = {}
    for name, streaming in (("warm-up", False), ("warm-up", True), ("chat_us", False), ("stream_us", True)):
        ex.streaming, ex.first_byte_at = streaming, (started - 0.04 if streaming else 0.0)
        metrics.pending.scheduled = True  # handed over below, once per 1,000 requests
        begun = clock.perf_counter()
        for index in range(requests):
            observe.observe_request(ex, row)
            observe.observe_attempt("openai", "upstream", "ok", 0.03)
            if index % 1000 == 999:
                metrics.pending.flush()
                metrics.pending.scheduled = True
        figures[name] = round((clock.perf_counter() - begun) / requests * 1e6, 2)
    del figures["warm-up"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each, on and off alternating")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--db", default="metrics_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    args = parser.parse_args()
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-bench-")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings", DATABASE_URL=f"{hotpath.PG_URL}/{args.db}",
        REDIS_URL=args.redis_url, GATEWAY_HTTP_TRANSPORT="aiohttp", DJANGO_DEBUG="0", GATEWAY_LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
    )  # fmt: skip
    os.environ.pop("CELERY_TASK_ALWAYS_EAGER", None)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    mock, key = hotpath.prepare(ROOT, args.db, args.redis_url)
    try:
        import uvloop

        figures = uvloop.run(rounds(args, key))
    finally:
        mock.terminate()
        mock.wait(10)
    on, off = statistics.median(figures[True]), statistics.median(figures[False])
    direct = observer_cost()
    print(
        json.dumps(
            {
                "requests_per_round": args.requests,
                "cpu_us_per_request_on": [round(f, 1) for f in figures[True]],
                "cpu_us_per_request_off": [round(f, 1) for f in figures[False]],
                "median_on_us": round(on, 1),
                "median_off_us": round(off, 1),
                "metrics_cost_us": round(on - off, 1),
                "observers_alone": direct,
            }
        )
    )


if __name__ == "__main__":
    main()
