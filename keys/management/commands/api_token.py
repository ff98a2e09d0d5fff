"""Print a console user's management API token, creating the user or a new token on request."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from gateway_project import roles


class Command(BaseCommand):
    help = "Print the management API token of a user with a role (and nothing else) on stdout."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--create",
            action="store_true",
            help="Create the user, with no usable password and the --role given, if missing.",
        )
        parser.add_argument(
            "--role", choices=roles.ROLES, default=roles.OPERATOR, help="Role of a user made by --create."
        )
        parser.add_argument("--rotate", action="store_true", help="Replace the token; the old one stops working.")

    @transaction.atomic
    def handle(self, *args, username, create, role, rotate, **options):
        user_model = get_user_model()
        user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            if not create:
                raise CommandError(f"No user {username!r}; pass --create to create one.")
            user = user_model(**{user_model.USERNAME_FIELD: username})
            user.set_unusable_password()
            user.save()
            user.groups.add(Group.objects.get(name=role))
        elif not user.is_active:
            raise CommandError(f"User {username!r} is inactive; its token would be refused.")
        elif not roles.roles_of(user):
            # --create never grants a role to an existing account: that is an admin's decision.
            raise CommandError(
                f"User {username!r} has no role (admin, operator or compliance); the API would refuse it."
            )

        if rotate:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
