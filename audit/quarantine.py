"""Rows the database refused, kept where an admin sees them, instead of blocking every row after them."""

from __future__ import annotations

from audit.chain_format import CHAIN_FIELDS, KEY_FIELD
from audit.models import QuarantinedRow
from gateway_project.rows import clean_text, storable

_REQUEST_ID_LENGTH = QuarantinedRow._meta.get_field("request_id").max_length
_MODEL_LENGTH = QuarantinedRow._meta.get_field("model").max_length


def keep_refused_row(model_label: str, row: dict, reason: str) -> None:
    """The writer's quarantine: keep ``row`` with the database's ``reason``, once per model and request id.

    A batch spooled after some of its rows were set aside is replayed later and
    refused again; the row is already here then. Chain fields a failed try gave the
    row are left out: they belong to no record.
    """
    request_id = clean_text(row.get("request_id"), _REQUEST_ID_LENGTH) if row.get("request_id") else ""
    if request_id and QuarantinedRow.objects.filter(model=model_label, request_id=request_id).exists():
        return
    kept = {name: value for name, value in row.items() if name not in (*CHAIN_FIELDS, KEY_FIELD)}
    QuarantinedRow.objects.create(
        model=clean_text(model_label, _MODEL_LENGTH), request_id=request_id, row=storable(kept), reason=reason
    )


def quarantined_count() -> int:
    return QuarantinedRow.objects.count()
