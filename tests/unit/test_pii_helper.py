"""The tests' card check: it finds the test card's digits wherever an answer leaks them, never inside a random id."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from tests.pii import shows_card

CARD = "4111 1111 1111 1111"
AROUND = st.text(alphabet=' \n"{}:,[]-.', max_size=8)


@given(before=AROUND, after=AROUND, split=st.integers(min_value=1, max_value=len(CARD) - 1))
def test_the_card_or_a_piece_split_across_events_is_seen(before, after, split):
    assert shows_card(before + CARD + after)
    # One stream event ends mid-number, the next goes on: each piece is JSON text of its own.
    events = f'data: {{"text": "{before}{CARD[:split]}"}}\n\ndata: {{"text": "{CARD[split:]}{after}"}}'
    assert shows_card(events) == ("4111" in CARD[:split] or "4111" in CARD[split:])


@given(st.lists(st.uuids(), min_size=1, max_size=20))
def test_no_random_hex_id_is_taken_for_the_card(ids):
    text = " ".join(f'"id": "msg_{u.hex}", "request_id": "{u}"' for u in ids)
    assert not shows_card(text)


def test_an_id_holding_the_digits_is_not_the_card():
    assert not shows_card(f'"id": "msg_dada9765f74111{uuid.uuid4().hex}"') and not shows_card("[CARD]")
    assert not shows_card('"job": "0f3c2a9e-5b1d-4111-8a2e-9c0d1e2f3a4b"')
