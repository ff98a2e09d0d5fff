from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing.models import Budget
from keys.models import ApiKey, Client, hash_key


def run(*args) -> str:
    out = StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_prints_only_the_raw_key_and_creates_the_client():
    out = run(
        "--client", "acme", "--agents", "research,writing", "--rpm", "60", "--tpm", "100000", "--monthly-budget", "100"
    )
    raw = out.strip()
    assert out == raw + "\n" and raw.startswith("agk_")
    key = ApiKey.objects.get(key_hash=hash_key(raw))
    assert key.client == Client.objects.get(slug="acme")
    assert (key.allowed_agents, key.requests_per_minute, key.tokens_per_minute) == (["research", "writing"], 60, 100000)
    budget = Budget.objects.get(client=key.client)
    assert (budget.scope, budget.period, budget.mode, budget.limit_usd) == ("client", "monthly", "hard", Decimal("100"))


@pytest.mark.django_db
def test_a_plan_gives_the_limits_not_given_and_its_budget_and_the_client_joins_a_cost_center():
    from keys.models import Plan

    Plan.objects.create(
        name="Pro", slug="pro", requests_per_minute=600, requests_per_day=50_000, tokens_per_minute=1_000_000,
        max_concurrent=40, monthly_budget_usd=Decimal("250"),
    )  # fmt: skip
    key = ApiKey.objects.get(key_hash=hash_key(run("--client", "acme", "--plan", "pro", "--rpm", "100", "--cost-center",
                                                   "research").strip()))  # fmt: skip
    assert (key.plan.slug, key.requests_per_minute, key.requests_per_day, key.tokens_per_minute) == (
        "pro", 100, 50_000, 1_000_000
    )  # fmt: skip
    assert key.client.cost_center.slug == "research"
    assert Budget.objects.get(scope="key", api_key=key).limit_usd == Decimal("250")
    with pytest.raises(CommandError, match="no plan 'gold'"):
        run("--client", "acme", "--plan", "gold")


@pytest.mark.django_db
def test_it_adds_keys_to_an_existing_client():
    first, second = run("--client", "acme").strip(), run("--client", "acme").strip()
    assert first != second
    assert ApiKey.objects.filter(client__slug="acme").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args",
    [
        ["--client", "Not a slug!"],
        ["--client", "acme", "--rpm", "0"],
        ["--client", "acme", "--monthly-budget", "lots"],
        ["--client", "acme", "--agents", ","],
    ],
)
def test_it_refuses_bad_options_without_creating_anything(args):
    with pytest.raises(CommandError):
        run(*args)
    assert not ApiKey.objects.exists() and not Client.objects.exists()
