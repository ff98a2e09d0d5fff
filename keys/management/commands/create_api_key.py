"""Issue a gateway key from a script: prints the raw key and nothing else on stdout."""

from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils import timezone

from billing.services import set_client_monthly_budget
from keys.models import CostCenter, Plan
from keys.services import client_for_slug, issue_key


def _names(value: str) -> list[str]:
    names = [item.strip() for item in value.split(",") if item.strip()]
    if not names:
        raise CommandError("Give at least one name, or * for all.")
    return names


class Command(BaseCommand):
    help = "Create an API key for a client (created if needed) and print the raw key once."

    def add_arguments(self, parser):
        parser.add_argument("--client", required=True, help="Client slug; the client is created if missing.")
        parser.add_argument("--client-name", default="", help="Name for a newly created client.")
        parser.add_argument("--name", default="", help="A label for the key.")
        parser.add_argument("--agents", default="*", help="Comma-separated agent slugs, or * (default).")
        parser.add_argument("--models", default="*", help="Comma-separated model names, or * (default).")
        parser.add_argument("--plan", default=None, help="Plan slug: the limits not given here come from it.")
        parser.add_argument("--cost-center", default=None, help="Put the client in this cost center (made if needed).")
        parser.add_argument("--rpm", type=int, default=None, help="Requests per minute (default: the plan's, or 60).")
        parser.add_argument("--rpd", type=int, default=None, help="Requests per day, 0 for none (default: the plan's).")
        parser.add_argument("--tpm", type=int, default=None, help="Tokens per minute (default: the plan's, or 100000).")
        parser.add_argument(
            "--max-concurrent", type=int, default=None, help="Requests in flight at once, 0: no limit (default 10)."
        )
        parser.add_argument("--expires-in-days", type=int, default=None, help="Expire the key after this many days.")
        parser.add_argument("--monthly-budget", default=None, help="Set the client's monthly budget in USD.")

    def handle(self, *args, **opts):
        try:
            validate_slug(opts["client"])
        except ValidationError:
            raise CommandError(f"--client {opts['client']!r} is not a slug (letters, digits, - and _).")
        budget = None
        if opts["monthly_budget"] is not None:
            try:
                budget = Decimal(opts["monthly_budget"])
            except InvalidOperation:
                raise CommandError(f"--monthly-budget {opts['monthly_budget']!r} is not a number.")
            if budget < 0:
                raise CommandError("--monthly-budget must not be negative.")
        if opts["expires_in_days"] is not None and opts["expires_in_days"] < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        plan = None
        if opts["plan"] is not None:
            plan = Plan.objects.filter(slug=opts["plan"]).first()
            if plan is None:
                known = ", ".join(Plan.objects.values_list("slug", flat=True)) or "none yet"
                raise CommandError(f"There is no plan {opts['plan']!r} (plans: {known}).")
        limits = {
            field: opts[option]
            for option, field in [
                ("rpm", "requests_per_minute"),
                ("rpd", "requests_per_day"),
                ("tpm", "tokens_per_minute"),
                ("max_concurrent", "max_concurrent"),
            ]
            if opts[option] is not None
        }
        try:
            with transaction.atomic():
                client, _ = client_for_slug(opts["client"], name=opts["client_name"])
                if opts["cost_center"]:
                    client.cost_center, _ = CostCenter.objects.get_or_create(
                        slug=opts["cost_center"], defaults={"name": opts["cost_center"]}
                    )
                    client.full_clean()
                    client.save(update_fields=["cost_center"])
                if budget is not None:
                    set_client_monthly_budget(client, budget)
                _, raw = issue_key(
                    client,
                    plan=plan,
                    name=opts["name"],
                    allowed_agents=_names(opts["agents"]),
                    allowed_models=_names(opts["models"]),
                    **limits,
                    expires_at=timezone.now() + timedelta(days=opts["expires_in_days"])
                    if opts["expires_in_days"]
                    else None,
                )
        except ValidationError as exc:
            raise CommandError("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()))
        self.stdout.write(raw)
