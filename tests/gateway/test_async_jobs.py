"""Asynchronous agent invokes through a live gateway: 202 and a job, admitted exactly like a synchronous call,
run in the background (in the gateway process in the embedded profile, on a real Celery worker with Redis in the
production one), metered and audited once, read back by its own client only, and announced by a signed webhook
that is retried until the receiver takes it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from types import SimpleNamespace

import httpx
import pytest
from django.conf import settings

from audit.models import AuditRecord
from billing.models import UsageRecord
from gateway_project import webhooks
from routing.models import AgentJob
from tests.billing.test_alerts import Receiver
from tests.gateway.test_enforcement import assert_error
from tests.servers import ROOT, Gateway, server_env, stop
from tests.waiting import until, wait_for

INVOKE = "/v1/agent/invoke"
SECRET = "jobs-test-secret"
JOB_ENV = {
    "GATEWAY_JOB_WEBHOOK_HOSTS": "127.0.0.1",
    "GATEWAY_WEBHOOK_SECRET": SECRET,
    "GATEWAY_WEBHOOK_BACKOFF_SECONDS": "0.2",
    "GATEWAY_WEBHOOK_MAX_ATTEMPTS": "4",
}


@pytest.fixture(scope="module")
def runner(seeded, tmp_path_factory):
    """A gateway whose jobs run: in its own process when embedded, on a Celery worker (threads) with Redis."""
    worker = log = None
    if settings.REDIS_URL:
        log_path = tmp_path_factory.mktemp("jobs") / "worker.log"
        log = open(log_path, "wb")
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "gateway_project", "worker", "--pool", "threads", "-c", "2",
                "--loglevel", "WARNING", "-n", f"jobs-{uuid.uuid4().hex[:8]}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT, env=server_env(CELERY_TASK_ALWAYS_EAGER="0", **JOB_ENV), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        gateway = Gateway(CELERY_TASK_ALWAYS_EAGER="0", **JOB_ENV)
    else:
        gateway = Gateway(**JOB_ENV)
    yield SimpleNamespace(gateway=gateway, worker=worker)
    gateway.stop()
    if worker is not None:
        code = stop(worker, seconds=15)
        log.close()
        assert code == 0, log_path.read_text()


def finished(client: httpx.Client, job_id: str, seconds: float = 30) -> dict:
    """Poll the job's status URL until it succeeded or failed."""

    def done():
        body = client.get(f"/v1/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed") else None

    body = wait_for(done, seconds, interval=0.1)
    assert body, client.get(f"/v1/jobs/{job_id}").text
    return body


def submit(client: httpx.Client, **fields) -> httpx.Response:
    response = client.post(INVOKE, json={"input": "Find three facts about otters", "agent": "research", **fields})
    assert response.status_code == 202, response.text
    return response


def test_an_async_invoke_answers_202_then_the_job_gives_the_sync_answer(runner, make_key, live_db):
    raw, key = make_key()
    client = runner.gateway.client(raw)
    sync = client.post(INVOKE, json={"input": "Find three facts about otters", "agent": "research"})
    assert sync.status_code == 200, sync.text

    accepted = submit(client, **{"async": True})
    job = accepted.json()
    assert set(job) == {"id", "object", "status", "status_url", "request_id", "created_at"}
    assert (job["object"], job["status"], job["status_url"]) == ("agent.job", "queued", f"/v1/jobs/{job['id']}")
    assert accepted.headers["location"] == job["status_url"]
    assert job["request_id"] == accepted.headers["x-request-id"]
    assert "preference-applied" not in accepted.headers

    body = finished(client, job["id"])
    assert body["status"] == "succeeded", body
    result, answer = body["result"], sync.json()
    assert set(result) == set(answer)
    for name in ("output", "agent_used", "model", "route_reason", "usage", "tokens_used", "cost_usd"):
        assert result[name] == answer[name], name
    assert result["cost_usd"] > 0 and body["error"] is None and body["webhook"] is None
    assert body["started_at"] and body["finished_at"] and body["request_id"] == job["request_id"]

    # Two audit records (the 202 and the job's call), one usage row: the job's, under the job's id.
    run_id = uuid.UUID(job["id"]).hex
    assert result["request_id"] == run_id
    records = wait_for(lambda: AuditRecord.objects.filter(request_id__in=[job["request_id"], run_id]).count() == 2)
    assert records
    submitted = AuditRecord.objects.get(request_id=job["request_id"])
    ran = AuditRecord.objects.get(request_id=run_id)
    assert (submitted.status, submitted.input_tokens + submitted.output_tokens, submitted.cost_usd) == (202, 0, 0)
    assert submitted.details["job_id"] == ran.details["job_id"] == job["id"]
    assert (ran.status, ran.agent, ran.api_key_id, ran.path) == (200, "research", key.pk, INVOKE)
    assert ran.input_tokens + ran.output_tokens == result["tokens_used"]
    usage = wait_for(lambda: list(UsageRecord.objects.filter(api_key_id=key.pk).order_by("id")))
    assert len(usage) == 2  # the sync call's and the job's
    assert [u.request_id for u in usage] == [sync.headers["x-request-id"], run_id]
    assert float(usage[1].cost_usd) == pytest.approx(result["cost_usd"])


