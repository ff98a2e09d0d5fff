"""The console's live feed: each batch of request records the writer saves goes out on the channel layer.

One ``group_send`` per batch (every ~200 ms at most), not one per request, so
the feed costs the hot path nothing.
"""

from __future__ import annotations

import logging

from channels.layers import get_channel_layer

from audit.models import AuditRecord

FEED_GROUP = "console.requests"
FEED_LIMIT = 50  # newest records per batch sent to browsers
log = logging.getLogger("gateway.live")


def summary(row: dict) -> dict:
    """What a browser needs to show one request (previews are already redacted)."""
    created = row["created_at"]
    return {
        "request_id": row["request_id"],
        "time": created.isoformat() if hasattr(created, "isoformat") else str(created),
        "client": row.get("client_slug", ""),
        "key_prefix": row.get("key_prefix", ""),
        "agent": row.get("agent", ""),
        "method": row.get("method", ""),
        "path": row.get("path", ""),
        "status": row.get("status", 0),
        "error_type": row.get("error_type", ""),
        "latency_ms": row.get("latency_ms", 0),
        "tokens": row.get("input_tokens", 0) + row.get("output_tokens", 0),
        "cost_usd": str(row.get("cost_usd", "0")),
    }


async def publish_batch(batch: dict) -> None:
    """Writer hook, on the event loop: send the batch's request records to the console's live feed."""
    rows = batch.get(AuditRecord)
    layer = get_channel_layer()
    if not rows or layer is None:
        return
    message = {"type": "requests.recorded", "requests": [summary(row) for row in rows[-FEED_LIMIT:]]}
    await layer.group_send(FEED_GROUP, message)
