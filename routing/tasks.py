"""Routing's background work: run agent jobs, deliver their webhooks, expire the ones whose runner died.

Tasks take ids, re-fetch, and may run twice: a job is claimed with a conditional
update, and a webhook is only sent while its job's delivery is still pending.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import Retry
from django.conf import settings
from django.db.models import F

from billing.tasks import backoff_seconds
from gateway_project import webhooks
from routing import job_webhooks, jobs
from routing.models import AgentJob

log = logging.getLogger("gateway.jobs")

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@shared_task(ignore_result=True)
def run_agent_job(job_id: str) -> bool:
    """Run a queued job on this worker (its own event loop), then queue its webhook."""
    finished = jobs.run_in_worker(job_id)
    if finished:
        jobs.queue_webhook(job_id)
    return finished


@shared_task(ignore_result=True)
def expire_stuck_jobs() -> int:
    """Fail the jobs whose runner is gone and release what they held; return how many."""
    return jobs.expire_stuck()


@shared_task(bind=True, ignore_result=True)
def deliver_job_webhook(self, job_id: str) -> str | Retry | None:
    """POST a finished job to its webhook, signed; retry with backoff until 2xx or the attempts run out."""
    job = AgentJob.objects.filter(pk=job_id).first()
    if job is None or job.webhook_status != PENDING or job.status not in (AgentJob.SUCCEEDED, AgentJob.FAILED):
        return None  # gone, not finished, or delivered or given up by an earlier run
    rows = AgentJob.objects.filter(pk=job_id, webhook_status=PENDING)
    try:
        url = job_webhooks.check_form(job.webhook_url)  # the host allowlist may have changed since it was accepted
    except job_webhooks.WebhookRefused as refused:
        rows.update(webhook_status=FAILED)
        log.warning("did not deliver the webhook of job %s: %s", job_id, refused)
        return FAILED
    rows.update(webhook_attempts=F("webhook_attempts") + 1)
    attempts = rows.values_list("webhook_attempts", flat=True).first() or 0
    payload = {"event": f"agent.job.{job.status}", **jobs.job_body(job, with_webhook=False)}
    try:
        # Resolved and checked again, then pinned; signed with the secret this job's submitter was given.
        webhooks.post_signed(url, payload, event_id=str(job.pk), secret=job.webhook_secret)
    except webhooks.Refused as refused:
        rows.update(webhook_status=FAILED)
        log.warning("did not deliver the webhook of job %s: %s", job_id, refused)
        return FAILED
    except webhooks.DeliveryError as exc:
        if attempts >= settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS:
            rows.update(webhook_status=FAILED)
            log.warning("gave up on the webhook of job %s after %s attempts: %s", job_id, attempts, exc)
            return FAILED
        # Attempts are counted on the row, so a re-queued task cannot try more often; eagerly the retry runs at once.
        return self.retry(
            countdown=backoff_seconds(attempts),
            max_retries=settings.GATEWAY_WEBHOOK_MAX_ATTEMPTS,
            exc=exc,
            throw=not self.request.is_eager,
        )
    rows.update(webhook_status=DELIVERED)
    return DELIVERED


@shared_task(ignore_result=True)
def note_dearer_model(agent_slug: str, model: str, request_id: str) -> bool:
    """Add ``model`` to the agent's dearer models, so reservations price it in (safe to run twice)."""
    from routing.models import Agent

    agent = Agent.objects.filter(slug=agent_slug).first()
    if agent is None or model in (agent.dearer_models or []):
        return False
    Agent.objects.filter(pk=agent.pk).update(dearer_models=[*(agent.dearer_models or []), model])
    log.error(
        "pricing alert: agent %s answered request %s with model %s, dearer than what was reserved; "
        "its reservations now price it in",
        agent_slug, request_id, model,
    )  # fmt: skip
    return True
