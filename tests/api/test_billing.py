"""Prices, budgets and usage over the management API."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Budget, ModelPrice, UsageRecord


def test_it_creates_updates_and_deletes_a_price(api):
    created = api.post(
        "/api/v1/prices/",
        {"model": "mistral-large", "input_per_million": "2", "output_per_million": "6"},
        format="json",
    )
    assert created.status_code == 201
    url = f"/api/v1/prices/{created.json()['id']}/"
    assert api.get(url).json()["input_per_million"] == "2.000000"

    assert api.patch(url, {"output_per_million": "6.5"}, format="json").status_code == 200
    assert ModelPrice.objects.get(model="mistral-large").output_per_million == Decimal("6.5")

    assert api.delete(url).status_code == 204
    assert not ModelPrice.objects.filter(model="mistral-large").exists()


def test_it_lists_the_seeded_prices_including_the_default(api):
    models = [p["model"] for p in api.get("/api/v1/prices/", {"limit": 100}).json()["results"]]
    assert "default" in models


def test_it_refuses_a_negative_price_and_a_duplicate_model(api):
    negative = api.post(
        "/api/v1/prices/", {"model": "cheap", "input_per_million": "-1", "output_per_million": "1"}, format="json"
    )
    assert negative.status_code == 400
    assert "input_per_million" in negative.json()

    duplicate = api.post(
        "/api/v1/prices/", {"model": "default", "input_per_million": "1", "output_per_million": "1"}, format="json"
    )
    assert duplicate.status_code == 400
    assert "model" in duplicate.json()


def test_it_creates_updates_and_deletes_a_budget(api, acme):
    created = api.post("/api/v1/budgets/", {"client": acme.pk, "limit_usd": "100.00"}, format="json")
    assert created.status_code == 201
    assert created.json()["client_slug"] == "acme"
    url = f"/api/v1/budgets/{created.json()['id']}/"

    assert api.patch(url, {"limit_usd": "250"}, format="json").status_code == 200
    assert Budget.objects.get(client=acme).limit_usd == Decimal("250")

    assert api.delete(url).status_code == 204
    assert not Budget.objects.filter(client=acme).exists()


def test_it_refuses_a_second_budget_for_a_client(api, acme):
    Budget.objects.create(client=acme, limit_usd=Decimal("10"))
    response = api.post("/api/v1/budgets/", {"client": acme.pk, "limit_usd": "20"}, format="json")
    assert response.status_code == 400
    assert response.json()["client"] == ["This client already has a budget; update that one instead."]
    assert Budget.objects.get(client=acme).limit_usd == Decimal("10")


def test_it_refuses_a_negative_budget(api, acme):
    response = api.post("/api/v1/budgets/", {"client": acme.pk, "limit_usd": "-5"}, format="json")
    assert response.status_code == 400
    assert "limit_usd" in response.json()


@pytest.fixture
def usage(acme, globex):
    now = timezone.now()

    def record(request_id, client, agent, model, ago):
        return UsageRecord.objects.create(
            request_id=request_id,
            created_at=now - ago,
            client=client,
            agent=agent,
            model=model,
            input_tokens=10,
            output_tokens=20,
            cost_usd=Decimal("0.000123"),
        )

    return {
        "old": record("r-old", acme, "research", "gpt-4o", timedelta(days=3)),
        "acme": record("r-acme", acme, "coder", "gpt-4o-mini", timedelta(hours=1)),
        "globex": record("r-globex", globex, "research", "claude-haiku", timedelta(minutes=5)),
    }


def request_ids(api, **params):
    response = api.get("/api/v1/usage/", params)
    assert response.status_code == 200
    return [u["request_id"] for u in response.json()["results"]]


def test_it_lists_usage_newest_first(api, usage):
    assert request_ids(api) == ["r-globex", "r-acme", "r-old"]


def test_it_filters_usage_by_client_agent_and_model(api, usage, acme):
    assert request_ids(api, client=acme.pk) == ["r-acme", "r-old"]
    assert request_ids(api, agent="research") == ["r-globex", "r-old"]
    assert request_ids(api, model="gpt-4o-mini") == ["r-acme"]


def test_it_filters_usage_by_time_range(api, usage):
    now = timezone.now()
    assert request_ids(api, created_after=(now - timedelta(days=1)).isoformat()) == ["r-globex", "r-acme"]
    assert request_ids(api, created_before=(now - timedelta(minutes=30)).isoformat()) == ["r-acme", "r-old"]


def test_it_shows_usage_of_a_deleted_client(api, usage, acme):
    acme_id = acme.pk
    acme.delete()
    assert request_ids(api, client=acme_id) == ["r-acme", "r-old"]
    assert api.get(f"/api/v1/usage/{usage['acme'].pk}/").json()["client"] == acme_id


def test_usage_is_read_only(api, usage):
    url = f"/api/v1/usage/{usage['acme'].pk}/"
    assert api.get(url).json()["cost_usd"] == "0.000123000"
    assert api.post("/api/v1/usage/", {}, format="json").status_code == 405
    assert api.patch(url, {"cost_usd": "0"}, format="json").status_code == 405
    assert api.delete(url).status_code == 405
