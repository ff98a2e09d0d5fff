"""Redact personal data from text before any of it is stored in an audit preview.

The rules are data (``audit.models.RedactionRule``, loaded by ``audit.redaction_rules``);
this module only compiles and applies them, and knows the built-in ones so a
process that has not loaded the table yet still redacts as the defaults say.
Some built-in rules need more than a regex (a card number must pass the Luhn
check): the rule names its code check and the check lives here.

The built-in patterns run on Python's ``re``: two need lookarounds, and they are
ours, fixed and measured (``bench/redaction_bench.py``). Every other pattern is
an admin's and runs on RE2, whose time is linear in the text, so no rule can
hold the gateway's event loop however it is written.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import re2
from django.conf import settings
from django.core.exceptions import ValidationError

MAX_PATTERN_LENGTH = 500
# Text a custom pattern is tried on: a pattern that matches nothing-at-all somewhere here would
# put its label between every character of a preview.
_PROBE = "a Z 0 9 _ . , : ; - + @ / \\ ( ) [ ] é\n\t end"


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


def _is_card(value: str) -> bool:
    return _luhn_ok(re.sub(r"\D", "", value))


def _is_phone(value: str) -> bool:
    """A run of digits is a phone number only if it is written like one."""
    digits = sum(char.isdigit() for char in value)
    return value.startswith("+") or any(char in value for char in " .-()") or digits in (10, 11)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# Code checks a rule may name: a match is replaced only when its check says it is the real thing.
CODE_CHECKS: dict[str, Callable[[str], bool]] = {"luhn": _is_card, "phone": _is_phone, "ip": _is_ip}
CODE_CHECK_CHOICES = [
    ("", "none"),
    ("luhn", "passes the Luhn check (card numbers)"),
    ("phone", "written like a phone number"),
    ("ip", "a valid IPv4 or IPv6 address"),
]


@dataclass(frozen=True, slots=True)
class BuiltinRule:
    name: str
    pattern: str
    replacement: str
    code_check: str
    enabled: bool
    order: int
    # A pattern that must match somewhere for ``pattern`` to (``CompiledRule.needs``): most previews hold no
    # digit, no "@" and no key, and a search for these costs a fraction of the rule's substitution.
    needs: str = ""


# The data migration 0004 made these rows; before the table is loaded, a process redacts with the enabled ones.
BUILTIN_RULES = (
    BuiltinRule(
        "API keys and bearer tokens",
        r"\b(?:agk_|sk-(?:ant-)?)[A-Za-z0-9_-]{16,}|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{16,}",
        "[SECRET]", "", True, 10, r"agk_|sk-|(?i:bearer)",
    ),
    BuiltinRule("E-mail addresses", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "[EMAIL]", "", True, 20, "@"),
    BuiltinRule("US social security numbers", r"\b\d{3}-\d{2}-\d{4}\b", "[SSN]", "", True, 30, r"\d-\d"),
    BuiltinRule(
        "IP addresses",
        r"(?<![\w:.])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w:]|\.\d)",
        "[IP]", "ip", False, 40, r"\d\.\d|:[0-9A-Fa-f]{0,4}:",
    ),
    # 13 to 19 digits, optionally split by single spaces or dashes.
    BuiltinRule("Payment card numbers", r"\b\d(?:[ -]?\d){12,18}\b", "[CARD]", "luhn", True, 50, r"\d[ -]?\d"),
    BuiltinRule(
        "Phone numbers",
        r"(?<![\w])(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]?\d{3,4}[ .-]?\d{3,4}(?![\w])",
        "[PHONE]", "phone", True, 60, r"\d\d\d",
    ),
)  # fmt: skip


BUILTIN_PATTERNS = frozenset(rule.pattern for rule in BUILTIN_RULES)
_NEEDS = {rule.pattern: re.compile(rule.needs) for rule in BUILTIN_RULES if rule.needs}
# What compiling a pattern may raise: Python's error for a built-in one, RE2's for any other.
PatternError = (re.error, re2.error)
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is the admin's answer, not a line on the server's stderr


def compile_pattern(pattern: str):
    """A built-in pattern on Python's ``re``; any other on RE2, which refuses what it cannot run in linear time."""
    if pattern in BUILTIN_PATTERNS:
        return re.compile(pattern)
    return re2.compile(pattern, options=_RE2_OPTIONS)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    regex: re.Pattern | re2._Regexp
    replacement: str
    check: Callable[[str], bool] | None
    needs: re.Pattern | None = None  # a built-in rule's quick test: no match, no substitution to try

    def apply(self, text: str) -> str:
        if self.needs is not None and self.needs.search(text) is None:
            return text
        label, check = self.replacement, self.check
        if check is None:
            return self.regex.sub(lambda match: label, text)
        return self.regex.sub(lambda match: label if check(match.group()) else match.group(), text)


