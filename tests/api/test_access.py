"""Who may call the management API: staff tokens only."""

import pytest

LIST_URLS = [
    "/api/v1/clients/",
    "/api/v1/keys/",
    "/api/v1/agents/",
    "/api/v1/prices/",
    "/api/v1/budgets/",
    "/api/v1/usage/",
    "/api/v1/audit/",
]


@pytest.mark.parametrize("url", LIST_URLS)
def test_it_lists_for_a_staff_token(api, url):
    response = api.get(url)
    assert response.status_code == 200
    assert set(response.json()) >= {"count", "results"}


@pytest.mark.parametrize("url", LIST_URLS)
def test_it_refuses_an_anonymous_caller_with_401(anonymous_api, url):
    response = anonymous_api.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "detail" in response.json()


@pytest.mark.parametrize("url", LIST_URLS)
def test_it_refuses_a_user_who_is_not_staff_with_403(outsider_api, url):
    response = outsider_api.get(url)
    assert response.status_code == 403
    assert "detail" in response.json()


def test_it_refuses_a_non_staff_user_before_any_write(outsider_api, acme):
    response = outsider_api.post("/api/v1/keys/", {"client": acme.pk}, format="json")
    assert response.status_code == 403
    assert not acme.api_keys.exists()


def test_it_refuses_an_unknown_token(db, anonymous_api):
    anonymous_api.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anonymous_api.get("/api/v1/clients/").status_code == 401


def test_the_root_lists_every_resource(api):
    body = api.get("/api/v1/").json()
    assert set(body) == {"clients", "keys", "agents", "prices", "budgets", "usage", "audit"}
