"""A client's allowed web origins on the console's client form."""

from __future__ import annotations


def test_the_console_edits_origins_as_comma_separated_text(operator, acme):
    data = {"name": "Acme", "slug": "acme", "allowed_origins": "https://app.example.com, http://localhost:5173",
            "is_active": "on"}  # fmt: skip
    assert operator.post(f"/console/clients/{acme.pk}/edit/", data).status_code == 302
    acme.refresh_from_db()
    assert acme.allowed_origins == ["https://app.example.com", "http://localhost:5173"]
    bad = operator.post(f"/console/clients/{acme.pk}/edit/", {**data, "allowed_origins": "https://x.example.com/a"})
    assert bad.status_code == 400
    assert "no path" in bad.content.decode()
