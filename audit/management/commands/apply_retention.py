"""Archive the request records past their retention, then delete them (what the hourly Celery task does)."""

from django.core.management.base import BaseCommand

from audit.retention import apply_retention, policy
from gateway_project import auth_events


class Command(BaseCommand):
    help = (
        "Archive the request records past their retention (GATEWAY_AUDIT_RETENTION_DAYS, or the client's own) to a "
        "gzip JSON Lines file under GATEWAY_ARCHIVE_DIR, then delete them from the database in batches."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="say what would be archived; change nothing")

    def handle(self, *args, **options):
        applied = policy()
        default = applied["default_days"]
        self.stdout.write(f"Default retention: {f'{default} days' if default else 'for ever'}.")
        for override in applied["overrides"]:
            self.stdout.write(f"  client {override['client']}: {override['days']} days")
        self.stdout.write(apply_retention(dry_run=options["dry_run"]).describe())
        if not options["dry_run"]:
            self.stdout.write(f"Sign-in events deleted: {auth_events.delete_expired()}.")
