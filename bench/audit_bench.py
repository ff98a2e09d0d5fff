#!/usr/bin/env python3
"""Benchmark the audit log: how fast and how flat its exports are, and how fast records are written.

    .venv/bin/python bench/audit_bench.py [--records 1000000] [--writes 50000] [--profile postgres|sqlite|both]

Exports: seeds ``--records`` synthetic records with one SQL statement, then
exports all of them as CSV and JSON Lines through the console's streamed
export (``AuditExportView``, as a logged-in compliance user) and through the
Celery task's file writer (``audit.export_jobs.write_export``), each in a
fresh process that reports rows/s and how far its resident memory rose above
what it held before the export began. Writes: ``--writes`` records through
the gateway's own recorder and buffered writer (redaction, hash chain, COPY
on PostgreSQL, bulk_create on SQLite), flushed in batches of FLUSH_BATCH.

Uses its own databases (PostgreSQL ``bench_audit``, SQLite var/bench-audit.sqlite3)
and removes them afterwards unless ``--keep``. Prints a table and writes
var/bench-audit.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VAR = ROOT / "var"
VENV_PY = ROOT / ".venv" / "bin" / "python"
SQLITE_FILE = VAR / "bench-audit.sqlite3"
SPOOL_DIR = VAR / "bench-audit-spool"
EXPORT_DIR = VAR / "bench-audit-exports"
RESULTS_FILE = VAR / "bench-audit.json"
LOCK_FILE = VAR / ".bench-audit.lock"
FLAT_LIMIT_MB = 50  # "a few tens of MB" for an export of any size
SAMPLE_SECONDS = 0.1  # how often a child samples its resident memory
BACKENDS = ("postgres", "sqlite")
LABELS = {"postgres": "PostgreSQL", "sqlite": "SQLite"}


class Abort(BaseException):
    """Raised by SIGTERM and by the overall time limit: unwinds to the clean-up."""


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


# --- seeding: one SQL statement per backend ----------------------------------------
# Realistic widths: 40-char request ids, ~200-char previews with commas, quotes and (every tenth
# output) a leading "=" the CSV guard must neutralise, long user agents. The chain fields hold
# 64-char hex values that link (prev_hash = the previous record_hash) but are not real hashes:
# an export's speed does not depend on them, and computing 1,000,000 real ones would take minutes.

COLUMNS = (
    "request_id, created_at, client_id, client_slug, api_key_id, key_prefix, agent, target, model, method, path, "
    "status, error_type, latency_ms, input_tokens, output_tokens, cost_usd, client_ip, user_agent, "
    "input_preview, output_preview, seq, prev_hash, record_hash"
)
INPUT_TEXT = (
    '\'Summarise the "Q3 report", section \' || {i} || \', for [EMAIL]: revenue, costs, margins, and "risks"; '
    "keep it short, cite pages, and don''t invent numbers. Context: ' || {h1} || ', ' || {h2} "
    "|| ' \"quoted, text\", more text, ' || {h3}"
)
OUTPUT_TEXT = (
    "CASE WHEN {i} % 10 = 0 THEN '=HYPERLINK(\"http://x.example/' || {i} || '\"), ' ELSE '' END "
    "|| 'Here is the summary, as asked: revenue grew 12%, costs fell; \"risks\" are FX and supply, see p. ' "
    "|| ({i} % 300) || '. Call [PHONE] for details. ' || {h4} || ', ' || {h5}"
)
SEED_POSTGRES = f"""
INSERT INTO audit_auditrecord ({COLUMNS})
SELECT
  md5('req' || i) || lpad(to_hex(i), 8, '0'),
  now() - interval '30 days' + i * interval '2 ms',
  1 + i % 40, 'client-' || (1 + i % 40), 1000 + i % 200, 'agk_' || substr(md5('key' || (i % 200)), 1, 8),
  (ARRAY['research', 'support', 'coder', 'summarizer', 'translator'])[1 + i % 5],
  'https://upstream-' || (1 + i % 3) || '.example.net/v1/chat/completions',
  (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-3-5-sonnet', 'llama-3.1-70b'])[1 + i % 4],
  'POST', (ARRAY['/v1/chat/completions', '/v1/agent/invoke', '/v1/embeddings'])[1 + i % 3],
  CASE WHEN i % 50 = 0 THEN 429 WHEN i % 97 = 0 THEN 502 ELSE 200 END,
  CASE WHEN i % 50 = 0 THEN 'rate_limited' WHEN i % 97 = 0 THEN 'upstream_error' ELSE '' END,
  round((random() * 900)::numeric, 3)::float8, ((i * 7919) % 4000)::int, ((i * 104729) % 1500)::int,
  ((i % 1000) * 0.000013)::numeric(20, 9),
  ('10.' || (i / 65536 % 256) || '.' || (i / 256 % 256) || '.' || (i % 256))::inet,
  'python-httpx/0.27.0 agent-sdk/1.4.' || (i % 10) || ' (Linux x86_64; CPython 3.11.9) build/' || md5('ua' || (i % 50)),
  left({INPUT_TEXT.format(i="i", h1="md5('in' || i)", h2="md5('x' || i)", h3="md5('y' || i)")}, 200),
  left({OUTPUT_TEXT.format(i="i", h4="md5('out' || i)", h5="md5('z' || i)")}, 200),
  i,
  CASE WHEN i = 1 THEN repeat('0', 64) ELSE md5('h' || (i - 1)) || md5('k' || (i - 1)) END,
  md5('h' || i) || md5('k' || i)
FROM generate_series(1::bigint, {{n}}::bigint) AS i
"""
# Columns added to the model after this seed was written: realistic values when known.
_DETAILS = '{"retries": 1, "failed_targets": ["https://upstream-1.example.net/v1/chat/completions"]}'
KNOWN_EXTRA = {
    "details": {
        "postgres": f"CASE WHEN i % 20 = 0 THEN '{_DETAILS}'::jsonb ELSE '{{}}'::jsonb END",
        "sqlite": f"CASE WHEN i % 20 = 0 THEN '{_DETAILS}' ELSE '{{}}' END",
    },
}
_HEX16 = "lower(hex(randomblob(16)))"
SEED_SQLITE = f"""
INSERT INTO audit_auditrecord ({COLUMNS})
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {{n}})
SELECT
  {_HEX16} || printf('%08x', i),
  strftime('%Y-%m-%d %H:%M:%f', julianday('now') - 30 + i * 2.0 / 86400000.0),
  1 + i % 40, 'client-' || (1 + i % 40), 1000 + i % 200, 'agk_' || substr({_HEX16}, 1, 8),
  CASE i % 5 WHEN 0 THEN 'research' WHEN 1 THEN 'support' WHEN 2 THEN 'coder' WHEN 3 THEN 'summarizer'
    ELSE 'translator' END,
  'https://upstream-' || (1 + i % 3) || '.example.net/v1/chat/completions',
  CASE i % 4 WHEN 0 THEN 'gpt-4o-mini' WHEN 1 THEN 'gpt-4o' WHEN 2 THEN 'claude-3-5-sonnet' ELSE 'llama-3.1-70b' END,
  'POST', CASE i % 3 WHEN 0 THEN '/v1/chat/completions' WHEN 1 THEN '/v1/agent/invoke' ELSE '/v1/embeddings' END,
  CASE WHEN i % 50 = 0 THEN 429 WHEN i % 97 = 0 THEN 502 ELSE 200 END,
  CASE WHEN i % 50 = 0 THEN 'rate_limited' WHEN i % 97 = 0 THEN 'upstream_error' ELSE '' END,
  round(abs(random() % 900000) / 1000.0, 3), (i * 7919) % 4000, (i * 104729) % 1500, (i % 1000) * 0.000013,
  '10.' || (i / 65536 % 256) || '.' || (i / 256 % 256) || '.' || (i % 256),
  'python-httpx/0.27.0 agent-sdk/1.4.' || (i % 10) || ' (Linux x86_64; CPython 3.11.9) build/' || {_HEX16},
  substr({INPUT_TEXT.format(i="i", h1=_HEX16, h2=_HEX16, h3=_HEX16)}, 1, 200),
  substr({OUTPUT_TEXT.format(i="i", h4=_HEX16, h5=_HEX16)}, 1, 200),
  i, printf('%064x', i - 1), printf('%064x', i)
