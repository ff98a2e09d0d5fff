"""Properties of the hot path's parsers and owners, for any input (hypothesis).

Each parser a client or an upstream can feed is tried with arbitrary input: it
either answers or refuses with a GatewayError (a 4xx), never anything else, and
what it lets through keeps its promise (a URL under its base, an address that
is an address, usage that is counted, a charge its quote covered).
"""

from __future__ import annotations

import ipaddress
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.pricing import Price, PriceHistory, charge, quote
from gateway_project.errors import GatewayError
from routing.exchange import MAX_JSON_DEPTH, client_address, parse_json
from routing.protocols import MAX_REPORTED_TOKENS, dense_input_estimate, usage_from_headers, usage_from_json
from routing.sse import AnthropicStreamScanner, OpenAIStreamScanner
from routing.upstream_url import check_raw_path, query_without_key, upstream_url

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASES = ["http://up.internal:9000", "http://up.internal:9000/tenant/a", "https://10.0.0.5/v2/"]

path_bytes = st.one_of(
    st.binary(max_size=80),
    st.lists(
        st.sampled_from([b"a", b"..", b".", b"%2e", b"%2E%2e", b"%2f", b"%3F", b"%23", b"%00", b"%0d%0a", b"\\", b"%5c",
                         b"x y", b"%", b"%zz", b"~", b"%41", b"\xc3\xa9", b"//", b"?", b"#"]),
        max_size=8,
    ).map(lambda parts: b"/".join(parts)),
)  # fmt: skip


@SETTINGS
@given(base=st.sampled_from(BASES), rest=path_bytes, query=st.binary(max_size=40))
def test_an_upstream_url_never_leaves_its_base(base, rest, query):
    try:
        url = upstream_url(base, rest, query)
    except GatewayError as refused:
        assert refused.status == 400 and refused.code in ("invalid_path", "invalid_query")
        return
    base_path = httpx.URL(base.rstrip("/")).raw_path.rstrip(b"/")
    sent = url.raw_path.split(b"?", 1)[0]
    assert sent == base_path or sent.startswith(base_path + b"/") or (not base_path and sent.startswith(b"/"))
    assert url.host == httpx.URL(base).host
    segments = sent.split(b"/")
    assert b".." not in segments and b"." not in segments
    assert b"api_key=" not in (url.query or b"").lower()


@SETTINGS
@given(rest=path_bytes)
def test_the_path_check_refuses_every_dot_segment_and_hidden_separator(rest):
    from urllib.parse import unquote_to_bytes

    try:
        check_raw_path(rest)
    except GatewayError:
        return
    decoded = unquote_to_bytes(rest)
    assert all(segment not in (b".", b"..") for segment in decoded.split(b"/"))
    assert not any(c in decoded for c in b"?#\\") and all(c >= 0x20 and c != 0x7F for c in decoded)
    assert decoded.count(b"/") == rest.count(b"/")  # no encoded slash became a separator


@SETTINGS
@given(query=st.lists(st.tuples(st.sampled_from(["api_key", "API_KEY", "api%5Fkey", "x", "key"]), st.text(max_size=5))))
def test_a_query_loses_only_its_api_key(query):
    from urllib.parse import quote as encode

    raw = "&".join(f"{k}={encode(v, safe='')}" for k, v in query).encode("utf-8")
    kept = query_without_key(raw).decode("utf-8")
    assert not any(pair.split("=", 1)[0] in ("api_key", "api%5Fkey") for pair in kept.split("&"))
    kept_names = [pair.split("=", 1)[0] for pair in kept.split("&") if pair]
    assert kept_names == [k for k, _ in query if k not in ("api_key", "api%5Fkey")]


hops = st.one_of(st.ip_addresses().map(str), st.text(max_size=20), st.just("[::1]:443"), st.just("1.2.3.4:80"))


@SETTINGS
@given(forwarded=st.lists(st.lists(hops, max_size=4).map(", ".join), max_size=3), trusted=st.integers(0, 4))
def test_the_client_address_is_an_address_or_the_peer(forwarded, trusted):
    peer = "127.0.0.1"
    address, raw = client_address(peer, [value.encode("utf-8") for value in forwarded], trusted)
    ipaddress.ip_address(address)
    if trusted == 0 or not forwarded:
        assert (address, raw) == (peer, "")


