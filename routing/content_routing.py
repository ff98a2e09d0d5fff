"""Content routing: pick an agent for a request that names none, from the words of its input.

Words map to capabilities through the keyword map (``routing.CapabilityKeyword``; a
capability's own name is a keyword for it too); the allowed agents that have those
capabilities are tried most hits first, skipping any whose shared in-flight count
has reached its ``max_concurrent``. When none capable has room, or none is capable,
the least-loaded allowed agent answers. Loads are read from the hot state, never
the database. The reason is a short ``key=value; …`` text for the response header,
the body and the audit record.
"""

from __future__ import annotations

import re

from django.conf import settings

from gateway_project.errors import forbidden
from gateway_project.hotstate import get_hot_state

_WORD = re.compile(r"[a-z][a-z0-9_-]*")


def in_flight_key(store, slug: str) -> str:
    """The agent's shared in-flight counter (taken and released by admission)."""
    return store.key("agent-conc", slug)


def capability_hits(text: str, keywords: dict[str, str], capabilities: set[str]) -> dict[str, list[str]]:
    """Capability -> the words of ``text`` that name it, in the order they appear."""
    hits: dict[str, list[str]] = {}
    for word in dict.fromkeys(_WORD.findall(text.lower())):
        capability = keywords.get(word) or (word if word in capabilities else None)
        if capability:
            hits.setdefault(capability, []).append(word)
    return hits


async def _in_flight(store, slug: str) -> int:
    return await store.get_int(in_flight_key(store, slug)) or 0


def _load(route, in_flight: int) -> float:
    """In-flight share of capacity; an agent without a limit counts its in-flight requests."""
    return in_flight / route.max_concurrent if route.max_concurrent else float(in_flight)


async def choose(table, text: str, allowed) -> tuple[object, str]:
    """The agent for ``text`` among those ``allowed(slug)`` admits, and why it was chosen."""
    candidates = [route for route in table.agents.values() if allowed(route.slug)]
    if not candidates:
        raise forbidden("This API key may not use any agent.", "agent_not_allowed")
    known = {capability for route in candidates for capability in route.capabilities}
    hits = capability_hits(text, table.keywords, known | set(table.keywords.values()))
    store = get_hot_state()
    scored = []
    for route in candidates:
        matched = [capability for capability in hits if capability in route.capabilities]
        if matched:
            words = [word for capability in matched for word in hits[capability]]
            scored.append((-len(words), route.slug, route, matched, words))
    scored.sort(key=lambda item: item[:2])
    full = []
    for _, _, route, matched, words in scored:
        if route.max_concurrent and await _in_flight(store, route.slug) >= route.max_concurrent:
            full.append(route.slug)
            continue
        return route, f"capability={','.join(matched)}; keywords={','.join(words)}"
    default = settings.GATEWAY["DEFAULT_AGENT"]
    loads = []
    for route in candidates:
        loads.append((_load(route, await _in_flight(store, route.slug)), route.slug != default, route.slug, route))
    loads.sort(key=lambda item: item[:3])
    chosen = loads[0][3]
    if full:
        return chosen, f"least_loaded; capable agents full: {','.join(full)}"
    if hits:
        return chosen, f"least_loaded; no allowed agent has: {','.join(hits)}"
    return chosen, "least_loaded; no capability keywords"


def clean_keyword(value: str) -> str:
    """A keyword is one lower-case word, as the input's words are matched."""
    from django.core.exceptions import ValidationError

    word = (value or "").strip().lower()
    if not _WORD.fullmatch(word):
        raise ValidationError("One word: a letter, then letters, digits, “-” or “_” (matched case-insensitively).")
    return word