FROM s
"""


# --- the databases ---------------------------------------------------------------


class Postgres:
    name = "postgres"

    def __init__(self, args):
        self.db = args.pg_db
        self.url = f"{args.pg_url.rstrip('/')}/{self.db}"
        self.admin_url = f"{args.pg_url.rstrip('/')}/postgres"
        self.env = {"DATABASE_URL": self.url}
        self.created = False
        self.version = ""

    def available(self) -> str:
        host, port = _host_port(self.admin_url)
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError:
            return f"PostgreSQL is not listening on {host}:{port} (start it, e.g. `python3 dev.py bench` does)"
        return ""

    def create(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.db}"')
            self.version = conn.execute("SHOW server_version").fetchone()[0]
        self.created = True

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        self.created = False

    def empty(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE audit_auditrecord RESTART IDENTITY")

    def seed(self, n: int) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            required = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'audit_auditrecord' "
                "AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'"
            ).fetchall()
            extra = _extra_columns(required, "postgres")
            conn.execute(_with_columns(SEED_POSTGRES, extra).replace("{n}", str(int(n))))
            conn.execute("ANALYZE audit_auditrecord")

    def table_mb(self) -> float:
        import psycopg

        with psycopg.connect(self.url) as conn:
            size = conn.execute("SELECT pg_total_relation_size('audit_auditrecord')").fetchone()[0]
        return size / 1e6


class Sqlite:
    name = "sqlite"

    def __init__(self, args):
        self.path = SQLITE_FILE
        self.env = {"SQLITE_PATH": str(self.path)}
        self.created = False
        self.version = ""

    def available(self) -> str:
        return ""

    def files(self) -> list[Path]:
        return [self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm", "-journal"))]

    def create(self) -> None:
        import sqlite3

        self.drop()
        self.created = True
        self.version = sqlite3.sqlite_version

    def drop(self) -> None:
        for path in self.files():
            path.unlink(missing_ok=True)
        self.created = False

    def _connect(self):
        import sqlite3

        conn = sqlite3.connect(self.path, isolation_level=None, timeout=20)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def empty(self) -> None:
        conn = self._connect()
        try:
            conn.execute("DELETE FROM audit_auditrecord")
        finally:
            conn.close()

    def seed(self, n: int) -> None:
        conn = self._connect()
        try:
            info = conn.execute("PRAGMA table_info(audit_auditrecord)").fetchall()  # cid name type notnull default pk
            extra = _extra_columns([(c[1], c[2]) for c in info if c[3] and c[4] is None and not c[5]], "sqlite")
            conn.execute("BEGIN")
            conn.execute(_with_columns(SEED_SQLITE, extra).replace("{n}", str(int(n))))
            conn.execute("COMMIT")
            conn.execute("ANALYZE audit_auditrecord")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def table_mb(self) -> float:
        return sum(p.stat().st_size for p in self.files() if p.exists()) / 1e6


def _extra_columns(required: list[tuple[str, str]], backend: str) -> dict[str, str]:
    """Values for the NOT NULL columns the seed SQL does not name (the model grows): known ones, else empty."""
    seeded = {c.strip() for c in COLUMNS.split(",")}
    extra = {}
    for name, kind in required:
        if name in seeded:
            continue
        kind = kind.lower()
        if name in KNOWN_EXTRA:
            extra[name] = KNOWN_EXTRA[name][backend]
        elif "json" in kind:
            extra[name] = f"'{{}}'::{kind}"
        elif kind == "text":  # SQLite keeps a JSONField as text that must be valid JSON; '{}' suits a TextField too
            extra[name] = "'{}'"
        elif any(t in kind for t in ("int", "numeric", "decimal", "double", "real", "float")):
            extra[name] = "0"
        elif "bool" in kind:
            extra[name] = "false" if backend == "postgres" else "0"
        elif "time" in kind or "date" in kind:
            extra[name] = "now()" if backend == "postgres" else "strftime('%Y-%m-%d %H:%M:%f', 'now')"
        else:
            extra[name] = "''"
    return extra


def _with_columns(sql: str, extra: dict[str, str]) -> str:
    if not extra:
        return sql
    sql = sql.replace(f"({COLUMNS})", f"({COLUMNS}, {', '.join(extra)})", 1)
    head, tail = sql.rsplit("\nFROM ", 1)
    return f"{head},\n  {', '.join(extra.values())}\nFROM {tail}"


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


# --- the children: one measurement each, in a fresh process --------------------------


def child_env(db) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SQLITE_PATH")}
    env.update(
        db.env,
        DJANGO_SETTINGS_MODULE="gateway_project.settings",
        DJANGO_DEBUG="0",
        CELERY_TASK_ALWAYS_EAGER="1",
        GATEWAY_SPOOL_DIR=str(SPOOL_DIR),
        GATEWAY_EXPORT_DIR=str(EXPORT_DIR),
        GATEWAY_LOG_LEVEL=os.environ.get("GATEWAY_LOG_LEVEL", "WARNING"),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_child(db, args: list[str], timeout: float) -> dict:
    """Run this script in a fresh process with ``--child ...``; its result is the JSON on its last stdout line."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        cwd=ROOT,
        env=child_env(db),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"child {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    if done.stderr.strip():
        warn(f"child {' '.join(args)} wrote to stderr:\n{done.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def manage(db, *args: str, timeout: float = 300) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child_env(db),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def _status_mb() -> dict[str, float]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class MemoryWatch:
    """Resident memory from just before a measured operation to its peak, with samples over time."""

    def __enter__(self):
        import gc

        gc.collect()
        self.peak_reset = _reset_peak()
        self.baseline = _status_mb()["VmRSS"]
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.started = time.perf_counter()
        self.cpu0 = _cpu()
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(SAMPLE_SECONDS):
            self.samples.append((time.perf_counter() - self.started, _status_mb()["VmRSS"]))

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        self.cpu = _cpu() - self.cpu0
        self._stop.set()
        self._thread.join()
        status = _status_mb()
        self.samples.append((self.seconds, status["VmRSS"]))
        self.peak = status["VmHWM"]
        return False

    def report(self) -> dict:
        def at(fraction: float) -> float:
            moment = fraction * self.seconds
            return round(next((rss for t, rss in self.samples if t >= moment), self.samples[-1][1]), 1)

        return {
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu, 3),
            "rss_before_mb": round(self.baseline, 1),
            "rss_peak_mb": round(self.peak, 1),
            "rss_growth_mb": round(self.peak - self.baseline, 1),
            # RSS at 10, 25, 50, 75 and 100% of the run: a flat export stays level after the first chunk.
            "rss_mb_over_time": [at(f) for f in (0.1, 0.25, 0.5, 0.75, 1.0)],
            "peak_reset": self.peak_reset,
        }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _django():
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def _compliance_user():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(username="bench-compliance")
    user.groups.add(Group.objects.get(name="compliance"))
    return user


