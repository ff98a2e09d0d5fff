"""Webhook deliveries under the outbound address policy: a refused URL is never sent to, the name is resolved once
per attempt and the request goes to that checked address (DNS rebinding cannot redirect it), redirects are not
followed, and a delivery keeps the receiver's status only, never what it answered."""

from __future__ import annotations

import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest

from billing.models import BudgetAlert
from billing.tasks import record_budget_alert
from gateway_project.celery import app as celery_app
from routing.models import AgentJob
from routing.tasks import deliver_job_webhook
from tests.api.test_outbound_urls import REAL_GETADDRINFO, resolving
from tests.billing.test_alerts import crossing, make_budget


class Server:
    """A loopback HTTP server that answers every POST with ``status``, ``location`` and ``body``, and records it."""

    def __init__(
        self, status: int = 200, location: str = "", body: bytes = b"", host: str = "127.0.0.1", port: int = 0
    ):
        self.hits: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.hits.append(dict(self.headers.items()))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_port
        self.url = f"http://{host}:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def eager_deliveries(settings):
    """Deliveries run in the test, three attempts each, with no wait between."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    settings.GATEWAY_WEBHOOK_BACKOFF_SECONDS, settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS = 0.01, 3
    yield
    celery_app.conf.task_always_eager = eager


@pytest.fixture
def server():
    made = []

    def make(**options) -> Server:
        made.append(Server(**options))
        return made[-1]

    yield make
    for one in made:
        one.stop()


def alert_of(budget) -> BudgetAlert:
    record_budget_alert.delay(**crossing(budget, 80, "90"))
    return BudgetAlert.objects.get(budget=budget)


@pytest.mark.django_db
def test_an_alert_webhook_to_loopback_is_not_sent_without_the_allow_list(server, settings):
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = []
    receiver = server()
    alert = alert_of(make_budget(alert_webhook_url=receiver.url))  # saved past the form, as rows from before were
    assert receiver.hits == []
    assert alert.webhook_status == BudgetAlert.FAILED
    assert "127.0.0.1 is loopback" in alert.webhook_error


@pytest.mark.django_db
def test_a_name_that_rebinds_to_loopback_after_it_was_saved_is_not_sent_to(server, settings):
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = []
    receiver = server()
    url = f"http://hooks.rebind.test:{receiver.port}/hook"
    with resolving({"hooks.rebind.test": "93.184.216.34"}):
        assert_saved = make_budget(alert_webhook_url=url)
        assert_saved.full_clean()  # public when saved
    with resolving({"hooks.rebind.test": "127.0.0.1"}):
        alert = alert_of(assert_saved)
    assert receiver.hits == []
    assert alert.webhook_status == BudgetAlert.FAILED
    assert "resolves to a non-public address: 127.0.0.1 is loopback" in alert.webhook_error


@pytest.mark.django_db
def test_the_delivery_goes_to_the_address_that_was_checked_with_the_name_as_host(server, settings, monkeypatch):
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    receiver = server()
    lookups = []
    with resolving({"hooks.pinned.test": "127.0.0.1"}):
        checked = socket.getaddrinfo

        def counting(host, *args, **kwargs):
            lookups.append(host)
            return checked(host, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", counting)
        alert = alert_of(make_budget(alert_webhook_url=f"http://hooks.pinned.test:{receiver.port}/hook"))
    assert alert.webhook_status == BudgetAlert.DELIVERED
    assert [h["Host"] for h in receiver.hits] == [f"hooks.pinned.test:{receiver.port}"]
    assert lookups.count("hooks.pinned.test") == 1  # resolved once, by the check; the connection reused its answer


@pytest.mark.django_db
def test_a_redirect_is_recorded_and_not_followed(server, settings):
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    target = server()
    redirecting = server(status=302, location=target.url)
    alert = alert_of(make_budget(alert_webhook_url=redirecting.url))
    assert (alert.webhook_status, alert.webhook_attempts, alert.webhook_error) == ("failed", 3, "HTTP 302")
    assert len(redirecting.hits) == 3
    assert target.hits == []


@pytest.mark.django_db
def test_a_failed_delivery_keeps_the_status_and_never_the_receivers_answer(server, settings):
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    receiver = server(status=500, body=b'{"internal": "admin token s3cr3t"}')
    alert = alert_of(make_budget(alert_webhook_url=receiver.url))
    assert (alert.webhook_status, alert.webhook_error) == ("failed", "HTTP 500")


def job(url: str) -> AgentJob:
    return AgentJob.objects.create(
        request_id=uuid.uuid4().hex, agent="research", status=AgentJob.SUCCEEDED, result={"output": "done"},
        webhook_url=url, webhook_status="pending",
    )  # fmt: skip


@pytest.mark.django_db
def test_a_job_webhook_that_rebinds_to_an_internal_address_is_not_sent_to(server, settings):
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS, settings.GATEWAY_JOB_WEBHOOK_HOSTS = [], []
    receiver = server()
    finished = job(f"http://jobs.rebind.test:{receiver.port}/hook")
    with resolving({"jobs.rebind.test": "::ffff:127.0.0.1"}):
        assert deliver_job_webhook.delay(str(finished.pk)).get() == "failed"
    assert receiver.hits == []
    finished.refresh_from_db()
    assert (finished.webhook_status, finished.webhook_attempts) == ("failed", 1)


def sequence(name: str, *answers: str):
    """``socket.getaddrinfo`` answering ``name`` with each of ``answers`` in turn, then the last one for ever."""
    calls = iter(answers)
    last = answers[-1]

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(calls, last), port))]

    return mock.patch("socket.getaddrinfo", getaddrinfo)


@pytest.mark.django_db
def test_a_name_that_changes_its_answer_between_check_and_connect_is_sent_where_it_was_checked(server, settings):
    """The race of DNS rebinding: a check that resolves and a connection that resolves again can disagree; here
    127.0.0.1 (allowed) stands for the public answer and 127.0.0.2 (not allowed) for the internal one after it."""
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS, settings.GATEWAY_JOB_WEBHOOK_HOSTS = ["127.0.0.1"], []
    checked = server()
    internal = server(host="127.0.0.2", port=checked.port)
    finished = job(f"http://jobs.rebind.test:{checked.port}/hook")
    with sequence("jobs.rebind.test", "127.0.0.1", "127.0.0.2"):
        assert deliver_job_webhook.delay(str(finished.pk)).get() == "delivered"
    assert [h["Host"] for h in checked.hits] == [f"jobs.rebind.test:{checked.port}"]
    assert internal.hits == []


@pytest.mark.django_db
def test_a_job_webhook_redirect_is_not_followed(server, settings):
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    target = server()
    finished = job(server(status=307, location=target.url).url)
    deliver_job_webhook.delay(str(finished.pk))
    finished.refresh_from_db()
    assert (finished.webhook_status, finished.webhook_attempts) == ("failed", 3)
    assert target.hits == []
