"""Budget alerts: found when spend crosses a threshold, made once per budget, period and threshold, then
e-mailed and POSTed to a signed webhook that is retried with backoff (Celery runs eagerly here)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.utils import timezone

from billing import alerts
from billing.budgets import rule_of
from billing.models import NANOS_PER_USD, Budget, BudgetAlert, UsageRecord
from billing.tasks import backoff_seconds, deliver_alert_webhook, record_budget_alert, sweep_budget_alerts
from gateway_project import webhooks
from gateway_project.celery import app as celery_app
from keys.models import Client
from tests.servers import free_port

USD = NANOS_PER_USD
LOCMEM = "django.core.mail.backends.locmem.EmailBackend"


@dataclass
class Delivery:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A webhook receiver on loopback that answers the first ``fail_first`` deliveries of each event with 500."""

    def __init__(self, fail_first: int = 0, status: int = 500):
        self.fail_first, self.status = fail_first, status
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                with receiver._lock:
                    event = headers.get(webhooks.EVENT_ID_HEADER, "")
                    seen = sum(d.headers.get(webhooks.EVENT_ID_HEADER) == event for d in receiver.deliveries)
                    status = receiver.status if seen < receiver.fail_first else 200
                    receiver.deliveries.append(Delivery(status, headers, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/budgets"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.status == 200]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    """``receiver(fail_first=1)``: a running loopback receiver, stopped after the test."""
    made = []

    def make(**options) -> Receiver:
        made.append(Receiver(**options))
        return made[-1]

    yield make
    for one in made:
        one.stop()


@pytest.fixture(autouse=True)
def eager_celery(settings):
    """Tasks run in the test, mail goes to ``mail.outbox``, retries wait no time, loopback receivers are allowed."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    settings.EMAIL_BACKEND = LOCMEM
    settings.GATEWAY_CONSOLE_URL = "https://gateway.example.com"
    settings.GATEWAY_WEBHOOK_BACKOFF_SECONDS = 0.01
    settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS = 3
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]  # the receivers listen on loopback
    yield
    celery_app.conf.task_always_eager = eager


def make_budget(limit="100", name="acme", **fields) -> Budget:
    client = Client.objects.create(name=name, slug=f"a-{uuid.uuid4().hex[:12]}")
    return Budget.objects.create(scope=Budget.CLIENT, client=client, limit_usd=Decimal(limit), **fields)


def spend(budget: Budget, usd: str) -> None:
    """A usage row of ``usd`` for the budget's client, now."""
    UsageRecord.objects.create(
        request_id=uuid.uuid4().hex, created_at=timezone.now(), client=budget.client, agent="research",
        model="gpt-4o", input_tokens=1, output_tokens=1, cost_usd=Decimal(usd),
    )  # fmt: skip


def crossing(budget: Budget, threshold: int, spent_usd: str) -> dict:
    """The task arguments ``billing.alerts.notice`` sends for a crossing in the budget's current window."""
    period = rule_of(budget).window()
    return {
        "budget_id": budget.pk,
        "period_key": period.key,
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat(),
        "threshold_percent": threshold,
        "spent_nanos": int(Decimal(spent_usd) * USD),
    }


# --- Finding the crossings ----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("before", "after", "crossed"),
    [
        ("0", "79.99", []),
        ("79.99", "80", [80]),
        ("50", "100", [80, 100]),
        ("80", "99", []),  # 80% was crossed by an earlier settle
        ("99.5", "120", [100]),
        ("100", "130", []),
    ],
)
def test_it_finds_the_crossing_of_the_alert_percent_and_of_the_limit(before, after, crossed):
    rule = rule_of(make_budget("100"))
    assert alerts.crossed(rule, int(Decimal(before) * USD), int(Decimal(after) * USD)) == crossed


@pytest.mark.django_db
def test_a_zero_limit_crosses_100_percent_on_its_first_spend():
    rule = rule_of(make_budget("0"))
    assert alerts.crossed(rule, 0, 1) == [100]
    assert alerts.crossed(rule, 1, 2) == []
    assert alerts.crossed(rule, 0, 0) == []


