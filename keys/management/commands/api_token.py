"""Print a staff user's management API token, creating the user or a new token on request."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = "Print the management API token of a staff user (and nothing else) on stdout."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--create", action="store_true", help="Create the user as staff, with no usable password, if missing."
        )
        parser.add_argument("--rotate", action="store_true", help="Replace the token; the old one stops working.")

    @transaction.atomic
    def handle(self, *args, username, create, rotate, **options):
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            if not create:
                raise CommandError(f"No user {username!r}; pass --create to create a staff user.")
            user = user_model(**{user_model.USERNAME_FIELD: username}, is_staff=True)
            user.set_unusable_password()
            user.save()
        elif not user.is_staff:
            # --create never promotes an existing account: granting staff is a decision for the admin.
            raise CommandError(f"User {username!r} is not staff; the management API accepts staff users only.")
        elif not user.is_active:
            raise CommandError(f"User {username!r} is inactive; its token would be refused.")

        if rotate:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
