"""Streamed exports of the request log and the admin-action trail, as CSV or JSON Lines.

Rows are read in chunks with ``iterator()`` and written as they are produced,
so an export of any size holds only a chunk in memory. CSV cells that a
spreadsheet would run as a formula are neutralised.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from decimal import Decimal

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CHUNK = 2000


class _Echo:
    def write(self, value):
        return value


def csv_cell(value) -> str:
    """One CSV cell as text; a cell a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _json_default(value):
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
        yield json.dumps(row, default=_json_default, ensure_ascii=False) + "\n"


def export_lines(queryset, fields: list[str], fmt: str) -> Iterable[str]:
    return csv_lines(queryset, fields) if fmt == "csv" else jsonl_lines(queryset, fields)
