"""Limits, spend and the audit log across gateway processes, and through a shutdown."""

from __future__ import annotations

import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.servers import Gateway
from tests.waiting import DEADLINE_SECONDS, until

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="limits are shared across processes through Redis")


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def two_workers(request, seeded):
    """Two worker processes on one port when Redis is there to share state; else the one-process profile."""
    server = Gateway(workers=2 if settings.REDIS_URL else 1, server=request.param)
    yield server
    server.stop()


def burst(url: str, raw: str, count: int, path=CHAT, body=BODY, headers=None, held=None) -> Counter:
    """``count`` requests at once, each on its own connection.

    ``held=(mock, hold)``: the requests carry that hold, and those admitted wait at the upstream until every
    request has been admitted or refused, so all of them are in flight together however slowly they start.
    """
    answered = []

    def one(_):
        with httpx.Client(base_url=url, timeout=DEADLINE_SECONDS) as client:
            response = client.post(path, json=body, headers={"Authorization": f"Bearer {raw}", **(headers or {})})
            answered.append(response.status_code)
            return response.status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = [pool.submit(one, i) for i in range(count)]
        if held is not None:
            mock, hold = held
            until(lambda: mock.held(hold) + len(answered) == count, "every request admitted (and held) or refused")
            mock.release(hold)
        return Counter(result.result() for result in results)


def worker_cpu_ticks(server: Gateway) -> dict[int, int]:
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    ticks = {}
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks[int(pid)] = int(fields[11]) + int(fields[12])
    return ticks


def test_the_requests_per_minute_limit_admits_exactly_the_limit(two_workers, make_key, audit_for):
    raw, key = make_key(rpm=20)
    before = worker_cpu_ticks(two_workers)
    statuses = burst(two_workers.url, raw, 60)
    assert statuses == Counter({200: 20, 429: 40})
    assert len(audit_for(key, 60)) == 60
    if settings.REDIS_URL:
        after = worker_cpu_ticks(two_workers)
        assert len(after) == 2
        assert all(after[pid] > before.get(pid, 0) for pid in after), "both workers should have served the burst"


def test_the_tokens_per_minute_limit_holds_across_processes(two_workers, make_key, seeded):
    raw, _ = make_key(tpm=1000)
    # Answers that use their whole max_tokens, held until every request is admitted or refused, so settling frees
    # nothing meanwhile; big requests, so the limit refills one only every ~15 s (two fit, far from a third).
    with seeded.hold() as hold:
        body = {**BODY, "max_tokens": 400, "mock": {"hold": hold, "usage_output_tokens": 400}}
        estimate = len(json.dumps(body, separators=(",", ":"))) // 4 + 400
        statuses = burst(two_workers.url, raw, 30, body=body, held=(seeded, hold))
    assert statuses == Counter({200: 1000 // estimate, 429: 30 - 1000 // estimate})


def test_the_concurrency_limit_holds_across_processes(two_workers, make_key, seeded):
    raw, _ = make_key(concurrent=3)
    with seeded.hold() as hold:  # the three admitted stay in flight until all twelve are admitted or refused
        path, headers = "/agents/research/slow", {"x-mock-hold": hold}
        statuses = burst(two_workers.url, raw, 12, path=path, headers=headers, held=(seeded, hold))
    assert statuses == Counter({200: 3, 429: 9})


@needs_redis
def test_spend_is_shared_so_every_process_refuses_a_spent_budget(two_workers, make_key):
    raw, _ = make_key(budget="0.14")  # one request's worst case ($0.121) fits, not again after its $0.025
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 40_000}]}
    with httpx.Client(base_url=two_workers.url, timeout=30) as client:
        assert client.post(CHAT, json=big, headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    statuses = burst(two_workers.url, raw, 20, body=big)
    assert statuses == Counter({402: 20})


def worst_case_nanos(body: dict, output: int) -> int:
    """What a gpt-4o-mini request reserves (150 nanodollars an input token, 600 an output one): the most input it
    may be charged, a token a byte of its estimate's four bytes a token and 4,096 more, and its answer's cap."""
    from routing.admission import INPUT_CHARGE_FACTOR, INPUT_CHARGE_SLACK

    estimate = len(json.dumps(body, separators=(",", ":"))) // 4
    return (estimate * INPUT_CHARGE_FACTOR + INPUT_CHARGE_SLACK) * 150 + output * 600


def test_concurrent_requests_never_spend_past_a_hard_budget(two_workers, make_key, audit_for, seeded):
    """64 requests at once: each reserves its worst case, so only as many as fit are admitted.

    The admitted ones are held at the upstream until every request is admitted or refused, and their
    answers bill their whole max_tokens, so the count is exact however the burst is spread in time.
    """
    from decimal import Decimal

    from billing.models import UsageRecord

    raw, key = make_key(budget="0.01", concurrent=0)
    with seeded.hold() as hold:
        body = {**BODY, "messages": [{"role": "user", "content": "y" * 4000}], "max_tokens": 1000,
                "mock": {"hold": hold, "usage_output_tokens": 1000}}  # fmt: skip
        worst_case = worst_case_nanos(body, output=1000)
        fits = 10_000_000 // worst_case
        statuses = burst(two_workers.url, raw, 64, body=body, held=(seeded, hold))
    assert statuses == Counter({200: fits, 402: 64 - fits})
    audit_for(key, 64)
    spent = sum(row.cost_usd for row in UsageRecord.objects.filter(api_key_id=key.pk))
    assert Decimal(0) < spent <= Decimal("0.01")


@pytest.mark.parametrize("server_name", ["daphne", "uvicorn"])
def test_buffered_audit_records_are_flushed_on_shutdown(seeded, make_key, audit_for, server_name):
    server = Gateway(server=server_name, GATEWAY_FLUSH_SECONDS=600, GATEWAY_FLUSH_BATCH=100_000)
    raw, key = make_key()
    with server.client(raw) as client:
        ids = [client.post(CHAT, json=BODY).headers["x-request-id"] for _ in range(5)]
        ids.append(client.post(CHAT, content=b"broken").headers["x-request-id"])
    assert audit_for(key, 1, seconds=0.5) == []  # still in the buffer (a flush would have had half a second)
    assert server.stop() == 0
    assert sorted(r.request_id for r in audit_for(key, 6)) == sorted(ids)


@needs_redis
def test_a_redis_restart_does_not_reset_anyones_spend(two_workers, make_key, audit_for):
    import redis

    from billing.models import UsageRecord

    raw, key = make_key(budget="0.14")  # one request's worst case ($0.121) fits, not again after its $0.025
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 40_000}]}
    headers = {"Authorization": f"Bearer {raw}"}
    with httpx.Client(base_url=two_workers.url, timeout=30) as client:
        assert client.post(CHAT, json=big, headers=headers).status_code == 200
        audit_for(key)
        assert UsageRecord.objects.filter(api_key_id=key.pk).exists()  # the spend is in the database
        redis.Redis.from_url(settings.REDIS_URL).flushdb()  # Redis loses every counter
        time.sleep(1.2)  # and each process's local snapshot of the budget lapses
        refused = client.post(CHAT, json=big, headers=headers)
    assert refused.status_code == 402  # the counter was rebuilt from the database