def compile_rule(name: str, pattern: str, replacement: str, code_check: str = "") -> CompiledRule:
    """Compile one rule; raises one of ``PatternError`` for a bad pattern and ``KeyError`` for an unknown check."""
    check = CODE_CHECKS[code_check] if code_check else None
    return CompiledRule(name, compile_pattern(pattern), replacement, check, _NEEDS.get(pattern))


def compile_rules(rules: Iterable) -> tuple[CompiledRule, ...]:
    """Compile rule rows (or ``BuiltinRule``s) in the order given."""
    return tuple(compile_rule(r.name, r.pattern, r.replacement, r.code_check) for r in rules)


DEFAULT_RULES = compile_rules(rule for rule in BUILTIN_RULES if rule.enabled)


def validate_pattern(pattern: str) -> None:
    """Refuse a pattern that does not compile, needs what RE2 lacks, or could match empty text.

    A pattern that matched empty text would put its label between every letter.
    """
    if not pattern or not pattern.strip():
        raise ValidationError("A pattern cannot be empty.")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise ValidationError(f"A pattern may be at most {MAX_PATTERN_LENGTH} characters long.")
    try:
        regex = compile_pattern(pattern)
    except re2.error as exc:
        raise ValidationError(_refusal(pattern, exc)) from None
    except re.error as exc:
        raise ValidationError(f"Not a valid regular expression: {exc}.") from None
    if regex.search("") is not None or any(match.end() == match.start() for match in regex.finditer(_PROBE)):
        raise ValidationError("The pattern matches empty text; it must match at least one character.")


def _refusal(pattern: str, exc: re2.error) -> str:
    """Why RE2 refused ``pattern``: not a regular expression at all, or one using what RE2 does without."""
    reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    try:
        re.compile(pattern)
    except re.error as python_error:
        return f"Not a valid regular expression: {python_error}."
    return (
        f"Redaction rules run on RE2, which cannot run this pattern ({reason}). RE2 keeps redaction time linear in "
        "the text, so it has no backreferences (\\1) or lookarounds ((?=, (?!, (?<=, (?<!); rewrite the pattern "
        "without them."
    )


def validate_replacement(value: str) -> None:
    if not value or not value.strip():
        raise ValidationError("Give a label to put in place of what the rule matches, e.g. [ACCOUNT].")


def redact(text: str, rules: tuple[CompiledRule, ...] = DEFAULT_RULES) -> str:
    """Apply ``rules`` in order, each replacing what it matches with its label."""
    for rule in rules:
        text = rule.apply(text)
    return text


def preview(text: str | None, rules: tuple[CompiledRule, ...] = DEFAULT_RULES, length: int | None = None) -> str:
    """A redacted preview of at most ``length`` (GATEWAY_PREVIEW_LENGTH) characters; 0 keeps none.

    Redacts a little more than it keeps so a value cut at the edge is still caught.
    """
    if length is None:
        length = settings.GATEWAY["PREVIEW_LENGTH"]
    if not text or length <= 0:
        return ""
    return redact(text[: length * 2], rules)[:length]
