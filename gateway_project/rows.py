"""Make a row the writer will queue valid for its model's columns, so the database never refuses it.

A request's facts come from outside (paths, headers, upstream answers): they may
hold NUL and other control characters, lone surrogates (which no UTF-8 encoder
takes), strings longer than their column, integers past the column's range,
non-finite numbers, or a "client address" that is no address. Each helper here
turns any such value into one the database stores; ``sanitise_row`` applies the
right one to every column of a row, reading the model's fields once per model.
It runs once per request on the event loop, so the common case (clean text that
fits) costs one ``isprintable()`` and one ``len()`` per column.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from decimal import Context, Decimal, InvalidOperation

from django.db import models
from django.db.backends.base.operations import BaseDatabaseOperations

# NUL and the other C0 controls but tab and newline (harmless, and previews keep their lines), DEL, the C1
# controls, and the surrogate code points psycopg and sqlite3 cannot encode.
_UNSTORABLE = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000)])
MAX_JSON_DEPTH = 20  # deeper containers in a JSON value become a note: deep nesting is no fact worth a refusal
TOO_DEEP = "[nested too deep]"
QUARANTINE_TEXT_LENGTH = 10_000  # longest string a quarantined row keeps
_INTEGER_RANGES = BaseDatabaseOperations.integer_field_ranges
_DECIMAL_CONTEXT = Context(prec=100)


def clean_text(value, max_length: int | None = None) -> str:
    """``value`` as text any database stores: no NUL or other control character, no surrogate; cut to ``max_length``."""
    if value is None:
        return ""
    text = value if type(value) is str else str(value)
    if not text.isprintable():  # rare: only then look for what to strip
        text = text.translate(_UNSTORABLE)
    if max_length is not None and len(text) > max_length:
        text = text[:max_length]
    return text


def is_clean(text) -> bool:
    """Whether ``text`` is a string the database can compare against (no NUL, no surrogate)."""
    return type(text) is str and (text.isprintable() or text == text.translate(_UNSTORABLE))


def clamp_int(value, low: int, high: int) -> int:
    """``value`` as an integer in [low, high]; what is not a finite number becomes 0 (or the nearest bound)."""
    if type(value) is not int:
        try:
            value = int(value)
        except (TypeError, ValueError, OverflowError):
            value = 0
    return low if value < low else high if value > high else value


def clean_float(value) -> float:
    """``value`` as a finite float; anything else (NaN, infinity, not a number) becomes 0."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def clamp_decimal(value, max_digits: int, decimal_places: int) -> Decimal:
    """``value`` rounded to ``decimal_places`` and held within ``max_digits``; not a finite number becomes 0."""
    step, limit = _decimal_bounds(max_digits, decimal_places)
    try:
        number = value if type(value) is Decimal else Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        number = Decimal(0)
    if not number.is_finite():
        number = Decimal(0)
    if abs(number) > limit:
        return limit.copy_sign(number)
    rounded = number.quantize(step, context=_DECIMAL_CONTEXT)
    return rounded if abs(rounded) <= limit else limit.copy_sign(rounded)


@functools.cache
def _decimal_bounds(max_digits: int, decimal_places: int) -> tuple[Decimal, Decimal]:
    """The rounding step and the largest magnitude: whole units, which SQLite's float storage reads back too."""
    return Decimal(1).scaleb(-decimal_places), Decimal(10) ** (max_digits - decimal_places) - 1


def valid_ip(value) -> str | None:
    """``value`` as a normalised IP address, or None when it is not one (an IPv6 zone is dropped: inet refuses it)."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        value = str(value)
    if type(value) is not str or not value:
        return None
    return _parsed_ip(value)


@functools.lru_cache(maxsize=4096)  # callers come back: parsing an address costs more than the rest of a row
def _parsed_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.partition("%")[0]))
    except ValueError:
        return None


def clean_json(value, _depth: int = 0):
    """``value`` as JSON every database stores: text cleaned in keys and values, non-finite floats null, no cycles."""
    kind = type(value)
    if kind is str:
        return clean_text(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict and not value:
        return {}
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if _depth >= MAX_JSON_DEPTH:
            return TOO_DEEP
        if isinstance(value, Mapping):
            return {clean_text(key): clean_json(item, _depth + 1) for key, item in value.items()}
        return [clean_json(item, _depth + 1) for item in value]
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, float):
        return clean_json(float(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return clean_text(value)


def storable(value, _depth: int = 0):
    """``value`` as JSON that keeps what the database refused: such strings become ``{"$escaped": "..."}``.

    ``{"$escaped": s}`` decodes with ``s.encode("ascii").decode("unicode_escape")``. For rows set
    aside (quarantined), where the offending value is the evidence and must survive as it was.
    """
    kind = type(value)
    if kind is str:
        text = value[:QUARANTINE_TEXT_LENGTH]
        return text if is_clean(text) else {"$escaped": text.encode("unicode_escape").decode("ascii")}
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if _depth >= MAX_JSON_DEPTH:
            return TOO_DEEP
        if isinstance(value, Mapping):
            return {clean_text(key): storable(item, _depth + 1) for key, item in value.items()}
        return [storable(item, _depth + 1) for item in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return storable(repr(value), _depth)


def _nullable(clean: Callable, empty) -> Callable:
    def column(value):
        return empty if value is None else clean(value)

    return column


def _int_column(low: int, high: int, null: bool) -> Callable:
    def column(value):
        if type(value) is int and low <= value <= high:
            return value
        return None if value is None and null else clamp_int(value, low, high)

    return column


def _cleaner(field: models.Field) -> Callable | int | None:
    """What makes any value fit ``field``'s column: a function, the length of a text column, or None (as it is)."""
    if isinstance(field, models.GenericIPAddressField):
        empty = None if field.null else ""
        return lambda value: valid_ip(value) or empty
    if isinstance(field, models.JSONField):
        return clean_json
    if isinstance(field, models.CharField | models.TextField):
        length = field.max_length or sys.maxsize
        return _nullable(lambda value: clean_text(value, length), None) if field.null else length
    if isinstance(field, models.BooleanField):
        return _nullable(bool, None if field.null else False)
    if isinstance(field, models.DecimalField):
        digits, places = field.max_digits, field.decimal_places
        return _nullable(lambda value: clamp_decimal(value, digits, places), None if field.null else Decimal(0))
    if isinstance(field, models.FloatField):
        return _nullable(clean_float, None if field.null else 0.0)
    target = field.target_field if field.is_relation else field
    low, high = _INTEGER_RANGES.get(target.get_internal_type(), (None, None))
    return None if low is None else _int_column(low, high, field.null)


_plans: dict[type, dict[str, Callable | int | None]] = {}


def _plan(model) -> dict[str, Callable | int | None]:
    plan = _plans.get(model)
    if plan is None:
        plan = {}
        for field in model._meta.concrete_fields:
            plan[field.attname] = plan[field.name] = _cleaner(field)
        _plans[model] = plan
    return plan


def sanitise_row(model, row: dict) -> dict:
    """``row`` (column name -> value) with every value made to fit ``model``'s column; other keys pass untouched."""
    plan = _plan(model)
    cleaned = {}
    for name, value in row.items():
        clean = plan.get(name)
        if clean is None:
            cleaned[name] = value
        elif type(clean) is int:  # a text column, the most common: clean text that fits passes at once
            fits = type(value) is str and len(value) <= clean and value.isprintable()
            cleaned[name] = value if fits else clean_text(value, clean)
        else:
            cleaned[name] = clean(value)
    return cleaned