def _stream_everything() -> int | None:
    """Let the view stream the whole log: by default it hands exports above a row limit to the task."""
    from django.conf import settings

    limit = getattr(settings, "GATEWAY_EXPORT_STREAM_MAX_ROWS", None)
    if limit is not None:
        settings.GATEWAY_EXPORT_STREAM_MAX_ROWS = 10**15
    return limit


def child_export_view(fmt: str) -> dict:
    """Export every record through the console's export view, consuming the streamed response."""
    _django()
    from django.test import Client
    from django.urls import reverse

    from audit.exports import RECORD_FIELDS, export_lines
    from audit.filters import AuditFilterForm

    browser = Client()
    browser.force_login(_compliance_user())
    url = f"{reverse('console:audit-export')}?format={fmt}"
    rows = nbytes = 0
    first_row = None
    limit = _stream_everything()
    note = ""
    with MemoryWatch() as watch:
        response = browser.get(url)
        if response.status_code == 200 and response.streaming:
            chunks = response.streaming_content
        else:  # the view hands a large export to the task: measure what it would have streamed
            note = (
                f"the view answered {response.status_code} without streaming "
                f"({response.get('Location', '')}): measured audit.exports.export_lines directly"
            )
            records = AuditFilterForm({}).filter().order_by("seq", "id")
            chunks = (line.encode() for line in export_lines(records, RECORD_FIELDS, fmt))
        for chunk in chunks:
            if first_row is None:
                first_row = time.perf_counter() - watch.started
            rows += 1
            nbytes += len(chunk)
        if hasattr(response, "close"):
            response.close()
    rows -= fmt == "csv"  # the header line
    return {"path": "view", "format": fmt, "rows": rows, "bytes": nbytes, "first_row_s": round(first_row or 0, 3),
            "note": note, "stream_limit": limit, **watch.report()}  # fmt: skip


