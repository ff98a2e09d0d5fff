"""Prices (with effective dates) and usage over the management API."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AdminAction
from billing.api import ModelPriceSerializer
from billing.models import DEFAULT_PRICE_MODEL, ModelPrice, UsageRecord
from keys.models import CostCenter

SEEDED = datetime(2000, 1, 1, tzinfo=UTC)  # when the migration's prices took effect


def price(model, effective_from, amount="1"):
    return ModelPrice.objects.create(
        model=model,
        effective_from=effective_from,
        input_per_million=Decimal(amount),
        output_per_million=Decimal(amount),
    )


def test_it_creates_updates_and_deletes_a_price(api):
    created = api.post(
        "/api/v1/prices/",
        {
            "model": "mistral-large",
            "effective_from": "2026-01-01T00:00:00Z",
            "input_per_million": "2",
            "output_per_million": "6",
        },
        format="json",
    )
    assert created.status_code == 201
    assert created.json()["in_force"] is True
    url = f"/api/v1/prices/{created.json()['id']}/"
    body = api.get(url).json()
    assert body["input_per_million"] == "2.000000"
    assert body["effective_from"] == "2026-01-01T00:00:00Z"

    assert api.patch(url, {"output_per_million": "6.5"}, format="json").status_code == 200
    assert ModelPrice.objects.get(model="mistral-large").output_per_million == Decimal("6.5")

    assert api.delete(url).status_code == 204
    assert not ModelPrice.objects.filter(model="mistral-large").exists()
    assert [a.action for a in AdminAction.objects.filter(object_type="billing.modelprice")] == [
        "delete",
        "update",
        "create",
    ]


def test_a_new_price_takes_effect_now_unless_dated(api):
    before = timezone.now()
    body = api.post(
        "/api/v1/prices/",
        {"model": "mistral-small", "input_per_million": "1", "output_per_million": "3"},
        format="json",
    ).json()
    assert before <= ModelPrice.objects.get(pk=body["id"]).effective_from <= timezone.now()
    assert body["in_force"] is True


def test_replacing_a_price_without_a_date_keeps_its_date(api):
    seeded = ModelPrice.objects.get(model="gpt-4o")
    response = api.put(
        f"/api/v1/prices/{seeded.pk}/",
        {"model": "gpt-4o", "input_per_million": "2", "output_per_million": "8"},
        format="json",
    )
    assert response.status_code == 200
    seeded.refresh_from_db()
    assert (seeded.effective_from, seeded.input_per_million) == (SEEDED, Decimal("2"))


def test_it_lists_the_seeded_prices_including_the_default(api):
    models = [p["model"] for p in api.get("/api/v1/prices/", {"limit": 100}).json()["results"]]
    assert DEFAULT_PRICE_MODEL in models


def test_it_refuses_a_negative_price(api):
    negative = api.post(
        "/api/v1/prices/", {"model": "cheap", "input_per_million": "-1", "output_per_million": "1"}, format="json"
    )
    assert negative.status_code == 400
    assert "input_per_million" in negative.json()


def test_it_refuses_a_second_price_for_a_model_from_the_same_moment(api):
    duplicate = api.post(
        "/api/v1/prices/",
        {"model": "default", "effective_from": SEEDED.isoformat(), "input_per_million": "1", "output_per_million": "1"},
        format="json",
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["effective_from"] == ["This model already has a price from that moment."]
    assert ModelPrice.objects.filter(model="default").count() == 1


def test_a_duplicate_that_slips_past_validation_is_still_a_400(api, monkeypatch):
    # Two callers adding the same row at once both pass validation; the database's constraint catches the second.
    monkeypatch.setattr(ModelPriceSerializer, "validate", lambda self, attrs: attrs)
    duplicate = api.post(
        "/api/v1/prices/",
        {"model": "default", "effective_from": SEEDED.isoformat(), "input_per_million": "1", "output_per_million": "1"},
        format="json",
    )
    assert duplicate.status_code == 400
    assert duplicate.json()["effective_from"] == ["This model already has a price from that moment."]
    assert not AdminAction.objects.exists()


def test_it_refuses_to_move_a_price_onto_another_of_the_same_model(api):
    later = price("gpt-4o", datetime(2030, 1, 1, tzinfo=UTC))
    response = api.patch(f"/api/v1/prices/{later.pk}/", {"effective_from": SEEDED.isoformat()}, format="json")
    assert response.status_code == 400
    assert "effective_from" in response.json()
    later.refresh_from_db()
    assert later.effective_from.year == 2030


def test_a_later_price_for_a_model_is_a_new_row(api):
    response = api.post(
        "/api/v1/prices/",
        {
            "model": "gpt-4o",
            "effective_from": "2026-06-01T00:00:00Z",
            "input_per_million": "2",
            "output_per_million": "8",
        },
        format="json",
    )
    assert response.status_code == 201
    assert ModelPrice.objects.filter(model="gpt-4o").count() == 2


@pytest.fixture
def gpt4o_history():
    """gpt-4o as seeded (from 2000), a price from a month ago and one from next month."""
    now = timezone.now()
    return {
        "seeded": ModelPrice.objects.get(model="gpt-4o"),
        "current": price("gpt-4o", now - timedelta(days=30), "3"),
        "future": price("gpt-4o", now + timedelta(days=30), "4"),
    }


def price_ids(api, **params):
    response = api.get("/api/v1/prices/", {"limit": 200, **params})
    assert response.status_code == 200
    return [row["id"] for row in response.json()["results"]]


def test_in_force_lists_only_the_price_each_model_has_now(api, gpt4o_history):
    assert price_ids(api, model="gpt-4o", in_force="true") == [gpt4o_history["current"].pk]
    assert set(price_ids(api, model="gpt-4o", in_force="false")) == {
        gpt4o_history["seeded"].pk,
        gpt4o_history["future"].pk,
    }
    in_force = api.get("/api/v1/prices/", {"in_force": "true", "limit": 200}).json()["results"]
    models = [row["model"] for row in in_force]
    assert len(models) == len(set(models)) == ModelPrice.objects.values("model").distinct().count()


def test_each_price_says_whether_it_is_in_force(api, gpt4o_history):
    rows = {row["id"]: row["in_force"] for row in api.get("/api/v1/prices/", {"model": "gpt-4o"}).json()["results"]}
    assert rows == {
        gpt4o_history["seeded"].pk: False,
        gpt4o_history["current"].pk: True,
        gpt4o_history["future"].pk: False,
    }
    assert api.get(f"/api/v1/prices/{gpt4o_history['future'].pk}/").json()["in_force"] is False


def test_it_filters_prices_by_model(api, gpt4o_history):
    assert len(price_ids(api, model="gpt-4o")) == 3
    assert price_ids(api, model="no-such-model") == []


def test_it_keeps_the_only_default_price_in_force(api):
    default = ModelPrice.objects.get(model=DEFAULT_PRICE_MODEL)
    response = api.delete(f"/api/v1/prices/{default.pk}/")
    assert response.status_code == 400
    assert "default" in response.json()["detail"]
    assert ModelPrice.objects.filter(pk=default.pk).exists()
    assert not AdminAction.objects.exists()


def test_it_keeps_the_only_default_price_from_being_renamed_or_postponed(api):
    default = ModelPrice.objects.get(model=DEFAULT_PRICE_MODEL)
    renamed = api.patch(f"/api/v1/prices/{default.pk}/", {"model": "something-else"}, format="json")
    assert renamed.status_code == 400
    assert "model" in renamed.json()
    postponed = api.patch(f"/api/v1/prices/{default.pk}/", {"effective_from": "2999-01-01T00:00:00Z"}, format="json")
    assert postponed.status_code == 400
    assert "effective_from" in postponed.json()
    default.refresh_from_db()
    assert (default.model, default.effective_from) == (DEFAULT_PRICE_MODEL, SEEDED)
    assert api.patch(f"/api/v1/prices/{default.pk}/", {"input_per_million": "3"}, format="json").status_code == 200


def test_a_default_price_may_go_when_another_is_in_force_or_it_is_not_yet(api):
    seeded = ModelPrice.objects.get(model=DEFAULT_PRICE_MODEL)
    newer = price(DEFAULT_PRICE_MODEL, timezone.now() - timedelta(days=1), "3")
    future = price(DEFAULT_PRICE_MODEL, timezone.now() + timedelta(days=1), "4")
    assert api.delete(f"/api/v1/prices/{future.pk}/").status_code == 204
    assert api.delete(f"/api/v1/prices/{newer.pk}/").status_code == 204  # the seeded one is in force again
    assert api.delete(f"/api/v1/prices/{seeded.pk}/").status_code == 400


def test_compliance_staff_read_prices_but_change_none(compliance_api):
    default = ModelPrice.objects.get(model=DEFAULT_PRICE_MODEL)
    assert compliance_api.get("/api/v1/prices/").status_code == 200
    assert (
        compliance_api.post(
            "/api/v1/prices/", {"model": "x", "input_per_million": "1", "output_per_million": "1"}, format="json"
        ).status_code
        == 403
    )
    assert (
        compliance_api.patch(f"/api/v1/prices/{default.pk}/", {"input_per_million": "0"}, format="json").status_code
        == 403
    )
    assert not ModelPrice.objects.filter(model="x").exists()
    default.refresh_from_db()
    assert default.input_per_million != 0


@pytest.fixture
def platform(db):
    return CostCenter.objects.create(name="Platform", slug="platform")


@pytest.fixture
def usage(acme, globex, platform):
    now = timezone.now()

    def record(request_id, client, agent, model, ago, **fields):
        return UsageRecord.objects.create(
            request_id=request_id,
            created_at=now - ago,
            client=client,
            agent=agent,
            model=model,
            input_tokens=10,
            output_tokens=20,
            cost_usd=Decimal("0.000123"),
            **fields,
        )

    return {
        "old": record("r-old", acme, "research", "gpt-4o", timedelta(days=3)),
        "acme": record("r-acme", acme, "coder", "gpt-4o-mini", timedelta(hours=1), cost_center=platform),
        "globex": record("r-globex", globex, "research", "mystery-1", timedelta(minutes=5), default_priced=True),
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


def test_usage_shows_its_cost_center_and_whether_it_was_default_priced(api, usage, platform):
    acme_row = api.get(f"/api/v1/usage/{usage['acme'].pk}/").json()
    globex_row = api.get(f"/api/v1/usage/{usage['globex'].pk}/").json()
    assert (acme_row["cost_center"], acme_row["default_priced"]) == (platform.pk, False)
    assert (globex_row["cost_center"], globex_row["default_priced"]) == (None, True)


def test_it_filters_usage_by_cost_center_and_default_pricing(api, usage, platform):
    assert request_ids(api, cost_center=platform.pk) == ["r-acme"]
    assert request_ids(api, default_priced="true") == ["r-globex"]
    assert request_ids(api, default_priced="false") == ["r-acme", "r-old"]


def test_it_shows_usage_of_a_deleted_client_or_cost_center(api, usage, acme, platform):
    acme_id, platform_id = acme.pk, platform.pk
    acme.delete()
    platform.delete()
    assert request_ids(api, client=acme_id) == ["r-acme", "r-old"]
    assert request_ids(api, cost_center=platform_id) == ["r-acme"]
    assert api.get(f"/api/v1/usage/{usage['acme'].pk}/").json()["client"] == acme_id


def test_usage_is_read_only(api, usage):
    url = f"/api/v1/usage/{usage['acme'].pk}/"
    assert api.get(url).json()["cost_usd"] == "0.000123000"
    assert api.post("/api/v1/usage/", {}, format="json").status_code == 405
    assert api.patch(url, {"cost_usd": "0"}, format="json").status_code == 405
    assert api.delete(url).status_code == 405


@pytest.mark.parametrize("value", ["99999999999999999999", "1.5", "-8.351390985080497e+72"])
def test_usage_filters_by_id_refuse_what_is_no_id(api, value):
    for name in ("client", "cost_center", "api_key"):
        response = api.get("/api/v1/usage/", {name: value})
        assert (response.status_code, name in response.json()) == (400, True), (name, response.json())
