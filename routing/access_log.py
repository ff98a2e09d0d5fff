"""One log line per proxied request (``gateway.access``, INFO), its fields the audit record's that are no secret.

Never the key (its prefix names it), a header, the query string or the prompt and answer
text: what a log collector keeps is read by more people than the audit log.
"""

from __future__ import annotations

import logging

log = logging.getLogger("gateway.access")


def line(ex, span) -> None:
    """Log the finished request ``ex`` (``span``: its trace's, when tracing is on)."""
    if not log.isEnabledFor(logging.INFO):
        return
    key = ex.key
    latency_ms = round(ex.elapsed_ms(), 2)
    fields = {
        "request_id": ex.request_id,
        "method": ex.method,
        "path": ex.path,
        "status": ex.status,
        "error_code": ex.error_type,
        "client": key.client_slug if key is not None else "",
        "key_prefix": key.prefix if key is not None else "",
        "agent": ex.agent,
        "model": ex.model,
        "latency_ms": latency_ms,
        "input_tokens": ex.input_tokens,
        "output_tokens": ex.output_tokens,
        "cost_usd": ex.cost_nanos / 1e9,
    }
    if span is not None:
        context = span[0].get_span_context()
        fields["trace_id"], fields["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    log.info(
        "%s %s %s %s %.2f ms request_id=%s",
        ex.method, printable(ex.path), ex.status, ex.error_type or "-", latency_ms, ex.request_id, extra=fields,
    )  # fmt: skip


def printable(text: str) -> str:
    """``text`` with control characters and line separators escaped: a client's path (``/v1/%0a...``, refused but
    logged) cannot start a line of its own in a plain-text log and pass for the gateway's."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
