"""``/metrics`` on a real gateway of two worker processes: what a load of mixed traffic adds there agrees exactly
with the audit log (requests, tokens, cost), whichever worker answers the scrape; shared state (circuits,
budgets, Celery outcomes) is read at scrape time; a scraper is let in only by its address or token."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditRecord
from tests.servers import ROOT, Gateway
from tests.waiting import until, wait_for

CHAT = "/v1/chat/completions"
DASHBOARD = ROOT / "deploy" / "grafana" / "agent-gateway.json"


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def two_workers(request, seeded):
    server = Gateway(workers=2, server=request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_state(seeded):
    """Two workers sharing their state through Redis; one process without it (the embedded profile's own state is
    each process's, so a second worker would answer a scrape with its own circuits)."""
    server = Gateway(workers=2 if settings.REDIS_URL else 1)
    yield server
    server.stop()


def scrape(server, **headers) -> dict[tuple[str, tuple], float]:
    """Every sample of one scrape: (name, sorted labels) -> value."""
    answer = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def settled_scrape(server) -> dict:
    """A scrape once every worker has handed over what it counted: two a hand-over apart that agree."""

    def settled():
        first = scrape(server)
        time.sleep(1.2)  # GATEWAY_METRICS_FLUSH_SECONDS and a margin
        second = scrape(server)
        return second if _requests(first) == _requests(second) else None

    return until(settled, "the workers' counts settle")


def _requests(samples: dict) -> dict:
    return {key: value for key, value in samples.items() if key[0] == "gateway_requests_total"}


def added(before: dict, after: dict, name: str, by: tuple[str, ...]) -> dict[tuple, float]:
    """What the samples named ``name`` gained between two scrapes, summed by the labels ``by``."""
    totals: dict[tuple, float] = defaultdict(float)
    for (sample, labels), value in after.items():
        if sample == name:
            values = dict(labels)
            totals[tuple(values.get(label, "") for label in by)] += value - before.get((sample, labels), 0.0)
    return {labels: value for labels, value in totals.items() if value}


def send_mixed_load(url: str, raws: dict[str, str], caching: str) -> list[httpx.Response]:
    """Chat answers, streamed ones, pass-through calls, cached answers, rate-limited and unauthenticated requests,
    eight at once."""
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
    stream = {**chat, "stream": True, "stream_options": {"include_usage": True}}
    cached = {**chat, "model": caching, "temperature": 0}
    plan = (
        [("steady", CHAT, cached)] * 2  # kept before the rest asks for it
        + [("steady", CHAT, chat)] * 30
        + [("steady", CHAT, cached)] * 8
        + [("steady", CHAT, stream)] * 12
        + [("steady", "/agents/research/invoke", {"input": "look this up"})] * 6
        + [("limited", CHAT, chat)] * 12
        + [("nobody", CHAT, chat)] * 5
    )

    def one(step):
        who, path, body = step
        with httpx.Client(base_url=url, timeout=30) as client:
            return client.post(path, json=body, headers={"Authorization": f"Bearer {raws[who]}"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, plan))


def test_counters_scraped_during_load_agree_exactly_with_the_audit_log(two_workers, make_key, live_db, wait_for_agent):
    from routing.models import Agent

    caching = Agent.objects.create(
        slug=f"cached-{uuid.uuid4().hex[:8]}", name="cached", kind="openai", upstream_url=two_workers_upstream(),
        served_models=[], default_model="gpt-4o-mini", cache_enabled=True, cache_shared=True,
    )  # fmt: skip
    wait_for_agent(caching.slug, two_workers)
    steady_raw, _ = make_key()
    limited_raw, _ = make_key(rpm=4)
    before = settled_scrape(two_workers)  # the requests that waited for the agent counted too
    with ThreadPoolExecutor(max_workers=1) as scraper:  # scraped while the load runs: the exposition holds up
        during = scraper.submit(lambda: [scrape(two_workers) for _ in range(5)])
        raws = {"steady": steady_raw, "limited": limited_raw, "nobody": "sk-no"}
        answers = send_mixed_load(two_workers.url, raws, caching.slug)
        assert all(sample for sample in during.result())
    statuses = Counter(answer.status_code for answer in answers)
    # The limited key's four a minute are each worker's own without Redis: eight may pass then.
    assert statuses[401] == 5 and statuses[429] >= 4 and statuses[200] + statuses[429] == 70, statuses
    ids = [answer.headers["x-request-id"] for answer in answers]
    rows = wait_for(lambda: _all_written(ids))
    assert rows, "every request's audit record is written"
    by_request = Counter((r.agent, r.model, f"{r.status // 100}xx", r.error_type) for r in rows)
    expected = {labels: float(count) for labels, count in by_request.items()}
    request_labels = ("agent", "model", "status_class", "error_code")

    # Each worker hands its counts to the exposition within a second (GATEWAY_METRICS_FLUSH_SECONDS).
    def counted():
        now = scrape(two_workers)
        return now if added(before, now, "gateway_requests_total", request_labels) == expected else None

    until(counted, "the scrape counts every request the audit log has")
    # A scrape may read a worker's files halfway through its hand-over (its counters written, its histograms not
    # yet): the figures compared are a settled scrape's, once no hand-over is under way.
    after = settled_scrape(two_workers)
    assert added(before, after, "gateway_requests_total", request_labels) == expected
    again = scrape(two_workers)  # answered by either worker: the same figures
    assert {k: v for k, v in again.items() if k[0].startswith("gateway_tokens")} == {
        k: v for k, v in after.items() if k[0].startswith("gateway_tokens")
    }
    tokens = Counter()
    cost: dict[tuple, Decimal] = defaultdict(Decimal)
    for r in rows:
        tokens[(r.client_slug, r.agent, r.model, "input")] += r.input_tokens
        tokens[(r.client_slug, r.agent, r.model, "output")] += r.output_tokens
        cost[(r.client_slug, r.agent, r.model)] += r.cost_usd
    assert added(before, after, "gateway_tokens_total", ("client", "agent", "model", "type")) == {
        labels: float(count) for labels, count in tokens.items() if count
    }
    cost_added = added(before, after, "gateway_cost_usd_total", ("client", "agent", "model"))
    assert {labels: round(Decimal(value), 9) for labels, value in cost_added.items()} == {
        labels: round(usd, 9) for labels, usd in cost.items() if usd
    }
    assert sum(tokens.values()) > 0 and sum(cost.values()) > 0

    # The semantic-convention histograms count the same requests and tokens.
    assert sum(added(before, after, "gen_ai_server_request_duration_seconds_count", ()).values()) == len(rows)
    usage = added(before, after, "gen_ai_client_token_usage_sum", ("gen_ai_token_type",))
    assert usage == {
        (kind,): float(sum(n for labels, n in tokens.items() if labels[3] == kind)) for kind in ("input", "output")
    }
    # Twelve streamed answers: each timed to its first event, and per output token after it.
    assert sum(added(before, after, "gen_ai_server_time_to_first_token_seconds_count", ()).values()) == 12
    assert sum(added(before, after, "gen_ai_server_time_per_output_token_seconds_count", ()).values()) == 12
    assert added(before, after, "gateway_refusals_total", ("reason",)) == {
        ("rate",): statuses[429],
        ("authentication",): 5.0,
    }
    attempts = added(before, after, "gateway_upstream_duration_seconds_count", ("outcome",))
    hits = sum(1 for r in rows if r.details.get("cache", {}).get("status") == "hit")
    assert attempts == {("ok",): statuses[200] - hits}  # a hit asks no upstream
    assert sum(added(before, after, "gateway_overhead_seconds_count", ()).values()) == len(rows)

    # The cache's results and savings, as the audit records them (each worker keeps its own in-process cache
    # without Redis: a miss or two more there).
    results = Counter((r.agent, r.details["cache"]["status"]) for r in rows if "cache" in r.details)
    assert added(before, after, "gateway_cache_requests_total", ("agent", "result")) == {
        labels: float(count) for labels, count in results.items()
    }
    assert results[(caching.slug, "hit")] >= 6
    saved = sum(Decimal(r.details["cache"].get("saved_usd", "0")) for r in rows if "cache" in r.details)
    saved_added = sum(added(before, after, "gateway_cache_saved_usd_total", ()).values())
    assert round(Decimal(saved_added), 9) == saved > 0
    caching.delete()


def two_workers_upstream() -> str:
    from routing.models import Agent

    return Agent.objects.get(slug="research").upstream_url


def _all_written(ids: list[str]):
    rows = list(AuditRecord.objects.filter(request_id__in=ids))
    return rows if len(rows) == len(ids) else None


def test_scrape_reads_circuits_and_budgets_from_the_shared_state(shared_state, make_key, live_db, wait_for_agent):
    from billing.models import Budget
    from billing.status import budget_status
    from routing.models import Agent

    dead = Agent.objects.create(
        slug=f"dead-{uuid.uuid4().hex[:8]}", name="dead", kind="openai", upstream_url="http://127.0.0.1:9",
        served_models=[], default_model="gpt-4o-mini", max_retries=0, breaker_failures=1,
        timeout_seconds=2,
    )  # fmt: skip
    raw, key = make_key(budget="2.00")
    wait_for_agent(dead.slug, shared_state)
    with shared_state.client(raw) as client:
        assert client.post(
            CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        ).is_success
        failed = client.post(CHAT, json={"model": dead.slug, "messages": [{"role": "user", "content": "hi"}]})
    assert failed.status_code in (502, 503), failed.text
    samples = until(lambda: _circuit_open(shared_state, dead.slug), "the dead agent's circuit shows open")
    assert samples[("gateway_target_in_flight", (("agent", dead.slug), ("target", "upstream")))] == 0
    assert samples[("gateway_target_error_ratio", (("agent", dead.slug), ("target", "upstream")))] > 0
    budget = Budget.objects.get(client_id=key.client_id)
    status = budget_status(budget)
    labels = (("budget", str(budget.pk)), ("mode", budget.mode), ("period", budget.period), ("scope", budget.scope),
              ("target", status["target"]))  # fmt: skip
    assert samples[("gateway_budget_limit_usd", labels)] == 2.0
    assert samples[("gateway_budget_spent_usd", labels)] == float(status["spent_usd"]) > 0
    assert samples[("gateway_budget_utilisation_ratio", labels)] == pytest.approx(float(status["spent_usd"]) / 2.0)
    assert ("gateway_audit_quarantined_rows", ()) in samples and ("gateway_audit_spooled_rows", ()) in samples
    dead.delete()


def _circuit_open(server, slug):
    samples = scrape(server)
    return (
        samples
        if samples.get(("gateway_target_circuit_state", (("agent", slug), ("target", "upstream")))) == 2
        else None
    )


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names in ``by (...)`` and selectors left out)."""
    bare = re.sub(r"\{[^}]*\}", "", re.sub(r"\b(?:by|without)\s*\([^)]*\)", "", expr))
    return set(re.findall(r"\b((?:gateway|gen_ai)_[a-z0-9_]+)", bare))


def family_of(name: str) -> str:
    return re.sub(r"_(total|count|sum|bucket|created)$", "", name)


def test_the_grafana_dashboard_uses_only_metrics_the_gateway_exports(two_workers):
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(exprs) >= 20
    used = {family_of(name) for expr in exprs for name in metric_names(expr)}
    answer = httpx.get(f"{two_workers.url}/metrics", timeout=30)
    exported = {family.name for family in text_string_to_metric_families(answer.text)}
    assert used - exported == set(), "the dashboard reads metrics the gateway does not export"
    assert {name for name in exported if name.startswith(("gateway_", "gen_ai_"))} - used == set(), (
        "a metric the gateway exports is on no panel"
    )


def test_a_scraper_needs_an_allowed_address_or_the_token(seeded, tmp_path):
    server = Gateway(GATEWAY_METRICS_ALLOW="10.0.0.0/8", GATEWAY_METRICS_TOKEN="s3cret-metrics")
    try:
        url = f"{server.url}/metrics"
        refused = httpx.get(url, headers={"X-Forwarded-For": "10.1.2.3"}, timeout=30)
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
        error = refused.json()["error"]
        assert error["code"] == "invalid_metrics_token" and error["request_id"] == refused.headers["x-request-id"]
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
        ok = httpx.get(url, headers={"Authorization": "Bearer s3cret-metrics"}, timeout=30)
        assert ok.status_code == 200 and "# HELP gateway_target_circuit_state" in ok.text
        assert httpx.post(url, headers={"Authorization": "Bearer s3cret-metrics"}, timeout=30).status_code == 405
    finally:
        server.stop()
    server = Gateway(GATEWAY_METRICS_ALLOW="10.0.0.0/8")
    try:
        refused = httpx.get(f"{server.url}/metrics", headers={"X-Forwarded-For": "10.1.2.3"}, timeout=30)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "metrics_not_allowed"
        assert "gateway_" not in refused.text
    finally:
        server.stop()


def test_metrics_switched_off_are_not_served_and_requests_still_work(seeded, make_key, live_db):
    raw, _ = make_key()
    server = Gateway(GATEWAY_METRICS="false")
    try:
        missing = httpx.get(f"{server.url}/metrics", timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_endpoint"
        with server.client(raw) as client:
            answer = client.post(CHAT, json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
        assert answer.status_code == 200
    finally:
        server.stop()


def test_a_restarted_supervisor_starts_from_a_clean_metrics_directory(seeded, tmp_path):
    stale = Path(tmp_path) / "counter_999999.db"
    stale.write_bytes(b"\0" * 64)
    server = Gateway(GATEWAY_METRICS_DIR=str(tmp_path))
    try:
        until(lambda: not stale.exists(), "the dead process's file is removed")
        assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 200
    finally:
        server.stop()


def test_a_dead_workers_counts_stay_in_one_archive_and_its_files_go(seeded, tmp_path):
    """A worker killed and restarted twice: what it counted is still exposed, from ``<kind>_archive.db``; the
    directory keeps a file per kind and live worker, not one per worker the gateway ever ran."""
    server = Gateway(workers=2, GATEWAY_METRICS_DIR=str(tmp_path))
    try:

        def refused(n: int) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for _ in range(n):
                    answer = client.post(CHAT, json={}, headers={"Authorization": "Bearer sk-nobody"})
                    assert answer.status_code == 401

        def requests_counted() -> float:
            return sum(_requests(scrape(server)).values())

        refused(12)
        for _ in range(2):
            counted = sum(_requests(settled_scrape(server)).values())  # every worker's counts in its files
            pid = int(next(tmp_path.glob("counter_[0-9]*.db")).stem.rpartition("_")[2])
            os.kill(pid, signal.SIGKILL)
            until(lambda pid=pid: not list(tmp_path.glob(f"*_{pid}.db")), "the dead worker's files are archived")
            assert (tmp_path / "counter_archive.db").exists() and (tmp_path / "histogram_archive.db").exists()
            until(lambda counted=counted: requests_counted() == counted, "the dead worker's counts are still exposed")
            refused(6)  # the new worker counts on top
            until(lambda counted=counted: requests_counted() == counted + 6, "the new requests are counted too")
        kinds = Counter(path.name.partition("_")[0] for path in tmp_path.glob("*.db"))
        assert kinds["counter"] <= 3 and kinds["histogram"] <= 3  # a live worker's each, and the archive
    finally:
        server.stop()
