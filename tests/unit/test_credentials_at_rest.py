"""Stored secrets are Fernet tokens in the database, plaintext only in memory: never in fixtures, never searchable,
re-encrypted by ``rotate_credentials`` when a new key goes in front, and decrypted once per routing-table load."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from django.core.exceptions import FieldError
from django.core.management import CommandError, call_command
from django.db import connection

from audit.trail import mask, snapshot
from billing.models import Budget
from gateway_project import credentials
from gateway_project.credentials import Unreadable, decrypt, encrypt, is_current
from keys.models import Client
from routing.models import Agent, AgentJob, Target
from routing.table import load_table, route_of

SECRET = "sk-live-do-not-leak-7f3a9c"


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def raw_column(model, pk, column: str) -> str:
    """What the database itself holds, past the field that decrypts it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


@pytest.fixture
def agent(db):
    return Agent.objects.create(
        slug="vault", name="Vault", upstream_url="http://10.0.0.5:9000", upstream_api_key=SECRET
    )


def test_an_agents_credential_is_a_token_in_the_database_and_plaintext_in_python(agent):
    stored = raw_column(Agent, agent.pk, "upstream_api_key")
    assert SECRET not in stored and stored.startswith("gAAAA")  # a Fernet token
    assert decrypt(stored) == SECRET
    assert Agent.objects.get(pk=agent.pk).upstream_api_key == SECRET


def test_every_kind_of_stored_secret_is_encrypted(agent, db):
    target = Target.objects.create(agent=agent, name="t1", url="http://10.0.0.6:9000", upstream_api_key=SECRET + "-t")
    budget = Budget.objects.create(scope=Budget.ORGANIZATION, limit_usd=1, alert_webhook_url="https://h.example.com/")
    job = AgentJob.objects.create(
        request_id="r1", agent="vault", webhook_url="https://h.example.com/", webhook_secret="whsec_x"
    )
    for model, pk, column, plaintext in (
        (Target, target.pk, "upstream_api_key", SECRET + "-t"),
        (Budget, budget.pk, "alert_webhook_secret", budget.alert_webhook_secret),
        (AgentJob, job.pk.hex if connection.vendor == "sqlite" else job.pk, "webhook_secret", "whsec_x"),
    ):
        stored = raw_column(model, pk, column)
        assert plaintext and plaintext not in stored and decrypt(stored) == plaintext, model


def test_no_secret_is_empty_in_the_database_too(db):
    agent = Agent.objects.create(slug="open", name="Open", upstream_url="http://10.0.0.5:9000")
    assert raw_column(Agent, agent.pk, "upstream_api_key") == ""
    assert Agent.objects.filter(upstream_api_key="").filter(pk=agent.pk).exists()


def test_two_encryptions_of_one_secret_differ():
    assert encrypt(SECRET) != encrypt(SECRET)


def test_a_dumpdata_fixture_never_carries_a_secret_nor_its_token(agent):
    Target.objects.create(agent=agent, name="t1", url="http://10.0.0.6:9000", upstream_api_key=SECRET + "-t")
    budget = Budget.objects.create(scope=Budget.ORGANIZATION, limit_usd=1, alert_webhook_url="https://h.example.com/")
    token = raw_column(Agent, agent.pk, "upstream_api_key")
    for fmt in ("json", "xml", "jsonl"):
        out = io.StringIO()
        call_command("dumpdata", "routing", "billing", format=fmt, stdout=out)
        dumped = out.getvalue()
        assert SECRET not in dumped and token not in dumped, fmt
        assert budget.alert_webhook_secret not in dumped, fmt
    out = io.StringIO()
    call_command("dumpdata", "routing.agent", stdout=out)
    [row] = [r for r in json.loads(out.getvalue()) if r["pk"] == agent.pk]
    assert row["fields"]["upstream_api_key"] == "" and row["fields"]["upstream_url"] == "http://10.0.0.5:9000"


