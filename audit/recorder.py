"""Turn the facts of one gateway request into exactly one audit record."""

from __future__ import annotations

from audit.models import AuditRecord
from audit.rows import audit_row
from gateway_project.writer import writer


def record_request(**facts) -> dict:
    """Queue the record for the buffered writer, as ``audit.rows.audit_row`` builds it (redacted, valid)."""
    record = audit_row(**facts)
    writer.add(AuditRecord, record)
    return record
