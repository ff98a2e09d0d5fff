"""The row builders: for any facts of a request, the audit and usage rows they build are stored by the real database."""

from __future__ import annotations

import ipaddress
import math
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.chain import chain_rows, verify
from audit.models import AuditRecord, QuarantinedRow
from audit.quarantine import keep_refused_row
from audit.rows import audit_row
from billing.models import UsageRecord
from billing.rows import usage_row
from gateway_project.rows import clamp_decimal, clamp_int, clean_json, clean_text, storable, valid_ip
from gateway_project.writer import BufferedWriter

SAVED = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

any_text = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from(["a", "\x00", "\ud800", "\udfff", "\x1b", "\t", "\n", "\x7f", "\x85", "é"])),
    st.text(min_size=490, max_size=700),
)
any_int = st.one_of(
    st.integers(),
    st.sampled_from([3_000_000_000, 2**31, -1, -(2**63), 2**64, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
)
any_ip = st.one_of(
    st.none(),
    st.ip_addresses().map(str),
    st.sampled_from(["not-an-ip", "fe80::1%eth0", "1.2.3.4\x00", "::ffff:10.0.0.1", "999.1.1.1", ""]),
    st.text(max_size=60),
)
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), any_text),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(any_text, children, max_size=4)),
    max_leaves=20,
)
any_cost = st.one_of(st.decimals(allow_nan=True, allow_infinity=True), st.floats(), st.integers())


@pytest.fixture
def writer(live_db):
    """A writer of its own, set up as the audit app sets up the gateway's."""
    writer = BufferedWriter()
    writer.set_preparer(AuditRecord, chain_rows)
    writer.set_quarantine(keep_refused_row)
    return writer


@SAVED
@given(text=any_text, ip=any_ip, tokens=any_int, status=any_int, cost=any_cost, latency=st.floats(), details=json_value)
def test_any_audit_row_the_builder_makes_is_saved(writer, text, ip, tokens, status, cost, latency, details):
    request_id = uuid.uuid4().hex
    row = audit_row(
        request_id=request_id,
        method=text,
        path=text,
        status=status,
        error_type=text,
        latency_ms=latency,
        client_slug=text,
        key_prefix=text,
        agent=text,
        target=text,
        model=text,
        input_tokens=tokens,
        output_tokens=tokens,
        cost_usd=cost,
        client_ip=ip,
        user_agent=text,
        input_text=text,
        output_text=text,
        details={"facts": details, text: text},
    )
    writer.add(AuditRecord, row)
    quarantined = writer.quarantined_total
    writer.flush_sync()
    assert writer.quarantined_total == quarantined
    saved = AuditRecord.objects.get(request_id=request_id)
    assert "\x00" not in saved.path and len(saved.path) <= 500
    assert 0 <= saved.input_tokens <= 2_147_483_647 and 0 <= saved.status <= 32767


@SAVED
@given(request_id=any_text, agent=any_text, tokens=any_int, nanos=any_int, client_id=any_int)
def test_any_usage_row_the_builder_makes_is_saved(writer, request_id, agent, tokens, nanos, client_id):
    marker = uuid.uuid4().hex
    row = usage_row(
        request_id=request_id,
        client_id=client_id,
        key_id=None,
        agent=agent,
        model=marker,
        input_tokens=tokens,
        output_tokens=tokens,
        cost_nanos=nanos,
    )
    writer.add(UsageRecord, row)
    writer.flush_sync()
    assert UsageRecord.objects.filter(model=marker).count() == 1


def test_the_facts_of_the_reported_defects_become_a_row_the_database_takes(writer):
    request_id = uuid.uuid4().hex
    row = audit_row(
        request_id=request_id,
        method="GET",
        path="/v1/x\x00y",
        status=400,
        client_ip="not-an-ip",
        input_tokens=3_000_000_000,
        input_text="say \x00 hi",
        details={"why\x00": ["\u0000", "\ud800"]},
        user_agent="u" * 1000,
    )
    writer.add(AuditRecord, row)
    writer.flush_sync()
    saved = AuditRecord.objects.get(request_id=request_id)
    assert (saved.path, saved.client_ip, saved.input_tokens) == ("/v1/xy", None, 2_147_483_647)
    assert saved.input_preview == "say  hi" and saved.user_agent == "u" * 300
    assert saved.details == {"why": ["", ""], "client_ip_raw": "not-an-ip"}
    assert verify(since=saved.created_at).ok
    assert not QuarantinedRow.objects.filter(request_id=request_id).exists()


@given(st.text())
def test_clean_text_keeps_only_what_every_database_stores(text):
    cleaned = clean_text(text, 50)
    assert len(cleaned) <= 50
    unstorable = {*map(chr, range(0x20)), *map(chr, range(0x7F, 0xA0)), *map(chr, range(0xD800, 0xE000))} - {"\t", "\n"}
    assert not unstorable & set(cleaned)
    cleaned.encode("utf-8")  # no lone surrogate left


@given(any_int, st.integers(-(2**63), 0), st.integers(0, 2**63))
def test_clamp_int_always_lands_in_the_range(value, low, high):
    assert low <= clamp_int(value, low, high) <= high


@given(any_cost)
def test_clamp_decimal_fits_the_column(value):
    clamped = clamp_decimal(value, 20, 9)
    assert clamped.is_finite() and abs(clamped) < Decimal(10) ** 11
    assert clamped == clamped.quantize(Decimal("0.000000001"))


@given(any_ip)
def test_valid_ip_is_an_address_or_none(value):
    address = valid_ip(value)
    assert address is None or str(ipaddress.ip_address(address)) == address


@given(json_value)
def test_clean_json_is_json_without_nul_surrogates_or_non_finite_numbers(value):
    def walk(item):
        if isinstance(item, dict):
            for key, child in item.items():
                walk(key)
                walk(child)
        elif isinstance(item, list):
            for child in item:
                walk(child)
        elif isinstance(item, str):
            assert "\x00" not in item
            item.encode("utf-8")
        elif isinstance(item, float):
            assert math.isfinite(item)

    walk(clean_json(value))


def test_a_quarantined_string_keeps_its_offending_characters_escaped():
    kept = storable({"path": "/v1/x\x00y", "ok": "fine", "bad": "\ud800"})
    assert kept["ok"] == "fine"
    assert kept["path"]["$escaped"].encode("ascii").decode("unicode_escape") == "/v1/x\x00y"
    assert kept["bad"]["$escaped"].encode("ascii").decode("unicode_escape") == "\ud800"
