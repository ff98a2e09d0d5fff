"""A new key's raw value reaches its page through a one-time encrypted hand-off, never through the database session."""

from __future__ import annotations

import json
import re
from datetime import timedelta

from django.contrib.sessions.models import Session
from django.core.cache import cache
from freezegun import freeze_time

from gateway_project import handoff
from keys.models import ApiKey, hash_key
from keys.services import issue_key

RAW_KEY = re.compile(r"agk_[A-Za-z0-9_-]{8,}")


def new_key(browser, client):
    data = {"name": "ci", "all_agents": "on", "models_text": "*", "requests_per_minute": 60,
            "tokens_per_minute": 1000, "max_concurrent": 5}  # fmt: skip
    return browser.post(f"/console/clients/{client.pk}/keys/new/", data)


def stored_sessions() -> str:
    """Every session row as stored and as decoded, in one string to search."""
    rows = [(s.session_data, s.get_decoded()) for s in Session.objects.all()]
    assert rows, "the browser has a database session"
    return json.dumps(rows, default=str)


def shown_key(page: str) -> str | None:
    match = re.search(r'id="raw-key">(agk_[^<]+)<', page)
    return match.group(1) if match else None


def test_issuing_a_key_puts_no_raw_key_in_the_database_session(operator, acme):
    response = new_key(operator, acme)
    key = ApiKey.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/console/keys/{key.pk}/issued/"
    assert not RAW_KEY.search(stored_sessions())  # between the redirect and the page: nothing raw stored
    raw = shown_key(operator.get(response["Location"]).content.decode())
    assert raw and hash_key(raw) == key.key_hash
    assert raw not in stored_sessions()


def test_rotating_a_key_puts_no_raw_key_in_the_database_session(operator, acme):
    old, _ = issue_key(acme, allowed_agents=["*"])
    response = operator.post(f"/console/keys/{old.pk}/rotate/", {"grace_hours": 2})
    successor = ApiKey.objects.exclude(pk=old.pk).get()
    assert response["Location"] == f"/console/keys/{successor.pk}/issued/"
    assert not RAW_KEY.search(stored_sessions())
    raw = shown_key(operator.get(response["Location"]).content.decode())
    assert raw and hash_key(raw) == successor.key_hash


def test_the_key_is_shown_once_and_a_reload_says_it_was_already_shown(operator, acme):
    location = new_key(operator, acme)["Location"]
    assert shown_key(operator.get(location).content.decode())
    again = operator.get(location)
    assert again.status_code == 200 and again["Cache-Control"] == "no-store"
    assert shown_key(again.content.decode()) is None and "already shown" in again.content.decode()


def test_another_users_browser_never_sees_the_key(operator, admin, acme):
    location = new_key(operator, acme)["Location"]
    assert shown_key(admin.get(location).content.decode()) is None
    assert shown_key(operator.get(location).content.decode())  # still there for the one who issued it


def test_a_key_not_viewed_within_the_hand_off_time_is_not_shown(operator, acme, settings):
    settings.GATEWAY_SECRET_HANDOFF_SECONDS = 300
    location = new_key(operator, acme)["Location"]
    with freeze_time(timedelta(seconds=301), tick=True):
        page = operator.get(location).content.decode()
    assert shown_key(page) is None and "already shown" in page


def test_the_hand_off_is_encrypted_one_time_and_bound_to_its_purpose(db):
    token = handoff.put("agk_secretvalue123", purpose="api-key:1")
    sealed = cache.get(handoff._cache_key(token))
    assert sealed and "agk_secretvalue123" not in sealed and token not in sealed
    assert cache.get(handoff.CACHE_PREFIX + token) is None  # kept under the token's hash, not the token
    assert handoff.take(token, purpose="api-key:2") is None  # another key's page: refused, and spent
    other = handoff.put("agk_secretvalue456", purpose="api-key:1")
    assert handoff.take(other, purpose="api-key:1") == "agk_secretvalue456"
    assert handoff.take(other, purpose="api-key:1") is None
    assert handoff.take("made-up-token", purpose="api-key:1") is None
