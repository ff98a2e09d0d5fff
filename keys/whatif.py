"""What-if: the draft rule set replayed over the request log of a window, as a Celery job with progress.

``request_what_if`` copies the rules in force and the draft set into the job, records the
request in the admin-action trail and queues ``run_what_if``, which reads the window's records
in chunks (memory stays flat at any size), decides each with both rule sets
(``keys.policy_replay``) and keeps the tally: what the drafts would refuse, by rule, client
and agent, that the rules in force did not, and what they would let through.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.models import AuditRecord
from audit.trail import record_event
from gateway_project import background
from keys.models import PolicyWhatIf
from keys.policy import compile_rules
from keys.policy_drafts import draft_set, live_rules, rows_of, rule_copies
from keys.policy_replay import Tally

log = logging.getLogger("gateway.whatif")

WINDOWS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
MAX_WINDOW = timedelta(days=31)
CHUNK = 2000  # records read per query
PROGRESS_SECONDS = 1.0
OBJECT_TYPE = PolicyWhatIf._meta.label_lower
RECORD_COLUMNS = ("request_id", "created_at", "client_slug", "key_prefix", "method", "path", "status", "client_ip",
                  "details")  # fmt: skip


def window_of(window: str = "", start=None, end=None, now=None) -> tuple:
    """The window a what-if replays: the last hour, day or week, or from ``start`` to ``end`` (at most
    ``MAX_WINDOW``, ending no later than now). ``ValidationError`` names what is wrong."""
    now = now or timezone.now()
    if window:
        if window not in WINDOWS:
            raise ValidationError({"window": f"Choose one of {', '.join(WINDOWS)}, or give start and end."})
        if start is not None or end is not None:
            raise ValidationError({"window": "Give a window, or start and end, not both."})
        return now - WINDOWS[window], now
    if start is None or end is None:
        raise ValidationError({"window": f"Choose one of {', '.join(WINDOWS)}, or give start and end."})
    end = min(end, now)
    if start >= end:
        raise ValidationError({"start": "The window must start before it ends (and before now)."})
    if end - start > MAX_WINDOW:
        raise ValidationError({"start": f"A window is at most {MAX_WINDOW.days} days."})
    return start, end


def window_records(start, end):
    return AuditRecord.objects.filter(created_at__gte=start, created_at__lt=end)


def request_what_if(user, start, end, *, via: str = "console") -> PolicyWhatIf:
    """Create the job with today's rules and drafts, record it in the trail, queue it once committed."""
    live, draft = rule_copies(live_rules()), rule_copies(draft_set())
    total = window_records(start, end).count()
    with transaction.atomic():
        job = PolicyWhatIf.objects.create(
            requester=user, window_start=start, window_end=end, live_rules=live, draft_rules=draft,
            records_total=total,
        )  # fmt: skip
        drafted = sum(copy["draft"] for copy in draft)
        changes = {"window": [None, [start.isoformat(), end.isoformat()]], "drafts": [None, drafted]}
        record_event(user, via, "what-if", OBJECT_TYPE, job.pk, job, changes=changes)
        transaction.on_commit(lambda: _enqueue(job.pk))
    job.refresh_from_db()  # an eager task (the embedded profile) has already run it
    return job


def _enqueue(job_id) -> None:
    from keys.tasks import run_policy_what_if

    background.queue(run_policy_what_if, PolicyWhatIf, job_id, "what-if")


def claim(job_id) -> PolicyWhatIf | None:
    """Take a queued job for this worker; None when it is gone or another run took it (a task may run twice)."""
    return background.claim(PolicyWhatIf, job_id)


def run_what_if(job: PolicyWhatIf) -> None:
    """Replay the window's records in id order, a chunk at a time, saving progress as it goes; the job ends done,
    with its results, or failed, with the error. Runs outside a transaction so each progress update commits."""
    jobs = PolicyWhatIf.objects.filter(pk=job.pk)
    try:
        live, draft = compile_rules(rows_of(job.live_rules)), compile_rules(rows_of(job.draft_rules))
        records = window_records(job.window_start, job.window_end)
        total = records.count()
        jobs.update(records_total=total, records_scanned=0, error="")
        tally, last_id, saved_at = Tally(), 0, time.monotonic()
        while True:
            chunk = list(records.filter(id__gt=last_id).order_by("id").values("id", *RECORD_COLUMNS)[:CHUNK])
            if not chunk:
                break
            for record in chunk:
                tally.add(record, live, draft)
            last_id = chunk[-1]["id"]
            if time.monotonic() - saved_at >= PROGRESS_SECONDS:
                jobs.update(records_scanned=tally.replayed + tally.without_context)
                saved_at = time.monotonic()
        scanned = tally.replayed + tally.without_context
        jobs.update(status=PolicyWhatIf.DONE, records_scanned=scanned, records_total=max(total, scanned),
                    results=tally.as_dict(), finished_at=timezone.now())  # fmt: skip
    except Exception as exc:
        log.exception("what-if %s failed", job.pk)
        jobs.update(status=PolicyWhatIf.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now())


def percent(job: PolicyWhatIf) -> int:
    if job.status == PolicyWhatIf.DONE:
        return 100
    if job.records_total:
        return min(99, job.records_scanned * 100 // job.records_total)
    return 0
