"""Daily usage rollups: one row per local day, cost center, client, key, agent and model, rebuilt from usage rows.

Reports read these instead of the raw usage rows. A day is rebuilt whole, in one
transaction that holds its ``RollupDay`` row locked, so rebuilding is idempotent
and two rollups of the same day (beat and a report, two workers) run one after
the other instead of both inserting. Days are local days in the gateway's time
zone, like budget periods, so every budget window is a whole number of them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from billing.models import RollupDay, UsageRecord, UsageRollup

# A day rolled up this long after its last midnight holds every row it will ever get:
# the gateway's writers flush within a second, and retry a failed batch for far less.
LATE_ROWS_MARGIN = timedelta(minutes=5)
# What a RollupDay row made in the current transaction says until the rollup stamps it.
NEVER = datetime(1970, 1, 1, tzinfo=UTC)
GROUP_FIELDS = ("cost_center_id", "client_id", "api_key_id", "agent", "model")


def day_window(day: date) -> tuple[datetime, datetime]:
    """Local midnight of ``day`` and of the day after, in the gateway's time zone (DST included)."""
    zone = timezone.get_current_timezone()

    def midnight(d: date) -> datetime:
        return timezone.make_aware(datetime.combine(d, time.min), zone).astimezone(UTC)

    return midnight(day), midnight(day + timedelta(days=1))


def _totals(day: date) -> list[UsageRollup]:
    """The day's usage rows summed per cost center, client, key, agent and model."""
    start, end = day_window(day)
    groups = (
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .order_by()
        .values(*GROUP_FIELDS)
        .annotate(
            requests=Count("id"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
            cost_usd=Sum("cost_usd"),
            default_priced_requests=Count("id", filter=Q(default_priced=True)),
        )
    )
    return [UsageRollup(day=day, **group) for group in groups]


def roll_up_day(day: date, *, unless_rolled_up_since: datetime | None = None) -> int:
    """Rebuild ``day``'s rollup rows from its usage rows; return how many there are.

    With ``unless_rolled_up_since``, a rollup that another process finished after
    that moment (while this one waited for the lock) is kept as it is.
    """
    with transaction.atomic():
        # A write first: it makes the day's row exist, and SQLite takes its write lock here, before any read.
        RollupDay.objects.bulk_create([RollupDay(day=day, rolled_up_at=NEVER)], ignore_conflicts=True)
        marker = RollupDay.objects.select_for_update().get(day=day)
        if unless_rolled_up_since is not None and marker.rolled_up_at >= unless_rolled_up_since:
            return marker.rows
        stamp = timezone.now()
        rows = _totals(day)
        UsageRollup.objects.filter(day=day).delete()
        UsageRollup.objects.bulk_create(rows, batch_size=1000)
        marker.rolled_up_at, marker.rows = stamp, len(rows)
        marker.save(update_fields=["rolled_up_at", "rows"])
    return len(rows)


def roll_up_days(first: date, last: date) -> tuple[int, int]:
    """Roll up every day from ``first`` to ``last``; return (days, rows)."""
    days = rows = 0
    day = first
    while day <= last:
        rows += roll_up_day(day)
        days += 1
        day += timedelta(days=1)
    return days, rows


def roll_up_recent() -> int:
    """Yesterday and today, for the beat task: yesterday again so rows that landed after midnight count."""
    today = timezone.localdate()
    return roll_up_day(today - timedelta(days=1)) + roll_up_day(today)


def is_complete(day: date, rolled_up_at: datetime) -> bool:
    """Whether a rollup made at ``rolled_up_at`` holds all of ``day``'s usage."""
    return rolled_up_at >= day_window(day)[1] + LATE_ROWS_MARGIN


def _stale_days(since: date, until: date, max_age: timedelta) -> list[date]:
    """Days in the range that reports cannot trust: never rolled up, or incomplete and older than ``max_age``."""
    today = timezone.localdate()
    until = min(until, today)
    first_usage = UsageRecord.objects.order_by("created_at").values_list("created_at", flat=True).first()
    if first_usage is None:
        return []
    since = max(since, timezone.localdate(first_usage))
    if since > until:
        return []
    rolled = dict(RollupDay.objects.filter(day__gte=since, day__lte=until).values_list("day", "rolled_up_at"))
    cutoff = timezone.now() - max_age
    stale = []
    day = since
    while day <= until:
        at = rolled.get(day)
        if at is None or (not is_complete(day, at) and at < cutoff):
            stale.append(day)
        day += timedelta(days=1)
    return stale


def ensure_fresh(max_age_seconds: float | None = None, *, since: date | None = None, until: date | None = None) -> int:
    """Roll up what a report of ``since``..``until`` (today by default) needs; return the days rebuilt.

    Today is rebuilt when its rollup is older than ``max_age_seconds``
    (``GATEWAY_ROLLUP_MAX_AGE``), and so is any day of the range that was never
    rolled up or was rolled up before all its rows were in.
    """
    if max_age_seconds is None:
        max_age_seconds = settings.GATEWAY["ROLLUP_MAX_AGE"]
    today = timezone.localdate()
    max_age = timedelta(seconds=max_age_seconds)
    stale = _stale_days(since or today, until or today, max_age)
    for day in stale:
        roll_up_day(day, unless_rolled_up_since=timezone.now() - max_age)
    return len(stale)


def as_of(since: date, until: date) -> datetime:
    """Up to when a report of the range counts usage: the oldest rollup of a day still filling, else now."""
    incomplete = [
        at
        for day, at in RollupDay.objects.filter(day__gte=since, day__lte=until).values_list("day", "rolled_up_at")
        if not is_complete(day, at)
    ]
    return min(incomplete) if incomplete else timezone.now()


def complete_days(since: date, until: date) -> set[date]:
    """The days of the range whose rollups hold all their usage (the rest must be read from usage rows)."""
    return {
        day
        for day, at in RollupDay.objects.filter(day__gte=since, day__lte=until).values_list("day", "rolled_up_at")
        if is_complete(day, at)
    }
