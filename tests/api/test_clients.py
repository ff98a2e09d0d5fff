"""Clients over the management API."""

from keys.models import Client


def test_it_creates_a_client(api):
    response = api.post("/api/v1/clients/", {"name": "Acme", "slug": "acme", "contact": "ops@acme.test"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["slug"] == "acme"
    assert body["is_active"] is True
    assert Client.objects.get(pk=body["id"]).contact == "ops@acme.test"


def test_it_retrieves_updates_and_deletes_a_client(api, acme):
    url = f"/api/v1/clients/{acme.pk}/"
    assert api.get(url).json()["name"] == "Acme"

    assert api.patch(url, {"is_active": False}, format="json").status_code == 200
    acme.refresh_from_db()
    assert acme.is_active is False

    replaced = api.put(url, {"name": "Acme Corp", "slug": "acme-corp"}, format="json")
    assert replaced.status_code == 200
    assert replaced.json()["slug"] == "acme-corp"

    assert api.delete(url).status_code == 204
    assert not Client.objects.filter(pk=acme.pk).exists()


def test_it_refuses_a_duplicate_slug(api, acme):
    response = api.post("/api/v1/clients/", {"name": "Other", "slug": "acme"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()
    assert response.json()["detail"].startswith("slug:")


def test_it_refuses_a_slug_that_is_not_a_slug(api):
    response = api.post("/api/v1/clients/", {"name": "Bad", "slug": "not a slug"}, format="json")
    assert response.status_code == 400
    assert "slug" in response.json()


def test_it_filters_clients_by_is_active(api, acme, globex):
    globex.is_active = False
    globex.save()
    body = api.get("/api/v1/clients/", {"is_active": "false"}).json()
    assert [c["slug"] for c in body["results"]] == ["globex"]


def test_it_searches_clients_by_name_or_slug(api, acme, globex):
    assert [c["slug"] for c in api.get("/api/v1/clients/", {"search": "glob"}).json()["results"]] == ["globex"]
    assert [c["slug"] for c in api.get("/api/v1/clients/", {"search": "Acm"}).json()["results"]] == ["acme"]


def test_it_paginates_with_limit_and_offset(api, acme, globex):
    body = api.get("/api/v1/clients/", {"limit": 1, "offset": 1}).json()
    assert body["count"] == 2
    assert [c["slug"] for c in body["results"]] == ["globex"]


def test_a_clients_shared_limits_are_set_and_checked(api, acme):
    url = f"/api/v1/clients/{acme.pk}/"
    assert api.get(url).json()["requests_per_minute"] is None  # none: each key's own limits only
    assert api.patch(url, {"requests_per_minute": 600, "tokens_per_minute": 90_000}, format="json").status_code == 200
    acme.refresh_from_db()
    assert (acme.requests_per_minute, acme.tokens_per_minute) == (600, 90_000)
    refused = api.patch(url, {"requests_per_minute": 0}, format="json")
    assert refused.status_code == 400 and "requests_per_minute" in refused.json()
    assert api.patch(url, {"tokens_per_minute": None}, format="json").json()["tokens_per_minute"] is None
