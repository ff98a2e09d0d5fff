"""Streamed exports of the request log and the admin-action trail, as CSV or JSON Lines.

Rows are read in chunks with ``iterator()`` and written as they are produced,
so an export of any size holds only a chunk in memory. CSV cells that a
spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import BinaryIO

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
GUARDED = (*FORMULA_PREFIXES, "'")
CHUNK = 2000

# Every chained field and the chain's own, so an export can be re-verified offline (audit/verify_export.py).
RECORD_FIELDS = [
    "seq", "request_id", "created_at", "client_id", "client_slug", "api_key_id", "key_prefix", "agent", "target",
    "model", "method", "path", "status", "error_type", "latency_ms", "input_tokens", "output_tokens", "cost_usd",
    "client_ip", "user_agent", "input_preview", "output_preview", "details", "prev_hash", "record_hash",
    "chain_key_id",
]  # fmt: skip
ACTION_FIELDS = [
    "seq", "created_at", "actor", "actor_id", "via", "action", "object_type", "object_id", "object_repr", "changes",
    "prev_hash", "record_hash", "chain_key_id",
]  # fmt: skip


class _Echo:
    def write(self, value):
        return value


def csv_cell(value) -> str:
    """One CSV cell as text; a cell a spreadsheet would run as a formula gets a leading quote (``'=1+1``)."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    # A text that already starts with the guard's quote gets one too, so undoing the guard is exact.
    return "'" + text if text.startswith(GUARDED) else text


def json_default(value):
    """A JSON value as the exports write it: decimals as text, times in ISO 8601 with microseconds."""
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def csv_lines(queryset, fields: list[str]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(fields)
    for row in queryset.values_list(*fields).iterator(chunk_size=CHUNK):
        yield writer.writerow([csv_cell(v) for v in row])


def jsonl_lines(queryset, fields: list[str]) -> Iterator[str]:
    for row in queryset.values(*fields).iterator(chunk_size=CHUNK):
        yield json.dumps(row, default=json_default, ensure_ascii=False) + "\n"


def export_lines(queryset, fields: list[str], fmt: str) -> Iterable[str]:
    return csv_lines(queryset, fields) if fmt == "csv" else jsonl_lines(queryset, fields)


class Digesting:
    """A binary file that hashes and counts the bytes written through it, so the file is read only once."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.sha256, self.size = raw, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()
