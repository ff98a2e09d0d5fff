"""Alerts through a real Celery worker on Redis: a live gateway notices a budget's crossings under concurrent
traffic, and the worker makes each alert once, e-mails it and delivers its signed webhook after a retry."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from email.message import EmailMessage
from types import SimpleNamespace

import httpx
import pytest
from django.conf import settings

from billing.models import Budget, BudgetAlert
from gateway_project import webhooks
from keys.models import Client
from keys.services import issue_key
from tests.billing.test_alerts import Receiver
from tests.conftest import wait_for
from tests.servers import ROOT, Gateway, server_env, stop

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="a worker needs the production profile's Redis broker")

CHAT = "/v1/chat/completions"
SECRET = "alert-worker-test-secret"
# 4,000 characters are 1,000 input tokens of gpt-4o ($2.50 per million) and the mock bills the whole 2,000-token
# answer ($10 per million): $0.0225 a request, with $0.0403 reserved for it (the most input it may be charged, a
# token a byte and 4,096 more, and its max_tokens).
BODY = {
    "model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 4000}], "max_tokens": 2000,
    "mock": {"usage_output_tokens": 2000},
}  # fmt: skip
LIMIT = Decimal("0.40")  # 50% after 9 requests; at most 17 answered


def read_mail(path) -> EmailMessage:
    """The one message in a file of Django's file-based mail backend."""
    text = path.read_text().rsplit("\n" + "-" * 79, 1)[0]
    return email.message_from_string(text, policy=email.policy.default)


@pytest.fixture
def worker(seeded, tmp_path):
    """A Celery worker process on the tests' Redis broker, mailing to files, with a short webhook backoff."""
    mail_dir = tmp_path / "mail"
    log_path = tmp_path / "worker.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "gateway_project", "worker", "--pool", "threads", "-c", "2",
            "--loglevel", "WARNING", "-n", f"alerts-{uuid.uuid4().hex[:8]}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
        cwd=ROOT,
        env=server_env(
            CELERY_TASK_ALWAYS_EAGER="0",
            EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
            EMAIL_FILE_PATH=mail_dir,
            GATEWAY_WEBHOOK_SECRET=SECRET,
            GATEWAY_WEBHOOK_BACKOFF_SECONDS="0.2",
            GATEWAY_WEBHOOK_MAX_ATTEMPTS="5",
            GATEWAY_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",  # the receiver listens on loopback
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield SimpleNamespace(proc=proc, mail_dir=mail_dir, log=log_path)
    started = time.monotonic()
    code = stop(proc, seconds=15)
    log.close()
    assert time.monotonic() - started < 15, "the worker should stop on SIGTERM"
    assert code == 0, log_path.read_text()


@pytest.fixture
def queued_gateway(seeded):
    """A gateway that hands its alerts to the broker instead of running them itself."""
    server = Gateway(CELERY_TASK_ALWAYS_EAGER="0")
    yield server
    server.stop()


def test_a_worker_makes_each_alert_once_and_delivers_it_by_mail_and_signed_webhook(worker, queued_gateway, live_db):
    hook = Receiver(fail_first=1)
    try:
        client = Client.objects.create(name="acme", slug=f"acme-{uuid.uuid4().hex[:10]}")
        budget = Budget.objects.create(
            scope=Budget.CLIENT, client=client, limit_usd=LIMIT, mode=Budget.HARD, alert_percent=50,
            alert_emails="finance@example.com", alert_webhook_url=hook.url,
        )  # fmt: skip
        _, raw = issue_key(client, allowed_agents=["*"], requests_per_minute=1000, max_concurrent=50)

        def three_requests(_):
            with httpx.Client(base_url=queued_gateway.url, timeout=30) as http:
                headers = {"Authorization": f"Bearer {raw}"}
                return [http.post(CHAT, json=BODY, headers=headers).status_code for _ in range(3)]

        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = Counter(s for batch in pool.map(three_requests, range(16)) for s in batch)
        assert set(statuses) == {200, 402} and statuses[200] <= 17, statuses

        def delivered():
            alerts = list(BudgetAlert.objects.filter(budget=budget).order_by("threshold_percent"))
            return alerts if [a.webhook_status for a in alerts] == ["delivered", "delivered"] else None

        alerts = wait_for(delivered, seconds=30) or list(BudgetAlert.objects.filter(budget=budget))
        assert [(a.threshold_percent, a.webhook_status, a.webhook_attempts) for a in alerts] == [
            (50, "delivered", 2),
            (100, "delivered", 2),
        ], worker.log.read_text()
        assert [a.email_status for a in alerts] == ["delivered", "delivered"]
        assert alerts[0].spent_usd >= LIMIT / 2

        # Nothing to wait for: a duplicate delivery would come of its own accord. Half a second gives it the time
        # (and can only let one slip by, never fail a correct run).
        time.sleep(0.5)
        assert [d.status for d in hook.deliveries].count(500) == 2
        accepted = hook.accepted()
        assert sorted(d.event["alert_id"] for d in accepted) == sorted(a.pk for a in alerts)
        # Signed with this webhook's own secret, not the shared legacy one the worker was also given.
        assert all(webhooks.verify(d.body, d.headers, secret=budget.alert_webhook_secret) for d in accepted)
        assert not any(webhooks.verify(d.body, d.headers, secret=SECRET) for d in accepted)

        mails = [read_mail(path) for path in sorted(worker.mail_dir.iterdir())]
        assert [m["To"] for m in mails] == ["finance@example.com"] * 2
        subjects = sorted(m["Subject"] for m in mails)
        assert subjects[0].startswith("[Agent Gateway] Client acme's monthly budget reached 50% ($0.")
        assert subjects[1].startswith("[Agent Gateway] Client acme's monthly budget reached its limit, requests are")
    finally:
        hook.stop()
