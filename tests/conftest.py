"""Shared fixtures: live servers on loopback, committed data, and the personas tests use.

Gateway tests talk HTTP to real Daphne processes, so the data they make must
be committed where those processes can read it: ``live_db`` gives a test
autocommit access to the test database, and every test names its own client
and key so tests never see each other's rows.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import freezegun
import hypothesis
import pytest
from django.conf import settings

from tests.servers import Gateway, MockUpstream
from tests.waiting import until, wait_for  # the audit writer is asynchronous by design: poll

# No deadline on property tests: they assert behaviour, and speed lives in the benchmarks (a loaded CI machine made a
# 200 ms deadline fail tests that were right).
hypothesis.settings.register_profile("gateway", deadline=None)
hypothesis.settings.load_profile("gateway")
# pytest times each test with time.perf_counter: a frozen clock made --durations report billions of seconds. Only
# pytest's timing module: a prefix of "_pytest" would give real time to every test, which pytest calls.
freezegun.configure(extend_ignore_list=["_pytest.timing"])

# Agents every gateway test can use; the mock upstream answers for all of them.
SPECIAL_AGENTS = [
    # slug, kind, served models, timeout, point at
    ("slow", "agent", [], 0.5, "mock"),
    ("dead", "agent", [], 2.0, "http://127.0.0.1:9"),
    ("openai-slow", "openai", ["slow-model"], 0.5, "mock"),
]


@pytest.fixture(scope="session")
def django_db_setup(django_test_environment, django_db_blocker):
    """Always create the test database: live-server tests use it without the django_db mark."""
    from django.test.utils import setup_databases, teardown_databases

    with django_db_blocker.unblock():
        config = setup_databases(verbosity=0, interactive=False, aliases={"default"}, serialized_aliases=set())
    yield
    with django_db_blocker.unblock():
        _let_other_sessions_go()
        teardown_databases(config, verbosity=0)


def _let_other_sessions_go(seconds: float = 10.0) -> None:
    """Wait for the processes the tests started (gateways, workers) to close their connections, then close the rest.

    PostgreSQL refuses to drop a database anyone is connected to; a process that is still exiting
    must not fail a run whose tests all passed.
    """
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    others = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + seconds
    with connection.cursor() as cursor:
        while True:
            cursor.execute(others)
            if not cursor.fetchall() or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        cursor.execute(f"SELECT pg_terminate_backend(pid) FROM ({others}) AS lingering")
    connection.close()


@pytest.fixture(scope="session", autouse=True)
def test_spool():
    """Batches the tests' writers cannot save spool here, never into the checkout's own var/spool.

    The test process's own writer flushes at exit, after the test database is gone: what it
    spools must not be replayed into anyone's database later. Gateways the tests start
    inherit the variable.
    """
    import os
    import shutil
    from pathlib import Path

    from gateway_project.writer import writer

    spool = Path(settings.VAR_DIR) / "test-spool"
    shutil.rmtree(spool, ignore_errors=True)
    os.environ["GATEWAY_SPOOL_DIR"] = str(spool)
    settings.GATEWAY["SPOOL_DIR"] = spool
    writer._spool = None
    return spool


@pytest.fixture(scope="session")
def mock_upstream():
    mock = MockUpstream()
    yield mock
    mock.stop()


@pytest.fixture(scope="session")
def seeded(django_db_setup, django_db_blocker, mock_upstream):
    """Demo agents and a few special ones, committed once for the session."""
    from gateway_project.demo import seed_agents
    from routing.models import Agent

    if settings.REDIS_URL:
        import redis

        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    with django_db_blocker.unblock():
        seed_agents(mock_upstream.url)
        for slug, kind, served, timeout, target in SPECIAL_AGENTS:
            Agent.objects.update_or_create(
                slug=slug,
                defaults={
                    "name": slug,
                    "kind": kind,
                    "served_models": served,
                    "upstream_url": mock_upstream.url if target == "mock" else target,
                    "timeout_seconds": timeout,
                    "default_model": "gpt-4o-mini",
                },
            )
    return mock_upstream


@pytest.fixture(scope="session")
def gateway(seeded):
    server = Gateway()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def either_server(request, seeded):
    """The session's Daphne gateway, then a uvicorn one for the module: a test using it runs under both."""
    if request.param == "daphne":
        yield request.getfixturevalue("gateway")
        return
    gateway = Gateway(server="uvicorn")
    yield gateway
    gateway.stop()


@pytest.fixture
def admin_api(live_db):
    """``admin_api(server)``: the management API of an admin on that gateway, whose own process then announces the
    change (the embedded profile has no Redis to carry an announcement from the test's process)."""
    import httpx
    from django.contrib.auth import get_user_model

    from keys.api_tokens import issue_token

    user = get_user_model().objects.create_user(f"api-admin-{uuid.uuid4().hex[:8]}", is_superuser=True)
    token = issue_token(user)[1]
    return lambda server: httpx.Client(base_url=server.url, headers={"Authorization": f"Token {token}"}, timeout=30)


