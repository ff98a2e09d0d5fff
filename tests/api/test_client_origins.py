"""A client's allowed web origins (CORS) through the API and the console: origins as browsers send them."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "origins",
    [["https://app.example.com"], ["http://localhost:5173", "https://app.example.com:8443"], ["*"], []],
)
def test_origins_as_browsers_send_them_are_kept(api, acme, origins):
    response = api.patch(f"/api/v1/clients/{acme.pk}/", {"allowed_origins": origins}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["allowed_origins"] == origins


@pytest.mark.parametrize(
    ("origins", "says"),
    [
        (["https://app.example.com/"], "no path"),
        (["https://app.example.com/login"], "no path"),
        (["ftp://files.example.com"], "http:// or https://"),
        (["app.example.com"], "http:// or https://"),
        (["https://App.Example.com"], "lower case"),
        (["https://user@app.example.com"], "no path, query, fragment or user"),
        (["https://app.example.com:99999"], "not"),
        (["*", "https://app.example.com"], "alone"),
        (["https://a.example.com", "https://a.example.com"], "once"),
        (["https://a.example.com\x00"], "printable"),
        ("https://app.example.com", "list of origins"),
    ],
)
def test_what_is_not_an_origin_is_a_400_saying_why(api, acme, origins, says):
    response = api.patch(f"/api/v1/clients/{acme.pk}/", {"allowed_origins": origins}, format="json")
    assert response.status_code == 400
    assert says in str(response.json()["allowed_origins"])
    acme.refresh_from_db()
    assert acme.allowed_origins == []


@pytest.mark.parametrize(
    ("origin", "says"),
    [
        ("https://app.example.com:443", "default port"),
        ("http://app.example.com:80", "default port"),
        ("https://*.example.com", "no wildcards"),
        ("https://bücher.example", "xn--"),
        ("https://a.example:", "not an origin a browser sends"),
        ("https://a b.example", "not an origin a browser sends"),
        ("https://a.example;x", "not an origin a browser sends"),
        ("https://%41.example", "not an origin a browser sends"),
        ("https://a..example", "not an origin a browser sends"),
        ("https://a.example:0080", "not an origin a browser sends"),
    ],
)
def test_an_origin_no_browser_sends_is_refused(api, acme, origin, says):
    response = api.patch(f"/api/v1/clients/{acme.pk}/", {"allowed_origins": [origin]}, format="json")
    assert response.status_code == 400
    assert says in str(response.json()["allowed_origins"])


@pytest.mark.parametrize("origin", ["https://xn--bcher-kva.example", "http://10.0.0.7:8080", "http://[::1]:3000"])
def test_punycode_hosts_and_addresses_are_origins(api, acme, origin):
    response = api.patch(f"/api/v1/clients/{acme.pk}/", {"allowed_origins": [origin]}, format="json")
    assert response.status_code == 200, response.json()
