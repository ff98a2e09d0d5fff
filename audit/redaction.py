"""Redact personal data from text before any of it is stored in an audit preview."""

from __future__ import annotations

import re

from audit.models import PREVIEW_LENGTH

# Gateway keys, provider keys (sk-..., sk-ant-...) and bearer tokens.
_SECRET = re.compile(r"\b(?:agk_|sk-(?:ant-)?)[A-Za-z0-9_-]{16,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
# 13 to 19 digits, optionally split by single spaces or dashes.
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_PHONE = re.compile(r"(?<![\w])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]?\d{3,4}[ .-]?\d{3,4}(?![\w])")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2 == 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if _luhn_ok(digits) else match.group()


def _phone(match: re.Match) -> str:
    """A run of digits is a phone number only if it is written like one."""
    value = match.group()
    digits = sum(char.isdigit() for char in value)
    written_as_phone = value.startswith("+") or any(char in value for char in " .-()")
    return "[PHONE]" if written_as_phone or digits in (10, 11) else value


def redact(text: str) -> str:
    """Replace secrets, e-mails, SSNs, Luhn-valid card numbers and phone numbers with labels."""
    text = _SECRET.sub("[SECRET]", text)
    text = _EMAIL.sub("[EMAIL]", text)
    text = _SSN.sub("[SSN]", text)
    text = _CARD.sub(_card, text)
    text = _PHONE.sub(_phone, text)
    return text


def preview(text: str | None) -> str:
    """A redacted preview of at most PREVIEW_LENGTH characters.

    Redacts a little more than it keeps so a value cut at the edge is still caught.
    """
    if not text:
        return ""
    return redact(text[: PREVIEW_LENGTH * 2])[:PREVIEW_LENGTH]
