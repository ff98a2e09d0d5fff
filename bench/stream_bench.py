#!/usr/bin/env python3
"""Benchmark SSE streaming and 2-target balancing through the gateway (production profile).

    .venv/bin/python bench/stream_bench.py [--servers daphne,uvicorn] [--sequential 200] [--concurrency 16,32]

1. Streaming: chat completions with ``stream: true``, the mock upstream sending its first
   chunk after ``--first-chunk-ms`` and then ``--chunks`` chunks ``--chunk-interval-ms`` apart;
   time to first byte (TTFB) and to last byte, directly at the mock and through the gateway,
   sequentially and at each concurrency; whether the gateway really streamed.
2. Balancing: wrk against one agent with one target, then two targets (two mock processes)
   under the weighted (50/50) and least_busy strategies; req/s, p50/p99 and how many requests
   each mock served (its ``/__mock__/stats`` counter, read before and after each run).

Set-up, processes and wrk come from bench/run.py. Prints a table, writes var/bench-stream.json,
and stops everything it started (also on error, Ctrl+C, SIGTERM or its overall time limit).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import fcntl
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run as base  # noqa: E402 - bench/run.py, next to this file: set-up, processes, wrk

ROOT = base.ROOT
VAR = ROOT / "var"
PATH = base.PATH
WORDS_PER_CHUNK = 3  # routing/mock_upstream.py streams its answer three words a chunk
ANSWER_PREFIX_WORDS = 3  # "Mock answer to:"

# The agents of the balancing runs, each reached by its own model name (so nothing changes between runs).
BALANCE_AGENTS = [
    # run label, agent slug = model, strategy, targets (name, mock index, weight)
    ("one-target", "bench-one", "weighted", [("a", 0, 100)]),
    ("weighted-50-50", "bench-weighted", "weighted", [("a", 0, 50), ("b", 1, 50)]),
    ("least-busy", "bench-least", "least_busy", [("a", 0, 100), ("b", 1, 100)]),
]

SEED_SNIPPET = """
import json
from routing.models import Agent, Target
mocks = json.loads({mocks!r})
for slug, strategy, targets in json.loads({agents!r}):
    agent = Agent.objects.create(
        slug=slug, name=slug, kind="openai", upstream_url=mocks[0], served_models=[slug], default_model=slug,
        timeout_seconds=30, strategy=strategy,
    )
    for name, mock, weight in targets:
        Target.objects.create(agent=agent, name=name, url=mocks[mock], weight=weight)
print("ok")
"""


GUARDRAIL_SNIPPET = """
from keys.guardrails import DETECTORS
from keys.models import Guardrail
Guardrail.objects.create(name="bench: every detector", stage="output", action="redact",
                         detectors=[name for name in DETECTORS if name != "injection"])
