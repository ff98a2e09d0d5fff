"""Properties of the whole hot path on a live gateway, for arbitrary requests (hypothesis, bounded).

1. For any path, headers and body: the gateway answers below 500, never forwards outside the
   agent's base, and writes exactly one valid audit record.
2. For any concurrent mix of requests, answer lengths and answering models, across two gateway
   processes sharing Redis (production profile): spend never passes a hard budget, and equals
   the priced usage.
"""

from __future__ import annotations

import http.client
import ipaddress
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import wait_for
from tests.servers import Gateway

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
)

segment = st.lists(
    st.sampled_from(
        ["a", "b", ".", "..", "%2e", "%2E%2e", "%2f", "%3f", "%23", "%00", "%0d%0a", "%5c", "%", "%zz", "~", "%41",
         "%c3%a9", "", "v1", "chat", "..%2f", "x.y"]
    ),
    max_size=4,
).map("".join)  # fmt: skip
tails = st.lists(segment, max_size=5).map(lambda parts: "/" + "/".join(parts))
header_names = st.sampled_from(
    ["X-Forwarded-For", "Forwarded", "X-Real-IP", "Connection", "Content-Type", "Accept-Encoding", "X-Custom",
     "Authorization", "X-Api-Key", "Cookie", "Transfer-Encoding", "Expect"]
)  # fmt: skip
header_values = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=300),
    st.sampled_from([b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi\\u0000"}]}',
                     b'{"model": 1}', b'{"input": "\\ud800"}', b"[" * 3000, b'{"model":"a","model":"b"}']),
)  # fmt: skip


def _send(port, method, path, headers, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.getheader("x-request-id"), response.read()
    finally:
        conn.close()


@pytest.fixture
def based_agent(seeded, gateway, live_db, wait_for_agent):
    from routing.models import Agent

    agent = Agent.objects.create(
        slug=f"prop-{uuid.uuid4().hex[:8]}", name="prop", kind="agent", upstream_url=f"{seeded.url}/tenant/a"
    )
    wait_for_agent(agent.slug, gateway)
    yield agent
    agent.delete()


def test_any_request_gets_an_answer_below_500_stays_under_the_base_and_is_audited_once(
    gateway, based_agent, make_key, live_db
):
    from audit.models import AuditRecord

    raw, _ = make_key()

    @PROPERTY
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
        where=st.sampled_from(["agent", "chat", "messages", "invoke", "models", "unknown"]),
        tail=tails,
        headers=st.lists(st.tuples(header_names, header_values), max_size=5),
        authenticated=st.booleans(),
        body=bodies,
    )
    def check(method, where, tail, headers, authenticated, body):
        path = {
            "agent": f"/agents/{based_agent.slug}{tail}",
            "chat": "/v1/chat/completions",
            "messages": "/v1/messages",
            "invoke": "/v1/agent/invoke",
            "models": "/v1/models",
            "unknown": f"/v1{tail}",
        }[where]
        headers = [(n, v) for n, v in headers if n.lower() not in ("authorization", "transfer-encoding", "expect")]
        if authenticated:
            headers.append(("Authorization", f"Bearer {raw}"))
        status, request_id, content = _send(gateway.port, method, path, headers, body)
        assert status < 500, (status, path, content[:300])
        if where == "agent" and status == 200:
            import json

            echo = json.loads(content)
            assert echo["raw_path"] == "/tenant/a" or echo["raw_path"].startswith("/tenant/a/"), echo["raw_path"]
        assert request_id
        rows = wait_for(lambda: list(AuditRecord.objects.filter(request_id=request_id)), 10)
        assert len(rows) == 1, (path, status)
        row = rows[0]
        assert row.status == status
        if row.client_ip is not None:
            ipaddress.ip_address(row.client_ip)
        for text in (row.path, row.model, row.input_preview, row.output_preview, row.user_agent):
            assert "\x00" not in text

    check()


PRICES = {"cheap": (Decimal("1"), Decimal("2")), "dear": (Decimal("300"), Decimal("1200"))}


@pytest.fixture
def race_agent(seeded, live_db):
    """A cheap and a dear model and an agent whose upstream answers with either: ``(agent, {kind: model})``."""
    from billing.models import ModelPrice
    from routing.models import Agent

    suffix = uuid.uuid4().hex[:6]
    names = {kind: f"{kind}-{suffix}" for kind in PRICES}
    prices = [
        ModelPrice.objects.create(model=names[kind], input_per_million=i, output_per_million=o)
        for kind, (i, o) in PRICES.items()
    ]
    agent = Agent.objects.create(
        slug=f"race-{suffix}", name="race", kind="openai", upstream_url=seeded.url,
        served_models=list(names.values()), default_model="",
    )  # fmt: skip
    yield agent, names
    agent.delete()
    for price in prices:
        price.delete()


@pytest.fixture
def racing_gateway(race_agent):
    """Started once the agent and its prices are saved, so every worker loads its tables with them."""
    workers = 2 if django_settings.REDIS_URL else 1  # budgets are shared between processes through Redis only
    server = Gateway(workers=workers)
    yield server
    server.stop()


def test_concurrent_spend_never_passes_a_hard_budget_and_equals_the_priced_usage(
    racing_gateway, race_agent, make_key, live_db
):
    from billing.models import UsageRecord

    agent, names = race_agent

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(
        requests=st.lists(
            st.tuples(st.integers(5, 60), st.integers(0, 60), st.sampled_from(list(names.values()))),
            min_size=8,
            max_size=24,
        ),
        budget=st.sampled_from(["0.05", "0.10", "0.25"]),
    )
    def check(requests, budget):
        raw, key = make_key(budget=budget)

        def call(spec):
            max_tokens, billed, answer_model = spec
            body = {
                "model": agent.slug,
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": "race"}],
                "mock": {"answer_model": answer_model, "usage_output_tokens": min(billed, max_tokens)},
            }
            return racing_gateway.client(raw).post("/v1/chat/completions", json=body).status_code

        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(call, requests))
        assert set(statuses) <= {200, 402}, statuses
        answered = statuses.count(200)
        rows = wait_for(lambda: (r := list(UsageRecord.objects.filter(client_id=key.client_id))) and
                        len(r) >= answered and r, 10) or []  # fmt: skip
        assert len(rows) == answered
        spent = sum((row.cost_usd for row in rows), Decimal(0))
        assert spent <= Decimal(budget), (spent, budget)
        for row in rows:
            kind = next(k for k, name in names.items() if name == row.model)
            i, o = PRICES[kind]
            assert row.cost_usd == (i * row.input_tokens + o * row.output_tokens) / 10**6

    check()