# --- Making the alert once ------------------------------------------------------


@pytest.mark.django_db
def test_it_records_the_alert_once_when_told_twice(mailoutbox):
    budget = make_budget(alert_emails="finance@example.com")
    first = record_budget_alert.delay(**crossing(budget, 80, "80")).get()
    again = record_budget_alert.delay(**crossing(budget, 80, "80.50")).get()
    assert first is not None and again is None
    alert = BudgetAlert.objects.get(budget=budget)
    assert (alert.threshold_percent, alert.spent_usd, alert.limit_usd) == (80, Decimal("80"), Decimal("100"))
    assert alert.period_key == rule_of(budget).window().key
    assert len(mailoutbox) == 1


def test_many_processes_noticing_one_crossing_make_one_alert(live_db, mailoutbox):
    budget = make_budget(alert_emails="finance@example.com")
    args = crossing(budget, 100, "100")
    start = threading.Barrier(8)
    made = []

    def notice():
        start.wait()
        try:
            made.append(record_budget_alert.apply(kwargs=args).get())
        finally:
            connection.close()

    threads = [threading.Thread(target=notice) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(made) == 8
    assert [m for m in made if m is not None] == [BudgetAlert.objects.get(budget=budget).pk]
    assert len(mailoutbox) == 1


@pytest.mark.django_db
def test_the_hot_paths_notice_reaches_the_task():
    budget = make_budget("10")
    rule = rule_of(budget)
    alerts.forget_noticed()
    try:
        alerts.notice(rule, rule.window(), 80, 8 * USD)
    finally:
        alerts.forget_noticed()
    alert = BudgetAlert.objects.get(budget=budget)
    assert (alert.threshold_percent, alert.spent_usd) == (80, Decimal("8"))


@pytest.mark.django_db
def test_the_tasks_do_nothing_for_rows_that_are_gone():
    gone = make_budget()
    args = crossing(gone, 80, "80")
    gone.delete()
    assert record_budget_alert.delay(**args).get() is None
    assert deliver_alert_webhook.delay(10**9).get() is None


@pytest.mark.django_db
def test_a_budget_without_addresses_or_webhook_still_gets_its_alert(mailoutbox):
    budget = make_budget()
    record_budget_alert.delay(**crossing(budget, 80, "81"))
    alert = BudgetAlert.objects.get(budget=budget)
    assert (alert.email_status, alert.webhook_status, alert.webhook_attempts) == ("none", "none", 0)
    assert mailoutbox == []


# --- The e-mail -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_email_names_the_scope_window_spend_limit_and_mode(mailoutbox):
    budget = make_budget(alert_emails="finance@example.com; ops@example.com")
    record_budget_alert.delay(**crossing(budget, 80, "80"))
    [mail] = mailoutbox
    assert mail.subject == "[Agent Gateway] Client acme's monthly budget reached 80% ($80.00 of $100.00)"
    assert mail.to == ["finance@example.com", "ops@example.com"]
    period = rule_of(budget).window()
    start, end = (timezone.localtime(m).strftime("%Y-%m-%d %H:%M") for m in (period.start, period.end))
    assert "Scope:     Client acme" in mail.body
    assert f"Period:    Monthly, {start} " in mail.body and f" to {end} " in mail.body
    assert "Spent:     $80.00 of $100.00 (80%)" in mail.body
    assert "Mode:      hard: requests the rest of the budget cannot cover are refused with 402" in mail.body
    assert f"In the console: https://gateway.example.com/console/budgets/{budget.pk}/\n" in mail.body
    assert BudgetAlert.objects.get(budget=budget).email_status == "delivered"


@pytest.mark.django_db
def test_a_hard_budget_at_its_limit_says_requests_are_refused(mailoutbox):
    budget = make_budget("0.05", alert_emails="finance@example.com")
    record_budget_alert.delay(**crossing(budget, 100, "0.0482"))
    assert mailoutbox[0].subject == (
        "[Agent Gateway] Client acme's monthly budget reached its limit, requests are refused ($0.0482 of $0.05)"
    )


@pytest.mark.django_db
def test_a_failing_mail_server_marks_the_email_failed_and_still_records_the_alert(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 1
    budget = make_budget(alert_emails="finance@example.com")
    record_budget_alert.delay(**crossing(budget, 80, "80"))
    assert BudgetAlert.objects.get(budget=budget).email_status == "failed"


# --- The webhook ------------------------------------------------------------------


def test_a_signature_verifies_and_a_tampered_body_or_a_stale_one_does_not():
    body = webhooks.encode({"type": "budget.threshold_crossed", "spent_usd": Decimal("1.50")})
    headers = webhooks.signed_headers(body, event_id="budget-alert-1")
    assert headers["X-Gateway-Signature"].startswith("sha256=")
    assert webhooks.verify(body, headers)
    assert webhooks.verify(body, {name.lower(): value for name, value in headers.items()})
    assert not webhooks.verify(body.replace(b"1.50", b"0.50"), headers)
    assert not webhooks.verify(body, headers, secret="someone else's secret")
    stale = webhooks.signed_headers(body, timestamp=int(time.time()) - 600)
    assert not webhooks.verify(body, stale, tolerance_seconds=300)
    assert not webhooks.verify(body, {**headers, "X-Gateway-Signature": "md5=abc"})
    assert not webhooks.verify(body, {"X-Gateway-Signature": headers["X-Gateway-Signature"]})


def test_the_signature_is_an_hmac_of_timestamp_and_body(settings):
    import hashlib
    import hmac

    settings.GATEWAY_WEBHOOK_SECRET = "s3cret"
    expected = hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert webhooks.sign(b"{}", 1700000000) == expected
    assert settings.SECRET_KEY not in (webhooks.sign(b"{}", 1), "s3cret")


def test_the_default_secret_is_derived_from_the_secret_key_not_equal_to_it(settings):
    assert settings.GATEWAY_WEBHOOK_SECRET
    assert settings.GATEWAY_WEBHOOK_SECRET != settings.SECRET_KEY


@pytest.mark.django_db
def test_the_webhook_is_retried_until_the_receiver_accepts(receiver):
    hook = receiver(fail_first=1)
    budget = make_budget(name="acme", alert_webhook_url=hook.url, mode=Budget.SOFT, alert_percent=50)
    record_budget_alert.delay(**crossing(budget, 50, "50.25"))
    alert = BudgetAlert.objects.get(budget=budget)
    assert (alert.webhook_status, alert.webhook_attempts, alert.webhook_error) == ("delivered", 2, "")
    assert [d.status for d in hook.deliveries] == [500, 200]
    assert len({d.headers["X-Gateway-Event-Id"] for d in hook.deliveries}) == 1
    [accepted] = hook.accepted()
    assert webhooks.verify(accepted.body, accepted.headers, secret=budget.alert_webhook_secret)
    event = accepted.event
    assert event == {
        "type": "budget.threshold_crossed",
        "id": f"budget-alert-{alert.pk}",
        "alert_id": alert.pk,
        "budget_id": budget.pk,
        "budget_name": "",
        "scope": "client",
        "target": "Client acme",
        "target_id": budget.client_id,
        "period": "monthly",
        "period_key": alert.period_key,
        "period_start": alert.period_start.isoformat(),
        "period_end": alert.period_end.isoformat(),
        "threshold_percent": 50,
        "spent_usd": "50.250000",
        "limit_usd": "100.00",
        "mode": "soft",
        "created_at": alert.created_at.isoformat(),
        "console_url": f"https://gateway.example.com/console/budgets/{budget.pk}/",
    }


@pytest.mark.django_db
@pytest.mark.parametrize("receiver_state", ["answers 503", "is not listening"])
def test_a_webhook_that_keeps_failing_ends_as_failed_with_the_error(receiver, receiver_state):
    url = (
        receiver(fail_first=99, status=503).url
        if receiver_state == "answers 503"
        else f"http://127.0.0.1:{free_port()}/"
    )
    budget = make_budget(alert_webhook_url=url)
    record_budget_alert.delay(**crossing(budget, 80, "90"))
    alert = BudgetAlert.objects.get(budget=budget)
    assert (alert.webhook_status, alert.webhook_attempts) == ("failed", 3)
    expected = "HTTP 503" if receiver_state == "answers 503" else "ConnectError"
    assert alert.webhook_error.startswith(expected)


@pytest.mark.django_db
def test_a_delivered_webhook_is_not_sent_again_when_its_task_runs_twice(receiver):
    hook = receiver()
    budget = make_budget(alert_webhook_url=hook.url)
    record_budget_alert.delay(**crossing(budget, 80, "80"))
    alert = BudgetAlert.objects.get(budget=budget)
    assert deliver_alert_webhook.delay(alert.pk).get() is None
    assert len(hook.deliveries) == 1
    alert.refresh_from_db()
    assert (alert.webhook_status, alert.webhook_attempts) == ("delivered", 1)


def test_the_backoff_doubles_with_jitter_up_to_a_cap(settings):
    settings.GATEWAY_WEBHOOK_BACKOFF_SECONDS, settings.GATEWAY_WEBHOOK_BACKOFF_MAX_SECONDS = 10, 60
    for attempts, ceiling in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)]:
        waits = {backoff_seconds(attempts) for _ in range(50)}
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(waits) > 1


