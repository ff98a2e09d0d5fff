"""Publish a signed checkpoint of the audit chains' heads now (what beat does), or print the key monitors pin."""

import json

from django.core.management.base import BaseCommand, CommandError

from audit import checkpoints


class Command(BaseCommand):
    help = (
        "Publish a signed checkpoint of the request log's and the admin-action trail's heads to "
        "GATEWAY_EXPORT_DIR/audit-checkpoints.jsonl and the trail; exits 1 if it refuses because a head went back or "
        "a pinned record changed. --public-key prints the key an external monitor verifies checkpoints with."
    )

    def add_arguments(self, parser):
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--public-key", action="store_true", help="print the checkpoint public keys, newest first")
        what.add_argument("--show", action="store_true", help="print the last checkpoint, verified")
        what.add_argument(
            "--accept", metavar="REASON",
            help="publish even though a head went back or a pinned record changed (after restoring a backup, say); "
            "the checkpoint records the reason and what was found",
        )  # fmt: skip

    def handle(self, *args, **options):
        if options["public_key"]:
            for public in checkpoints.public_keys().values():
                described = checkpoints.describe_public_key(public)
                self.stdout.write(f"key id {described['key_id']} ({described['algorithm']})")
                self.stdout.write(f"raw, base64: {described['public_key']}")
                self.stdout.write(described["pem"])
            return
        if options["show"]:
            try:
                checkpoint = checkpoints.latest()
            except checkpoints.CheckpointError as error:
                raise CommandError(f"The last checkpoint does not verify: {error}.") from None
            if checkpoint is None:
                raise CommandError("No checkpoint has been published yet.")
            self.stdout.write(json.dumps(checkpoint.body, indent=2, sort_keys=True))
            self.stdout.write(f"Signed by key {checkpoint.key_id}: the signature verifies.")
            return
        reason = options["accept"]
        if reason is not None and not reason.strip():
            raise CommandError("--accept needs a reason, e.g. --accept 'restored the 2026-12-01 backup'.")
        published = checkpoints.publish(accept=reason.strip() if reason else None)
        if published.checkpoint is None:
            self.stderr.write(published.describe())
            raise SystemExit(1)
        self.stdout.write(published.describe())
