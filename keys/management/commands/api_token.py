"""Issue, rotate or revoke a console user's management API token; a new token is printed once, alone, on stdout."""

from datetime import datetime, time, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from gateway_project import roles
from keys.api_tokens import DEFAULT, issue_token, live_tokens, replace_tokens, revoke_tokens


def _moment(text: str) -> datetime:
    """An ISO date (its midnight) or date-time, in the gateway's zone when it names none."""
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text) if len(text) == 10 else None
        if day is None:
            raise CommandError(f"--expires {text!r}: give an ISO date (2027-01-31) or date-time (2027-01-31T18:00).")
        moment = datetime.combine(day, time())
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


class Command(BaseCommand):
    help = (
        "Print a new management API token of a user with a role (and nothing else) on stdout. Tokens are stored as "
        "hashes: one is shown when issued, never again; --rotate replaces the user's token, --revoke ends it."
    )

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
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--rotate", action="store_true", help="Issue a new token; the user's current one stops working at once."
        )
        action.add_argument("--revoke", action="store_true", help="End the user's tokens now; print nothing.")
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument(
            "--days", type=int, help="The new token expires this many days from now (default GATEWAY_API_TOKEN_DAYS)."
        )
        expiry.add_argument("--expires", help="The new token expires at this ISO date or date-time.")
        expiry.add_argument("--no-expiry", action="store_true", help="The new token never expires.")

    @transaction.atomic
    def handle(self, *args, username, create, role, rotate, revoke, days, expires, no_expiry, **options):
        if revoke and (days is not None or expires or no_expiry):
            raise CommandError("--revoke issues no token: --days, --expires and --no-expiry do not apply.")
        if revoke:  # always allowed, whatever became of the user's role
            user_model = get_user_model()
            user = user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()
            if user is None:
                raise CommandError(f"No user {username!r}.")
            ended = revoke_tokens(user)
            self.stderr.write(f"Revoked {ended} token(s) of {username}.")
            return
        expires_at = self._expiry(days, expires, no_expiry)
        user = self._user(username, create, role)
        if rotate:
            _, raw = replace_tokens(user, expires_at)
        else:
            current = live_tokens(user).order_by("-created_at").first()
            if current is not None:
                until = f"expires {current.expires_at:%Y-%m-%d %H:%M %Z}" if current.expires_at else "never expires"
                raise CommandError(
                    f"{username} already has a token ({current.prefix}…, {until}). Tokens are stored as hashes and "
                    "cannot be shown again: pass --rotate for a new one (the current one stops working)."
                )
            _, raw = issue_token(user, expires_at)
        self.stdout.write(raw)

    def _expiry(self, days, expires, no_expiry):
        if no_expiry:
            return None
        if days is not None:
            if not 1 <= days <= 36_500:
                raise CommandError(f"--days {days}: give 1 to 36500 days (or --no-expiry).")
            return timezone.now() + timedelta(days=days)
        if expires:
            moment = _moment(expires)
            if moment <= timezone.now():
                raise CommandError(f"--expires {expires}: that moment has passed.")
            return moment
        return DEFAULT

    def _user(self, username, create, role):
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
        return user
