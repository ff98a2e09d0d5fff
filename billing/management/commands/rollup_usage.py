"""Rebuild the daily usage rollups of a range of days, for backfills and after importing usage."""

from datetime import date, timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.rollups import roll_up_days


class Command(BaseCommand):
    help = (
        "Roll usage up into daily aggregates: yesterday and today by default, the days from --since to today, "
        "the last --days N days, or N days from --since."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", default=None, help="First local day to roll up (YYYY-MM-DD).")
        parser.add_argument("--days", type=int, default=None, help="How many days to roll up.")

    def handle(self, *args, **opts):
        today = timezone.localdate()
        days = opts["days"]
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        if opts["since"] is not None:
            try:
                first = date.fromisoformat(opts["since"])
            except ValueError:
                raise CommandError(f"--since {opts['since']!r} is not a date (YYYY-MM-DD).") from None
            if first > today:
                raise CommandError(f"--since {first} is in the future (today is {today}).")
            last = min(today, first + timedelta(days=days - 1)) if days else today
        else:
            last = today
            first = today - timedelta(days=(days or 2) - 1)
        count, rows = roll_up_days(first, last)
        self.stdout.write(f"Rolled up {count} day(s) from {first} to {last}: {rows} rollup row(s).")
