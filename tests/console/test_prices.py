"""The console's price pages: prices in force, scheduled and past, the default's rule and unpriced models."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import AdminAction
from billing.models import ModelPrice, UsageRecord
from gateway_project.templatetags.money import usd

FORMAT = "%Y-%m-%dT%H:%M:%S"


def local(moment) -> str:
    return timezone.localtime(moment).strftime(FORMAT)


def price_data(**fields):
    data = {"model": "t-model", "effective_from": local(timezone.now()), "input_per_million": "1",
            "output_per_million": "2"}  # fmt: skip
    return {**data, **fields}


def row_of(page: str, model: str) -> str:
    return re.search(rf'<tr data-model="{model}">.*?</tr>', page, re.S).group(0)


def used(model: str, n: int = 1, default_priced=True, when=None):
    for i in range(n):
        UsageRecord.objects.create(
            request_id=f"{model}-{i}", created_at=when or timezone.now(), agent="a", model=model, input_tokens=1,
            output_tokens=1, cost_usd=Decimal("0.5"), default_priced=default_priced,
        )  # fmt: skip


# --- access -------------------------------------------------------------------------------------------------------


def test_every_role_reads_the_prices_and_a_user_without_a_role_gets_403(admin, operator, compliance, nobody):
    for browser in (admin, operator, compliance):
        assert browser.get("/console/prices/").status_code == 200
    assert nobody.get("/console/prices/").status_code == 403


@pytest.mark.parametrize("who", ["compliance", "nobody"])
def test_only_managing_roles_change_prices(request, who, operator):
    browser = request.getfixturevalue(who)
    price = ModelPrice.objects.get(model="gpt-4o")
    for url in ["/console/prices/new/", f"/console/prices/{price.pk}/edit/", f"/console/prices/{price.pk}/delete/"]:
        assert operator.get(url).status_code == 200, url
        assert browser.get(url).status_code == 403, url
        assert browser.post(url, price_data(model="gpt-4o")).status_code == 403, url
    assert ModelPrice.objects.filter(pk=price.pk).exists() and not ModelPrice.objects.filter(model="t-model").exists()
    assert not AdminAction.objects.exists()


def test_readers_see_no_change_links(compliance):
    page = compliance.get("/console/prices/").content.decode()
    assert "/console/prices/new/" not in page and "/edit/" not in page and "/delete/" not in page


# --- the list -----------------------------------------------------------------------------------------------------


def test_the_list_shows_the_seeded_prices_in_force_and_says_past_usage_keeps_its_price(compliance):
    page = compliance.get("/console/prices/").content.decode()
    assert "gpt-4o-mini" in page and "$0.15" in page and "unlisted models" in page
    assert "past usage keeps the price it was charged" in page
    assert page.index('data-model="default"') < page.index('data-model="gpt-4o"')  # the default first


def test_each_model_shows_the_price_in_force_the_scheduled_ones_and_its_history(operator):
    now = timezone.now()
    for days, price in [(-60, "1"), (-30, "2"), (-1, "3"), (10, "4"), (40, "5")]:
        ModelPrice.objects.create(model="t-model", effective_from=now + timedelta(days=days), input_per_million=price,
                                  output_per_million=Decimal(price) * 2)  # fmt: skip
    row = row_of(operator.get("/console/prices/").content.decode(), "t-model")
    in_force = re.search(r'<td class="num">\$([\d.]+)</td><td class="num">\$([\d.]+)</td>', row).groups()
    assert in_force == ("3.00", "6.00")  # money as the console shows it: two decimals, or as many as it has
    scheduled = re.findall(r'<div class="scheduled">from [^:]+:\d\d: \$([\d.]+)', row)
    assert scheduled == ["4.00", "5.00"]  # soonest first
    past = re.findall(r'<div class="past">from [^:]+:\d\d: \$([\d.]+)', row)
    assert past == ["2.00", "1.00"] and "2 earlier" in row  # newest first


def test_a_model_priced_only_from_a_future_date_says_the_default_applies_until_then(operator):
    ModelPrice.objects.create(model="t-soon", effective_from=timezone.now() + timedelta(days=3), input_per_million=1,
                              output_per_million=1)  # fmt: skip
    assert "the default applies" in row_of(operator.get("/console/prices/").content.decode(), "t-soon")


# --- create and edit ----------------------------------------------------------------------------------------------


def test_the_new_price_form_starts_now_and_takes_the_model_from_the_link(operator):
    page = operator.get("/console/prices/new/?model=t-model").content.decode()
    assert re.search(r'<input type="text" name="model" value="t-model"', page)
    start = re.search(r'name="effective_from" value="([^"]+)"', page).group(1)
    shown = timezone.make_aware(timezone.datetime.strptime(start, FORMAT))
    assert abs(shown - timezone.now()) < timedelta(minutes=1)
    assert "usage keeps the price it was charged" in page


def test_an_operator_adds_and_corrects_a_price_and_the_trail_says_so(operator):
    start = timezone.now().replace(microsecond=0) - timedelta(hours=1)
    data = price_data(effective_from=local(start), input_per_million="1.5", output_per_million="6")
    response = operator.post("/console/prices/new/", data)
    assert response.status_code == 302 and response["Location"] == "/console/prices/"
    price = ModelPrice.objects.get(model="t-model")
    assert price.input_per_million == Decimal("1.5") and price.effective_from == start
    data = price_data(effective_from=local(start), input_per_million="2", output_per_million="6")
    operator.post(f"/console/prices/{price.pk}/edit/", data)
    price.refresh_from_db()
    assert price.input_per_million == Decimal(2) and price.effective_from == start
    created, updated = AdminAction.objects.order_by("id")
    assert created.action == "create" and created.changes["input_per_million"] == [None, "1.500000"]
    assert created.changes["effective_from"] == [None, start.isoformat()]
    assert updated.action == "update" and updated.changes["input_per_million"] == ["1.500000", "2.000000"]
    assert "output_per_million" not in updated.changes and "effective_from" not in updated.changes


def test_a_price_change_is_a_new_row_from_a_future_date(operator):
    current = ModelPrice.objects.get(model="gpt-4o")
    later = timezone.now().replace(microsecond=0) + timedelta(days=7)
    data = price_data(model="gpt-4o", effective_from=local(later), input_per_million="9", output_per_million="9")
    response = operator.post("/console/prices/new/", data)
    assert response.status_code == 302
    assert ModelPrice.objects.filter(model="gpt-4o").count() == 2
    row = row_of(operator.get("/console/prices/").content.decode(), "gpt-4o")
    assert usd(current.input_per_million) in row and '<div class="scheduled">' in row and "$9.00" in row


def test_a_price_from_a_past_date_is_allowed(operator):
    past = timezone.now().replace(microsecond=0) - timedelta(days=90)
    assert operator.post("/console/prices/new/", price_data(effective_from=local(past))).status_code == 302
    assert ModelPrice.objects.get(model="t-model").effective_from == past


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_per_million": "-0.01"}, "greater than or equal to 0"),
        ({"output_per_million": "-3"}, "greater than or equal to 0"),
        ({"model": ""}, "This field is required."),
        ({"input_per_million": "abc"}, "Enter a number."),
        ({"effective_from": ""}, "This field is required."),
        ({"effective_from": "yesterday"}, "Enter a valid date/time."),
    ],
)
def test_a_bad_price_shows_the_error_with_400_and_saves_nothing(operator, fields, message):
    before = ModelPrice.objects.count()
    response = operator.post("/console/prices/new/", price_data(**fields))
    assert response.status_code == 400 and message in response.content.decode()
    assert ModelPrice.objects.count() == before and not AdminAction.objects.exists()


def test_two_prices_of_a_model_from_the_same_moment_are_refused(operator):
    start = timezone.now().replace(microsecond=0) - timedelta(days=1)
    ModelPrice.objects.create(model="t-model", effective_from=start, input_per_million=1, output_per_million=1)
    response = operator.post("/console/prices/new/", price_data(effective_from=local(start)))
    assert response.status_code == 400 and "already has a price from that moment" in response.content.decode()
    assert ModelPrice.objects.filter(model="t-model").count() == 1 and not AdminAction.objects.exists()


# --- the default price --------------------------------------------------------------------------------------------


def test_the_default_price_keeps_its_name(operator):
    price = ModelPrice.objects.get(model="default")
    data = price_data(model="renamed", effective_from=local(price.effective_from))
    response = operator.post(f"/console/prices/{price.pk}/edit/", data)
    assert response.status_code == 400 and "keeps its name" in response.content.decode()
    price.refresh_from_db()
    assert price.model == "default"


def test_the_only_default_price_in_force_cannot_move_to_the_future_or_be_deleted(operator):
    price = ModelPrice.objects.get(model="default")
    later = local(timezone.now() + timedelta(days=1))
    response = operator.post(f"/console/prices/{price.pk}/edit/", price_data(model="default", effective_from=later))
    assert response.status_code == 400 and "must always have a price in force" in response.content.decode()
    assert operator.get(f"/console/prices/{price.pk}/delete/").content.decode().count("Add a new default price") == 1
    response = operator.post(f"/console/prices/{price.pk}/delete/")
    assert response.status_code == 400 and "Add a new default price first" in response.content.decode()
    assert ModelPrice.objects.filter(pk=price.pk).exists() and not AdminAction.objects.exists()


def test_an_older_default_price_may_go_once_a_newer_one_is_in_force(operator):
    old = ModelPrice.objects.get(model="default")
    newer = ModelPrice.objects.create(model="default", effective_from=timezone.now() - timedelta(seconds=5),
                                      input_per_million=3, output_per_million=4)  # fmt: skip
    assert operator.post(f"/console/prices/{old.pk}/delete/").status_code == 302
    assert list(ModelPrice.objects.filter(model="default")) == [newer]
    assert AdminAction.objects.get().action == "delete"


def test_a_scheduled_price_can_be_cancelled(operator):
    soon = ModelPrice.objects.create(model="gpt-4o", effective_from=timezone.now() + timedelta(days=2),
                                     input_per_million=9, output_per_million=9)  # fmt: skip
    row = row_of(operator.get("/console/prices/").content.decode(), "gpt-4o")
    assert f"/console/prices/{soon.pk}/delete/" in row
    assert operator.post(f"/console/prices/{soon.pk}/delete/").status_code == 302
    assert not ModelPrice.objects.filter(pk=soon.pk).exists()
    deleted = AdminAction.objects.get()
    assert deleted.action == "delete" and deleted.changes["input_per_million"] == ["9.000000", None]


# --- unpriced models ----------------------------------------------------------------------------------------------


def test_models_charged_at_the_default_this_month_are_listed_with_an_add_price_link(compliance, operator):
    used("t-mystery", 3)
    used("t-rare", 1)
    used("gpt-4o", 5, default_priced=False)
    used("t-old", 2, when=timezone.now() - timedelta(days=40))
    page = operator.get("/console/prices/").content.decode()
    section = page[page.index('id="unpriced"') :]
    listed = re.findall(r'<tr data-unpriced="([^"]+)"><td class="mono">[^<]+</td><td class="num">(\d+)</td>', section)
    assert listed == [("t-mystery", "3"), ("t-rare", "1")]
    assert "/console/prices/new/?model=t-mystery" in section
    assert "?model=t-mystery" not in compliance.get("/console/prices/").content.decode()


def test_an_unpriced_model_given_a_price_says_so_instead_of_offering_one(operator):
    used("t-mystery", 2)
    start = timezone.now().replace(microsecond=0)
    operator.post("/console/prices/new/", price_data(model="t-mystery", effective_from=local(start)))
    page = operator.get("/console/prices/").content.decode()
    row = re.search(r'<tr data-unpriced="t-mystery">.*?</tr>', page, re.S).group(0)
    assert "priced from" in row and "?model=t-mystery" not in row
