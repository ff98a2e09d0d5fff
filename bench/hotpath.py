#!/usr/bin/env python3
"""The gateway application's own CPU per request, without an HTTP server or a load generator beside it.

    .venv/bin/python bench/hotpath.py [--requests 6000] [--concurrency 16] [--root DIR] [--repeat 3]

``bench/run.py`` measures the whole gateway under wrk on this 2-core machine, where
the load generator, the mock upstream, PostgreSQL and Redis share the cores with it:
its CPU per request moves by ±10% from one run to the next. This drives the ASGI
application (``gateway_project.asgi.application``) in one process, on uvloop, with
``--concurrency`` requests in flight, through the real hot path on the production
profile: a real mock upstream on loopback (its own process), PostgreSQL (the audit and
usage writer, COPY) and Redis (admission and settle). It counts the process's CPU
(every thread: the writer's too, its last flush included) per request, and the
same for a bare loop of the same shape that does nothing (the driver's own cost,
subtracted). ``--root`` runs another checkout's application (an older commit's
worktree) with this same driver, so two versions compare like for like: run them
one after the other, ``--repeat`` times each, and compare the medians.

It uses its own database (``hotpath_bench``) and Redis db 12, both emptied first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
PG_URL = "postgres://postgres@127.0.0.1:5432"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def prepare(root: Path, db: str, redis_url: str) -> tuple[subprocess.Popen, str]:
    """A fresh database with the demo agents at a mock upstream, and a key; the mock and the key."""
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{db}"')
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    python = str(root / ".venv" / "bin" / "python")

    def manage(*args: str) -> str:
        done = subprocess.run(
            [python, "manage.py", *args], cwd=root, env=os.environ, capture_output=True, text=True, check=False
        )
        if done.returncode:
            raise SystemExit(f"manage.py {args[0]} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    manage("migrate", "--verbosity", "0")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mock = subprocess.Popen(
        [python, "-m", "routing.mock_upstream", "--port", str(port)],
        cwd=root, env=os.environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    manage("shell", "-c", f"from gateway_project.demo import seed_agents; seed_agents('http://127.0.0.1:{port}')")
    key = manage(
        "create_api_key", "--client", "bench", "--rpm", "100000000", "--tpm", "2000000000",
        "--max-concurrent", "0", "--monthly-budget", "1000000",
    ).strip()  # fmt: skip
    return mock, key


def scope_for(key: str) -> dict:
    """The scope the gateway's own server protocols give a gateway request: they bound its body's time and report
    its client's hang-up (``request_bounds.BODY_BOUNDED``, ``REPORTS_HANG_UP``; an older checkout ignores them)."""
    return {
        "gateway.body_bounded": True, "gateway.reports_hang_up": True,
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode()),
            (b"user-agent", b"hotpath-bench"),
        ],
    }  # fmt: skip


async def one(app, key: str | None) -> int:
    """One request through ``app`` (or, with no key, through a bare application of the same shape)."""
    sent = False
    gone = asyncio.get_running_loop().create_future()
    status = 0

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await gone
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif not message.get("more_body"):
            if not gone.done():
                gone.set_result(None)

    await app(scope_for(key or ""), receive, send)
    if not gone.done():
        gone.set_result(None)
    return status


async def bare(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}", "more_body": False})


async def drive(app, key, requests: int, concurrency: int) -> tuple[int, int]:
    """``requests`` requests, ``concurrency`` at a time: (answered 200, others)."""
    left = requests
    ok = bad = 0

    async def client():
        nonlocal left, ok, bad
        while left > 0:
            left -= 1
            if await one(app, key) == 200:
                ok += 1
            else:
                bad += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return ok, bad


async def measure(args, key: str) -> dict:
    from gateway_project.asgi import application
    from gateway_project.writer import writer

    await drive(application, key, args.warmup, args.concurrency)
    await writer.flush()
    base = cpu_seconds()
    await drive(bare, None, args.requests, args.concurrency)
    bare_us = (cpu_seconds() - base) / args.requests * 1e6
    runs = []
    profiler = None
    if args.cprofile:
        import cProfile

        profiler = cProfile.Profile()
    for _ in range(args.repeat):
        await writer.flush()
        started, wall = cpu_seconds(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        ok, bad = await drive(application, key, args.requests, args.concurrency)
        if profiler is not None:
            profiler.disable()
        await writer.flush()  # the rows these requests queued are their cost too
        cpu = cpu_seconds() - started
        if bad:
            raise SystemExit(f"{bad} of {ok + bad} requests were not answered 200")
        runs.append(
            {"cpu_us_per_request": cpu / args.requests * 1e6 - bare_us, "rps": ok / (time.perf_counter() - wall)}
        )
    if profiler is not None:
        profiler.dump_stats(args.cprofile)
    return {"bare_us": bare_us, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", default="hotpath_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--cprofile", type=Path, help="write cProfile stats of the measured runs (the event loop's thread) here"
    )
    args = parser.parse_args()
    root = args.root.resolve()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings", DATABASE_URL=f"{PG_URL}/{args.db}",
        REDIS_URL=args.redis_url, GATEWAY_HTTP_TRANSPORT="aiohttp", DJANGO_DEBUG="0",
        GATEWAY_LOG_LEVEL=os.environ.get("GATEWAY_LOG_LEVEL", "WARNING"),  # INFO: each request's access line too
    )  # fmt: skip
    os.environ.pop("CELERY_TASK_ALWAYS_EAGER", None)
    os.chdir(root)
    sys.path.insert(0, str(root))
    mock, key = prepare(root, args.db, args.redis_url)
    try:
        import uvloop

        result = uvloop.run(measure(args, key))
    finally:
        mock.terminate()
        mock.wait(10)
    figures = [run["cpu_us_per_request"] for run in result["runs"]]
    summary = {
        "root": str(root),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "bare_driver_us": round(result["bare_us"], 1),
        "cpu_us_per_request": [round(f, 1) for f in figures],
        "median_us": round(statistics.median(figures), 1),
        "rps": [round(run["rps"]) for run in result["runs"]],
    }
    print(json.dumps(summary))
    if args.output:
        args.output.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