# --- The sweep ----------------------------------------------------------------------
# The sweep looks at every active budget in the database, other tests' too: these look only at their own.


def swept_budget(limit: str, **fields) -> Budget:
    return make_budget(limit, alert_emails=f"finance-{uuid.uuid4().hex[:8]}@example.com", **fields)


def mail_of(budget: Budget, outbox) -> list:
    return [m for m in outbox if m.to == budget.alert_addresses]


@pytest.mark.django_db
def test_the_sweep_makes_missed_alerts_once(mailoutbox):
    budget = swept_budget("10")
    quiet = swept_budget("10")
    spend(budget, "8.50")
    spend(quiet, "7.99")
    before = BudgetAlert.objects.count()
    made = sweep_budget_alerts.delay().get()
    assert made == BudgetAlert.objects.count() - before >= 1
    assert list(BudgetAlert.objects.filter(budget=budget).values_list("threshold_percent", "spent_usd")) == [
        (80, Decimal("8.5"))
    ]
    assert not BudgetAlert.objects.filter(budget=quiet).exists()
    assert len(mail_of(budget, mailoutbox)) == 1 and mail_of(quiet, mailoutbox) == []
    spend(budget, "1.50")
    sweep_budget_alerts.delay()
    sweep_budget_alerts.delay()
    assert Counter(BudgetAlert.objects.filter(budget=budget).values_list("threshold_percent", flat=True)) == {
        80: 1,
        100: 1,
    }
    assert len(mail_of(budget, mailoutbox)) == 2


