"""Audit's background work: write large exports, delete expired ones, apply the retention policy, checkpoint.

Tasks take ids, re-fetch, and do nothing when the row is gone or another run took it.
"""

from __future__ import annotations

from celery import shared_task

from audit import checkpoints, export_jobs, retention
from gateway_project import auth_events


@shared_task(ignore_result=True)
def write_audit_export(export_id: str) -> None:
    """Write one queued export's file; a failure is kept on the job, not raised."""
    export = export_jobs.claim(export_id)
    if export is not None:
        export_jobs.write_export(export)


@shared_task(ignore_result=True)
def delete_expired_exports() -> int:
    """Delete the files of exports past their expiry (beat runs this)."""
    return export_jobs.delete_expired()


@shared_task(ignore_result=True)
def apply_audit_retention() -> dict:
    """Archive and delete the request records past their retention (beat runs this; runs never overlap).

    Sign-in events past ``GATEWAY_AUTH_EVENT_RETENTION_DAYS`` are deleted on the same schedule.
    """
    summary = retention.apply_retention().as_dict()
    summary["auth_events_deleted"] = auth_events.delete_expired()
    return summary


@shared_task(ignore_result=True)
def publish_audit_checkpoint() -> dict:
    """Publish a signed checkpoint of the chains' heads (beat runs this every GATEWAY_AUDIT_CHECKPOINT_SECONDS)."""
    return checkpoints.publish().as_dict()
