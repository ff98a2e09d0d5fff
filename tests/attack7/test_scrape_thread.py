"""A scrape reads budgets, circuits and the audit backlog with synchronous database queries: it must not hold the
one thread every other synchronous database call of the worker waits for (key look-ups, the audit writer)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async

from gateway_project import metrics as m
from gateway_project import metrics_scrape

pytestmark = pytest.mark.django_db


def test_a_slow_scrape_does_not_stall_the_workers_other_database_calls(monkeypatch):
    """``serve_metrics`` ran the exposition through ``database_sync_to_async``, which is thread-sensitive: every
    such call of the process runs on one thread, so a scrape reading a thousand budgets (a sum over the usage rows
    for each without a spend counter) held up every key look-up and audit write behind it."""
    release, reading = threading.Event(), threading.Event()

    def slow_budgets():
        reading.set()
        release.wait(10)
        return []

    monkeypatch.setattr(metrics_scrape, "_budgets", slow_budgets)
    monkeypatch.setitem(m.settings.GATEWAY["METRICS"], "ENABLED", True)
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [], "client": ("127.0.0.1", 1)}

    async def scenario():
        scrape = asyncio.ensure_future(m.serve_metrics(scope, receive, send))
        await asyncio.get_running_loop().run_in_executor(None, reading.wait, 10)
        try:
            # What a key look-up or the audit writer does meanwhile.
            return await asyncio.wait_for(database_sync_to_async(lambda: "done")(), 2)
        except TimeoutError:
            return "stalled"
        finally:
            release.set()
            await scrape

    assert asyncio.run(scenario()) == "done", "a database call waited for the scrape to finish"
    assert sent[0]["status"] == 200
