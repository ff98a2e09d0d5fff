"""The keys app's background work: policy what-ifs.

Tasks take ids, re-fetch, and do nothing when the row is gone or another run took it.
"""

from __future__ import annotations

from celery import shared_task

from keys import whatif


@shared_task(ignore_result=True)
def run_policy_what_if(job_id: str) -> None:
    """Replay one queued what-if; a failure is kept on the job, not raised."""
    job = whatif.claim(job_id)
    if job is not None:
        whatif.run_what_if(job)
