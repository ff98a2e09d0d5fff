"""The metrics' own logic: bounded labels, batched observations equal to prometheus-client's, who may scrape, how a
refusal is classed, and Celery task outcomes counted where every process reads them."""

from __future__ import annotations

import ipaddress
import sys
import threading

import pytest
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway_project import metrics as m
from gateway_project.metrics_scrape import SharedStateCollector, count_task_outcome

pytestmark = pytest.mark.django_db


@settings(max_examples=200)
@given(cap=st.integers(1, 8), values=st.lists(st.text(max_size=150), max_size=60))
def test_a_bounded_label_keeps_its_first_values_and_counts_the_rest_as_other(cap, values):
    label = m.BoundedLabel(cap)
    seen = [label(value) for value in values]
    kept = {out for out in seen if out != m.OTHER}
    assert len(kept) <= cap
    assert all(len(out) <= m.LABEL_LENGTH for out in seen)
    first = list(dict.fromkeys(values))[:cap]
    for value, out in zip(values, seen, strict=True):
        assert out == (value[: m.LABEL_LENGTH] if value in first else m.OTHER)
        assert label(value) == out  # the same value, the same label, every time


amounts = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@settings(max_examples=100)
@given(
    observations=st.lists(st.tuples(st.sampled_from("ab"), amounts), max_size=40),
    counts=st.lists(st.tuples(st.sampled_from("xyz"), st.integers(0, 10**9)), max_size=40),
)
def test_batched_observations_expose_exactly_what_direct_ones_do(observations, counts):
    def metrics():
        registry = CollectorRegistry()
        buckets = (0.001, 0.5, 1, 64, 1e5)
        return (
            registry,
            Histogram("h_seconds", "h", ("k",), buckets=buckets, registry=registry),
            Counter("c", "c", ("k",), registry=registry),
        )

    direct, direct_h, direct_c = metrics()
    batched, batched_h, batched_c = metrics()
    pending = m.Pending()
    pending.scheduled = True  # handed over below, by hand
    for label, value in observations:
        direct_h.labels(label).observe(value)
        pending.observe(batched_h, (label,), value)
    for label, value in counts:
        direct_c.labels(label).inc(value)
        pending.count(batched_c, (label,), value)
    pending.flush()
    assert _without_created(generate_latest(batched)) == _without_created(generate_latest(direct))


def _without_created(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if b"_created" not in line]


def test_nothing_counted_is_lost_between_hand_overs():
    registry = CollectorRegistry()
    counter = Counter("n", "n", registry=registry)
    pending = m.Pending()
    pending.scheduled = True
    pending.count(counter, (), 2)
    pending.flush()
    pending.scheduled = True
    pending.count(counter, (), 3)
    pending.flush()
    pending.flush()  # nothing new: nothing added twice
    assert registry.get_sample_value("n_total") == 5


