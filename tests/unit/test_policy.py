"""The policy engine alone: conditions checked on save, rules decided in order, decisions remembered faithfully."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys.policy import (
    SAMPLES,
    ConditionError,
    RequestContext,
    check_condition,
    compile_condition,
    compile_rules,
    hour,
    ip_in,
    weekday,
)

NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)  # a Monday


@dataclass
class Row:
    pk: int
    name: str
    effect: str
    condition: str
    final: bool = False
    dry_run: bool = False
    message: str = ""


def context(agent="ledger", ip="192.0.2.7", tags=(), roles=(), body_bytes=100, now=NOW, slug="acme", **request):
    return RequestContext(
        {"agent": agent, "model": "", "method": "POST", "path": "/v1/agent/invoke", "route": "", "ip": ip,
         "body_bytes": body_bytes, "tokens": body_bytes // 4, **request},
        {"slug": slug, "tags": list(tags), "cost_center": ""},
        {"prefix": "agk_abcdefgh", "tags": [], "roles": list(roles), "plan": ""},
        {"subject": "", "roles": list(roles), "groups": []},
        now,
    )  # fmt: skip


# --- conditions checked on save ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "condition",
    [
        "!ip_in(request.ip, ['10.0.0.0/8'])",
        "request.agent == 'ledger' && !('finance' in client.tags)",
        "request.agent == 'code' && (hour(now, 'Europe/Berlin') < 7 || hour(now, 'Europe/Berlin') >= 20)",
        "request.route == '/search' && request.body_bytes > 100000",
        "weekday(now, 'UTC') == 0 || 'admin' in identity.roles",
        "request.path.startsWith('/agents/') && size(key.tags) == 0",
        "client['slug'] == 'acme'",
    ],
)
def test_the_readme_examples_and_their_kind_pass_the_check(condition):
    check_condition(condition)


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        ("", "Write a condition"),
        ("request.agent ==", "Line 1, column 17"),
        ("(request.agent == 'x'", "Line 1, column"),
        ("request.nope == 'x'", "request has no field 'nope'"),
        ("user.name == 'x'", "Unknown name user"),
        ("lookup(request.agent)", "Unknown function lookup"),
        ("request.ip + 1 == 2", "It fails on a request"),
        ("request.agent", "true or false"),
        ("ip_in(request.ip, ['10.0.0.0/33'])", "10.0.0.0/33"),
        ("ip_in(request.ip, '10.0.0.0/8')", "list of networks"),
        ("hour(now, 'Mars/Base') > 3", "Mars/Base"),
    ],
)
def test_a_bad_condition_is_refused_saying_what_and_where(condition, says):
    with pytest.raises(ConditionError) as refused:
        check_condition(condition)
    assert says in str(refused.value)


@given(st.text(alphabet="abcxyz._'\" ", max_size=30))
def test_words_inside_string_literals_are_not_read_as_fields(text):
    literal = "'" + text.replace("\\", "").replace("'", "") + "'"
    _, reads = compile_condition(f"request.agent == {literal}")
    assert reads == {("request", "agent")}


# --- the functions ---------------------------------------------------------------------------------------------


@given(st.ip_addresses(), st.lists(st.ip_addresses().map(lambda a: f"{a}/{a.max_prefixlen // 2}"), max_size=4))
def test_ip_in_agrees_with_the_standard_library(address, networks):
    expected = any(
        address.version == net.version and address in net
        for net in (ipaddress.ip_network(n, strict=False) for n in networks)
    )
    assert ip_in(str(address), networks) is expected


def test_ip_in_finds_no_network_for_what_is_no_address():
    assert ip_in("", ["0.0.0.0/0"]) is False
    assert ip_in("not-an-ip", ["0.0.0.0/0", "::/0"]) is False


def test_hour_and_weekday_are_those_of_the_zone():
    late = datetime(2026, 1, 4, 23, 30, tzinfo=UTC)  # Sunday 23:30 UTC is Monday 00:30 in Berlin
    assert (hour(late, "UTC"), weekday(late, "UTC")) == (23, 0)
    assert (hour(late, "Europe/Berlin"), weekday(late, "Europe/Berlin")) == (0, 1)


# --- deciding ----------------------------------------------------------------------------------------------------

RULES = [
    Row(1, "office", "allow", "ip_in(request.ip, ['10.0.0.0/8'])", final=True),
    Row(2, "watch ledger", "deny", "request.agent == 'ledger'", dry_run=True),
    Row(3, "finance only", "deny", "request.agent == 'ledger' && !('finance' in client.tags)"),
    Row(4, "office hours", "deny", "request.agent == 'code' && (hour(now, 'Europe/Berlin') < 7 || "
        "hour(now, 'Europe/Berlin') >= 20)"),
    Row(5, "size cap", "deny", "request.body_bytes > 100000"),
]  # fmt: skip


def test_the_first_enforced_deny_refuses_and_dry_runs_are_noted():
    decision = compile_rules(RULES).decide(context(agent="ledger"))
    assert decision.denied_by.name == "finance only"
    assert decision.notes == {"denied_by": "finance only", "would_deny": ["watch ledger"]}


def test_a_final_allow_stops_later_denies():
    decision = compile_rules(RULES).decide(context(agent="ledger", ip="10.9.8.7", body_bytes=10**6))
    assert decision.denied_by is None
    assert decision.notes == {"allowed_by": "office"}


def test_no_match_allows_and_a_time_rule_reads_the_zone():
    rules = compile_rules(RULES)
    assert rules.decide(context(agent="ledger", tags=["finance"])).denied_by is None
    evening = datetime(2026, 1, 5, 19, 30, tzinfo=UTC)  # 20:30 in Berlin
    assert rules.decide(context(agent="code", now=evening)).denied_by.name == "office hours"
    assert rules.decide(context(agent="code", now=NOW)).denied_by is None


def test_a_condition_that_fails_on_a_request_denies_as_a_deny_and_never_allows_as_an_allow():
    rules = compile_rules([
        Row(1, "broken allow", "allow", "int(request.model) > 3", final=True),
        Row(2, "broken deny", "deny", "int(request.model) > 3"),
    ])  # fmt: skip
    decision = rules.decide(context(model="not-a-number"))
    assert decision.denied_by.name == "broken deny"
    assert decision.failed == ("broken allow", "broken deny")


def test_a_rule_that_no_longer_compiles_denies():
    decision = compile_rules([Row(1, "stale", "deny", "request.agent ==")]).decide(context())
    assert (decision.denied_by.name, decision.failed) == ("stale", ("stale",))


AGENTS = st.sampled_from(["ledger", "code", "research", ""])
IPS = st.sampled_from(["10.1.2.3", "192.0.2.7", "", "::1", "nonsense"])
TAGS = st.lists(st.sampled_from(["finance", "ops", "internal"]), max_size=3)
SIZES = st.integers(min_value=0, max_value=2 * 10**5)
HOURS = st.integers(min_value=0, max_value=23).map(lambda h: NOW.replace(hour=h))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(AGENTS, IPS, TAGS, SIZES, HOURS), min_size=1, max_size=30), st.data())
def test_a_remembered_decision_is_the_one_evaluating_afresh_gives(requests, data):
    rules = compile_rules(RULES)
    for agent, ip, tags, size, now in requests:
        ctx = context(agent=agent, ip=ip, tags=tags, body_bytes=size, now=now)
        remembered = rules.decide(ctx)
        fresh = compile_rules(RULES).decide(ctx)
        assert remembered.notes == fresh.notes


@given(st.lists(st.tuples(AGENTS, IPS, TAGS, SIZES, HOURS), min_size=1, max_size=10))
def test_rules_in_dry_run_never_refuse(requests):
    dry = [Row(r.pk, r.name, r.effect, r.condition, r.final, True) for r in RULES]
    rules = compile_rules(dry)
    for agent, ip, tags, size, now in requests:
        assert rules.decide(context(agent=agent, ip=ip, tags=tags, body_bytes=size, now=now)).denied_by is None


@given(st.text(), st.text(), st.integers(min_value=-(2**70), max_value=2**70))
def test_any_value_a_request_brings_is_decided_and_what_cannot_be_read_fails_closed(model, path, size):
    rules = compile_rules([
        Row(1, "model allow", "allow", "request.model == 'never'", final=True),
        Row(2, "model deny", "deny", "request.model.startsWith('blocked') || request.path == 'x'"),
        Row(3, "size", "deny", "request.body_bytes > 10"),
    ])  # fmt: skip
    decision = rules.decide(context(model=model, path=path, body_bytes=size))
    if any(0xD800 <= ord(c) <= 0xDFFF for c in model + path):  # no UTF-8 string holds these: the library refuses
        assert decision.denied_by.name == "model deny"
        assert {"model allow", "model deny"} <= set(decision.failed)
    elif decision.denied_by is None:
        assert size <= 10 and not model.startswith("blocked") and path != "x"


def test_the_tester_reports_a_value_it_cannot_read_as_a_failure():
    from keys.policy import explain

    rules = compile_rules([Row(1, "model deny", "deny", "request.model == 'x'")])
    decision, outcomes = explain(rules, context(model="\ud800"))
    assert decision.denied_by.name == "model deny"
    assert outcomes[0].outcome.startswith("failed: ")


def test_the_samples_the_check_runs_on_hold_every_field():
    from keys.policy import CONTEXT_FIELDS

    for sample in SAMPLES:
        for variable, fields in CONTEXT_FIELDS.items():
            assert set(sample[variable]) == set(fields)


def test_rules_reading_a_variable_whole_and_by_field_decide_together():
    rules = compile_rules([
        Row(1, "whole", "deny", "client['slug'] == 'evil'"),
        Row(2, "field", "deny", "client.slug == 'bad'"),
    ])  # fmt: skip
    ctx = context()
    assert rules.decide(ctx).denied_by is None
    assert rules.decide(ctx._replace(client={**ctx.client, "slug": "evil"})).denied_by.name == "whole"
    assert rules.decide(ctx._replace(client={**ctx.client, "slug": "bad"})).denied_by.name == "field"


@pytest.mark.parametrize(
    ("condition", "reads"),
    [
        ("// don't call research\nrequest.agent == 'research'", {("request", "agent")}),
        ("request.agent == r'\\' || request.model == 'x'", {("request", "agent"), ("request", "model")}),
        ("request.agent == \"it's\" || request.model == '''a'b'''", {("request", "agent"), ("request", "model")}),
        ("client.tags.exists(t, t == 'finance')", {("client", "tags")}),
    ],
)
def test_comments_raw_strings_and_comprehensions_are_read_as_cel_reads_them(condition, reads):
    check_condition(condition)
    assert compile_condition(condition)[1] == reads


def test_a_comment_does_not_hide_what_a_rule_reads():
    rules = compile_rules([Row(1, "research", "deny", "// don't\nrequest.agent == 'research'")])
    assert rules.decide(context(agent="writing")).notes == {}
    assert rules.decide(context(agent="research")).denied_by.name == "research"


def test_a_condition_giving_something_else_than_true_or_false_on_a_request_fails_closed():
    condition = "request.model == 'x' ? 1 == 1 : (request.model == 'evil' ? dyn('s') : false)"
    check_condition(condition)  # true or false on the samples
    rules = compile_rules([Row(1, "odd", "deny", condition)])
    decision = rules.decide(context(model="evil"))
    assert (decision.denied_by.name, decision.failed) == ("odd", ("odd",))


# --- differential: the remembered, grouped decision against every rule evaluated on the whole context --------------

ATOMS = [
    "request.agent == 'ledger'", "client['slug'] == 'evil'", "client.slug == 'bad'", "'finance' in client.tags",
    "request.body_bytes > 1000", "ip_in(request.ip, ['10.0.0.0/8'])", "request.model.startsWith('gpt')",
    "key.roles.exists(r, r == 'ops')", "hour(now, 'Europe/Berlin') < 12", "size(key.tags) > 0",
    "int(request.model) > 3", "request.path.matches('^/v1/')", "// a note\nrequest.agent == 'code'",
    "request.agent == r'\\\\' || request.method == 'POST'", "has(request.model)", "identity.roles.size() == 0",
    "request.model == 'odd' ? dyn('s') : false",
]  # fmt: skip
CONDITIONS = st.recursive(
    st.sampled_from(ATOMS),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" && ", " || "]), inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        inner.map(lambda c: f"!({c})"),
    ),
    max_leaves=3,
)
RULES_DRAWN = st.lists(
    st.tuples(CONDITIONS, st.sampled_from(["deny", "allow"]), st.booleans(), st.booleans()), min_size=1, max_size=6
)
CONTEXTS = st.builds(
    context,
    agent=st.sampled_from(["ledger", "code", "x"]),
    ip=st.sampled_from(["10.1.1.1", "192.0.2.1", "", "bad"]),
    tags=st.lists(st.sampled_from(["finance", "ops"]), max_size=2, unique=True),
    roles=st.lists(st.sampled_from(["finance", "ops"]), max_size=2, unique=True),
    body_bytes=st.sampled_from([5, 3000]),
    now=HOURS,
    model=st.sampled_from(["gpt-4o", "5", "odd", ""]),
    slug=st.sampled_from(["acme", "evil", "bad"]),
)


def reference(rows, ctx) -> dict:
    """Every rule on the whole context, in order, by the documented semantics."""
    import cel

    from keys.policy import FUNCTIONS

    variables = {"request": ctx.request, "client": ctx.client, "key": ctx.key, "identity": ctx.identity, "now": ctx.now}
    whole = cel.Context(variables=variables, functions=FUNCTIONS)
    notes, would, failed = {}, [], []
    for row in rows:
        try:
            result = cel.compile(row.condition).execute(whole)
        except Exception:
            result = None
        if type(result) is not bool:
            failed.append(row.name)
            result = row.effect == "deny"
        if not result:
            continue
        if row.dry_run:
            would += [row.name] if row.effect == "deny" else []
        elif row.effect == "deny":
            notes["denied_by"] = row.name
            break
        elif row.final:
            notes["allowed_by"] = row.name
            break
    return {**notes, **({"would_deny": would} if would else {}), **({"failed": failed} if failed else {})}


@settings(max_examples=150, deadline=None)
@given(RULES_DRAWN, st.lists(CONTEXTS, min_size=1, max_size=8))
def test_decisions_equal_every_rule_evaluated_on_the_whole_context(drawn, contexts):
    rows = [
        Row(i, f"r{i}", effect, condition, final=final and effect == "allow", dry_run=dry)
        for i, (condition, effect, final, dry) in enumerate(drawn)
    ]
    rules = compile_rules(rows)
    for ctx in contexts:
        assert rules.decide(ctx).notes == reference(rows, ctx)