def test_prefer_respond_async_makes_a_job_too(runner, make_key):
    client = runner.gateway.client(make_key()[0])
    accepted = client.post(
        INVOKE, json={"input": "Draft a haiku", "agent": "writing"}, headers={"Prefer": "wait=5, respond-async"}
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["preference-applied"] == "respond-async"
    assert finished(client, accepted.json()["id"])["result"]["agent_used"] == "writing"


def test_limits_and_budgets_refuse_an_async_call_before_any_job(runner, make_key, live_db):
    raw, key = make_key(rpm=1)
    client = runner.gateway.client(raw)
    submit(client, **{"async": True})
    assert_error(client.post(INVOKE, json={"input": "hi", "async": True}), 429, "rate_limit_requests")
    assert AgentJob.objects.filter(api_key=key).count() == 1

    raw, key = make_key(budget="0.000001")
    client = runner.gateway.client(raw)
    refused = client.post(INVOKE, json={"input": "hi", "agent": "research", "async": True})
    assert_error(refused, 402, "budget_exceeded")
    assert_error(client.post(INVOKE, json={"input": "hi", "agent": "research"}), 402, "budget_exceeded")
    assert not AgentJob.objects.filter(api_key=key).exists()


def test_a_queued_or_running_job_holds_the_keys_concurrency_slot(runner, make_key, seeded):
    client = runner.gateway.client(make_key(concurrent=1)[0])
    with seeded.hold() as hold:  # the job's call waits at the upstream until the test has tried the slot
        seeded.script(always={"hold": hold})  # the job's call is the gateway's own: no mock field or header
        try:
            job = submit(client, **{"async": True}).json()
            busy = client.post(INVOKE, json={"input": "hi", "agent": "research"})
            assert_error(busy, 429, "concurrency_limit")
        finally:
            seeded.script()
    assert finished(client, job["id"])["status"] == "succeeded"
    # The slot comes back when the job settles, which may be a moment after its status says it succeeded.
    until(lambda: client.post(INVOKE, json={"input": "hi", "agent": "research"}).status_code == 200, "the slot")


def test_a_failing_agent_fails_the_job_with_the_gateways_error(runner, make_key, live_db):
    raw, key = make_key()
    client = runner.gateway.client(raw)
    job = submit(client, agent="dead", **{"async": True}).json()
    body = finished(client, job["id"])
    assert body["status"] == "failed" and body["result"] is None
    error = body["error"]
    assert (error["status"], error["code"], error["type"]) == (502, "upstream_unreachable", "upstream_error")
    assert error["request_id"] == uuid.UUID(job["id"]).hex and "'dead'" in error["message"]
    ran = wait_for(lambda: AuditRecord.objects.filter(request_id=error["request_id"]).first())
    assert (ran.status, ran.error_type) == (502, "upstream_unreachable")
    assert not UsageRecord.objects.filter(api_key_id=key.pk).exists()


def test_a_jobs_answer_is_checked_by_the_output_guardrails(runner, make_key, guardrails, live_db):
    """A job's output is what the synchronous answer would have been: redacted, or the job fails blocked."""
    email = "ada.lovelace@example.com"
    raw, key = make_key()
    client = runner.gateway.client(raw)
    rail = guardrails(stage="output", detectors=["email"], action="redact", clients=[key.client.slug])
    until(lambda: "[EMAIL]" in client.post(INVOKE, json={"agent": "research", "input": email}).text, "in force")

    def job(done):  # a worker reads guardrails as often as a gateway does: a first job may still come before them
        body = finished(client, submit(client, input=f"mail {email}", **{"async": True}).json()["id"])
        return done(body) and body

    redacted = until(lambda: job(lambda b: b["result"] and "[EMAIL]" in b["result"]["output"]), "worker applies it")
    assert redacted["status"] == "succeeded" and "[EMAIL]" in redacted["result"]["output"], redacted
    assert email not in json.dumps(redacted)
    ran = wait_for(lambda: AuditRecord.objects.filter(request_id=redacted["result"]["request_id"]).first())
    assert ran.details["guardrails"] == [{"guardrail": rail.name, "stage": "output", "action": "redact",
                                          "found": {"email": 1}}]  # fmt: skip

    rail.action = "block"
    rail.save()
    until(lambda: client.post(INVOKE, json={"agent": "research", "input": email}).status_code == 403, "blocking")
    blocked = until(lambda: job(lambda b: b["status"] == "failed"), "the worker blocks")
    assert blocked["status"] == "failed" and blocked["result"] is None
    assert (blocked["error"]["status"], blocked["error"]["code"]) == (403, "guardrail_blocked")
    assert email not in json.dumps(blocked)


def test_only_the_keys_own_client_sees_its_jobs(runner, make_key):
    mine, theirs = runner.gateway.client(make_key()[0]), runner.gateway.client(make_key()[0])
    job = submit(mine, **{"async": True}).json()
    assert_error(theirs.get(job["status_url"]), 404, "job_not_found")
    assert_error(mine.get("/v1/jobs/not-a-uuid"), 404, "job_not_found")
    assert_error(runner.gateway.client().get(job["status_url"]), 401, "missing_api_key")
    assert_error(mine.post(job["status_url"]), 405, "method_not_allowed")
    finished(mine, job["id"])
    listed = mine.get("/v1/jobs", params={"limit": 5})
    assert listed.status_code == 200 and [j["id"] for j in listed.json()["data"]] == [job["id"]]
    assert theirs.get("/v1/jobs").json()["data"] == []
    assert_error(mine.get("/v1/jobs", params={"status": "lost"}), 400, "invalid_request")


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/hook", "not a url", "http://user:pw@127.0.0.1/hook", "https:///nohost", 42],
)
def test_a_bad_webhook_url_is_refused_with_400(runner, make_key, url, live_db):
    raw, key = make_key()
    response = runner.gateway.client(raw).post(INVOKE, json={"input": "hi", "async": True, "webhook_url": url})
    assert_error(response, 400, "invalid_request")
    assert not AgentJob.objects.filter(api_key=key).exists()


