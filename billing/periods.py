"""Budget periods: which calendar-aligned window (day, week, month, custom cycle) a moment falls in.

Boundaries are local midnights in the gateway's time zone (``GATEWAY_TIME_ZONE``),
so a daily budget resets at midnight where the company is, DST included. Every
period is a whole number of local days, which lets reports build a period's
history from daily rollups.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone

DAILY, WEEKLY, MONTHLY, CUSTOM = "daily", "weekly", "monthly", "custom"


@dataclass(frozen=True, slots=True)
class Period:
    key: str  # stable name of the window, part of the counter's key: d20261202, w20261130, m202612, c3-20261201
    start: datetime
    end: datetime

    @property
    def seconds_left(self) -> int:
        return max(0, int((self.end - timezone.now()).total_seconds()))

    @property
    def days(self) -> tuple[date, date]:
        """The first and last local day of the window."""
        return timezone.localtime(self.start).date(), timezone.localtime(self.end).date() - timedelta(days=1)


def _midnight(day: date) -> datetime:
    """Local midnight of ``day``, as UTC: arithmetic on it is then absolute, DST or not."""
    local = timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())
    return local.astimezone(UTC)


def _add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    return date(day.year + month // 12, month % 12 + 1, 1)


def period_of(kind: str, at: datetime | None = None, *, days: int | None = None, anchor: date | None = None) -> Period:
    """The window of a ``kind`` period that contains ``at`` (now by default)."""
    today = timezone.localdate(at or timezone.now())
    if kind == DAILY:
        first, last = today, today + timedelta(days=1)
        key = f"d{first:%Y%m%d}"
    elif kind == WEEKLY:
        first = today - timedelta(days=today.weekday())
        last = first + timedelta(days=7)
        key = f"w{first:%Y%m%d}"
    elif kind == MONTHLY:
        first = today.replace(day=1)
        last = _add_months(first, 1)
        key = f"m{first:%Y%m}"
    elif kind == CUSTOM:
        if not days or anchor is None:
            raise ValueError("a custom period needs its length in days and an anchor day")
        cycle = (today - anchor).days // days
        first = anchor + timedelta(days=cycle * days)
        last = first + timedelta(days=days)
        key = f"c{days}-{first:%Y%m%d}"
    else:
        raise ValueError(f"unknown period {kind!r}")
    return Period(key, _midnight(first), _midnight(last))


def previous(kind: str, period: Period, *, days: int | None = None, anchor: date | None = None) -> Period:
    """The window just before ``period``."""
    return period_of(kind, period.start - timedelta(seconds=1), days=days, anchor=anchor)


class PeriodClock:
    """The current window of each period shape, recomputed only when one ends (the hot path asks every request)."""

    def __init__(self):
        self._windows: dict[tuple, tuple[Period, float, float]] = {}  # shape -> window, its start and end

    def current(self, kind: str, days: int | None = None, anchor: date | None = None) -> Period:
        return self.current_and_end(kind, days, anchor)[0]

    def current_and_end(self, kind: str, days: int | None = None, anchor: date | None = None) -> tuple[Period, float]:
        """The current window and its end as epoch seconds."""
        shape = (kind, days, anchor)
        hit = self._windows.get(shape)
        now = _time.time()
        if hit is not None and hit[1] <= now < hit[2]:
            return hit[0], hit[2]
        period = period_of(kind, days=days, anchor=anchor)
        if len(self._windows) > 10_000:
            self._windows.clear()
        self._windows[shape] = (period, period.start.timestamp(), period.end.timestamp())
        return period, period.end.timestamp()

    def clear(self) -> None:
        self._windows.clear()


clock = PeriodClock()