def child_export_job(fmt: str) -> dict:
    """Export every record with the Celery task's file writer (a gzip file), in this process."""
    _django()
    from audit.models import AuditExport

    try:
        from audit.export_jobs import export_dir, write_export
    except ImportError as exc:
        return {"path": "job", "format": fmt, "skipped": f"audit.export_jobs.write_export is not there ({exc})"}
    user = _compliance_user()
    export = AuditExport.objects.create(requester=user, kind=AuditExport.RECORDS, format=fmt, filters={})
    with MemoryWatch() as watch:
        write_export(export)
    export.refresh_from_db()
    result = {"path": "job", "format": fmt, "rows": export.rows_written, "bytes": export.file_size,
              "status": export.status, "error": export.error, "file_name": export.file_name,
              "first_row_s": None, "note": "", **watch.report()}  # fmt: skip
    if export.file_name:
        (export_dir() / export.file_name).unlink(missing_ok=True)
    return result


def child_writes(count: int, verify_chain: bool) -> dict:
    """Write ``count`` records through the gateway's recorder and writer, flushed in FLUSH_BATCH batches."""
    _django()
    import asyncio
    import uuid
    from decimal import Decimal

    from django.conf import settings
    from django.db import connection

    from audit.models import AuditRecord
    from audit.recorder import record_request
    from audit.redaction_rules import redaction_rules
    from gateway_project.writer import writer

    asyncio.run(redaction_rules.reload())  # the rules the gateway would have loaded (the built-in ones)
    batch = settings.GATEWAY["FLUSH_BATCH"]
    ids = [uuid.uuid4().hex for _ in range(count)]
    # Request bodies with personal data in their first 400 characters (what a preview redacts), and answers.
    prompt = (
        "Ticket {n}: customer jane.doe{n}@example.com (phone +1 415 555 {phone}) says card 4111 1111 1111 1111 was "
        "charged twice, order #{order}; please draft a polite reply, mention the refund policy, keep it short."
    )
    inputs = [
        json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt.format(
            n=n, phone=1000 + n, order=n * 7)}]}) + " " * 600
        for n in range(64)
    ]  # fmt: skip
    outputs = [
        f"Dear Jane, thank you for reaching out about order #{n * 7}. We are sorry about the double charge; "
        "a refund is on its way and should appear within 5-7 business days. If anything else comes up, reply "
        "to this e-mail or call us. Kind regards, Support" + " lorem ipsum" * 40
        for n in range(64)
    ]
    cost = Decimal("0.000170400")
    recorder_s = flush_s = 0.0
    started = time.perf_counter()
    cpu0 = _cpu()
    for offset in range(0, count, batch):
        t0 = time.perf_counter()
        for i in range(offset, min(count, offset + batch)):
            record_request(
                request_id=ids[i], method="POST", path="/v1/chat/completions", status=200, latency_ms=12.3456 + i % 97,
                client_id=7, client_slug="acme", api_key_id=9, key_prefix="agk_abc12345", agent="support",
                target="https://upstream-1.example.net/v1/chat/completions", model="gpt-4o-mini",
                input_tokens=180 + i % 50, output_tokens=95, cost_usd=cost, client_ip="10.1.2.3",
                user_agent="python-httpx/0.27.0 agent-sdk/1.4.2 (Linux x86_64; CPython 3.11.9)",
                input_text=inputs[i % 64], output_text=outputs[i % 64],
            )  # fmt: skip
        t1 = time.perf_counter()
        writer.flush_sync()
        recorder_s += t1 - t0
        flush_s += time.perf_counter() - t1
    seconds = time.perf_counter() - started
    cpu = _cpu() - cpu0
    written = AuditRecord.objects.count()
    spooled = sorted(str(f.relative_to(SPOOL_DIR)) for f in SPOOL_DIR.rglob("*") if f.is_file())
    sample = AuditRecord.objects.order_by("seq").values("input_preview", "seq").last()
    result = {
        "backend": connection.vendor,
        "insert": "COPY" if connection.vendor == "postgresql" else "bulk_create",
        "records": count,
        "written": written,
        "batch": batch,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "records_per_s": round(count / seconds),
        "us_per_record": round(seconds / count * 1e6, 1),
        "recorder_us_per_record": round(recorder_s / count * 1e6, 1),
        "flush_us_per_record": round(flush_s / count * 1e6, 1),
        "last_seq": sample and sample["seq"],
        "preview_sample": sample and sample["input_preview"][:120],
    }
    if written != count or spooled:
        result["error"] = (
            f"{written:,} of {count:,} records reached the table; the writer spooled {len(spooled)} batches "
            "(it failed to write them: see the traceback above)"
        )
        return result
    if verify_chain:
        from audit.chain import verify

        t0 = time.perf_counter()
        try:
            outcome = verify()
            seconds = round(time.perf_counter() - t0, 3)
            result["verify"] = {"ok": outcome.ok, "checked": outcome.checked, "seconds": seconds,
                                "describe": outcome.describe()}  # fmt: skip
        except Exception as exc:  # verification is the lead's/B's code, still changing: report, do not fail
            result["verify"] = {"error": repr(exc)}
    return result


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=["view", "job", "writes"], required=True)
    parser.add_argument("--format", default="csv")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--verify", action="store_true")
    args = parser.parse_args(argv)
    if args.child == "view":
        result = child_export_view(args.format)
    elif args.child == "job":
        result = child_export_job(args.format)
    else:
        result = child_writes(args.count, args.verify)
    print(json.dumps(result, default=str), flush=True)


