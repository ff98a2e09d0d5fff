"""Turn the facts of one gateway request into exactly one audit record."""

from __future__ import annotations

from django.utils import timezone

from audit.models import AuditRecord
from audit.redaction import preview
from audit.redaction_rules import active_rules
from gateway_project.writer import writer


def record_request(
    *,
    request_id: str,
    method: str,
    path: str,
    status: int,
    error_type: str = "",
    latency_ms: float = 0.0,
    client_id: int | None = None,
    client_slug: str = "",
    api_key_id: int | None = None,
    key_prefix: str = "",
    agent: str = "",
    target: str = "",
    model: str = "",
    input_tokens: int = 0,
    output_tokens: int = 0,
    cost_usd=0,
    client_ip: str | None = None,
    user_agent: str = "",
    input_text: str = "",
    output_text: str = "",
    details: dict | None = None,
) -> dict:
    """Queue the record for the buffered writer; previews are redacted before anything is kept."""
    rules = active_rules()
    record = dict(
        request_id=request_id,
        created_at=timezone.now(),
        client_id=client_id,
        client_slug=client_slug,
        api_key_id=api_key_id,
        key_prefix=key_prefix,
        agent=agent,
        target=target[:300],
        model=model[:200],
        method=method[:10],
        path=path[:500],
        status=status,
        error_type=error_type,
        latency_ms=round(latency_ms, 3),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd,
        client_ip=client_ip,
        user_agent=user_agent[:300],
        input_preview=preview(input_text, rules),
        output_preview=preview(output_text, rules),
        details=details or {},
    )
    writer.add(AuditRecord, record)
    return record
