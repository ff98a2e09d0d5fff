"""An agent's or a path route's response-cache settings, as the hot path needs them (``routing.response_cache``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_seconds: int
    shared: bool  # one cache for every client; else each client's own
    streams: bool  # streamed answers are cached (and replayed) too
    max_entry_bytes: int
    any_temperature: bool
    scope: str = ""  # "" for an agent's own cache; a path route's id for its own, apart from the agent's
    # Which agent's answers: its id, kind and upstream. An agent made again under a deleted one's slug, or pointed at
    # another upstream, does not answer with what the old one said (entries are keyed by slug otherwise).
    epoch: str = ""


def cache_policy_of(obj, scope: str = "", agent=None) -> CachePolicy | None:
    """The policy of an ``Agent`` or a ``PathRoute`` (the same ``cache_*`` fields; ``agent``: the route's), or None
    when it caches nothing."""
    if not obj.cache_enabled:
        return None
    agent = agent or obj
    origin = f"{agent.pk}\n{agent.kind}\n{agent.upstream_url}".encode()
    return CachePolicy(
        obj.cache_ttl_seconds, obj.cache_shared, obj.cache_streams, obj.cache_max_entry_bytes,
        obj.cache_any_temperature, scope, hashlib.sha256(origin).hexdigest()[:16],
    )  # fmt: skip
