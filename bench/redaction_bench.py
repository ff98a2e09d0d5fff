#!/usr/bin/env python3
"""Benchmark audit-preview redaction: µs per preview for the built-in rules and for custom rules on RE2.

    .venv/bin/python bench/redaction_bench.py [--length 200] [--seconds 0.5]

Each case redacts one preview (``audit.redaction.preview``, which reads twice
the preview length) of a typical input (prose with an e-mail, a phone number, a
card, a key) and of adversarial ones (long runs that make backtracking engines
try every split), and prints the median µs per call over repeated runs. The
cases: the enabled built-in rules (Python ``re``), all built-in rules, one
custom rule on RE2, five custom rules on RE2, and the catastrophic pattern
``(\\w+\\s?)+$`` on RE2 (on Python ``re`` it takes seconds at 24 characters).
Needs no database.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django  # noqa: E402

django.setup()

from audit.redaction import BUILTIN_RULES, DEFAULT_RULES, compile_rule, compile_rules, preview  # noqa: E402

CUSTOM = [
    ("Tickets", r"TICKET-\d+"),
    ("Accounts", r"\bACC\d{6,10}\b"),
    ("Internal hosts", r"[a-z0-9-]+\.corp\.example\.com"),
    ("Employee ids", r"(?i)emp[-_ ]?\d{5}"),
    ("IBANs", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b"),
]
CATASTROPHIC = r"(\w+\s?)+$"

TYPICAL = (
    "Please summarise the ticket TICKET-4821 for jane.doe@example.org; call her on +1 415-555-0132. "
    "Card on file 4111 1111 1111 1111, key agk_abcdefghijklmnopqrstuvwx. Host build-7.corp.example.com is down "
    "since 10:30 and EMP-12345 is on it; the report is due by Friday, with the numbers from the last quarter."
)


def adversarial(length: int) -> dict[str, str]:
    """Inputs that make backtracking engines try many splits, each ``2 * length`` long as ``preview`` reads."""
    size = 2 * length
    return {
        "word run + '!'": ("a" * (size - 1) + "!"),
        "words and spaces + '!'": ("ab " * size)[: size - 1] + "!",
        "digits and dashes": ("12-" * size)[:size],
        "dots and letters (@)": ("a." * size)[: size - 1] + "@",
    }


def per_call_us(rules, text: str, length: int, seconds: float) -> float:
    """The median µs of one ``preview`` call, over rounds of ``seconds`` / 5 each."""
    preview(text, rules, length)
    calls = 1
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 20:
        preview(text, rules, length)
        calls += 1
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            preview(text, rules, length)
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=200, help="preview length (GATEWAY_PREVIEW_LENGTH)")
    parser.add_argument("--seconds", type=float, default=0.5, help="time spent on each case and input")
    parser.add_argument("--contrast", type=int, default=22, help="characters the catastrophic pattern gets on re")
    args = parser.parse_args()

    custom = tuple(compile_rule(name, pattern, "[X]") for name, pattern in CUSTOM)
    cases = {
        "built-in, enabled (re)": DEFAULT_RULES,
        "built-in, all six (re)": compile_rules(BUILTIN_RULES),
        "enabled + 1 custom (RE2)": DEFAULT_RULES + custom[:1],
        "enabled + 5 custom (RE2)": DEFAULT_RULES + custom,
        "1 custom alone (RE2)": custom[:1],
        "catastrophic alone (RE2)": (compile_rule("catastrophic", CATASTROPHIC, "[X]"),),
    }
    inputs = {"typical": (TYPICAL * 3)[: 2 * args.length], **adversarial(args.length)}

    print(f"µs per preview of {args.length} characters (median of 5 rounds), Python {sys.version.split()[0]}")
    width = max(map(len, cases)) + 2
    print("".ljust(width) + "".join(name.rjust(24) for name in inputs))
    for case, rules in cases.items():
        row = [per_call_us(rules, text, args.length, args.seconds) for text in inputs.values()]
        print(case.ljust(width) + "".join(f"{value:24.1f}" for value in row))

    text = "a" * (args.contrast - 1) + "!"
    start = time.perf_counter()
    re.sub(CATASTROPHIC, "[X]", text)
    python_us = (time.perf_counter() - start) * 1e6
    start = time.perf_counter()
    compile_rule("catastrophic", CATASTROPHIC, "[X]").apply(text)
    print(
        f"\nThe catastrophic pattern on {args.contrast} characters: Python re {python_us:,.0f} µs, "
        f"RE2 {(time.perf_counter() - start) * 1e6:,.1f} µs"
    )


if __name__ == "__main__":
    main()