def test_internal_webhook_addresses_are_refused_without_an_allowlist(gateway, make_key, live_db):
    raw, key = make_key()
    client = gateway.client(raw)
    internal = (
        "http://127.0.0.1:8000/admin", "http://169.254.169.254/latest/meta-data", "http://10.1.2.3/",
        # the same addresses spelled as IPv6: compatible, mapped, NAT64, 6to4
        "http://[::7f00:1]:8000/admin", "http://[::ffff:127.0.0.1]:8000/admin", "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a9fe:a9fe::]/", "http://[fd00:ec2::254]/", "http://127.1:8000/admin",
    )  # fmt: skip
    for url in internal:
        error = assert_error(client.post(INVOKE, json={"input": "hi", "async": True, "webhook_url": url}), 400,
                             "invalid_request")  # fmt: skip
        assert "non-public address" in error["message"]
    assert_error(client.post(INVOKE, json={"input": "hi", "webhook_url": "https://example.com/"}), 400,
                 "invalid_request")  # fmt: skip
    assert not AgentJob.objects.filter(api_key=key).exists()


def test_the_webhook_is_signed_and_retried_until_the_receiver_takes_it(runner, make_key, live_db):
    hook = Receiver(fail_first=1)
    try:
        client = runner.gateway.client(make_key()[0])
        job = submit(client, webhook_url=hook.url, **{"async": True}).json()
        finished(client, job["id"])
        body = wait_for(lambda: (b := client.get(job["status_url"]).json())["webhook"]["status"] == "delivered" and b)
        assert body, client.get(job["status_url"]).text
        assert body["webhook"] == {"url": hook.url, "status": "delivered", "attempts": 2}
        assert [d.status for d in hook.deliveries] == [500, 200]
        delivered = hook.accepted()[0]
        # Signed with the secret this job's 202 gave its submitter, not the shared legacy one.
        assert job["webhook_secret"].startswith("whsec_")
        assert webhooks.verify(delivered.body, delivered.headers, secret=job["webhook_secret"])
        assert not webhooks.verify(delivered.body, delivered.headers, secret=SECRET)
        assert job["webhook_secret"] not in json.dumps(body) and "webhook_secret" not in body
        assert delivered.headers[webhooks.EVENT_ID_HEADER] == job["id"]
        event = delivered.event
        assert (event["event"], event["id"], event["status"]) == ("agent.job.succeeded", job["id"], "succeeded")
        assert event["result"]["output"] and event["result"] == body["result"]
        assert AgentJob.objects.get(pk=job["id"]).webhook_attempts == 2
    finally:
        hook.stop()


def test_a_running_job_is_overdue_only_past_its_own_deadline():
    """A job answering on a fallback after its agent's timeout is still within its deadline: expired then (polled
    or swept), it gave its slots and reservation back while its runner went on spending."""
    from datetime import timedelta

    from django.utils import timezone

    from routing.jobs import MARGIN_SECONDS, overdue

    now = timezone.now()
    started = now - timedelta(seconds=200)  # past its agent's 30 s timeout and the margin

    def running(answer_by):
        state = {"timeout": 30, "admission": {"answer_by": answer_by}}
        return AgentJob(status=AgentJob.RUNNING, created_at=started, started_at=started, request={"gateway": state})

    assert not overdue(running(now.timestamp() + 100), now)
    assert not overdue(running(now.timestamp() - MARGIN_SECONDS + 1), now)
    assert overdue(running(now.timestamp() - MARGIN_SECONDS - 1), now)
    assert overdue(running(None), now)  # queued before deadlines were kept: the agent's timeout