def test_the_right_most_untrusted_hop_wins():
    assert client_address("10.0.0.1", [b"6.6.6.6, 198.51.100.7"], 1) == ("198.51.100.7", "")
    assert client_address("10.0.0.1", [b"6.6.6.6, 198.51.100.7, 10.0.0.2"], 2) == ("198.51.100.7", "")
    assert client_address("10.0.0.1", [b"6.6.6.6", b"198.51.100.7"], 1) == ("198.51.100.7", "")
    assert client_address("10.0.0.1", [b"not-an-ip"], 1) == ("10.0.0.1", "not-an-ip")


@SETTINGS
@given(body=st.one_of(st.binary(max_size=200), st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * (n % 3))))
def test_a_body_is_json_or_a_400(body):
    try:
        parse_json(body)
    except GatewayError as refused:
        assert (refused.status, refused.code) == (400, "invalid_json")


def test_json_nested_past_the_interpreters_limit_is_a_400():
    with pytest.raises(GatewayError) as refused:
        parse_json(b"[" * 200_000)
    assert refused.value.status == 400


@SETTINGS
@given(depth=st.integers(1, 2000), wide=st.integers(0, 300), as_object=st.booleans())
def test_json_the_gateway_accepts_can_be_written_again_however_deep_the_stack(depth, wide, as_object):
    """What ``parse_json`` lets through is written again (re-serialised, stored) deeper in the stack: at a depth
    where the interpreter has little room left, ``json.dumps`` of it must still work."""
    inner = b'{"a":' * depth + b"1" + b"}" * depth if as_object else b"[" * depth + b"]" * depth
    body = b"[" + b"[]," * wide + inner + b"]"  # brackets enough to pass the quick count, shallow ones
    try:
        node = parse_json(body)
    except GatewayError as refused:
        assert (refused.status, refused.code) == (400, "invalid_json") and depth + 1 > MAX_JSON_DEPTH
        return
    assert depth + 1 <= MAX_JSON_DEPTH

    def deep(levels):  # a call stack ~700 frames deep, as a request's tasks, adapters and encoders add up to
        return deep(levels - 1) if levels else json.dumps(node)

    assert json.loads(deep(700)) == node


@SETTINGS
@given(text=st.text(max_size=300))
def test_an_unread_answers_input_is_charged_within_its_reservation_and_never_less_than_its_pieces(text):
    """``dense_input_estimate`` charges an answer whose usage is unknown: at most a token a byte (what
    ``input_bound`` reserved), at least a token for each switch between letters, digits and other characters (no
    tokenizer merges across one: "a1a1…" is a token a character)."""
    body = text.encode()
    estimate = dense_input_estimate(body)
    assert estimate <= len(body)
    kinds = [("L" if c.isascii() and c.isalpha() else "D" if c.isascii() and c.isdigit() else c) for c in text]
    runs = sum(1 for i, kind in enumerate(kinds) if not text[i].isspace() and (i == 0 or kind != kinds[i - 1]))
    assert estimate >= runs


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(
    obj=st.one_of(json_values, st.fixed_dictionaries({"usage": json_values})),
    header_in=st.one_of(st.none(), st.text(max_size=12)),
    header_out=st.one_of(st.none(), st.text(max_size=12)),
)
def test_usage_is_counted_tokens_or_nothing(obj, header_in, header_out):
    for usage in (usage_from_json(obj), usage_from_headers({"x-usage-input-tokens": header_in,
                                                            "x-usage-output-tokens": header_out})):  # fmt: skip
        if usage is not None:
            assert all(isinstance(n, int) and 0 <= n <= MAX_REPORTED_TOKENS for n in usage)


