"""Date-times people and query strings give: any ISO 8601 offset a place uses, turned into UTC before a query.

Python takes offsets up to ±23:59 and years 1 to 9999 in the offset's own time; PostgreSQL refuses
offsets beyond ±15:59 and moving ``0001-01-01T00:00+01:00`` to UTC leaves Python's range. Either
used to reach the database as a 500. Offsets are bounded by the places that use them (UTC-12:00
to UTC+14:00), and every value is converted to UTC here, where a failure is the caller's 400.
"""

from datetime import UTC, datetime, timedelta

from django import forms
from django.core.exceptions import ValidationError
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField

EARLIEST_OFFSET = timedelta(hours=-12)
LATEST_OFFSET = timedelta(hours=14)


def in_utc(value: datetime) -> datetime:
    """``value`` (aware) in UTC; ValidationError when its offset is no place's or UTC leaves years 1 to 9999."""
    offset = value.utcoffset()
    if offset is not None and not EARLIEST_OFFSET <= offset <= LATEST_OFFSET:
        raise ValidationError(
            "Give a UTC offset from -12:00 to +14:00 (or Z), as places use.", code="offset_out_of_range"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError("Give a date-time from the year 1 to 9999 in UTC.", code="out_of_range") from None


class UtcDateTimeMixin:
    """A date-time form field whose value is in UTC, checked as ``in_utc`` checks it."""

    def to_python(self, value):
        value = super().to_python(value)
        return None if value is None else in_utc(value)


class DateTimeField(UtcDateTimeMixin, forms.DateTimeField):
    """Django's DateTimeField, answering in UTC and refusing offsets and years no database can take."""


class UtcIsoDateTimeField(UtcDateTimeMixin, IsoDateTimeField):
    """django-filter's ISO 8601 field, answering in UTC and refusing offsets and years no database can take."""


class IsoDateTimeFilter(filters.IsoDateTimeFilter):
    """django-filter's ISO 8601 filter on the field above: a bad ``?since=`` is a 400, never a database error."""

    field_class = UtcIsoDateTimeField
