"""Budget windows are calendar-aligned in the gateway's time zone, DST included."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from billing.periods import CUSTOM, DAILY, MONTHLY, WEEKLY, PeriodClock, period_of, previous

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture(autouse=True)
def new_york():
    with timezone.override(NEW_YORK):
        yield


def at(*args):
    return datetime(*args, tzinfo=NEW_YORK)


def test_a_day_runs_from_local_midnight_to_local_midnight():
    window = period_of(DAILY, at(2026, 12, 2, 23, 59, 59))
    assert (window.key, window.start, window.end) == ("d20261202", at(2026, 12, 2), at(2026, 12, 3))
    assert period_of(DAILY, at(2026, 12, 3, 0, 0, 0)).key == "d20261203"


def test_the_day_clocks_spring_forward_has_23_hours():
    window = period_of(DAILY, at(2026, 3, 8, 12))
    assert window.end - window.start == timedelta(hours=23)
    assert period_of(DAILY, at(2026, 11, 1, 12)).end - period_of(DAILY, at(2026, 11, 1, 12)).start == timedelta(
        hours=25
    )


def test_a_week_starts_on_monday():
    window = period_of(WEEKLY, at(2026, 12, 6, 23, 59))  # a Sunday
    assert (window.key, window.start, window.end) == ("w20261130", at(2026, 11, 30), at(2026, 12, 7))
    assert period_of(WEEKLY, at(2026, 12, 7)).key == "w20261207"


def test_a_month_is_the_calendar_month_across_the_year_end():
    window = period_of(MONTHLY, at(2026, 12, 31, 23, 59))
    assert (window.key, window.start, window.end) == ("m202612", at(2026, 12, 1), at(2027, 1, 1))
    assert period_of(MONTHLY, at(2028, 2, 29)).end == at(2028, 3, 1)


def test_a_custom_period_cycles_from_its_anchor():
    anchor = date(2026, 11, 20)
    first = period_of(CUSTOM, at(2026, 11, 29, 23), days=10, anchor=anchor)
    second = period_of(CUSTOM, at(2026, 11, 30, 0), days=10, anchor=anchor)
    assert (first.start, first.end) == (at(2026, 11, 20), at(2026, 11, 30))
    assert (second.key, second.start) == ("c10-20261130", at(2026, 11, 30))
    before_anchor = period_of(CUSTOM, at(2026, 11, 15), days=10, anchor=anchor)
    assert before_anchor.start == at(2026, 11, 10)


def test_the_previous_window_ends_where_the_current_starts():
    window = period_of(MONTHLY, at(2026, 3, 15))
    earlier = previous(MONTHLY, window)
    assert (earlier.key, earlier.end) == ("m202602", window.start)
    assert earlier.days == (date(2026, 2, 1), date(2026, 2, 28))


def test_the_clock_moves_to_the_next_window_by_itself():
    from freezegun import freeze_time

    clock = PeriodClock()
    with freeze_time(at(2026, 12, 2, 23, 59, 59)) as frozen:
        assert clock.current(DAILY).key == "d20261202"
        frozen.tick(timedelta(seconds=2))
        assert clock.current(DAILY).key == "d20261203"
        frozen.move_to(at(2026, 12, 1, 12))  # a clock set back never sees a window from its future
        assert clock.current(DAILY).key == "d20261201"


def test_an_unknown_period_or_an_incomplete_custom_one_is_refused():
    with pytest.raises(ValueError):
        period_of("fortnightly")
    with pytest.raises(ValueError):
        period_of(CUSTOM, days=None, anchor=date(2026, 1, 1))
