"""Fallback load generator for bench/run.py when wrk is unavailable: asyncio + aiohttp.

    .venv/bin/python bench/loadgen.py --url URL --connections 32 --threads 2 --seconds 10 [--key KEY]

Each connection is one keep-alive connection sending POSTs back to back, as wrk
does; ``--threads`` processes share the connections. Bounded in time
(``--seconds``) and in count (``--max-requests``). Prints one JSON object with
the same fields bench/run.py reads from wrk. Much slower than wrk (Python is
the bottleneck well before a fast server is), so treat its req/s as a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time

BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'


async def _connection(session, url, body, headers, stop_at, budget, out):
    while time.monotonic() < stop_at and budget[0] > 0:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                status = response.status
        except TimeoutError:
            out["timeout"] += 1
            continue
        except Exception:
            out["read"] += 1
            continue
        out["latencies"].append((time.perf_counter() - started) * 1e6)
        if status >= 400:  # wrk's rule for "Non-2xx or 3xx responses"
            out["non_2xx"] += 1


async def _run(url, connections, seconds, body, key, max_requests):
    import aiohttp

    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    out = {"latencies": [], "non_2xx": 0, "read": 0, "timeout": 0}
    budget = [max_requests]
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        stop_at = started + seconds
        await asyncio.gather(
            *(_connection(session, url, body.encode(), headers, stop_at, budget, out) for _ in range(connections))
        )
        out["duration_s"] = time.monotonic() - started
    return out


def _worker(args):
    return asyncio.run(_run(*args))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--key", default="")
    parser.add_argument("--body", default=BODY)
    parser.add_argument("--max-requests", type=int, default=2_000_000)
    args = parser.parse_args(argv)
    threads = max(1, min(args.threads, args.connections))
    shares = [args.connections // threads + (1 if i < args.connections % threads else 0) for i in range(threads)]
    jobs = [(args.url, n, args.seconds, args.body, args.key, args.max_requests // threads) for n in shares]
    if threads == 1:
        parts = [_worker(jobs[0])]
    else:
        with multiprocessing.Pool(threads) as pool:
            parts = pool.map(_worker, jobs)
    latencies = sorted(x for part in parts for x in part["latencies"])
    failed = sum(part["read"] + part["timeout"] for part in parts)
    requests = len(latencies)
    duration = max(part["duration_s"] for part in parts)

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else 0.0

    result = {
        "requests": requests,
        "duration_s": duration,
        "rps": requests / duration if duration else 0.0,
        "latency_avg_us": sum(latencies) / requests if requests else 0.0,
        "p50_us": pct(50),
        "p75_us": pct(75),
        "p90_us": pct(90),
        "p99_us": pct(99),
        "non_2xx": sum(part["non_2xx"] for part in parts),
        "socket_errors": {
            "connect": 0,
            "read": sum(p["read"] for p in parts),
            "write": 0,
            "timeout": sum(p["timeout"] for p in parts),
        },
    }
    result["errors"] = result["non_2xx"] + failed
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