def test_threads_counting_while_another_hands_over_lose_nothing():
    """A Celery worker with a thread pool runs jobs on loops of their own in one process: every update lands in one
    hand-over or the next, never in a table being handed over."""
    registry = CollectorRegistry()
    counter = Counter("n", "n", ("k",), registry=registry)
    histogram = Histogram("h_seconds", "h", ("k",), buckets=(0.5, 1), registry=registry)
    pending = m.Pending()
    pending.scheduled = True  # handed over by the thread below, not on a timer
    per_thread, threads = 20_000, 4
    stop = threading.Event()

    def count(index: int) -> None:
        for n in range(per_thread):
            label = str(n % 7)
            with pending.lock:
                pending.count(counter, (label,))
                pending.observe(histogram, (label,), 0.25 * index)

    def hand_over() -> None:
        while not stop.is_set():
            pending.flush()
            pending.scheduled = True

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can
    try:
        flusher = threading.Thread(target=hand_over)
        flusher.start()
        counters = [threading.Thread(target=count, args=(index,)) for index in range(threads)]
        for thread in counters:
            thread.start()
        for thread in counters:
            thread.join()
        stop.set()
        flusher.join()
    finally:
        sys.setswitchinterval(interval)
    pending.flush()
    counted = sum(registry.get_sample_value("n_total", {"k": str(k)}) or 0 for k in range(7))
    observed = sum(registry.get_sample_value("h_seconds_count", {"k": str(k)}) or 0 for k in range(7))
    assert counted == observed == per_thread * threads


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (401, "invalid_api_key", "authentication"),
        (401, "missing_api_key", "authentication"),
        (403, "key_revoked", "authentication"),
        (429, "too_many_failed_authentications", "authentication"),
        (429, "rate_limit_requests", "rate"),
        (429, "agent_concurrency_limit", "rate"),
        (402, "budget_exceeded", "budget"),
        (403, "agent_not_allowed", "scope"),
        (403, "model_not_allowed", "scope"),
        (403, "policy_denied", "policy"),
        (403, "guardrail_blocked", "guardrail"),
        (400, "guardrail_blocked", "guardrail"),
        (413, "request_too_large", "invalid_request"),
        (404, "unknown_endpoint", "invalid_request"),
        (502, "upstream_error", None),
        (503, "budget_unavailable", None),
        (400, "upstream_rejected", None),
        (499, "client_disconnected", None),
        (200, "", None),
    ],
)
def test_a_refusal_is_classed_by_why_the_gateway_refused(status, code, reason):
    assert m.refusal_reason(status, code) == reason


ALLOWED = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8")]


@override_settings(GATEWAY={"METRICS": {"TOKEN": "tok", "ALLOW_NETWORKS": ALLOWED}})
def test_a_scraper_is_let_in_by_its_address_or_by_the_token():
    assert m.may_scrape("127.0.0.1", b"")
    assert m.may_scrape("::ffff:10.2.3.4", b"")  # an IPv4 client on a dual-stack socket
    assert not m.may_scrape("192.168.1.1", b"")
    assert not m.may_scrape(None, b"")
    assert not m.may_scrape("not an address", b"")
    assert m.may_scrape("192.168.1.1", b"Bearer tok")
    # A wrong token is refused even from an allowed address: a scraper that sends one meant to use it.
    assert not m.may_scrape("127.0.0.1", b"Bearer wrong")


@settings(max_examples=200)
@given(peer=st.one_of(st.none(), st.text(max_size=60), st.ip_addresses().map(str)), auth=st.binary(max_size=80))
def test_the_scrape_check_never_raises_and_lets_in_only_allowed_addresses_or_the_token(peer, auth):
    with override_settings(GATEWAY={"METRICS": {"TOKEN": "tok", "ALLOW_NETWORKS": ALLOWED}}):
        allowed = m.may_scrape(peer, auth)
    if allowed and auth != b"Bearer tok":
        address = ipaddress.ip_address(peer.split("%")[0])
        address = getattr(address, "ipv4_mapped", None) or address
        assert any(address in network for network in ALLOWED)


def test_celery_task_outcomes_are_counted_in_the_shared_state_and_scraped():
    from billing.tasks import sweep_budget_alerts

    before = _task_samples()
    sweep_budget_alerts.delay()  # eager here: the same signals as on a worker
    count_task_outcome("billing.tasks.deliver_alert_webhook", "RETRY")
    after = _task_samples()
    assert (
        after[("billing.tasks.sweep_budget_alerts", "SUCCESS")]
        == before.get(("billing.tasks.sweep_budget_alerts", "SUCCESS"), 0) + 1
    )
    assert after[("billing.tasks.deliver_alert_webhook", "RETRY")] >= 1


def _task_samples() -> dict[tuple[str, str], float]:
    for family in SharedStateCollector().collect():
        if family.name == "gateway_celery_tasks":
            return {(s.labels["task"], s.labels["outcome"]): s.value for s in family.samples}
    raise AssertionError("no gateway_celery_tasks family")


def test_a_scrape_that_cannot_be_made_is_a_json_503_not_a_crash(monkeypatch):
    import asyncio
    import json

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(m, "exposition", broken)
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": [], "client": ("127.0.0.1", 5000)}
    asyncio.run(m.serve_metrics(scope, receive, send))
    assert sent[0]["status"] == 503
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "metrics_unavailable" and error["request_id"]