# --- the parent ------------------------------------------------------------------------


class AuditBench:
    def __init__(self, args):
        self.args = args
        both = list(BACKENDS)
        self.export_backends = both if args.profile == "both" else [args.profile or "postgres"]
        self.write_backends = both if args.profile in (None, "both") else [args.profile]
        self.dbs = {name: (Postgres if name == "postgres" else Sqlite)(args) for name in BACKENDS}
        self.results: dict = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "config": {
                "records": args.records,
                "writes": args.writes,
                "export_backends": self.export_backends,
                "write_backends": self.write_backends,
                "flat_limit_mb": FLAT_LIMIT_MB,
            },
            "machine": {
                "cores": os.cpu_count(),
                "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "seed": {},
            "exports": [],
            "writes": [],
            "notes": [],
        }

    def run(self) -> None:
        for name in dict.fromkeys(self.write_backends + self.export_backends):
            db = self.dbs[name]
            missing = db.available()
            if missing:
                self.note(f"{LABELS[name]} skipped: {missing}")
                continue
            say(f"{LABELS[name]}: fresh database, migrate")
            db.create()
            manage(db, "migrate", "-v", "0")
            self.results["machine"][f"{name}_version"] = db.version
            if name in self.write_backends:
                self.writes(db)
            if name in self.export_backends:
                self.exports(db)

    def note(self, text: str) -> None:
        if text not in self.results["notes"]:
            self.results["notes"].append(text)
            warn(text)

    def writes(self, db) -> None:
        n = self.args.writes
        say(f"{LABELS[db.name]}: writing {n:,} records through record_request + writer.flush_sync()")
        shutil.rmtree(SPOOL_DIR, ignore_errors=True)  # a batch spooled now means the writer failed
        result = run_child(db, ["--child", "writes", "--count", str(n), "--verify"], timeout=120 + n / 100)
        result["profile"] = db.name
        if result.get("error"):
            self.note(f"{LABELS[db.name]} writes FAILED: {result['error']}")
        verified = result.get("verify", {})
        if "error" in verified:
            self.note(f"{LABELS[db.name]}: verifying the written chain failed: {verified['error']}")
        elif verified and not verified.get("ok"):
            self.note(f"{LABELS[db.name]}: the written chain does not verify: {verified.get('describe')}")
        self.results["writes"].append(result)
        if not result.get("error"):
            say(f"  {result['records_per_s']:,} records/s ({result['us_per_record']} us/record)")
        db.empty()  # the exports measure exactly the seeded records

    def exports(self, db) -> None:
        n = self.args.records
        say(f"{LABELS[db.name]}: seeding {n:,} records with one INSERT ... SELECT")
        t0 = time.perf_counter()
        db.seed(n)
        seconds = time.perf_counter() - t0
        self.results["seed"][db.name] = {"records": n, "seconds": round(seconds, 1), "table_mb": round(db.table_mb())}
        say(f"  {seconds:.1f} s, {db.table_mb():,.0f} MB with indexes")
        for path in ("view", "job"):
            for fmt in ("csv", "jsonl"):
                say(f"{LABELS[db.name]}: export {n:,} records, {path} path, {fmt}")
                try:
                    result = run_child(db, ["--child", path, "--format", fmt], timeout=120 + n / 1000)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:  # one failed measurement: report, go on
                    result = {"path": path, "format": fmt, "skipped": f"failed: {str(exc).strip()[-1500:]}"}
                result["profile"] = db.name
                self.results["exports"].append(result)
                if "skipped" in result:
                    self.note(f"{LABELS[db.name]} {path} {fmt} skipped: {result['skipped']}")
                    continue
                result["rows_per_s"] = round(result["rows"] / result["seconds"]) if result["seconds"] else None
                result["flat"] = result["rss_growth_mb"] <= FLAT_LIMIT_MB
                if result["rows"] != n:
                    self.note(f"{LABELS[db.name]} {path} {fmt}: exported {result['rows']:,} rows, expected {n:,}")
                if result.get("note"):
                    self.note(f"{LABELS[db.name]} {path} {fmt}: {result['note']}")
                if result.get("stream_limit") is not None:
                    self.note(
                        f"the console hands exports of more than GATEWAY_EXPORT_STREAM_MAX_ROWS="
                        f"{result['stream_limit']:,} rows to the task: the bench lifts that limit in its own process "
                        "to measure the streamed path (AuditExportView) with every record"
                    )
                if result.get("error"):
                    self.note(f"{LABELS[db.name]} {path} {fmt}: the task failed: {result['error']}")
                say(
                    f"  {result['rows_per_s']:,} rows/s, RSS +{result['rss_growth_mb']} MB "
                    f"(over time {result['rss_mb_over_time']} MB)"
                )

    def cleanup(self) -> None:
        for db in self.dbs.values():
            if db.created and not self.args.keep:
                try:
                    db.drop()
                except Exception as exc:
                    warn(f"could not remove the {LABELS[db.name]} bench database: {exc}")
        for folder in (SPOOL_DIR, EXPORT_DIR):  # the bench's own: synthetic records and export files
            shutil.rmtree(folder, ignore_errors=True)

    def report(self) -> str:
        r = self.results
        lines = [
            f"Audit log benchmark, {r['when']}: {r['machine']['cores']} cores, Python {r['machine']['python']}"
            + "".join(
                f", {LABELS[b]} {r['machine'][f'{b}_version']}" for b in BACKENDS if f"{b}_version" in r["machine"]
            )
        ]
        for name, seed in r["seed"].items():
            lines.append(
                f"seeded {seed['records']:,} synthetic records on {LABELS[name]} in {seed['seconds']} s "
                f"({seed['table_mb']:,} MB with indexes; chain fields are linked 64-char hex, not real hashes)"
            )
        if r["exports"]:
            lines += [
                "",
                "export (whole log)          rows     seconds    rows/s   output MB  first row  RSS growth  flat",
            ]
            for e in r["exports"]:
                what = f"{LABELS[e['profile']]} {e['path']} {e['format']}{'.gz' if e['path'] == 'job' else ''}"
                if "skipped" in e:
                    lines.append(f"{what:<24}  skipped (see the notes)")
                    continue
                first = f"{e['first_row_s']:.2f} s" if e.get("first_row_s") is not None else "-"
                lines.append(
                    f"{what:<24}{e['rows']:>10,}{e['seconds']:>10.1f}{e['rows_per_s']:>10,}{e['bytes'] / 1e6:>12,.0f}"
                    f"{first:>11}{e['rss_growth_mb']:>+9.1f} MB  {'yes' if e['flat'] else 'NO'}"
                )
            lines.append(
                f"(RSS growth: peak resident memory during the export minus resident memory just before it, "
                f"in a fresh process; flat = at most {FLAT_LIMIT_MB} MB)"
            )
        if r["writes"]:
            lines += [
                "",
                "audit writes            records   batch   seconds   records/s   us/record  (recorder + flush)",
            ]
            for w in r["writes"]:
                what = f"{LABELS[w['profile']]} ({w['insert']})"
                if w.get("error"):
                    lines.append(f"{what:<22}FAILED (see the notes)")
                    continue
                lines.append(
                    f"{what:<22}{w['records']:>9,}{w['batch']:>8}{w['seconds']:>10.1f}{w['records_per_s']:>12,}"
                    f"{w['us_per_record']:>12.1f}  ({w['recorder_us_per_record']} + {w['flush_us_per_record']})"
                )
                verified = w.get("verify") or {}
                if verified.get("ok"):
                    lines.append(f"{'':<22}chain verified: {verified['checked']:,} records in {verified['seconds']} s")
        if r["notes"]:
            lines += ["", *(f"NOTE: {n}" for n in r["notes"])]
        return "\n".join(lines)


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000, help="records to seed and export (1,000,000)")
    parser.add_argument("--writes", type=int, default=50_000, help="records to write through the writer (50,000)")
    parser.add_argument(
        "--profile",
        choices=["postgres", "sqlite", "both"],
        default=None,
        help="backends to measure (default: exports on PostgreSQL, writes on both)",
    )
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server")
    parser.add_argument("--pg-db", default="bench_audit", help="database to create and drop (bench_audit)")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--output", default=str(RESULTS_FILE), help="JSON results (var/bench-audit.json)")
    parser.add_argument("--fail-on-miss", action="store_true", help="exit 3 when an export is not flat")
    args = parser.parse_args(argv)
    if args.records < 1 or args.writes < 1:
        parser.error("--records and --writes must be at least 1")
    return args