"""


def say(message: str) -> None:
    base.say(message)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def post_json(url: str, payload: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def stream_body(chunks: int) -> str:
    """A streamed chat request whose mock answer comes in exactly ``chunks`` content chunks."""
    words = " ".join("x" for _ in range(chunks * WORDS_PER_CHUNK - ANSWER_PREFIX_WORDS))
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": words}],
        }
    )


# --- the SSE client ------------------------------------------------------------


async def _stream_once(session, url: str, body: bytes, headers: dict) -> dict:
    """One streamed request: ms to the response head, to the first body byte and to the end."""
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            head = time.perf_counter()
            first = None
            data = bytearray()
            async for piece in response.content.iter_any():
                if first is None:
                    first = time.perf_counter()
                data += piece
            end = time.perf_counter()
            status = response.status
    except Exception as exc:  # counted as an error, the run goes on
        return {"error": f"{type(exc).__name__}: {exc}"}
    if status != 200 or first is None or b"data: [DONE]" not in data:
        return {"error": f"status {status}, {len(data)} bytes, {'with' if b'[DONE]' in data else 'no'} [DONE]"}
    return {
        "head_ms": (head - started) * 1e3,
        "ttfb_ms": (first - started) * 1e3,
        "ttlb_ms": (end - started) * 1e3,
        "events": data.count(b"data: "),
    }


async def _stream_run(url: str, key: str, body: str, connections: int, per_connection: int, warmup: int) -> dict:
    import aiohttp

    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:

        async def connection(count: int) -> list[dict]:
            return [await _stream_once(session, url, body.encode(), headers) for _ in range(count)]

        await asyncio.gather(*(connection(warmup) for _ in range(connections)))  # opens the connections
        started = time.perf_counter()
        results = await asyncio.gather(*(connection(per_connection) for _ in range(connections)))
        wall = time.perf_counter() - started
    samples = [s for per in results for s in per]
    return {"samples": samples, "wall_s": wall}


def stream_run(name: str, url: str, key: str, args, connections: int, per_connection: int, target: str) -> dict:
    """A bounded streaming run (``connections`` x ``per_connection`` requests) and its summary."""
    body = stream_body(args.chunks)
    busy0, total0 = base.machine_busy()
    raw = asyncio.run(asyncio.wait_for(_stream_run(url + PATH, key, body, connections, per_connection, 3), 600))
    busy1, total1 = base.machine_busy()
    ok = [s for s in raw["samples"] if "error" not in s]
    errors = [s["error"] for s in raw["samples"] if "error" in s]
    window_ms = args.chunks * args.chunk_interval_ms  # how long the mock takes from its first chunk to its last
    # Streamed: the client had its first byte at least half the upstream's chunk window before its last byte.
    streamed = [s for s in ok if s["ttlb_ms"] - s["ttfb_ms"] >= window_ms / 2]
    result = {
        "name": name,
        "target": target,
        "connections": connections,
        "requests": len(raw["samples"]),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "streams_per_s": len(ok) / raw["wall_s"] if raw["wall_s"] else None,
        "streamed": len(streamed),
        "upstream_last_chunk_ms": args.first_chunk_ms + window_ms,
        "events_per_stream": sorted({s["events"] for s in ok}),
        "machine_busy_pct": 100 * (busy1 - busy0) / max(1e-9, total1 - total0),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    for field in ("head_ms", "ttfb_ms", "ttlb_ms"):
        values = [s[field] for s in ok]
        for q in (50, 90, 99):
            result[f"{field[:-3]}_p{q}_ms"] = percentile(values, q)
        result[f"{field[:-3]}_max_ms"] = max(values, default=None)
    if errors:
        result["invalid"] = f"{len(errors)} of {len(raw['samples'])} streams failed: {result['error_examples']}"
    return result


# --- the benchmark -----------------------------------------------------------------


class StreamBench(base.Bench):
    """bench/run.py's set-up (database, Redis, mock, gateway, clean-up) with a second mock and its own logs."""

    def __init__(self, args):
        super().__init__(args)
        self.mock_b: subprocess.Popen | None = None
        self.mock_urls: list[str] = []
        self.log_names: set[str] = set()

    def log_file(self, name: str):
        name = f"stream-{name}"  # not bench/run.py's names: both may run at once
        while name in self.log_names:
            name += "-b"
        self.log_names.add(name)
        return super().log_file(name)

    def start_mocks(self) -> list[str]:
        first = self.start_mock()
        mock_a = self.mock
        self.mock_b = None
        second = self.start_mock()
        self.mock_b, self.mock = self.mock, mock_a
        self.mock_urls = [first, second]
        return self.mock_urls

    def configure_mocks(self, **config) -> None:
        for url in self.mock_urls:
            post_json(url + "/__mock__/config", config)

    def mock_counts(self) -> list[int]:
        return [get_json(url + "/__mock__/stats")["requests"] for url in self.mock_urls]

    def restart_gateway(self, server: str) -> str:
        base.stop_process(self.gateway, "the gateway")
        self.gateway, self.workers = None, []
        self.args.server = server
        return self.start_gateway()

    def target_split(self) -> dict:
        """Audit rows by model and target (after the gateway stopped and flushed)."""
        import psycopg

        try:
            with psycopg.connect(self.db_url) as conn:
                rows = conn.execute(
                    "SELECT model, target, count(*) FROM audit_auditrecord WHERE model LIKE %s "
                    "GROUP BY model, target ORDER BY 1, 2",
                    ("bench-%",),
                ).fetchall()
        except Exception as exc:  # informative only
            return {"error": repr(exc)}
        split: dict = {}
        for model, target, count in rows:
            split.setdefault(model, {})[target] = count
        return split

    def cleanup(self) -> None:
        try:
            base.stop_process(self.gateway, "the gateway")
            self.audit_targets = self.target_split() if self.db_created and self.gateway is not None else {}
        finally:
            try:
                base.stop_process(self.mock_b, "the second mock upstream", 15)
            finally:
                super().cleanup()

    def balance_run(self, name: str, url: str, key: str, model: str, warmup: int) -> dict:
        """One wrk run at one agent, with the requests each mock served during it."""
        base.BODY = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}]})
        if warmup:
            base.load(url + PATH, self.args.connections, self.args.threads, warmup, key)
        counts0 = self.mock_counts()
        run = self.measured(name, url, self.args.connections, self.args.threads, key)  # its warm-up is 0
        counts1 = self.mock_counts()
        served = [b - a for a, b in zip(counts0, counts1, strict=True)]
        run["served_by_target"] = dict(zip(("a", "b"), served, strict=True))
        run["share_a"] = served[0] / sum(served) if sum(served) else None
        run["model"] = model
        run["loadavg_1m"] = round(os.getloadavg()[0], 2)
        return run


