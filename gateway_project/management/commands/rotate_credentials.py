"""Re-encrypt every stored upstream credential and webhook secret with the newest key of GATEWAY_CREDENTIAL_KEYS.

Rotation: put a new key in front of GATEWAY_CREDENTIAL_KEYS on every process (the old one
stays behind it, so both decrypt), run this, then drop the old key.
"""

from django.core.management.base import BaseCommand, CommandError

from gateway_project.credentials import reencrypt_all
from gateway_project.env import new_fernet_key


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret (upstream credentials, webhook signing secrets) that is not under the newest "
        "key of GATEWAY_CREDENTIAL_KEYS with it. --new-key prints a fresh key to put in front of that setting; "
        "--check only counts, and exits 1 if anything is not under the newest key."
    )

    def add_arguments(self, parser):
        parser.add_argument("--new-key", action="store_true", help="print a new key and do nothing else")
        parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a value needs rotating")

    def handle(self, *args, new_key=False, check=False, **options):
        if new_key:
            self.stdout.write(new_fernet_key())
            return
        result = reencrypt_all(dry_run=check)
        rotated, current = sum(result.rotated.values()), sum(result.current.values())
        by_model = ", ".join(f"{label} {count}" for label, count in sorted(result.rotated.items()))
        verb = "Would re-encrypt" if check else "Re-encrypted"
        detail = f" ({by_model})" if by_model else ""
        self.stdout.write(f"{verb} {rotated} stored secret(s) with the newest key{detail}; {current} already were.")
        if result.unreadable:
            raise CommandError(
                f"{len(result.unreadable)} stored secret(s) no key in GATEWAY_CREDENTIAL_KEYS decrypts (model, id, "
                f"field): {'; '.join(result.unreadable[:20])}. Put back the key they were encrypted with."
            )
        if check and rotated:
            raise CommandError(f"{rotated} stored secret(s) are not under the newest key: run rotate_credentials.")
