#!/usr/bin/env python3
"""Benchmark the gateway on the production profile (PostgreSQL + Redis, Daphne workers).

    .venv/bin/python bench/run.py [--seconds 10] [--warmup 2] [--transport aiohttp|httpx] [--profile]

Sets up a fresh database and Redis db, starts the mock upstream and the
gateway, drives both with wrk at 1 and 32 connections, prints a table and
PASS/MISS per target, writes bench/results/latest.json, and stops everything
it started (also on error, Ctrl+C, SIGTERM or its own overall time limit).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
RESULTS = BENCH / "results"
LUA = BENCH / "post.lua"
PATH = "/v1/chat/completions"
BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
PYSPY_OUT = ("--format", "speedscope", "-o")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_ERROR_RATE = 0.001  # more than 0.1% failed requests makes a run invalid

TARGETS = [
    # key, label, comparison, limit, unit
    ("gateway_rps_32c", "requests/s through the gateway at 32 connections", ">=", 2000, "req/s"),
    ("gateway_cpu_us_per_req_32c", "gateway CPU per request (32-connection run)", "<=", 700, "us"),
    ("added_p50_us_1c", "added p50 latency at 1 connection (gateway - direct)", "<=", 1000, "us"),
]


class Abort(BaseException):
    """Raised by SIGTERM and by the overall time limit: unwinds to the clean-up."""


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


# --- processes and ports ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening (see its log)")
        if listening(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} does not listen on {port} after {seconds:g} s")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def established_per_process(port: int, pids: list[int]) -> list[int]:
    """How many established TCP connections on local ``port`` each process holds (from /proc)."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(path).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 01: ESTABLISHED
                inodes.add(fields[9])
    counts = []
    for pid in pids:
        n = 0
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(fd.path)
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    n += 1
        except OSError:
            pass
        counts.append(n)
    return counts


def imbalance_note(conns: list[int], cpu_s: list[float], connections: int) -> str:
    """A note when the kernel's connection split left a worker underused (it caps throughput)."""
    if len(conns) < 2 or len(cpu_s) != len(conns) or connections < 2 * len(conns):
        return ""
    if min(conns) >= connections / (2 * len(conns)) or min(cpu_s) >= 0.6 * max(cpu_s):
        return ""  # an even enough split, or every worker was busy anyway
    return (
        f"the kernel gave the workers {conns} of the {connections} connections and they used "
        f"{cpu_s} CPU seconds: a worker sat (partly) idle, so throughput is capped by the busiest one"
    )


def stop_process(proc: subprocess.Popen | None, what: str, seconds: float = 40) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        warn(f"{what} (pid {proc.pid}) did not stop within {seconds:g} s; killing it")
        proc.kill()
        proc.wait(timeout=10)


# --- wrk ---------------------------------------------------------------------

_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_TIME = r"([\d.]+)(us|ms|s|m|h)"


