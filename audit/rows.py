"""The audit row of a finished request: the facts as the request log keeps them, valid for every column."""

from __future__ import annotations

from django.utils import timezone

from audit.models import AuditRecord
from audit.redaction import preview
from audit.redaction_rules import active_rules
from gateway_project.rows import clean_text, sanitise_row, valid_ip

RAW_IP_LENGTH = 100  # of a client address that was no address, kept in details


def audit_row(
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
    """One AuditRecord row, previews redacted, every value fitted to its column (see ``gateway_project.rows``)."""
    rules = active_rules()
    details = dict(details) if isinstance(details, dict) else {}
    address = valid_ip(client_ip)
    if address is None and client_ip:
        details["client_ip_raw"] = clean_text(client_ip, RAW_IP_LENGTH)
    row = dict(
        request_id=request_id,
        created_at=timezone.now(),
        client_id=client_id,
        client_slug=client_slug,
        api_key_id=api_key_id,
        key_prefix=key_prefix,
        agent=agent,
        target=target,
        model=model,
        method=method,
        path=path,
        status=status,
        error_type=error_type,
        latency_ms=round(latency_ms, 3) if isinstance(latency_ms, float | int) else latency_ms,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd,
        client_ip=address,
        user_agent=user_agent,
        input_preview=preview(clean_text(input_text), rules),
        output_preview=preview(clean_text(output_text), rules),
        details=details,
    )
    return sanitise_row(AuditRecord, row)
