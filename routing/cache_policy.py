"""An agent's or a path route's response-cache settings, as the hot path needs them (``routing.response_cache``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_seconds: int
    shared: bool  # one cache for every client; else each client's own
    streams: bool  # streamed answers are cached (and replayed) too
    max_entry_bytes: int
    any_temperature: bool
    scope: str = ""  # "" for an agent's own cache; a path route's id for its own, apart from the agent's


def cache_policy_of(obj, scope: str = "") -> CachePolicy | None:
    """The policy of an ``Agent`` or a ``PathRoute`` (the same ``cache_*`` fields), or None when it caches nothing."""
    if not obj.cache_enabled:
        return None
    return CachePolicy(
        obj.cache_ttl_seconds, obj.cache_shared, obj.cache_streams, obj.cache_max_entry_bytes,
        obj.cache_any_temperature, scope,
    )  # fmt: skip
