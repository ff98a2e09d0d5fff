"""Jobs a Celery task works on (exports, what-ifs): queued after their row commits, claimed by one run.

A job model has ``status`` with QUEUED, RUNNING and FAILED, ``error``, ``started_at`` and ``finished_at``.
"""

from __future__ import annotations

import logging

from django.utils import timezone

log = logging.getLogger("gateway.background")


def queue(task, model, job_id, what: str) -> None:
    """``task.delay(job_id)``; when the broker is down, say so on the job rather than leave it queued forever."""
    try:
        task.delay(str(job_id))
    except Exception as exc:
        log.exception("could not queue %s %s", what, job_id)
        model.objects.filter(pk=job_id, status=model.QUEUED).update(
            status=model.FAILED, error=f"The {what} could not be queued: {exc}", finished_at=timezone.now()
        )


def claim(model, job_id):
    """Take a queued job for this worker; None when it is gone or another run took it (a task may run twice)."""
    taken = model.objects.filter(pk=job_id, status=model.QUEUED).update(status=model.RUNNING, started_at=timezone.now())
    return model.objects.filter(pk=job_id).first() if taken else None
