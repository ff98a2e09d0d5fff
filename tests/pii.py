"""Whether a test card number shows in an answer, without mistaking a random hex id for it.

A plain ``"4111" in text`` fails one run in a few thousand: message and request ids are random hex, and
``msg_…f74111…`` holds the digits. The card's digits count only where they stand alone, as a card number or as a
piece of one split across stream events; a dashed UUID (whose groups can read ``-4111-``) is not looked in.
"""

from __future__ import annotations

import re

CARD_DIGITS = re.compile(r"(?<![0-9A-Za-z])4111(?![0-9A-Za-z])")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def shows_card(text: str) -> bool:
    return CARD_DIGITS.search(UUID.sub("", text)) is not None