def test_a_secret_cannot_be_searched(agent):
    with pytest.raises(FieldError):
        list(Agent.objects.filter(upstream_api_key__icontains="sk-live"))
    with pytest.raises(FieldError):
        list(Agent.objects.filter(upstream_api_key__startswith="gAAAA"))


def test_the_trail_records_a_fingerprint_of_every_encrypted_field(db):
    budget = Budget.objects.create(scope=Budget.ORGANIZATION, limit_usd=1, alert_webhook_url="https://h.example.com/")
    recorded = snapshot(budget)
    assert recorded["alert_webhook_secret"] == mask(budget.alert_webhook_secret)
    assert budget.alert_webhook_secret not in json.dumps(recorded)


def test_a_token_no_key_opens_fails_loudly_and_says_why(agent, settings):
    settings.GATEWAY_CREDENTIAL_KEYS = [new_key()]
    with pytest.raises(Unreadable, match="GATEWAY_CREDENTIAL_KEYS"):
        Agent.objects.get(pk=agent.pk)


def test_rotation_re_encrypts_everything_with_the_new_key_and_the_old_one_can_go(agent, settings):
    old = list(settings.GATEWAY_CREDENTIAL_KEYS)
    Budget.objects.create(scope=Budget.ORGANIZATION, limit_usd=1, alert_webhook_url="https://h.example.com/")
    before = raw_column(Agent, agent.pk, "upstream_api_key")
    settings.GATEWAY_CREDENTIAL_KEYS = [new_key(), *old]
    assert not is_current(before)
    assert Agent.objects.get(pk=agent.pk).upstream_api_key == SECRET  # the old key still opens it

    with pytest.raises(CommandError, match="not under the newest key"):
        call_command("rotate_credentials", "--check", stdout=io.StringIO())
    out = io.StringIO()
    call_command("rotate_credentials", stdout=out)
    assert "Re-encrypted 2 stored secret(s)" in out.getvalue() and "routing.Agent 1" in out.getvalue()
    after = raw_column(Agent, agent.pk, "upstream_api_key")
    assert after != before and is_current(after)
    call_command("rotate_credentials", "--check", stdout=io.StringIO())  # nothing left to rotate

    settings.GATEWAY_CREDENTIAL_KEYS = settings.GATEWAY_CREDENTIAL_KEYS[:1]  # the old key dropped
    assert Agent.objects.get(pk=agent.pk).upstream_api_key == SECRET


def test_rotation_names_what_no_key_opens_without_showing_it(agent, settings):
    settings.GATEWAY_CREDENTIAL_KEYS = [new_key()]
    with pytest.raises(CommandError, match=rf"routing.Agent {agent.pk} upstream_api_key") as refused:
        call_command("rotate_credentials", stdout=io.StringIO())
    assert SECRET not in str(refused.value)


def test_a_new_key_is_one_the_ring_takes():
    out = io.StringIO()
    call_command("rotate_credentials", "--new-key", stdout=out)
    key = out.getvalue().strip()
    assert len(base64.urlsafe_b64decode(key)) == 32


def test_the_routing_table_holds_the_plaintext_and_decrypts_each_token_once(agent, monkeypatch, settings):
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    token = raw_column(Agent, agent.pk, "upstream_api_key").encode()
    assert route_of(agent).upstream_api_key == SECRET
    assert SECRET not in repr(route_of(agent))
    credentials._decrypt.cache_clear()
    opened = []
    real = credentials._ring

    class Counting:
        def __init__(self, ring):
            self.ring = ring

        def decrypt(self, token):
            opened.append(token)
            return self.ring.decrypt(token)

    monkeypatch.setattr(credentials, "_ring", lambda keys: Counting(real(keys)))
    for _ in range(3):
        table = load_table()
    assert table.agents["vault"].upstream_api_key == SECRET
    assert opened.count(token) == 1  # the table reloads every couple of seconds: opened once, then remembered


def test_a_client_row_has_no_encrypted_field_to_leak(db):
    assert credentials.secret_field_names(Client) == frozenset()
    assert credentials.secret_field_names(Agent) == {"upstream_api_key"}