@pytest.mark.django_db
def test_the_sweep_does_not_repeat_an_alert_the_gateway_already_made(mailoutbox):
    budget = swept_budget("10")
    spend(budget, "9")
    record_budget_alert.delay(**crossing(budget, 80, "8.10"))
    sweep_budget_alerts.delay()
    assert BudgetAlert.objects.filter(budget=budget).count() == 1
    assert len(mail_of(budget, mailoutbox)) == 1


@pytest.mark.django_db
def test_a_soft_budget_alerts_at_100_percent_too(mailoutbox):
    budget = swept_budget("10", mode=Budget.SOFT)
    spend(budget, "12.40")
    sweep_budget_alerts.delay()
    assert sorted(BudgetAlert.objects.filter(budget=budget).values_list("threshold_percent", flat=True)) == [80, 100]
    assert sorted(m.subject for m in mail_of(budget, mailoutbox)) == [
        "[Agent Gateway] Client acme's monthly budget reached 80% ($12.40 of $10.00)",
        "[Agent Gateway] Client acme's monthly budget reached its limit, requests are still allowed ($12.40 of $10.00)",
    ]


@pytest.mark.django_db
def test_the_sweep_skips_inactive_budgets():
    budget = make_budget("10", is_active=False)
    spend(budget, "11")
    sweep_budget_alerts.delay()
    assert not BudgetAlert.objects.filter(budget=budget).exists()
