"""Check the audit hash chains and name the first record that was altered, inserted or removed.

Also checks each chain's head against the last signed checkpoint, and the archived runs
it links through against their files (``audit.chain.verify``).
"""

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime

from audit.chain import CHAINS, verify


def _moment(value: str | None, option: str):
    if value is None:
        return None
    moment = parse_datetime(value)
    if moment is None and parse_date(value) is not None:
        moment = parse_datetime(f"{value}T00:00:00+00:00")
    if moment is None:
        raise CommandError(f"{option} {value!r} is not a date or an ISO date-time.")
    if moment.tzinfo is None:
        raise CommandError(f"{option} {value!r} needs a time zone (e.g. +00:00 or Z).")
    return moment


class Command(BaseCommand):
    help = (
        "Verify the request log's and the admin-action trail's keyed hash chains over a time range (all of it by "
        "default), their heads against the last signed checkpoint, and the archives they link through against their "
        "files. Exits 1 if either is broken."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="ISO date or date-time with zone: records created at or after it")
        parser.add_argument("--until", help="ISO date or date-time with zone: records created before it")
        parser.add_argument(
            "--chain", choices=[*CHAINS, "all"], default="all", help="records (request log), trail, or all (default)"
        )

    def handle(self, *args, **options):
        since, until = _moment(options["since"], "--since"), _moment(options["until"], "--until")
        names = list(CHAINS) if options["chain"] == "all" else [options["chain"]]
        broken = False
        for name in names:
            chain = CHAINS[name]
            result = verify(since, until, chain=chain)
            line = f"{chain.spec.name.capitalize()}: {result.describe()}"
            if result.ok:
                self.stdout.write(line)
            else:
                self.stderr.write(line)
                broken = True
        if broken:
            raise SystemExit(1)