def test_two_clients_racing_never_spend_past_their_cost_centers_budget(two_workers, make_key, audit_for, seeded):
    """64 requests from two clients of one team at once: the team's hard budget holds for both together."""
    import uuid
    from decimal import Decimal

    from billing.models import Budget, UsageRecord
    from keys.models import CostCenter

    team = CostCenter.objects.create(name="Team", slug=f"team-{uuid.uuid4().hex[:8]}")
    Budget.objects.create(scope=Budget.COST_CENTER, cost_center=team, period=Budget.DAILY, limit_usd=Decimal("0.01"))
    keys = []
    for _ in range(2):
        raw, key = make_key(budget="5", concurrent=0)  # each client's own budget is far from the limit
        key.client.cost_center = team
        key.client.save()
        keys.append((raw, key))
    with seeded.hold() as hold:  # the admitted ones stay in flight until all 64 are admitted or refused
        body = {**BODY, "messages": [{"role": "user", "content": "y" * 4000}], "max_tokens": 1000,
                "mock": {"hold": hold, "usage_output_tokens": 1000}}  # fmt: skip
        worst_case = worst_case_nanos(body, output=1000)
        fits = 10_000_000 // worst_case
        answered = []

        def one(i):
            raw = keys[i % 2][0]
            with httpx.Client(base_url=two_workers.url, timeout=DEADLINE_SECONDS) as client:
                status = client.post(CHAT, json=body, headers={"Authorization": f"Bearer {raw}"}).status_code
            answered.append(status)
            return status

        with ThreadPoolExecutor(max_workers=64) as pool:
            results = [pool.submit(one, i) for i in range(64)]
            until(lambda: seeded.held(hold) + len(answered) == 64, "every request admitted (and held) or refused")
            seeded.release(hold)
            statuses = Counter(result.result() for result in results)
    assert statuses == Counter({200: fits, 402: 64 - fits})
    for _, key in keys:
        audit_for(key, 32)
    spent = sum(row.cost_usd for row in UsageRecord.objects.filter(cost_center_id=team.pk))
    assert Decimal(0) < spent <= Decimal("0.01")
