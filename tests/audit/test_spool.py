"""Nothing lost: batches the database refuses are spooled to disk and replayed in order when it returns."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from audit.chain import chain_rows, verify
from audit.models import AuditRecord
from billing.models import UsageRecord
from gateway_project.spool import Spool
from gateway_project.writer import BufferedWriter
from tests.servers import Gateway
from tests.waiting import DEADLINE_SECONDS, until

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
needs_postgres = pytest.mark.skipif(
    not settings.REDIS_URL, reason="cutting a database connection needs the production profile (PostgreSQL)"
)


@pytest.fixture(autouse=True)
def committed(live_db):
    """The writer commits, as in the gateway."""


def audit_row(request_id=None, **fields):
    return {
        "request_id": request_id or uuid.uuid4().hex, "created_at": timezone.now(), "method": "POST", "path": CHAT,
        "status": 200, "latency_ms": 1.5, "cost_usd": Decimal("0.000170400"), "client_ip": None, "client_id": None,
        "client_slug": "", "api_key_id": None, "key_prefix": "", "agent": "", "model": "", "error_type": "",
        "input_tokens": 0, "output_tokens": 0, "user_agent": "", "input_preview": "", "output_preview": "",
        "target": "", "details": {}, **fields,
    }  # fmt: skip


def test_a_spooled_batch_comes_back_exactly_as_it_went(tmp_path):
    spool = Spool(tmp_path)
    moment = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)
    row = audit_row("r1", created_at=moment, client_id=None, cost_usd=Decimal("0.000000001"))
    spool.put([(AuditRecord, row), (UsageRecord, {"request_id": "r1", "cost_usd": Decimal("1.5")})])
    [path] = spool.ready()
    claimed, batch = spool.claim(path)
    assert batch == [(AuditRecord, row), (UsageRecord, {"request_id": "r1", "cost_usd": Decimal("1.5")})]
    assert spool.ready() == [] and spool.claim(path) is None  # claimed: no other process gets it
    spool.give_back(claimed)
    assert spool.ready() == [path]


def test_files_claimed_by_a_process_that_died_are_given_back(tmp_path):
    spool = Spool(tmp_path)
    path = spool.put([(AuditRecord, audit_row())])
    dead = path.with_name(f"{path.stem}.999999999.claimed")  # no such process
    path.rename(dead)
    assert spool.recover() == 1 and spool.ready() == [path]


def test_a_refused_batch_is_spooled_then_replayed_once_in_order(tmp_path, monkeypatch):
    writer = BufferedWriter()
    writer.set_preparer(AuditRecord, chain_rows)  # as the audit app sets it on the gateway's writer
    monkeypatch.setitem(settings.GATEWAY, "SPOOL_DIR", tmp_path)
    real_write = writer._write
    monkeypatch.setattr(writer, "_write", lambda batch: (_ for _ in ()).throw(ConnectionError("database down")))
    first = [audit_row() for _ in range(3)]
    second = [audit_row() for _ in range(2)]
    for rows in (first, second):
        for row in rows:
            writer._buffer.append((AuditRecord, row))
        writer.flush_sync()  # at exit, with the database down: spooled, not lost
    assert len(Spool(tmp_path).ready()) == 2
    monkeypatch.setattr(writer, "_write", real_write)
    real_write([(AuditRecord, dict(first[0]))])  # committed before the connection died: not written twice
    assert writer.replay_spool()
    ids = [row["request_id"] for row in first + second]
    saved = list(AuditRecord.objects.filter(request_id__in=ids).order_by("seq").values_list("request_id", flat=True))
    assert saved == ids and Spool(tmp_path).ready() == []


class CuttableProxy:
    """A TCP proxy on loopback in front of PostgreSQL that a test can cut and restore, like a network failure."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = self._free_port()
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.links: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.restore()

    @staticmethod
    def _free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        self.links |= {client_writer, upstream_writer}
        await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def restore(self):
        async def start():
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

        self._run(start())

    def cut(self):
        async def stop():
            self.server.close()
            for link in self.links:
                link.transport.abort()
            self.links.clear()

        self._run(stop())

    def close(self):
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)


@needs_postgres
def test_records_made_while_the_database_is_unreachable_are_all_written_when_it_returns(seeded, make_key, tmp_path):
    db = connection.settings_dict
    proxy = CuttableProxy(int(db["PORT"] or 5432))
    url = f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@127.0.0.1:{proxy.port}/{db['NAME']}"
    # The gateway's database calls share one thread: with the database gone, each waits out the pool's timeout, and
    # the writer's turn comes after the tables' reloads. A short timeout keeps that wait short, not the test's patience.
    server = Gateway(
        DATABASE_URL=url, GATEWAY_SPOOL_DIR=tmp_path, GATEWAY_FLUSH_SECONDS="0.05", GATEWAY_DB_POOL_TIMEOUT="1"
    )
    started = timezone.now()
    try:
        raw, key = make_key()
        with server.client(raw) as client:
            answered = [client.post(CHAT, json=BODY) for _ in range(5)]  # the key and tables are cached now
            until(lambda: AuditRecord.objects.filter(api_key_id=key.pk).count() == 5, "the first five are written")
            proxy.cut()  # the database is gone for the gateway (the test still reaches it directly)
            answered += [client.post(CHAT, json=BODY) for _ in range(40)]
            assert {r.status_code for r in answered} == {200}  # served from caches all along
            until(lambda: any(tmp_path.glob("*.jsonl")), "a batch was spooled")
            assert AuditRecord.objects.filter(api_key_id=key.pk).count() == 5
            proxy.restore()
            ids = {r.headers["x-request-id"] for r in answered}
            until(lambda: AuditRecord.objects.filter(api_key_id=key.pk).count() == 45, "all 45 are written")
        assert set(AuditRecord.objects.filter(api_key_id=key.pk).values_list("request_id", flat=True)) == ids
        assert UsageRecord.objects.filter(api_key_id=key.pk).count() == 45  # metering was spooled too
        assert not list(tmp_path.glob("*.jsonl")) and not list(tmp_path.glob("*.claimed"))
        assert verify(since=started).ok
    finally:
        server.stop()
        proxy.close()


@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
def test_every_answered_request_is_recorded_when_a_gateway_stops_under_load(seeded, make_key, server_name):
    server = Gateway(server=server_name, GATEWAY_FLUSH_SECONDS="5", GATEWAY_FLUSH_BATCH="100000")
    raw, key = make_key()
    with server.client(raw) as client:
        assert client.post(CHAT, json=BODY).status_code == 200  # the worker is up and serving
    answered, errors = [], []

    def load(_):
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while server.proc.poll() is None:  # until the gateway stops answering, or has exited
                try:
                    response = client.post(CHAT, json=BODY, headers={"Authorization": f"Bearer {raw}"})
                except httpx.HTTPError as error:
                    errors.append(repr(error))
                    return
                answered.append(response.headers.get("x-request-id"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(load, i) for i in range(8)]
        until(lambda: len(answered) >= 100 or errors, "the gateway answered 100 requests under load")
        server.proc.send_signal(signal.SIGTERM)  # mid-load; records are still in the buffer (5 s flushes)
        for future in futures:
            future.result(timeout=DEADLINE_SECONDS)
    assert server.proc.wait(40) == 0  # stopped cleanly by that one signal, its buffer flushed
    server.log.close()
    assert len(answered) >= 100, errors[:3]
    recorded = set(AuditRecord.objects.filter(api_key_id=key.pk).values_list("request_id", flat=True))
    assert {request_id for request_id in answered if request_id} <= recorded
