"""What a second attacker found in metering (issue 12), as properties and specs of the plain functions.

Streams of any JSON shape never break a scanner; a request is never charged past its
reservation, however its usage came (or did not); a batch of legacy completions is
reserved for every answer it may generate; and a settle that fails to price still
gives back every slot and charges the reservation.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.pricing import Price, Quote
from gateway_project.errors import GatewayError
from gateway_project.hotstate import ConcurrencySlot, MemoryHotState
from keys.access import KeySnapshot
from routing import protocols
from routing.adapters.openai import OpenAIAdapter
from routing.admission import INPUT_CHARGE_FACTOR, INPUT_CHARGE_SLACK, Ticket, charged_usage, settle
from routing.exchange import Exchange
from routing.facts import Demand, RequestFacts
from routing.sse import AnthropicStreamScanner, AnthropicToOpenAIStream, OpenAIStreamScanner, OpenAIToAnthropicStream

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
# Shapes that look like the real events, with every field free to be anything.
EVENT_SHAPES = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"model": JSON_VALUES, "choices": JSON_VALUES, "usage": JSON_VALUES},
    ),
    st.fixed_dictionaries(
        {"choices": st.lists(st.fixed_dictionaries({"delta": JSON_VALUES, "finish_reason": JSON_VALUES}), max_size=3)}
    ),
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["message_start", "content_block_delta", "message_delta", "message_stop", "error"]),
            "message": JSON_VALUES,
            "delta": JSON_VALUES,
            "usage": JSON_VALUES,
            "error": JSON_VALUES,
        }
    ),
)
SCANNERS = [
    lambda: OpenAIStreamScanner(keep_usage_chunk=False),
    lambda: AnthropicStreamScanner("claude"),
    lambda: AnthropicToOpenAIStream("rid", "claude", include_usage=True),
    lambda: OpenAIToAnthropicStream("rid", "gpt"),
]


@pytest.mark.parametrize("make", SCANNERS, ids=["openai", "anthropic", "anthropic->openai", "openai->anthropic"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(EVENT_SHAPES, max_size=6), cut=st.integers(min_value=0, max_value=40))
def test_no_event_shape_breaks_a_stream_scanner(make, events, cut):
    scanner = make()
    stream = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events) + b"data: [DONE]\n\n"
    out = scanner.feed(stream[:cut]) + scanner.feed(stream[cut:]) + scanner.finish()
    assert isinstance(out, bytes)
    assert isinstance(scanner.model, str)
    assert scanner.usage is None or all(isinstance(n, int) and 0 <= n < 2**31 for n in scanner.usage)
    assert isinstance(scanner.output_estimate, int) and scanner.output_estimate >= 0
    assert isinstance(scanner.complete, bool)


def test_a_streams_output_estimate_counts_every_text_event_and_each_wide_character():
    scanner = OpenAIStreamScanner(keep_usage_chunk=False)
    pieces = ["Hello", " wor", "ld", "日本語のテキスト"]
    for piece in pieces * 500:  # far past the audit preview's length: the estimate still counts it all
        scanner.feed(b"data: " + json.dumps({"choices": [{"delta": {"content": piece}}]}).encode() + b"\n\n")
    assert scanner.output_estimate >= 2000  # at least one a text event
    assert scanner.output_estimate >= 8 * 500  # at least one a wide character
    assert not scanner.complete


@given(st.text(max_size=200))
def test_the_text_estimate_is_at_least_a_quarter_of_the_characters_and_one_per_wide_one(text):
    estimate = protocols.tokens_in_text(text)
    assert estimate >= -(-len(text) // 4)
    assert estimate >= sum(1 for c in text if ord(c) > 127)


# --- charged_usage: never past the reservation, never nothing for an answer sent -------------------------------


def exchange(**state) -> Exchange:
    scope = {"method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "headers": []}
    ex = Exchange(scope, b"", False, None)
    for name, value in state.items():
        setattr(ex, name, value)
    return ex


DEMAND = Demand(input_tokens=100, max_output=200, default_output=None, hold_seconds=120)


@given(
    input_tokens=st.integers(0, 2**31 - 1),
    output_tokens=st.integers(0, 2**31 - 1),
    text=st.text(max_size=3000),
    estimate=st.integers(0, 10**7),
    flag=st.sampled_from([None, "usage_partial", "usage_missing", "usage_unread"]),
)
def test_a_request_is_never_charged_past_its_reservation(input_tokens, output_tokens, text, estimate, flag):
    ex = exchange(input_tokens=input_tokens, output_tokens=output_tokens, output_text=text, output_estimate=estimate)
    if flag:
        ex.details[flag] = True
    charged_in, charged_out = charged_usage(ex, DEMAND)
    assert charged_out <= DEMAND.max_output
    assert charged_in <= DEMAND.input_tokens * INPUT_CHARGE_FACTOR + INPUT_CHARGE_SLACK


def test_an_answer_without_usage_is_charged_its_text_within_the_cap():
    ex = exchange(output_text="word " * 10_000)  # 50,000 characters, no usage reported
    assert charged_usage(ex, DEMAND) == (100, 200)
    assert ex.details["usage_over_reservation"]["charged"] == [100, 200]


def test_a_stream_cut_before_its_usage_pays_its_input_and_what_was_relayed():
    ex = exchange(input_tokens=0, output_tokens=0, output_estimate=37)
    ex.details["usage_partial"] = True
    assert charged_usage(ex, DEMAND) == (100, 37)
    # Anthropic's message_start told the input (and one output token) before the cut: the input is taken as told.
    ex = exchange(input_tokens=80, output_tokens=1, output_estimate=37)
    ex.details["usage_partial"] = True
    assert charged_usage(ex, DEMAND) == (80, 37)


# --- legacy completions: every prompt, best_of ---------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, answers",
    [
        ({"prompt": "one"}, 1),
        ({"prompt": ["a", "b", "c"]}, 3),
        ({"prompt": [1, 2, 3]}, 1),  # one prompt given as tokens
        ({"prompt": [[1, 2], [3]]}, 2),  # two prompts given as tokens
        ({"prompt": ["a", "b", "c"], "best_of": 4}, 12),
        ({"prompt": ["a", "b"], "best_of": 2, "n": 3}, 6),
    ],
)
def test_a_legacy_completion_is_billed_for_every_answer_it_may_generate(payload, answers):
    assert protocols.completion_answers(payload) == answers


def test_a_legacy_completion_batch_reserves_best_of_for_each_prompt():
    route = type("Route", (), {"slug": "oa", "unmetered_pass_through": False, "serves": lambda self, m: True})()
    body = json.dumps({"model": "gpt-4o-mini", "prompt": ["a", "b", "c"], "best_of": 4, "max_tokens": 100}).encode()
    plan = OpenAIAdapter().plan(route, "POST", b"v1/completions", body, 1024)
    assert plan.max_output == 100 * 4 * 3
    batch = json.dumps({"model": "m", "prompt": ["a"] * 5}).encode()
    capped = OpenAIAdapter().plan(route, "POST", b"v1/completions", batch, 50)
    assert capped.max_output == 50 * 5 and json.loads(capped.body)["max_tokens"] == 50
    with pytest.raises(GatewayError):
        OpenAIAdapter().plan(route, "POST", b"v1/completions", json.dumps({"model": "m", "best_of": "4"}).encode(), 50)


# --- settle: whatever happens while pricing, everything goes back ----------------------------------------------


def test_a_settle_that_fails_to_price_still_releases_its_slots_and_charges_the_reservation(db, monkeypatch):
    import routing.admission as admission

    store = MemoryHotState()
    key = KeySnapshot(1, "gw_x", 1, "c", None, "active", None, None, None, 100, 0, 10_000, 1, 0.0, True)
    price = Price("m", Decimal("1"), Decimal("2"))
    facts = RequestFacts("r" * 32, key).priced(Quote("m", price)).demanding(DEMAND)
    slot = ConcurrencySlot("concurrency", store.key("conc", 1), 1)

    def broken_charge(*args, **kwargs):
        raise TypeError("unhashable type: 'list'")

    monkeypatch.setattr(admission, "charge", broken_charge)
    rows = []
    monkeypatch.setattr(admission, "record_usage", lambda **row: rows.append(row))

    async def scenario():
        assert (await store.admit([], [slot], [])).ok
        ex = exchange(input_tokens=10, output_tokens=20, model="m")
        await settle(ex, Ticket(facts, store, (), [], [], 0, [slot.key]))
        again = await store.admit([], [slot], [])
        return ex, again

    ex, again = asyncio.run(scenario())
    assert again.ok  # the one slot came back
    assert ex.details["priced_at_reservation"] is True
    assert ex.cost_nanos == 10 * 1 + 20 * 2
    assert [(row["model"], row["cost_nanos"]) for row in rows] == [("m", 50)]
