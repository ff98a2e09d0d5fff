"""The request context as the audit log keeps it: read back from a stored record it is the context the rules saw, so
a replay decides as the live stage did; and the tally of a replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from audit.models import AuditRecord
from gateway_project.rows import sanitise_row
from keys.policy import TOO_LONG, RequestContext, compile_rules
from keys.policy_replay import NotReplayable, Tally, audit_context, context_of_record
from tests.unit.test_policy import Row

PATH_COLUMN = AuditRecord._meta.get_field("path").max_length
TEXT = st.text(max_size=40)  # any text: controls, surrogates, non-ASCII
NAMES = st.lists(st.text(max_size=12), max_size=4)
MINUTES = st.integers(min_value=0, max_value=60 * 24 * 365 * 100).map(lambda m: datetime.fromtimestamp(m * 60, UTC))


def stored_record(context: RequestContext, created_at=None) -> dict:
    """The record the recorder would store for a request with ``context``: columns fitted (``sanitise_row``), the
    details through JSON, as the database gives them back."""
    details = {"context": audit_context(context, PATH_COLUMN)}
    row = sanitise_row(AuditRecord, {
        "request_id": "r1", "created_at": created_at or datetime.now(UTC), "method": context.request["method"],
        "path": context.request["path"] if isinstance(context.request["path"], str) else "x" * 2000,
        "status": 200, "client_ip": context.request["ip"] or None, "client_slug": context.client["slug"],
        "key_prefix": context.key["prefix"], "details": details,
    })  # fmt: skip
    row["details"] = json.loads(json.dumps(row["details"]))
    return row


@st.composite
def contexts(draw):
    key_roles = draw(NAMES)
    return RequestContext(
        {
            "agent": draw(st.sampled_from(["", "ledger", "code"])),
            "model": draw(st.one_of(TEXT, st.just(TOO_LONG))),
            "method": draw(st.sampled_from(["POST", "GET", "WS"])),
            "path": draw(st.one_of(st.text(alphabet="/abc%é\x01", max_size=1024), st.just(TOO_LONG))),
            "route": draw(st.sampled_from(["", "/search"])),
            "ip": draw(st.one_of(st.ip_addresses().map(str), st.sampled_from(["", "fe80::1%eth0", "not an ip"]))),
            "body_bytes": draw(st.integers(min_value=0, max_value=2**40)),
            "tokens": draw(st.integers(min_value=0, max_value=2**30)),
        },
        {"slug": draw(st.sampled_from(["", "acme"])), "tags": draw(NAMES), "cost_center": draw(TEXT)},
        {
            "prefix": draw(st.sampled_from(["", "agk_abcdefgh"])),
            "tags": draw(NAMES),
            "roles": key_roles,
            "plan": draw(TEXT),
        },
        {"subject": draw(TEXT), "roles": draw(st.one_of(st.just(key_roles), NAMES)), "groups": draw(NAMES)},
        draw(MINUTES),
    )


@settings(max_examples=400, deadline=None)
@given(contexts())
def test_a_stored_record_gives_back_the_context_the_rules_saw(context):
    assert context_of_record(stored_record(context)) == context


def test_a_plain_request_adds_only_what_its_columns_lack():
    context = RequestContext(
        {"agent": "ledger", "model": "gpt-4o", "method": "POST", "path": "/v1/chat/completions", "route": "",
         "ip": "10.1.2.3", "body_bytes": 120, "tokens": 30},
        {"slug": "acme", "tags": [], "cost_center": ""}, {"prefix": "agk_x", "tags": [], "roles": [], "plan": ""},
        {"subject": "", "roles": [], "groups": []}, datetime(2026, 1, 5, 9, 30, tzinfo=UTC),
    )  # fmt: skip
    assert audit_context(context, PATH_COLUMN) == {
        "agent": "ledger", "model": "gpt-4o", "body_bytes": 120, "tokens": 30, "minute": 29_460_090,
    }  # fmt: skip


@given(st.one_of(st.none(), st.integers(), st.text(), st.dictionaries(st.text(max_size=5), st.integers())))
def test_a_record_without_a_context_is_not_replayed(stored):
    record = {"method": "POST", "path": "/", "client_slug": "", "key_prefix": "", "details": {"context": stored}}
    try:
        context_of_record(record)
    except NotReplayable:
        return
    assert isinstance(stored, dict) and type(stored.get("minute")) is int


def traffic(client: str, agent: str, minute: int = 0) -> dict:
    when = datetime(2026, 1, 5, 9, 0, tzinfo=UTC) + timedelta(minutes=minute)
    context = RequestContext(
        {"agent": agent, "model": "", "method": "POST", "path": "/v1/agent/invoke", "route": "", "ip": "10.0.0.1",
         "body_bytes": 10, "tokens": 3},
        {"slug": client, "tags": [], "cost_center": ""}, {"prefix": "agk_x", "tags": [], "roles": [], "plan": ""},
        {"subject": "", "roles": [], "groups": []}, when,
    )  # fmt: skip
    return {**stored_record(context, when), "request_id": f"{client}-{agent}-{minute}"}


def test_the_tally_counts_what_the_drafts_newly_refuse_by_rule_client_and_agent_and_what_they_let_through():
    live = compile_rules([Row(1, "no code", "deny", "request.agent == 'code'")])
    draft = compile_rules([
        Row(2, "no ledger for beta", "deny", "client.slug == 'beta' && request.agent == 'ledger'"),
        Row(3, "watch alpha", "deny", "client.slug == 'alpha'", dry_run=True),
        Row(4, "odd", "deny", "client.slug == 'gamma' && int(request.agent) > 1"),
    ])  # fmt: skip
    tally = Tally()
    records = [traffic("alpha", "ledger"), traffic("beta", "ledger", 1), traffic("beta", "ledger", 2),
               traffic("beta", "code", 3), traffic("gamma", "ledger", 4),
               {"request_id": "old", "method": "GET", "path": "/", "client_slug": "", "key_prefix": "",
                "details": {}}]  # fmt: skip
    for record in records:
        tally.add(record, live, draft)
    result = tally.as_dict()
    assert (result["replayed"], result["without_context"]) == (5, 1)
    assert (result["denied_live"], result["denied_draft"]) == (1, 3)
    assert (result["newly_denied"], result["newly_allowed"], result["would_deny_draft"]) == (3, 1, 1)
    assert result["newly_by_rule"] == [["no ledger for beta", 2], ["odd", 1]]
    assert result["newly_by_client"] == [["beta", 2], ["gamma", 1]]
    assert result["newly_by_agent"] == [["ledger", 3]]
    assert result["failed"] == [["odd", 1]]
    assert [e["request_id"] for e in result["examples"]] == ["beta-ledger-1", "beta-ledger-2", "gamma-ledger-4"]


def test_a_long_tail_of_clients_is_summed():
    from keys.policy_replay import TOP

    draft = compile_rules([Row(1, "all", "deny", "true")])
    tally = Tally()
    for i in range(TOP + 7):
        tally.add(traffic(f"c{i:03d}", "ledger"), compile_rules([]), draft)
    by_client = tally.as_dict()["newly_by_client"]
    assert len(by_client) == TOP + 1 and by_client[-1] == ["(others)", 7]