def ready_for(url: str, key: str, model: str, stream: bool = False) -> None:
    """Bounded retries until the gateway answers ``model`` with 200 (every worker loads its table)."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    request_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    deadline, last, ok = time.monotonic() + 30, "", 0
    while ok < 4:
        request = urllib.request.Request(url + PATH, json.dumps(body).encode(), request_headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                last = f"{response.status} {response.read()[:200]!r}"
                ok += response.status == 200
        except urllib.error.HTTPError as exc:
            last = f"{exc.code} {exc.read()[:300]!r}"
        except OSError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway does not answer model {model} with 200 (last answer: {last})")
        if not ok:
            time.sleep(0.2)


# --- reporting ---------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def overheads(results: dict) -> list[dict]:
    """Gateway minus direct TTFB, per server and concurrency (ms and ratio)."""
    direct = {r["connections"]: r for r in results["stream"] if r["target"] == "direct"}
    rows = []
    for r in results["stream"]:
        d = direct.get(r["connections"])
        if r["target"] == "direct" or d is None or r["ttfb_p50_ms"] is None or d["ttfb_p50_ms"] is None:
            continue
        row = {"server": r["target"], "connections": r["connections"]}
        for q in (50, 90, 99):
            row[f"ttfb_p{q}_added_ms"] = r[f"ttfb_p{q}_ms"] - d[f"ttfb_p{q}_ms"]
            row[f"ttfb_p{q}_ratio"] = r[f"ttfb_p{q}_ms"] / d[f"ttfb_p{q}_ms"]
        row["ttlb_p50_added_ms"] = r["ttlb_p50_ms"] - d["ttlb_p50_ms"]
        rows.append(row)
    return rows


def report(results: dict) -> str:
    c = results["config"]
    lines = [
        "",
        f"Streaming: first chunk after {c['first_chunk_ms']} ms, then {c['chunks']} chunks {c['chunk_interval_ms']} ms "
        f"apart (the mock's last chunk at ~{c['first_chunk_ms'] + c['chunks'] * c['chunk_interval_ms']} ms); "
        "times in ms from sending the request",
    ]
    rows = [["run", "conns", "streams", "err", "streams/s", "TTFB p50", "p90", "p99", "TTLB p50", "p99", "streamed"]]
    for r in results["stream"]:
        rows.append(
            [
                r["name"],
                str(r["connections"]),
                str(r["requests"]),
                str(r["errors"]),
                f"{r['streams_per_s']:,.0f}" if r["streams_per_s"] else "-",
                ms(r["ttfb_p50_ms"]),
                ms(r["ttfb_p90_ms"]),
                ms(r["ttfb_p99_ms"]),
                ms(r["ttlb_p50_ms"]),
                ms(r["ttlb_p99_ms"]),
                f"{r['streamed']}/{r['requests'] - r['errors']}",
            ]
        )
    lines.append(base.table(rows))
    if results.get("ttfb_overhead"):
        lines += ["", "TTFB added by the gateway (gateway - direct, same concurrency):"]
        rows = [["server", "conns", "p50 +ms", "x", "p90 +ms", "x", "p99 +ms", "x", "TTLB p50 +ms"]]
        for o in results["ttfb_overhead"]:
            rows.append(
                [o["server"], str(o["connections"])]
                + [
                    cell
                    for q in (50, 90, 99)
                    for cell in (f"{o[f'ttfb_p{q}_added_ms']:+.2f}", f"{o[f'ttfb_p{q}_ratio']:.3f}")
                ]
                + [f"{o['ttlb_p50_added_ms']:+.2f}"]
            )
        lines.append(base.table(rows))
    if results["balance"]:
        lines += [
            "",
            f"Balancing: wrk, {c['connections']} connections, {c['seconds']} s after {c['warmup']} s warm-up, "
            "non-streamed chat; requests served by each mock during the run",
        ]
        rows = [["run", "req/s", "p50", "p99", "errors", "gateway CPU/req", "at a", "at b", "share a"]]
        for r in results["balance"]:
            rows.append(
                [
                    r["name"],
                    f"{r['rps']:,.0f}",
                    base.fmt_us(r["p50_us"]),
                    base.fmt_us(r["p99_us"]),
                    str(r["errors"]),
                    base.fmt_us(r["cpu_us_per_req"]["gateway"]),
                    f"{r['served_by_target']['a']:,}",
                    f"{r['served_by_target']['b']:,}",
                    "-" if r["share_a"] is None else f"{r['share_a']:.1%}",
                ]
            )
        lines.append(base.table(rows))
    if results.get("audit_targets"):
        lines.append(f"\nAudit rows of the balancing agents by target (whole run): {results['audit_targets']}")
    lines.append(
        f"\nLoad average (1, 5, 15 min) at the start {results['loadavg_start']}, at the end {results['loadavg_end']}"
    )
    for problem in results["problems"]:
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)


def evaluate(results: dict) -> None:
    c = results["config"]
    problems = [f"{r['name']}: {r['invalid']}" for r in results["stream"] + results["balance"] if r.get("invalid")]
    for r in results["stream"]:
        if r["target"] != "direct" and r["streamed"] < r["requests"] - r["errors"]:
            problems.append(
                f"{r['name']}: {r['requests'] - r['errors'] - r['streamed']} streams arrived in one piece "
                "(the gateway buffered them)"
            )
    for r in results["balance"]:
        want = 0.5 if r["name"].split("-", 1)[1] != "one-target" else 1.0
        if r["share_a"] is not None and abs(r["share_a"] - want) > 0.1 and "least-busy" not in r["name"]:
            problems.append(f"{r['name']}: target a served {r['share_a']:.1%} of the requests, not ~{want:.0%}")
        if "least-busy" in r["name"] and r["share_a"] is not None and r["share_a"] > 0.9:
            problems.append(f"{r['name']}: target a served {r['share_a']:.1%}: least_busy did not use target b")
    results["ttfb_overhead"] = overheads(results)
    results["problems"] = problems
    results["config"]["window_ms"] = c["chunks"] * c["chunk_interval_ms"]


# --- main --------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="daphne,uvicorn", help="gateway servers to run, in order")
    parser.add_argument("--sequential", type=int, default=200, help="streams sent one after another (default 200)")
    parser.add_argument("--concurrency", default="16,32", help="connections of the concurrent streaming runs")
    parser.add_argument("--per-connection", type=int, default=20, help="streams per connection in those (default 20)")
    parser.add_argument("--first-chunk-ms", type=int, default=20, help="mock: delay before the first chunk")
    parser.add_argument("--chunk-interval-ms", type=int, default=10, help="mock: delay after each content chunk")
    parser.add_argument("--chunks", type=int, default=8, help="content chunks per answer (1-20, default 8)")
    parser.add_argument("--seconds", type=int, default=10, help="each balancing run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured warm-up before each balancing run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections of the balancing runs")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads of the balancing runs")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="skip the streaming runs")
    parser.add_argument("--no-balance", dest="balance", action="store_false", help="skip the balancing runs")
    parser.add_argument("--guardrails", action="store_true",
                        help="after each server's streaming runs, the same runs with output guardrails on")  # fmt: skip
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp", help="GATEWAY_HTTP_TRANSPORT")
    parser.add_argument("--workers", type=int, default=2, help="gateway worker processes (default 2)")
    parser.add_argument("--db", default="bench_stream", help="database to drop and recreate (default bench_stream)")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="flushed before and after")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk", help="python: bench/loadgen.py")
    parser.add_argument("--output", default=str(VAR / "bench-stream.json"))
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if any(s not in ("daphne", "uvicorn") for s in args.servers) or not args.servers:
        parser.error("--servers: daphne and/or uvicorn")
    if not 1 <= args.chunks <= 20 or args.sequential < 1 or args.per_connection < 1 or args.seconds < 1:
        parser.error("--chunks must be 1-20; --sequential, --per-connection and --seconds positive")
    if any(c < 1 for c in args.concurrency) or args.first_chunk_ms < 0 or args.chunk_interval_ms < 1:
        parser.error("--concurrency values and --chunk-interval-ms must be positive, --first-chunk-ms not negative")
    # What bench/run.py's Bench reads from its arguments.
    args.server, args.gc_stats, args.mock_port, args.gateway_port, args.settle = args.servers[0], False, 0, 0, 0.5
    args.threads = min(args.threads, args.connections)
    return args


def time_limit(args) -> int:
    """Seconds the whole run may take: generous bounds for every phase, set-up included."""
    stream_s = (args.first_chunk_ms + args.chunks * args.chunk_interval_ms) / 1000 * 3 + 0.05  # per stream, slow
    per_server = 60 + stream_s * (args.sequential + sum(args.per_connection + 3 for _ in args.concurrency))
    per_server += len(BALANCE_AGENTS) * (args.seconds + args.warmup + 20) if args.balance else 0
    return int(240 + per_server * (len(args.servers) + 1))


def main(argv=None) -> int:
    args = parse_args(argv)
    if base.VENV_PY.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        os.execv(str(base.VENV_PY), [str(base.VENV_PY), __file__, *(sys.argv[1:] if argv is None else argv)])
    base.RESULTS.mkdir(exist_ok=True)
    VAR.mkdir(exist_ok=True)
    lock = open(VAR / ".bench-stream.lock", "w")  # held until main() returns
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SystemExit("another bench/stream_bench.py is running (it would drop this run's database); wait for it")
    base.LOADGEN = "wrk" if args.loadgen == "wrk" and base.ensure_wrk() else "python"

    def abort(signum, frame):
        raise base.Abort(f"stopped by {'the time limit' if signum == signal.SIGALRM else signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, abort)
    signal.signal(signal.SIGALRM, abort)
    signal.alarm(time_limit(args))

    warmup, args.warmup = args.warmup, 0  # Bench.measured's own warm-up is off: balance_run warms up first
    bench = StreamBench(args)
    started = time.monotonic()
    results = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "config": {
            "servers": args.servers,
            "workers": args.workers,
            "transport": args.transport,
            "sequential": args.sequential,
            "concurrency": args.concurrency,
            "per_connection": args.per_connection,
            "first_chunk_ms": args.first_chunk_ms,
            "chunk_interval_ms": args.chunk_interval_ms,
            "chunks": args.chunks,
            "stream_body": stream_body(args.chunks),
            "seconds": args.seconds,
            "warmup": warmup,
            "connections": args.connections,
            "threads": args.threads,
            "database_url": bench.db_url,
            "redis_url": args.redis_url,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadgen": base.LOADGEN,
            "stream_client": "aiohttp, one keep-alive connection per concurrent stream, in this process",
            "balance_agents": [{"model": m, "strategy": s, "targets": t} for _, m, s, t in BALANCE_AGENTS],
        },
        "stream": [],
        "balance": [],
    }
    code = 0
    try:
        results["config"]["postgresql"] = bench.start_fresh()
        mocks = bench.start_mocks()
        say(f"mock upstreams a={mocks[0]} b={mocks[1]}; seeding agents, the balancing agents and a bench key")
        bench.manage("shell", "-c", f"from gateway_project.demo import seed_agents; seed_agents({mocks[0]!r})")
        agents = [[slug, strategy, targets] for _, slug, strategy, targets in BALANCE_AGENTS]
        bench.manage("shell", "-c", SEED_SNIPPET.format(mocks=json.dumps(mocks), agents=json.dumps(agents)))
        key = bench.manage(
            "create_api_key",
            *("--client", "bench", "--rpm", "100000000", "--tpm", "2000000000"),
            *("--max-concurrent", "0", "--monthly-budget", "1000000"),
        ).strip()
        if not key or len(key.split()) != 1:
            raise RuntimeError(f"create_api_key printed {key!r}, not a key")
        stream_plan = [(1, args.sequential)] + [(c, args.per_connection) for c in args.concurrency]

        def streaming(target: str, url: str, run_key: str) -> None:
            bench.configure_mocks(delay_ms=args.first_chunk_ms, chunk_delay_ms=args.chunk_interval_ms, status=200)
            for connections, per_connection in stream_plan:
                name = f"{target}-stream-{connections}c"
                say(f"{name}: {connections * per_connection} streams over {connections} connection(s)")
                run = stream_run(name, url, run_key, args, connections, per_connection, target)
                results["stream"].append(run)
                print(
                    f"    TTFB p50 {ms(run['ttfb_p50_ms'])} ms, p99 {ms(run['ttfb_p99_ms'])} ms; "
                    f"TTLB p50 {ms(run['ttlb_p50_ms'])} ms; {run['errors']} errors; "
                    f"streamed {run['streamed']}/{run['requests'] - run['errors']}",
                    flush=True,
                )
            bench.configure_mocks(delay_ms=0, chunk_delay_ms=0, status=200)

        if args.stream:
            streaming("direct", mocks[0], "")
        for server in args.servers:
            gateway_url = bench.restart_gateway(server)
            say(f"gateway on {gateway_url} ({server}, {args.transport}), workers {bench.workers}")
            bench.wait_ready(gateway_url, key)
            if args.stream:
                ready_for(gateway_url, key, "gpt-4o-mini", stream=True)
                streaming(server, gateway_url, key)
                if args.guardrails:  # the same streams through every built-in output detector, redacting
                    bench.manage("shell", "-c", GUARDRAIL_SNIPPET)
                    time.sleep(3)  # every worker reads the guardrails again (GATEWAY_CONFIG_REFRESH_SECONDS)
                    streaming(f"{server}+guardrails", gateway_url, key)
                    bench.manage("shell", "-c", "from keys.models import Guardrail; Guardrail.objects.all().delete()")
                    time.sleep(3)
            if args.balance:
                for _, model, _, _ in BALANCE_AGENTS:
                    ready_for(gateway_url, key, model)
                for label, model, _, _ in BALANCE_AGENTS:
                    name = f"{server}-{label}"
                    say(f"{name}: wrk at agent {model}, {args.connections} connections, {warmup} s + {args.seconds} s")
                    run = bench.balance_run(name, gateway_url, key, model, warmup)
                    results["balance"].append(run)
                    print(
                        f"    {run['rps']:,.0f} req/s, p50 {base.fmt_us(run['p50_us'])}, "
                        f"p99 {base.fmt_us(run['p99_us'])}, {run['errors']} errors; "
                        f"served a={run['served_by_target']['a']:,} b={run['served_by_target']['b']:,}",
                        flush=True,
                    )
    except (Exception, KeyboardInterrupt, base.Abort) as exc:
        code = 130 if isinstance(exc, KeyboardInterrupt) else 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        print(f"\nERROR: {results['error']}", file=sys.stderr, flush=True)
    finally:
        say("stopping the gateway and the mock upstreams" + ("" if args.keep_db else f", dropping {args.db}"))
        try:
            bench.cleanup()
        finally:
            signal.alarm(0)
    results["audit"] = bench.audit
    results["audit_targets"] = getattr(bench, "audit_targets", {})
    results["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    evaluate(results)
    print(report(results), flush=True)
    if results["problems"]:
        code = code or 1
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nwrote {shown} in {results['elapsed_s']} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
