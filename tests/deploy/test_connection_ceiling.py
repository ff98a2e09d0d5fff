"""A gateway process never holds more database connections than its pool, however hard the API is hammered.

Under ASGI, Django's sync work runs on many threads; with persistent per-thread
connections a few minutes of API traffic held up to 100 connections from one
process (issue 13). The bounded pool caps that at ``GATEWAY_DB_POOL_SIZE``.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings
from django.db import connection

from tests.servers import Gateway

POOL = 3


def _connections_named(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [name])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_hammering_the_api_stays_within_the_pool(server, seeded, live_db):
    if connection.vendor != "postgresql":
        pytest.skip("the pool is the production profile's (PostgreSQL)")
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from keys.api_tokens import issue_token

    user = get_user_model().objects.create_user(f"hammer-{uuid.uuid4().hex[:8]}")
    user.groups.add(Group.objects.get(name="admin"))
    token = issue_token(user)[1]
    name = f"gw-test-{uuid.uuid4().hex[:8]}"
    gateway = Gateway(
        server=server, GATEWAY_DB_POOL_SIZE=str(POOL), GATEWAY_DB_APPLICATION_NAME=name,
        GATEWAY_API_USER_RATE="100000/min",
    )  # fmt: skip
    peak, statuses, stop = 0, [], threading.Event()
    paths = ["/api/v1/agents/", "/api/v1/audit/?limit=20", "/api/v1/clients/", "/api/v1/budgets/", "/api/v1/usage/"]
    try:

        def hammer(worker: int) -> None:
            with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Token {token}"}, timeout=30) as api:
                for i in range(25):
                    statuses.append(api.get(paths[(worker + i) % len(paths)]).status_code)

        def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _connections_named(name))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(hammer, range(16)))
        stop.set()
        watcher.join()
    finally:
        stop.set()
        gateway.stop()
    assert statuses and all(status < 500 for status in statuses), sorted(set(statuses))
    assert 1 <= peak <= POOL, peak
    assert settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"] >= 1
