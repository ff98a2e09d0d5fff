"""Attack 7's probes of model auto-routing."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from routing import auto_signals
from routing.auto_route import RuleEntry, signals_of


def _best_of(rounds: int, call) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def test_keywords_on_a_long_prompt_cost_no_more_than_reading_it():
    """Each keyword of each rule was looked for by scanning the prompt's words (100,000 characters at most): 20
    rules of 20 keywords cost several times what reading the prompt did, on the event loop, for every request."""
    prompt = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
    payload = {"messages": [{"role": "user", "content": prompt}]}
    rules = [
        RuleEntry(id=n, name=f"r{n}", model="m", keywords=tuple(f"word{n}x{k}" for k in range(20))) for n in range(20)
    ]
    signals = signals_of(payload, prompt, 25_000)

    def decide():
        for rule in rules:
            rule.matched_keyword(signals)

    reading = _best_of(5, lambda: signals_of(payload, prompt, 25_000))
    deciding = _best_of(5, decide)
    assert deciding < reading, f"deciding {deciding * 1000:.1f} ms, reading {reading * 1000:.1f} ms"


words = st.lists(st.sampled_from(["code", "stack", "trace", "python", "decode", "why", "x-y", "Step", "by"]))


@settings(max_examples=300)
@given(text=words.map(" ".join), keywords=st.lists(words.map(" ".join), max_size=5))
def test_the_vocabulary_finds_exactly_what_the_scan_finds(text, keywords):
    normals = tuple(k for k in (auto_signals.normal_keyword(k) for k in keywords) if k)
    _score, found_in, vocabulary = auto_signals.read_all(text)
    assert auto_signals.first_keyword(found_in, normals, vocabulary) == auto_signals.first_keyword(found_in, normals)