@pytest.fixture
def live_db(django_db_setup, django_db_blocker):
    """Database access that commits, so a gateway process sees what the test makes."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture
def make_key(live_db):
    """Issue a key for a fresh client: ``make_key(agents=[...], rpm=..., budget=...) -> (raw, key)``."""
    from billing.services import set_client_monthly_budget
    from keys.models import Client
    from keys.services import issue_key

    def make(agents=("*",), models=("*",), rpm=1000, tpm=1_000_000, concurrent=50, budget=None, **fields):
        client = Client.objects.create(name="Test client", slug=f"c-{uuid.uuid4().hex[:12]}")
        if budget is not None:
            set_client_monthly_budget(client, Decimal(str(budget)))
        key, raw = issue_key(
            client,
            allowed_agents=list(agents),
            allowed_models=list(models),
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            max_concurrent=concurrent,
            **fields,
        )
        return raw, key

    return make


@pytest.fixture
def wait_for_agent(make_key):
    """``wait_for_agent(slug, server)``: return once that gateway's routing table has the agent (gateways re-read it
    every 0.2 s in the tests). A key that may not use the agent asks, so no limit or budget is spent."""
    raw, _ = make_key(agents=["someone-else"])

    def wait(slug: str, server) -> None:
        with server.client(raw) as client:
            until(lambda: client.get(f"/agents/{slug}/").status_code == 403, f"{server.url} routes to the agent {slug}")

    return wait


@pytest.fixture
def wait_for_reload(live_db, seeded, wait_for_agent):
    """``wait_for_reload(*servers)``: return once each gateway has re-read its routing table since the call.

    A new agent is saved and waited for: a table is loaded agents first, then their targets, path routes and
    keywords, so a table that has the new agent has every change saved before it too.
    """
    from routing.models import Agent

    def wait(*servers) -> None:
        marker = Agent.objects.create(
            slug=f"reload-{uuid.uuid4().hex[:8]}", name="reload marker", upstream_url=seeded.url
        )
        try:
            for server in servers:
                wait_for_agent(marker.slug, server)
        finally:
            marker.delete()

    return wait


@pytest.fixture
def wait_for_price(live_db, seeded, make_key, wait_for_agent):
    """``wait_for_price(model, server)``: return once that gateway prices a new ``model`` at its own price, not the
    default (gateways re-read prices every 0.2 s in the tests): an agent that sends ``model`` upstream is asked
    until the usage of an answer is priced from it."""
    from billing.models import UsageRecord
    from routing.models import Agent

    probe = Agent.objects.create(
        slug=f"price-probe-{uuid.uuid4().hex[:8]}", name="price probe", kind="openai", upstream_url=seeded.url,
        served_models=[], default_model="",
    )  # fmt: skip
    raw, _ = make_key(agents=[probe.slug])

    def priced(model: str, server) -> bool:
        body = {"model": probe.slug, "max_tokens": 1, "messages": [{"role": "user", "content": "price?"}]}
        with server.client(raw) as client:
            answer = client.post("/v1/chat/completions", json={**body, "mock": {"answer_model": model}})
        assert answer.status_code == 200, answer.text
        row = wait_for(lambda: UsageRecord.objects.filter(request_id=answer.headers["x-request-id"]).first())
        return row is not None and row.model == model and not row.default_priced

    def wait(model: str, server) -> None:
        wait_for_agent(probe.slug, server)
        until(lambda: priced(model, server), f"{server.url} prices {model}")

    yield wait
    probe.delete()


@pytest.fixture
def audit_for(live_db):
    """``audit_for(key, count)``: that key's audit records, once ``count`` of them are written."""
    from audit.models import AuditRecord

    def fetch(key, count: int = 1, seconds: float = 10.0):
        def ready():
            rows = list(AuditRecord.objects.filter(api_key_id=key.pk).order_by("id"))
            return rows if len(rows) >= count else None

        return wait_for(ready, seconds) or list(AuditRecord.objects.filter(api_key_id=key.pk).order_by("id"))

    return fetch


@pytest.fixture
def audit_of(live_db):
    """``audit_of(response)``: the one audit record of a gateway response, by its request id."""
    from audit.models import AuditRecord

    def fetch(response, seconds: float = 10.0):
        request_id = response.headers["x-request-id"]
        return wait_for(lambda: AuditRecord.objects.filter(request_id=request_id).first(), seconds)

    return fetch


@pytest.fixture
def provider_at(live_db, seeded, gateway, wait_for_agent):
    """``provider_at(url, kind, on=gateway, **fields)``: an agent at ``url``, once the gateway ``on`` has loaded it."""
    from routing.models import Agent

    made = []

    def make(url, kind="openai", on=gateway, **fields):
        fields = {"served_models": ["gpt-4o-mini"], "default_model": "gpt-4o-mini", "timeout_seconds": 5,
                  "max_retries": 0, **fields}  # fmt: skip
        agent = Agent.objects.create(slug=f"s-{uuid.uuid4().hex[:8]}", name="s", kind=kind, upstream_url=url, **fields)
        made.append(agent)
        wait_for_agent(agent.slug, on)
        return agent

    yield make
    for agent in made:
        agent.delete()