def _us(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def parse_wrk(text: str) -> dict:
    """The numbers of a ``wrk --latency`` report (latencies in microseconds)."""

    def find(pattern: str):
        match = re.search(pattern, text, re.M)
        if match is None:
            raise ValueError(f"wrk output has no {pattern!r}:\n{text}")
        return match

    done = find(r"^\s*(\d+) requests in " + _TIME)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result = {
        "requests": int(done[1]),
        "duration_s": _us(done[2], done[3]) / 1e6,
        "rps": float(find(r"^Requests/sec:\s+([\d.]+)")[1]),
        "latency_avg_us": _us(*find(r"^\s+Latency\s+" + _TIME).groups()),
        "p50_us": _us(*find(r"^\s+50%\s+" + _TIME).groups()),
        "p75_us": _us(*find(r"^\s+75%\s+" + _TIME).groups()),
        "p90_us": _us(*find(r"^\s+90%\s+" + _TIME).groups()),
        "p99_us": _us(*find(r"^\s+99%\s+" + _TIME).groups()),
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"), map(int, sockets.groups()), strict=True))
        if sockets
        else {"connect": 0, "read": 0, "write": 0, "timeout": 0},
    }
    result["errors"] = result["non_2xx"] + sum(result["socket_errors"].values())
    return result


LOADGEN = "wrk"  # or "python" (bench/loadgen.py), chosen in main()


def load(url: str, connections: int, threads: int, seconds: int, key: str = "", probe=None) -> tuple[dict, str]:
    """One load run with the chosen generator: (numbers, raw report); ``probe()`` is called half-way."""
    if LOADGEN == "wrk":
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s"]
        command += ["--latency", "-s", str(LUA), url]
    else:
        command = [str(VENV_PY), str(BENCH / "loadgen.py"), "--url", url, "--connections", str(connections)]
        command += ["--threads", str(threads), "--seconds", str(seconds), "--key", key, "--body", BODY]
    env = {**os.environ, "BENCH_BODY": BODY, "BENCH_API_KEY": key}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            if probe is not None:
                time.sleep(seconds / 2)
                probe()
            stdout, stderr = proc.communicate(timeout=seconds + 60)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if proc.returncode != 0:
        raise RuntimeError(f"{LOADGEN} load generator failed ({proc.returncode}):\n{stdout}\n{stderr}")
    return (parse_wrk(stdout) if LOADGEN == "wrk" else json.loads(stdout)), stdout


def ensure_wrk() -> bool:
    """True when wrk is there, after installing it with apt-get if need be."""
    if shutil.which("wrk"):
        return True
    say("wrk is not on PATH: installing the Debian package with apt-get")
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    for command in (install, ["apt-get", "update", "-qq"], install):
        try:
            subprocess.run(command, check=False, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            break
        if shutil.which("wrk"):
            return True
    warn("wrk could not be installed: falling back to bench/loadgen.py (asyncio + aiohttp; much slower than wrk)")
    return False


# --- the benchmark -----------------------------------------------------------


class Bench:
    def __init__(self, args):
        self.args = args
        self.db_url = f"{args.pg_url.rstrip('/')}/{args.db}"
        self.admin_db_url = f"{args.pg_url.rstrip('/')}/postgres"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
            "DATABASE_URL": self.db_url,
            "REDIS_URL": args.redis_url,
            "GATEWAY_HTTP_TRANSPORT": args.transport,
            "DJANGO_DEBUG": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.setdefault("GATEWAY_LOG_LEVEL", "WARNING")
        self.gateway_env = dict(self.env)
        for old in RESULTS.glob("gc-*.log"):  # a previous --gc-stats run's, misleading now
            old.unlink()
        if args.gc_stats:  # bench/gcprobe/sitecustomize.py logs the workers' GC pauses
            path = os.environ.get("PYTHONPATH")
            self.gateway_env["PYTHONPATH"] = str(BENCH / "gcprobe") + (os.pathsep + path if path else "")
            self.gateway_env["BENCH_GC_LOG_DIR"] = str(RESULTS)
        self.mock: subprocess.Popen | None = None
        self.gateway: subprocess.Popen | None = None
        self.workers: list[int] = []
        self.logs: list = []
        self.db_created = False
        self.audit: dict = {}

    # set-up ------------------------------------------------------------------
    def check_services(self) -> None:
        missing = [name for name, port in (("PostgreSQL", 5432), ("Redis", 6379)) if not listening(port)]
        if missing:
            raise SystemExit(
                f"{' and '.join(missing)} not listening on 127.0.0.1 "
                "(start them, or run `python3 dev.py bench`, which starts them)."
            )

    def fresh_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_db_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.args.db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.args.db}"')
            self.pg_version = conn.execute("SHOW server_version").fetchone()[0]
        self.db_created = True

    def drop_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_db_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.args.db}" WITH (FORCE)')
        self.db_created = False

    def start_fresh(self) -> str:
        """Check the services, drop and migrate the database, flush Redis; return PostgreSQL's version."""
        self.check_services()
        say(f"fresh database {self.args.db} and flushed Redis {self.args.redis_url}")
        self.fresh_database()
        self.flush_redis()
        say("migrating")
        self.manage("migrate", "--noinput", "-v", "0", timeout=300)
        return self.pg_version

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.args.redis_url)
        client.flushdb()
        client.close()

    def manage(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(
            [str(VENV_PY), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def log_file(self, name: str):
        handle = open(RESULTS / f"{name}.log", "wb")  # closed in cleanup
        self.logs.append(handle)
        return handle

    def start_mock(self) -> str:
        port = self.args.mock_port or free_port()
        self.mock = subprocess.Popen(
            [str(VENV_PY), "-m", "routing.mock_upstream", "--port", str(port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file("mock"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl+C reaches only this script, which stops it in order
        )
        wait_for_port(port, self.mock, 30, "the mock upstream")
        return f"http://127.0.0.1:{port}"

    def start_gateway(self) -> str:
        port = self.args.gateway_port or free_port()
        self.gateway = subprocess.Popen(
            [
                str(VENV_PY),
                "manage.py",
                "rungateway",
                "--port",
                str(port),
                "--workers",
                str(self.args.workers),
                "--server",
                self.args.server,
            ],
            cwd=ROOT,
            env=self.gateway_env,
            stdout=self.log_file("gateway"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(port, self.gateway, 60, "the gateway")
        deadline = time.monotonic() + 30
        while True:
            pids = children(self.gateway.pid)
            if len(pids) == self.args.workers and all(self.args.server in cmdline(pid) for pid in pids):
                self.workers = pids
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway has workers {pids}, not {self.args.workers} Daphne processes")
            time.sleep(0.1)
        return f"http://127.0.0.1:{port}"

    def wait_ready(self, url: str, key: str) -> None:
        """A few real requests, so every worker has loaded its tables and opened its pools."""
        deadline = time.monotonic() + 30
        ok = 0
        last = ""
        while ok < 4 * self.args.workers:
            request = urllib.request.Request(
                url + PATH,
                data=BODY.encode(),
                method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    body = response.read()
                    ok += response.status == 200
                    last = f"{response.status} {body[:200]!r}"
            except urllib.error.HTTPError as exc:
                last = f"{exc.code} {exc.read()[:300]!r}"
            except OSError as exc:
                last = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway does not answer {PATH} with 200 (last answer: {last})")
            if not ok:
                time.sleep(0.2)

    # measuring -----------------------------------------------------------------
    def measured(self, name: str, url: str, connections: int, threads: int, key: str = "") -> dict:
        args = self.args
        if args.warmup > 0:
            warm, _ = load(url + PATH, connections, threads, args.warmup, key)
            if warm["errors"] > MAX_ERROR_RATE * max(1, warm["requests"]):
                warn(f"{name} warm-up: {warm['errors']} of {warm['requests']} requests failed")
        time.sleep(args.settle)  # let the writer flush the warm-up's records before counting
        watched = {"gateway": [self.gateway.pid, *self.workers]} if key else {}
        watched["mock"] = [self.mock.pid]
        split: dict = {}

        def probe():  # which worker holds the load generator's connections, half-way through
            split["connections"] = established_per_process(int(url.rsplit(":", 1)[1]), self.workers)

        workers0 = [cpu_seconds(p) for p in self.workers] if key else []
        before = {k: sum(cpu_seconds(p) for p in pids) for k, pids in watched.items()}
        busy0, total0 = machine_busy()
        wall0 = time.time()
        wrk0 = children_cpu()
        result, text = load(url + PATH, connections, threads, args.seconds, key, probe if key else None)
        wrk_cpu = children_cpu() - wrk0
        time.sleep(args.settle)  # the writer flushes this run's audit/usage rows: their cost counts
        after = {k: sum(cpu_seconds(p) for p in pids) for k, pids in watched.items()}
        busy1, total1 = machine_busy()
        wall1 = time.time()
        if key:
            split["cpu_s"] = [round(cpu_seconds(p) - c, 2) for p, c in zip(self.workers, workers0, strict=True)]
        n = max(1, result["requests"])
        cores = os.cpu_count() or 1
        result.update(
            name=name,
            target="gateway" if key else "direct",
            connections=connections,
            threads=threads,
            cpu_us_per_req={
                **{k: (after[k] - before[k]) / n * 1e6 for k in watched},
                "wrk": wrk_cpu / n * 1e6,
                "machine": (busy1 - busy0) / n * 1e6,
            },
            machine_busy_pct=100 * (busy1 - busy0) / max(1e-9, total1 - total0),
            cores=cores,
            error_rate=result["errors"] / n,
        )
        if key:
            result["gateway_cpu_s"] = after["gateway"] - before["gateway"]
            if args.gc_stats:
                result["gc"] = self.gc_between(wall0, wall1, result["gateway_cpu_s"])
            result["workers"] = split
            note = imbalance_note(split.get("connections") or [], split.get("cpu_s") or [], connections)
            if note:
                result["imbalance"] = note
            if children(self.gateway.pid) != self.workers:
                result["invalid"] = "a gateway worker restarted during the run; its CPU time is not comparable"
        if result["error_rate"] > MAX_ERROR_RATE:
            result["invalid"] = (
                f"{result['errors']} of {result['requests']} requests failed "
                f"(non-2xx {result['non_2xx']}, socket errors {result['socket_errors']})"
            )
        (RESULTS / f"{LOADGEN}-{name}.txt").write_text(text)
        return result

    def gc_between(self, start: float, end: float, cpu_s: float) -> dict:
        """The workers' garbage-collection time in [start, end], from bench/gcprobe's logs."""
        pauses, total_ms = [], 0.0
        for pid in self.workers:
            path = RESULTS / f"gc-{pid}.log"
            if not path.exists():
                continue
            first = last = None
            for line in path.read_text().splitlines():
                fields = line.split()
                wall = float(fields[1])
                if fields[0] == "gen2" and start <= wall <= end:
                    pauses.append(float(fields[2]))
                elif fields[0] == "total":
                    spent = sum(map(float, fields[2:5]))
                    if wall <= start or first is None:
                        first = spent
                    if wall <= end:
                        last = spent
            if first is not None and last is not None:
                total_ms += last - first
        return {
            "gen2_collections": len(pauses),
            "gen2_ms_total": round(sum(pauses), 1),
            "gen2_ms_max": round(max(pauses, default=0.0), 1),
            "all_generations_ms": round(total_ms, 1),
            "share_of_gateway_cpu": round(total_ms / 1000 / cpu_s, 4) if cpu_s else None,
        }

    def profile(self, url: str, key: str) -> dict | None:
        """Record every gateway worker with py-spy during a 32-connection run (not a measured run)."""
        pyspy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
        if not Path(pyspy).exists():
            warn("py-spy is not installed (the dev lock has it: python3 dev.py test); skipping --profile")
            return None
        seconds = self.args.profile_seconds
        say(f"profiling the {len(self.workers)} Daphne workers with py-spy for {seconds} s at 32 connections")
        files, spies = [], []
        for i, pid in enumerate(self.workers):
            out = RESULTS / f"profile-worker{i}.speedscope.json"
            out.unlink(missing_ok=True)
            files.append(str(out))
            spies.append(
                subprocess.Popen(
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        "200",
                        *PYSPY_OUT,
                        str(out),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=self.log_file(f"py-spy-worker{i}"),
                    start_new_session=True,
                )
            )
        try:
            time.sleep(0.5)
            load(url + PATH, self.args.connections, self.args.threads, seconds + 1, key)
            for spy in spies:
                spy.wait(timeout=60)
        finally:
            for spy in spies:
                if spy.poll() is None:
                    spy.kill()
                    spy.wait(timeout=10)
        files = [f for f in files if Path(f).exists()]
        if not files:
            warn("py-spy wrote no profile (see bench/results/py-spy-worker*.log)")
            return None
        sys.path.insert(0, str(BENCH))
        from profile_summary import render, summarise

        summary = summarise(files, top=40)
        summary["files"] = [str(Path(f).relative_to(ROOT)) for f in files]
        text = render(summary)
        (RESULTS / "profile-summary.txt").write_text(text + "\n")
        print(text, flush=True)
        return summary

    def audit_counts(self) -> dict:
        """Rows the gateway wrote (after it stopped and flushed): proof that audit and metering ran."""
        import psycopg

        try:
            with psycopg.connect(self.db_url) as conn:
                statuses = dict(
                    conn.execute("SELECT status, count(*) FROM audit_auditrecord GROUP BY status ORDER BY 1").fetchall()
                )
                usage = conn.execute("SELECT count(*) FROM billing_usagerecord").fetchone()[0]
        except Exception as exc:  # informative only
            return {"error": repr(exc)}
        return {"audit_rows_by_status": {str(k): v for k, v in statuses.items()}, "usage_rows": usage}

    # clean-up ------------------------------------------------------------------
    def cleanup(self) -> None:
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish stopping what we started
        try:
            try:
                stop_process(self.gateway, "the gateway")
            finally:
                for pid in self.workers:  # workers of a supervisor that had to be killed
                    try:
                        if "daphne" in cmdline(pid):
                            os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            stop_process(self.mock, "the mock upstream", 15)
            if self.db_created and self.gateway is not None:
                self.audit = self.audit_counts()
            if self.db_created and not self.args.keep_db:
                try:
                    self.drop_database()
                except Exception as exc:
                    warn(f"could not drop database {self.args.db}: {exc}")
            try:
                self.flush_redis()
            except Exception as exc:
                warn(f"could not flush {self.args.redis_url}: {exc}")
        finally:
            for handle in self.logs:
                handle.close()
            signal.signal(signal.SIGINT, old)


# --- reporting ---------------------------------------------------------------


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.0f} us"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results: dict) -> str:
    runs = results["runs"]
    main = [["run", "conns", "req/s", "p50", "p99", "requests", "errors", "gateway CPU/req"]]
    for r in runs:
        main.append(
            [
                r["name"],
                str(r["connections"]),
                f"{r['rps']:,.0f}",
                fmt_us(r["p50_us"]),
                fmt_us(r["p99_us"]),
                f"{r['requests']:,}",
                str(r["errors"]),
                fmt_us(r["cpu_us_per_req"].get("gateway")),
            ]
        )
    cpu = [
        [
            "run (CPU per request)",
            "gateway",
            "mock",
            "loadgen",
            "rest*",
            "machine",
            "machine busy",
            "worker conns/CPU s",
        ]
    ]
    for r in runs:
        c = r["cpu_us_per_req"]
        rest = c["machine"] - c.get("gateway", 0) - c["mock"] - c["wrk"]
        cpu.append(
            [
                r["name"],
                fmt_us(c.get("gateway")),
                fmt_us(c["mock"]),
                fmt_us(c["wrk"]),
                fmt_us(rest),
                fmt_us(c["machine"]),
                f"{r['machine_busy_pct']:.0f}% of {r['cores']} cores",
                "-"
                if "workers" not in r
                else "/".join(map(str, r["workers"].get("connections") or []))
                + "  "
                + "/".join(f"{c:.1f}" for c in r["workers"].get("cpu_s") or []),
            ]
        )
    d = results["derived"]
    lines = [
        "",
        f"Results (server={results['config'].get('server', 'daphne')}, transport={results['config']['transport']}, "
        f"{results['config']['seconds']} s per run "
        f"after {results['config']['warmup']} s warm-up, {results['config']['workers']} workers)",
        "",
        table(main),
        "",
        f"added p50 latency at 1 connection (gateway - direct): {fmt_us(d['added_p50_us_1c'])}",
        f"added p99 latency at 1 connection (gateway - direct): {fmt_us(d['added_p99_us_1c'])}",
        "",
    ]
    if d.get("budgets"):
        b = d["budgets"]
        lines += [
            "Budget checks (same run, same gateway): "
            f"no budget {b['rps_no_budgets']:,.0f} req/s at {fmt_us(b['cpu_us_per_req_no_budgets'])}/req; "
            f"3 budgets (cost center, client, key) {b['rps_3_budgets']:,.0f} req/s at "
            f"{fmt_us(b['cpu_us_per_req_3_budgets'])}/req: {b['rps_ratio']:.2f}x the throughput, "
            f"{fmt_us(b['cpu_us_added_by_3_budgets'])} more gateway CPU per request",
            "",
        ]
    lines += [
        table(cpu),
        "  * rest = machine - gateway - mock - loadgen: Redis, PostgreSQL, kernel softirq, anything else running"
        " (approximate: the kernel books loopback network work to processes and to softirq inconsistently).",
        "",
        "Targets:",
    ]
    for t in results["targets"]:
        value = t["value"]
        shown = "-" if value is None else (f"{value:,.0f} {t['unit']}" if t["unit"] != "us" else fmt_us(value))
        limit = f"{t['limit']:,} {t['unit']}" if t["unit"] != "us" else fmt_us(t["limit"])
        lines.append(f"  {t['status']:4}  {t['label']}: {shown} (target {t['comparison']} {limit})")
    audit = results.get("audit") or {}
    if "audit_rows_by_status" in audit:
        lines.append(
            f"\nGateway wrote {sum(audit['audit_rows_by_status'].values()):,} audit rows "
            f"(by status: {audit['audit_rows_by_status']}) and {audit['usage_rows']:,} usage rows "
            "(warm-ups and readiness checks included; 499 = request cut off when wrk stopped)."
        )
    for r in runs:
        if r.get("gc"):
            g = r["gc"]
            share = g["share_of_gateway_cpu"]
            lines.append(
                f"GC in {r['name']}: {g['gen2_collections']} full collections, {g['gen2_ms_total']:.0f} ms "
                f"(longest {g['gen2_ms_max']:.0f} ms); all generations {g['all_generations_ms']:.0f} ms"
                + (f" = {share:.1%} of the gateway's CPU time" if share is not None else "")
            )
    for r in runs:
        if r.get("imbalance"):
            lines.append(f"NOTE: {r['name']}: {r['imbalance']}")
    for problem in results["problems"]:
        lines.append(f"PROBLEM: {problem}")
    return "\n".join(lines)


def evaluate(results: dict) -> None:
    by_name = {r["name"]: r for r in results["runs"]}
    d1, g1 = by_name.get("direct-1c"), by_name.get("gateway-1c")
    g32 = by_name.get(f"gateway-{results['config']['connections']}c")
    derived = {
        "added_p50_us_1c": g1["p50_us"] - d1["p50_us"] if d1 and g1 else None,
        "added_p99_us_1c": g1["p99_us"] - d1["p99_us"] if d1 and g1 else None,
        "gateway_rps_32c": g32["rps"] if g32 else None,
        "gateway_cpu_us_per_req_32c": g32["cpu_us_per_req"]["gateway"] if g32 else None,
        "gateway_cpu_us_per_req_1c": g1["cpu_us_per_req"]["gateway"] if g1 else None,
    }
    connections = results["config"]["connections"]
    bare, budgeted = by_name.get(f"gateway-{connections}c-no-budgets"), by_name.get(f"gateway-{connections}c-3-budgets")
    if bare and budgeted:
        derived["budgets"] = {
            "rps_no_budgets": bare["rps"],
            "rps_3_budgets": budgeted["rps"],
            "rps_ratio": budgeted["rps"] / bare["rps"] if bare["rps"] else None,
            "cpu_us_per_req_no_budgets": bare["cpu_us_per_req"]["gateway"],
            "cpu_us_per_req_3_budgets": budgeted["cpu_us_per_req"]["gateway"],
            "cpu_us_added_by_3_budgets": budgeted["cpu_us_per_req"]["gateway"] - bare["cpu_us_per_req"]["gateway"],
            "p50_us_no_budgets": bare["p50_us"],
            "p50_us_3_budgets": budgeted["p50_us"],
        }
    results["derived"] = derived
    results["targets"] = []
    for key, label, comparison, limit, unit in TARGETS:
        value = derived.get(key)
        if value is None:
            status = "MISS"
        else:
            status = "PASS" if (value >= limit if comparison == ">=" else value <= limit) else "MISS"
        results["targets"].append(
            {"key": key, "label": label, "comparison": comparison, "limit": limit, "unit": unit}
            | {"value": value, "status": status}
        )
    results["problems"] = [f"{r['name']}: {r['invalid']}" for r in results["runs"] if r.get("invalid")]


# --- main --------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each timed run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured warm-up before each run (default 2; 0: none)")
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp", help="GATEWAY_HTTP_TRANSPORT")
    parser.add_argument(
        "--server", choices=("daphne", "uvicorn"), default="daphne", help="ASGI server of the gateway's workers"
    )
    parser.add_argument("--workers", type=int, default=2, help="Daphne worker processes (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="connections of the loaded runs (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads of the loaded runs (default 2)")
    parser.add_argument("--profile", action="store_true", help="then record the workers with py-spy (extra run)")
    parser.add_argument("--profile-seconds", type=int, default=10)
    parser.add_argument("--gc-stats", action="store_true", help="log the workers' GC pauses (bench/gcprobe)")
    parser.add_argument("--settle", type=float, default=0.5, help="pause around each timed run, seconds")
    parser.add_argument("--db", default="gateway_bench", help="database to drop and recreate (default gateway_bench)")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="flushed before and after")
    parser.add_argument("--mock-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--gateway-port", type=int, default=0, help="default: a free port")
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database at the end")
    parser.add_argument("--output", default=str(RESULTS / "latest.json"))
    parser.add_argument("--loadgen", choices=("wrk", "python"), default="wrk", help="python: bench/loadgen.py")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument(
        "--no-budgets", dest="budgets", action="store_false", help="skip the with/without budgets comparison runs"
    )
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.warmup < 0 or args.workers < 1 or args.connections < 1 or args.threads < 1:
        parser.error("--seconds, --workers, --connections and --threads must be positive, --warmup not negative")
    args.threads = min(args.threads, args.connections)
    return args


# Two keys for the budget comparison: one whose requests no budget applies to, and one whose requests
# must fit three hard budgets (its cost center's monthly, its client's daily, its own weekly), none of
# which refuses. (An organization budget would apply to the bare key too, so it is left out of both.)
BUDGET_KEYS_SNIPPET = """
import json
from decimal import Decimal
from billing.models import Budget
from keys.models import Client, CostCenter
from keys.services import issue_key
limits = dict(requests_per_minute=100_000_000, tokens_per_minute=2_000_000_000, max_concurrent=0)
bare_client = Client.objects.create(name="bench-bare", slug="bench-bare")
bare, bare_raw = issue_key(bare_client, allowed_agents=["*"], **limits)
team = CostCenter.objects.create(name="bench-team", slug="bench-team")
client = Client.objects.create(name="bench-budgets", slug="bench-budgets", cost_center=team)
key, raw = issue_key(client, allowed_agents=["*"], **limits)
big = Decimal("1000000")
Budget.objects.create(scope=Budget.COST_CENTER, cost_center=team, period=Budget.MONTHLY, limit_usd=big)
Budget.objects.create(scope=Budget.CLIENT, client=client, period=Budget.DAILY, limit_usd=big)
Budget.objects.create(scope=Budget.KEY, api_key=key, period=Budget.WEEKLY, limit_usd=big)
print(json.dumps({"no-budgets": bare_raw, "3-budgets": raw}))
"""


def main(argv=None) -> int:
    args = parse_args(argv)
    if VENV_PY.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), __file__, *(sys.argv[1:] if argv is None else argv)])
    RESULTS.mkdir(exist_ok=True)
    lock = open(RESULTS / ".run.lock", "w")  # held (and the lock kept) until main() returns
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SystemExit("another bench/run.py is running (it would drop this run's database); wait for it")
    global LOADGEN
    LOADGEN = "wrk" if args.loadgen == "wrk" and ensure_wrk() else "python"

    def abort(signum, frame):
        raise Abort(f"stopped by {'the time limit' if signum == signal.SIGALRM else signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, abort)
    signal.signal(signal.SIGALRM, abort)
    limit = 4 * (args.seconds + args.warmup + 2 * args.settle) + 240
    limit += args.profile_seconds + 60 if args.profile else 0
    signal.alarm(int(limit))  # the whole run, set-up and clean-up aside, never takes longer than this

    bench = Bench(args)
    started = time.monotonic()
    results = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {
            "transport": args.transport,
            "server": args.server,
            "workers": args.workers,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "settle_s": args.settle,
            "database_url": bench.db_url,
            "redis_url": args.redis_url,
            "body": BODY,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "loadgen": LOADGEN
            if LOADGEN == "python"
            else subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip(),
            "gateway_env": {k: v for k, v in sorted(bench.env.items()) if k.startswith("GATEWAY_")},
        },
        "runs": [],
    }
    code = 0
    try:
        results["config"]["postgresql"] = bench.start_fresh()
        mock_url = bench.start_mock()
        say(f"mock upstream on {mock_url}; seeding agents and a bench key")
        bench.manage("shell", "-c", f"from gateway_project.demo import seed_agents; seed_agents({mock_url!r})")
        key = bench.manage(
            "create_api_key",
            *("--client", "bench", "--rpm", "100000000", "--tpm", "2000000000"),
            *("--max-concurrent", "0", "--monthly-budget", "1000000"),
        ).strip()
        if not key or len(key.split()) != 1:
            raise RuntimeError(f"create_api_key printed {key!r}, not a key")
        budget_keys = {}
        if args.budgets:
            say("two more keys for the budget comparison: one under no budget, one under three")
            budget_keys = json.loads(bench.manage("shell", "-c", BUDGET_KEYS_SNIPPET).strip().splitlines()[-1])
        gateway_url = bench.start_gateway()
        say(
            f"gateway on {gateway_url} ({args.server}, {args.transport}), supervisor {bench.gateway.pid}, "
            f"workers {bench.workers}"
        )
        bench.wait_ready(gateway_url, key)
        plan = [
            ("direct-1c", mock_url, 1, 1, ""),
            (f"direct-{args.connections}c", mock_url, args.connections, args.threads, ""),
            ("gateway-1c", gateway_url, 1, 1, key),
            (f"gateway-{args.connections}c", gateway_url, args.connections, args.threads, key),
        ]
        for label, budget_key in budget_keys.items():  # interleaved in one run, on the same warm gateway
            plan.append(
                (f"gateway-{args.connections}c-{label}", gateway_url, args.connections, args.threads, budget_key)
            )
        for name, url, connections, threads, run_key in plan:
            say(f"{name}: {connections} connection(s), {threads} thread(s), {args.warmup} s warm-up + {args.seconds} s")
            run = bench.measured(name, url, connections, threads, run_key)
            results["runs"].append(run)
            print(
                f"    {run['rps']:,.0f} req/s, p50 {fmt_us(run['p50_us'])}, p99 {fmt_us(run['p99_us'])}, "
                f"{run['errors']} errors"
                + (f", gateway CPU {fmt_us(run['cpu_us_per_req']['gateway'])}/req" if run_key else "")
                + (
                    f"; connections per worker {run['workers'].get('connections')}, "
                    f"worker CPU s {run['workers'].get('cpu_s')}"
                    if run_key
                    else ""
                ),
                flush=True,
            )
            if run.get("imbalance"):
                warn(f"{name}: {run['imbalance']}")
            if run.get("invalid"):
                warn(f"{name}: {run['invalid']}")
        if args.profile:
            results["profile"] = bench.profile(gateway_url, key)
    except (Exception, KeyboardInterrupt, Abort) as exc:
        code = 130 if isinstance(exc, KeyboardInterrupt) else 1
        results["error"] = f"{type(exc).__name__}: {exc}"
        print(f"\nERROR: {results['error']}", file=sys.stderr, flush=True)
    finally:
        say("stopping the gateway and the mock upstream" + ("" if args.keep_db else f", dropping {args.db}"))
        try:
            bench.cleanup()
        finally:
            signal.alarm(0)
    results["audit"] = bench.audit
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    if len(results["runs"]) >= 4:
        evaluate(results)
        print(report(results), flush=True)
        if results["problems"]:
            code = code or 1
        elif args.fail_on_miss and any(t["status"] == "MISS" for t in results["targets"]):
            code = 3
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"\nwrote {shown} in {results['elapsed_s']} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