@SETTINGS
@given(tokens=st.integers(min_value=0, max_value=10**30))
def test_reported_usage_is_clamped_to_what_the_counters_and_columns_hold(tokens):
    usage = {"usage": {"prompt_tokens": tokens, "completion_tokens": tokens}}
    assert usage_from_json(usage) == (min(tokens, MAX_REPORTED_TOKENS),) * 2
    assert usage_from_headers({"x-usage-input-tokens": str(tokens)}) == (min(tokens, MAX_REPORTED_TOKENS), 0)
    reading = AnthropicStreamScanner("m")
    reading.feed(b'data: {"type": "message_delta", "usage": {"output_tokens": %d}}\n\n' % tokens)
    assert reading.usage == (0, min(tokens, MAX_REPORTED_TOKENS))


def _openai_events(texts, usage):
    events = [{"choices": [{"index": 0, "delta": {"content": t}, "finish_reason": None}], "model": "m"} for t in texts]
    events.append({"choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


@SETTINGS
@given(
    texts=st.lists(st.text(max_size=20), max_size=6),
    usage=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
    keep=st.booleans(),
)
def test_an_openai_stream_is_relayed_whole_however_it_is_cut(texts, usage, cuts, keep):
    stream = _openai_events(texts, usage)
    scanner = OpenAIStreamScanner(keep_usage_chunk=keep)
    points = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    out = b"".join(scanner.feed(piece) for piece in pieces) + scanner.finish()
    assert scanner.usage == usage
    assert (b'"usage"' in out) == keep
    assert out.endswith(b"data: [DONE]\n\n")
    assert scanner.text == "".join(texts)[: len(scanner.text)]


@SETTINGS
@given(chunks=st.lists(st.binary(max_size=64), max_size=12))
def test_stream_scanners_take_any_bytes(chunks):
    for scanner in (OpenAIStreamScanner(keep_usage_chunk=True), AnthropicStreamScanner("m")):
        for chunk in chunks:
            scanner.feed(chunk)
        scanner.finish()
        if scanner.usage is not None:
            assert all(n >= 0 for n in scanner.usage)


per_million = st.decimals(min_value=0, max_value=5000, places=2, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(
    table=st.dictionaries(st.sampled_from(["a", "b", "c", "default"]), st.tuples(per_million, per_million), max_size=4),
    sent=st.sampled_from(["a", "b", "c", "x"]),
    may=st.lists(st.sampled_from(["a", "b", "c", "x"]), max_size=3),
    reported=st.sampled_from(["a", "b", "c", "x", "", "a-2024-08-06"]),
    tokens=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)),
    any_model=st.booleans(),
)
def test_a_charge_never_exceeds_its_quote_unless_flagged(table, sent, may, reported, tokens, any_model):
    """Whatever the table: an answer from a model the quote knew of is covered; only an unknown dearer one is over,
    and then it is flagged."""
    prices = {
        model: PriceHistory((0.0,), (Price(model, i * 1000, o * 1000),)) for model, (i, o) in table.items()
    }  # $/M = 1000 nanos a token
    quoted = quote(prices, sent, may, any_model=any_model)
    charged = charge(prices, quoted, reported, *tokens)
    if charged.over_quote:
        assert reported not in (sent, *may) and not any_model
    else:
        assert charged.nanos <= quoted.worst_case(*tokens)
    assert charged.nanos >= 0
    if reported and reported in table and reported != "default":
        assert charged.model == reported  # a model with its own price is charged at it


answers = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "content": json_values, "choices": json_values, "model": json_values, "stop_reason": json_values,
            "usage": json_values, "output": json_values, "id": json_values,
        },
    ),
)  # fmt: skip


@SETTINGS
@given(answer=answers)
def test_any_upstream_answer_translates_or_is_refused_never_crashes(answer):
    """Whatever JSON an upstream answers with, reading and translating it gives an answer (or a GatewayError)."""
    from routing import anthropic_shape, protocols

    for read in (
        protocols.chat_text, protocols.agent_text, protocols.anthropic_text,
        lambda a: protocols.anthropic_to_chat(a, "m", "r"), lambda a: anthropic_shape.chat_to_message(a, "m", "r"),
    ):  # fmt: skip
        if isinstance(answer, dict) or read is protocols.agent_text:
            try:
                read(answer)
            except GatewayError as refused:
                assert refused.status < 500