def main(argv: list[str]) -> int:
    if argv[:1] and argv[0].startswith("--child"):
        child_main(argv)
        return 0
    args = parse_args(argv)
    if Path(sys.executable).resolve() != VENV_PY.resolve() and VENV_PY.exists():
        os.execv(VENV_PY, [str(VENV_PY), str(Path(__file__).resolve()), *argv])  # the project's virtualenv
    VAR.mkdir(exist_ok=True)
    lock = open(LOCK_FILE, "w")  # held (and locked) for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit("another audit_bench.py is running (it would drop this one's database)")

    def abort(signum, frame):
        raise Abort(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, abort)
    signal.signal(signal.SIGALRM, abort)
    signal.alarm(int(900 + args.records / 500 + args.writes / 50))  # a run that hangs stops by itself
    bench = AuditBench(args)
    status = 0
    try:
        bench.run()
    except (Exception, Abort, KeyboardInterrupt) as exc:
        bench.results["error"] = f"{type(exc).__name__}: {exc}"
        warn(f"the benchmark stopped: {bench.results['error']}")
        status = 1
    finally:
        signal.alarm(0)
        bench.cleanup()
    text = bench.report()
    print("\n" + text, flush=True)
    Path(args.output).write_text(json.dumps(bench.results, indent=2, default=str) + "\n")
    say(f"results in {args.output}")
    if status == 0 and args.fail_on_miss and not all(e.get("flat", True) for e in bench.results["exports"]):
        status = 3
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
