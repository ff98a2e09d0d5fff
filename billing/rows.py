"""The usage row of a metered request: tokens and cost as billing keeps them, valid for every column."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.utils import timezone

from billing.models import UsageRecord
from billing.pricing import nanos_to_usd
from gateway_project.rows import sanitise_row


def usage_row(
    *,
    request_id,
    client_id,
    key_id,
    agent,
    model,
    input_tokens,
    output_tokens,
    cost_nanos,
    cost_center_id=None,
    default_priced=False,
) -> dict:
    """One UsageRecord row with every value fitted to its column (see ``gateway_project.rows``)."""
    row = dict(
        request_id=request_id,
        created_at=timezone.now(),
        client_id=client_id,
        api_key_id=key_id,
        cost_center_id=cost_center_id,
        agent=agent,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=_usd(cost_nanos),
        default_priced=default_priced,
    )
    return sanitise_row(UsageRecord, row)


def _usd(nanos) -> Decimal:
    """Nanodollars as dollars; a sum too large to round exactly is still a number (the column's range clamps it)."""
    try:
        return nanos_to_usd(nanos)
    except (InvalidOperation, TypeError, ValueError):
        try:
            return Decimal(nanos).scaleb(-9)
        except (InvalidOperation, TypeError, ValueError):
            return Decimal(0)
