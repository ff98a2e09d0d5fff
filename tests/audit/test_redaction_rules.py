"""Audit-preview redaction is configurable: rules switch on and off, custom rules are added, previews shrink or stop."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.models import AdminAction, RedactionRule
from audit.recorder import record_request
from audit.redaction import BUILTIN_RULES, DEFAULT_RULES, compile_rules, preview, redact
from audit.redaction_rules import active_rules, load_rules, redaction_rules
from gateway_project.env import envint
from keys.access import snapshot_for
from tests.conftest import wait_for

CHAT = "/v1/chat/completions"
PERSONAL = "Mail jane@example.org or call +1 415-555-0132; SSN 123-45-6789; card 4111-1111-1111-1111."
REDACTED = "Mail [EMAIL] or call [PHONE]; SSN [SSN]; card [CARD]."


@pytest.fixture
def unwritten(monkeypatch):
    """Records the recorder makes in this process stay here: no writer flushes them at exit."""
    monkeypatch.setattr("audit.recorder.writer.add", lambda model, row: None)


def builtin(name_start: str) -> RedactionRule:
    return RedactionRule.objects.get(builtin=True, name__startswith=name_start)


def custom_rule(**fields) -> RedactionRule:
    values = {"name": f"Ticket ids {uuid.uuid4().hex[:6]}", "pattern": r"TICKET-\d+", "replacement": "[TICKET]"}
    return RedactionRule.objects.create(**{**values, **fields})


# --- the rules ------------------------------------------------------------------------------------


def test_the_migration_made_the_builtin_rules_the_code_falls_back_to(db):
    rows = RedactionRule.objects.filter(builtin=True).order_by("order")
    assert [(r.name, r.pattern, r.replacement, r.code_check, r.enabled) for r in rows] == [
        (r.name, r.pattern, r.replacement, r.code_check, r.enabled) for r in BUILTIN_RULES
    ]
    assert not builtin("IP").enabled  # IP addresses are kept unless an admin switches the rule on
    assert redact(PERSONAL, load_rules()) == redact(PERSONAL, DEFAULT_RULES) == REDACTED


def test_the_builtin_rules_loaded_from_the_table_redact_what_they_always_did(db):
    rules = load_rules()
    assert redact("card 4111 1111 1111 1111", rules) == "card [CARD]"
    assert redact("order 1234567890123 shipped", rules) == "order 1234567890123 shipped"  # fails Luhn
    assert redact("version 1.2.3 at 10:30", rules) == "version 1.2.3 at 10:30"
    secrets = (
        "use agk_abcdefghijklmnopqrstuvwxyz012345 or sk-ant-api03abcdefghijklmnop or Bearer eyJhbGciOiJIUzI1NiJ9.x"
    )
    assert redact(secrets, rules) == "use [SECRET] or [SECRET] or [SECRET]"


def test_switching_a_rule_off_and_on_changes_previews(db):
    rule = builtin("E-mail")
    RedactionRule.objects.filter(pk=rule.pk).update(enabled=False)
    assert "jane@example.org" in preview(PERSONAL, load_rules())
    RedactionRule.objects.filter(pk=rule.pk).update(enabled=True)
    assert "jane@example.org" not in preview(PERSONAL, load_rules())


def test_the_ip_rule_redacts_only_real_addresses_when_switched_on(db):
    RedactionRule.objects.filter(pk=builtin("IP").pk).update(enabled=True)
    rules = load_rules()
    assert redact("from 10.0.0.12 and 2001:db8::1.", rules) == "from [IP] and [IP]."
    assert redact("at 10:30:00, version 1.2.3, 999.1.1.1", rules) == "at 10:30:00, version 1.2.3, 999.1.1.1"


def test_a_custom_rule_redacts_its_pattern_in_order(db):
    custom_rule(order=5)
    assert preview("see TICKET-4242 from jane@example.org", load_rules()) == "see [TICKET] from [EMAIL]"


def test_a_rule_that_no_longer_compiles_is_skipped_not_fatal(db):
    RedactionRule.objects.create(name="Broken", pattern="(unclosed", replacement="[X]")  # create() skips validators
    assert redact(PERSONAL, load_rules()) == REDACTED


def test_the_recorder_uses_the_defaults_until_the_table_is_loaded(db, unwritten):
    redaction_rules.expire()
    assert active_rules() == DEFAULT_RULES
    record = record_request(request_id=uuid.uuid4().hex, method="POST", path=CHAT, status=200, input_text=PERSONAL)
    assert record["input_preview"] == REDACTED


# --- preview length and per-client switch ---------------------------------------------------------


def test_the_preview_length_setting_cuts_previews_and_zero_keeps_none(db, settings, unwritten):
    settings.GATEWAY = {**settings.GATEWAY, "PREVIEW_LENGTH": 12}
    assert preview(PERSONAL) == REDACTED[:12]
    record = record_request(request_id=uuid.uuid4().hex, method="POST", path=CHAT, status=200,
                            input_text=PERSONAL, output_text="hello there, world")  # fmt: skip
    assert (record["input_preview"], record["output_preview"]) == (REDACTED[:12], "hello there,")
    settings.GATEWAY = {**settings.GATEWAY, "PREVIEW_LENGTH": 0}
    record = record_request(request_id=uuid.uuid4().hex, method="POST", path=CHAT, status=200,
                            input_text=PERSONAL, output_text="hello")  # fmt: skip
    assert (record["input_preview"], record["output_preview"]) == ("", "")


def test_the_preview_length_may_not_exceed_the_column(monkeypatch):
    monkeypatch.setenv("GATEWAY_PREVIEW_LENGTH", "201")
    with pytest.raises(ImproperlyConfigured, match="at most 200"):
        envint("GATEWAY_PREVIEW_LENGTH", 200, minimum=0, maximum=200)
    monkeypatch.setenv("GATEWAY_PREVIEW_LENGTH", "0")
    assert envint("GATEWAY_PREVIEW_LENGTH", 200, minimum=0, maximum=200) == 0


def test_the_key_snapshot_carries_the_clients_preview_switch(db):
    from keys.models import Client
    from keys.services import issue_key

    client = Client.objects.create(name="Quiet", slug=f"quiet-{uuid.uuid4().hex[:6]}", audit_previews=False)
    key, _ = issue_key(client)
    assert snapshot_for(key).audit_previews is False


# --- live gateway ---------------------------------------------------------------------------------


def test_a_client_with_previews_off_gets_empty_previews_through_the_gateway(gateway, make_key, audit_of):
    raw_on, _ = make_key()
    raw_off, key_off = make_key()
    key_off.client.audit_previews = False
    key_off.client.save()  # the signal drops the key's cached snapshot
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PERSONAL}]}
    with gateway.client(raw_on) as http:
        kept = audit_of(http.post(CHAT, json=body))
    with gateway.client(raw_off) as http:
        response = http.post(CHAT, json=body)
    assert response.status_code == 200
    dropped = audit_of(response)
    assert kept.input_preview.startswith("Mail [EMAIL]") and kept.output_preview
    assert (dropped.input_preview, dropped.output_preview) == ("", "")


def test_a_new_rule_reaches_the_gateway_within_the_refresh_interval(gateway, make_key, audit_of):
    raw, _ = make_key()
    marker = f"OTTER-{uuid.uuid4().hex[:8]}"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"about {marker} please"}]}
    with gateway.client(raw) as http:
        assert marker in audit_of(http.post(CHAT, json=body)).input_preview  # loads the table, starts its refresh
        rule = custom_rule(pattern=marker, replacement="[OTTER]")
        try:

            def redacted():
                record = audit_of(http.post(CHAT, json=body))
                return record is not None and "[OTTER]" in record.input_preview

            assert wait_for(redacted, seconds=5, interval=0.1)
        finally:
            rule.delete()


# --- console --------------------------------------------------------------------------------------


def test_every_role_reads_the_rules_page_and_only_admins_see_the_controls(console_as):
    for role in ("admin", "operator", "compliance"):
        page = console_as(role).get("/console/audit/redaction/")
        assert page.status_code == 200 and b"Payment card numbers" in page.content
        assert (b"Switch off" in page.content) is (role == "admin")
    assert console_as(None).get("/console/audit/redaction/").status_code == 403
    assert b"/console/audit/redaction/" in console_as("compliance").get("/console/audit/").content


def test_only_an_admin_may_change_rules_in_the_console(console_as):
    rule = builtin("E-mail")
    for role in ("operator", "compliance"):
        browser = console_as(role)
        assert browser.post(f"/console/audit/redaction/{rule.pk}/toggle/", {"enabled": "0"}).status_code == 403
        assert browser.get("/console/audit/redaction/new/").status_code == 403
        assert browser.post("/console/audit/redaction/new/", {"name": "x", "pattern": "x", "replacement": "[X]",
                                                              "order": 1}).status_code == 403  # fmt: skip
    rule.refresh_from_db()
    assert rule.enabled and not RedactionRule.objects.filter(name="x").exists()


def test_an_admin_switches_a_builtin_rule_off_and_the_trail_says_so(console_as):
    rule = builtin("Phone")
    response = console_as("admin").post(f"/console/audit/redaction/{rule.pk}/toggle/", {"enabled": "0"})
    assert response.status_code == 302
    rule.refresh_from_db()
    assert not rule.enabled
    action = AdminAction.objects.get(object_type="audit.redactionrule", object_id=str(rule.pk))
    assert (action.via, action.action, action.changes["enabled"]) == ("console", "update", [True, False])


def test_an_admin_adds_edits_and_deletes_a_custom_rule(console_as):
    admin = console_as("admin")
    form = {"name": "Account numbers", "pattern": r"ACC\d{6}", "replacement": "[ACCOUNT]", "enabled": "on", "order": 70}
    assert admin.post("/console/audit/redaction/new/", form).status_code == 302
    rule = RedactionRule.objects.get(name="Account numbers")
    assert not rule.builtin and redact("pay ACC123456", load_rules()) == "pay [ACCOUNT]"
    assert admin.post(f"/console/audit/redaction/{rule.pk}/", {**form, "pattern": r"ACC\d{8}"}).status_code == 302
    assert admin.post(f"/console/audit/redaction/{rule.pk}/delete/").status_code == 302
    assert not RedactionRule.objects.filter(pk=rule.pk).exists()
    trail = AdminAction.objects.filter(object_type="audit.redactionrule", object_id=str(rule.pk))
    assert sorted(trail.values_list("action", flat=True)) == ["create", "delete", "update"]
    assert trail.get(action="update").changes["pattern"] == [r"ACC\d{6}", r"ACC\d{8}"]


def test_test_this_rule_shows_the_redacted_sample_and_saves_nothing(console_as):
    form = {"name": "Accounts", "pattern": r"ACC\d{6}", "replacement": "[ACCOUNT]", "order": 70,
            "sample": "pay ACC123456 now", "test": "1"}  # fmt: skip
    page = console_as("admin").post("/console/audit/redaction/new/", form)
    assert page.status_code == 200 and b"pay [ACCOUNT] now" in page.content
    assert not RedactionRule.objects.filter(name="Accounts").exists()
    assert not AdminAction.objects.filter(object_type="audit.redactionrule").exists()


@pytest.mark.parametrize(
    "pattern, message",
    [("(unclosed", "Not a valid regular expression"), ("", "This field is required"), ("x*", "matches empty text"),
     (r"\b", "matches empty text"), ("a" * 501, "at most 500")],
)  # fmt: skip
def test_a_bad_pattern_is_refused_in_the_console(console_as, pattern, message):
    form = {"name": "Bad", "pattern": pattern, "replacement": "[BAD]", "order": 1}
    page = console_as("admin").post("/console/audit/redaction/new/", form)
    assert page.status_code == 400 and message in page.content.decode()
    assert not RedactionRule.objects.filter(name="Bad").exists()


def test_a_builtin_rule_keeps_its_pattern_and_cannot_be_deleted_in_the_console(console_as):
    admin, rule = console_as("admin"), builtin("Payment")
    form = {"name": "Cards", "pattern": "4111", "replacement": "[X]", "order": 1}  # enabled left out: off
    assert admin.post(f"/console/audit/redaction/{rule.pk}/", form).status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.pattern, rule.replacement, rule.enabled) == (
        "Payment card numbers",
        BUILTIN_RULES[4].pattern,
        "[CARD]",
        False,
    )
    page = admin.post(f"/console/audit/redaction/{rule.pk}/delete/")
    assert page.status_code == 400 and b"cannot be deleted" in page.content
    assert RedactionRule.objects.filter(pk=rule.pk).exists()


def test_the_client_form_switches_previews_off(console_as):
    from keys.models import Client

    client = Client.objects.create(name="Acme", slug=f"acme-{uuid.uuid4().hex[:6]}")
    admin = console_as("admin")
    assert b'name="audit_previews"' in admin.get(f"/console/clients/{client.pk}/edit/").content
    response = admin.post(f"/console/clients/{client.pk}/edit/", {"name": "Acme", "slug": client.slug,
                                                              "is_active": "on"})  # fmt: skip
    assert response.status_code == 302
    client.refresh_from_db()
    assert client.audit_previews is False


# --- API ------------------------------------------------------------------------------------------

RULES = "/api/v1/redaction-rules/"


def test_every_role_reads_the_rules_and_only_admins_write(api_as):
    for role in ("operator", "compliance"):
        api = api_as(role)
        assert api.get(RULES).status_code == 200
        assert api.post(RULES, {"name": "N", "pattern": "N1", "replacement": "[N]"}).status_code == 403
        assert api.patch(f"{RULES}{builtin('E-mail').pk}/", {"enabled": False}).status_code == 403
    assert api_as(None).get(RULES).status_code == 403
    names = [row["name"] for row in api_as("compliance").get(RULES).json()["results"]]
    assert names[:2] == ["API keys and bearer tokens", "E-mail addresses"]


def test_an_admin_manages_custom_rules_through_the_api_with_a_trail(api_as):
    api = api_as("admin")
    created = api.post(RULES, {"name": "Orders", "pattern": r"ORD-\d+", "replacement": "[ORDER]"}, format="json")
    assert created.status_code == 201 and created.json()["builtin"] is False
    pk = created.json()["id"]
    assert api.patch(f"{RULES}{pk}/", {"pattern": r"ORD-\d{4}"}, format="json").status_code == 200
    assert api.delete(f"{RULES}{pk}/").status_code == 204
    trail = AdminAction.objects.filter(object_type="audit.redactionrule", object_id=str(pk), via="api")
    assert sorted(trail.values_list("action", flat=True)) == ["create", "delete", "update"]


@pytest.mark.parametrize("pattern", ["(unclosed", "", "   ", "x?", "a" * 501])
def test_a_bad_pattern_is_a_400_through_the_api_and_nothing_is_saved(api_as, pattern):
    response = api_as("admin").post(RULES, {"name": "Bad", "pattern": pattern, "replacement": "[B]"}, format="json")
    assert response.status_code == 400 and "pattern" in response.json()
    assert not RedactionRule.objects.filter(name="Bad").exists()
    assert not AdminAction.objects.filter(object_type="audit.redactionrule").exists()


def test_a_builtin_rule_is_only_switched_through_the_api(api_as):
    api, rule = api_as("admin"), builtin("US social")
    refused = api.patch(f"{RULES}{rule.pk}/", {"pattern": r"\d+"}, format="json")
    assert refused.status_code == 400 and "pattern" in refused.json()
    assert api.delete(f"{RULES}{rule.pk}/").status_code == 400
    assert api.patch(f"{RULES}{rule.pk}/", {"enabled": False}, format="json").status_code == 200
    rule.refresh_from_db()
    assert (rule.pattern, rule.enabled) == (BUILTIN_RULES[2].pattern, False)
    assert list(AdminAction.objects.filter(object_id=str(rule.pk), object_type="audit.redactionrule")
                .values_list("action", flat=True)) == ["update"]  # fmt: skip


def test_the_clients_api_exposes_the_preview_switch(api_as):
    api = api_as("admin")
    created = api.post("/api/v1/clients/", {"name": "Quiet", "slug": f"quiet-{uuid.uuid4().hex[:6]}"}, format="json")
    assert created.status_code == 201 and created.json()["audit_previews"] is True
    pk = created.json()["id"]
    assert (
        api.patch(f"/api/v1/clients/{pk}/", {"audit_previews": False}, format="json").json()["audit_previews"] is False
    )


def test_compiled_builtins_match_the_defaults():
    assert compile_rules(r for r in BUILTIN_RULES if r.enabled) == DEFAULT_RULES


# Text made of what the built-in rules look for: digits and their separators, "@", colons and hex, key prefixes.
_PIECES = st.sampled_from(
    ["0", "1", "4", "9", "12", "123", "4111", "-", " ", ".", ":", "::", "(", ")", "+", "@", "a", "F", "x", "é",
     "agk_", "sk-", "sk-ant-", "Bearer ", "BEARER\t", "example.org", "_", "\n"]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(text=st.lists(_PIECES, max_size=40).map("".join) | st.text(max_size=80))
def test_a_built_in_rule_s_quick_test_never_skips_text_its_pattern_would_change(text):
    """``CompiledRule.needs`` only lets a rule skip text its pattern cannot match: with and without it, the same."""
    for rule in compile_rules(BUILTIN_RULES):
        assert rule.needs is not None, rule.name
        assert rule.apply(text) == dataclasses.replace(rule, needs=None).apply(text), (rule.name, text)
