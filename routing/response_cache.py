"""The exact response cache: an agent's answer kept for a request made again word for word.

Opt-in per agent (``Agent.cache_enabled``). The key is a hash of the normalised
request (for the composed APIs: the endpoint, the agent and the body's JSON with its
keys sorted, less fields that do not change the answer; for pass-through: method,
path, query, content type and body), and of the client unless the agent shares its
cache. Entries live in the hot state (Redis in production, an in-process LRU store
when embedded) for the agent's TTL, and only whole successful answers are kept: what
the client was sent, after output guardrails, up to the agent's size cap.

A hit is admitted like any request (it counts against requests per minute and at
once, and the policy rules and guardrails still apply) but reserves and charges
nothing: its audit record costs $0 and says what it saved at the model's price.
The client's ``Cache-Control: no-store`` skips the cache both ways, ``no-cache``
asks the upstream and keeps its answer. Invalidation bumps a generation counter (per
agent, per client), so every entry made before is unreachable at once, everywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings

from billing.pricing import cost_nanos, nanos_to_usd, price_for, prices
from gateway_project.hotstate import get_hot_state
from routing.admission import admit, admit_anonymous, settle
from routing.cache_policy import CachePolicy
from routing.exchange import Exchange
from routing.facts import RequestFacts
from routing.table import AgentRoute

log = logging.getLogger("gateway.cache")

HEADER = b"x-gateway-cache"
HIT, MISS, BYPASS = b"hit", b"miss", b"bypass"
# Fields of a composed request that do not change its answer: who asks, and what the provider keeps of it.
IGNORED_FIELDS = frozenset({"user", "metadata", "store"})
DEFAULT_TEMPERATURE = 1.0  # the providers' own, for a request that sets none
FORMAT = 1
NANO = Decimal("0.000000001")


@dataclass(frozen=True, slots=True)
class Lookup:
    """One request's place in its agent's cache, and what it may do there."""

    policy: CachePolicy
    generation_keys: tuple[str, ...]  # the agent's, and the client's when the cache is per client
    scope: str  # the entries' key prefix: agent, and client or "*"
    digest: str  # the normalised request's hash
    read: bool  # a cached answer may answer it (not after ``Cache-Control: no-cache``)
    # Its answer may be kept. Not a ``no-cache`` answer in a shared cache: one client asking again and again until
    # it likes a sample would otherwise choose what every other client is served.
    keep: bool = True
    # The generations when the request was looked up: its answer is kept only if none moved on meanwhile (an
    # invalidation while the upstream was answering must not let the answer it made stale be kept past it).
    seen: list[int] = field(default_factory=list)

    def entry_key(self, generations: list[int]) -> str:
        return f"{self.scope}:{':'.join(map(str, generations))}:{self.digest}"

    def looked_up(self, generations: list[int]) -> str:
        """``entry_key`` for ``cached``, noting the generations it was read under."""
        self.seen[:] = generations
        return self.entry_key(generations)

    def unchanged(self, generations: list[int]) -> str | None:
        """``entry_key`` for ``cache``: None when a generation moved on since the look-up (not kept)."""
        return self.entry_key(generations) if self.seen and list(generations) == self.seen else None


def cache_control(headers: dict[bytes, bytes]) -> frozenset[str]:
    """The client's ``Cache-Control`` directives, lower-cased, their arguments dropped."""
    value = headers.get(b"cache-control", b"").decode("latin-1").lower()
    return frozenset(part.split("=", 1)[0].strip() for part in value.split(",") if part.strip())


def too_hot(payload: dict, policy: CachePolicy) -> bool:
    """Whether the request's temperature asks for answers that vary more than the gateway caches."""
    if policy.any_temperature:
        return False
    value = payload.get("temperature", DEFAULT_TEMPERATURE)
    if value is None:
        value = DEFAULT_TEMPERATURE
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True  # the upstream will refuse it; nothing to keep
    return value > settings.GATEWAY["CACHE"]["MAX_TEMPERATURE"]


def normalised(endpoint: str, payload: dict) -> bytes:
    """The request as the cache compares it: its endpoint and its JSON, keys sorted, answer-neutral fields left out."""
    kept = {name: value for name, value in payload.items() if name not in IGNORED_FIELDS}
    body = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return f"{endpoint}\n".encode() + body.encode("utf-8", "surrogatepass")


def raw_request(ex: Exchange, rest: bytes) -> bytes:
    """A pass-through request as the cache compares it: method, path, query, content type, accepted type and body."""
    parts = (ex.method.encode(), rest, ex.query, ex.headers.get(b"content-type", b""), ex.headers.get(b"accept", b""))
    return b"\n".join(len(part).to_bytes(4, "big") + part for part in parts) + b"\n" + ex.body


def json_object(body: bytes) -> dict | None:
    """A pass-through body's JSON object (its temperature), or None when it is not one."""
    if not body.lstrip().startswith(b"{"):
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def lookup_for(ex: Exchange, route: AgentRoute, request: bytes, *, stream: bool, payload: dict | None = None):
    """Where this request stands in its agent's cache, or None when it is answered fresh (and says which: the
    agent caches nothing, or the request is ``bypass``: ``no-store``, a stream the agent does not cache, too hot).
    """
    policy = route.cache
    if policy is None:
        return None
    directives = cache_control(ex.headers)
    hot = payload is not None and too_hot(payload, policy)
    anonymous = ex.key is None and not policy.shared  # a path route's keyless caller: no client to keep it for
    if "no-store" in directives or (stream and not policy.streams) or hot or anonymous:
        ex.extra_headers.append((HEADER, BYPASS))
        ex.details["cache"] = {"status": "bypass"}
        return None
    store = get_hot_state()
    generations = [store.key("cache-gen", "agent", route.slug)]
    if not policy.shared:
        generations.append(store.key("cache-gen", "client", ex.key.client_id))
    client = "*" if policy.shared else str(ex.key.client_id)
    digest = hashlib.sha256(request).hexdigest()
    scope = store.key("cache", route.slug, policy.scope or "agent", policy.epoch, client)
    fresh = "no-cache" in directives
    return Lookup(policy, tuple(generations), scope, digest, read=not fresh, keep=not (fresh and policy.shared))


async def answer_from_cache(ex: Exchange, facts: RequestFacts, lookup: Lookup) -> bool:
    """Answer from the cache if it holds this request's answer: admitted for its requests per minute and at once
    only, charged nothing. False (a miss) when it does not, or cannot be read."""
    entry = None
    try:
        if lookup.read:
            entry = await get_hot_state().cached(list(lookup.generation_keys), lookup.looked_up)
        else:  # asked fresh, but kept only if nothing is forgotten meanwhile
            lookup.seen[:] = await get_hot_state().generations(list(lookup.generation_keys))
    except Exception:  # an unreachable cache is a miss, never a failed request
        log.warning("request %s: the response cache could not be read", ex.request_id, exc_info=True)
    if entry is not None:
        kept = _read_entry(entry)
        if kept is not None:
            await _replay(ex, facts, *kept)
            return True
    ex.extra_headers.append((HEADER, MISS))
    ex.capture, ex.capture_limit = bytearray(), lookup.policy.max_entry_bytes
    return False


def _read_entry(entry: bytes) -> tuple[dict, bytes] | None:
    head, newline, body = entry.partition(b"\n")
    try:
        meta = json.loads(head)
    except ValueError:
        return None
    if not newline or not isinstance(meta, dict) or meta.get("v") != FORMAT:
        return None
    return meta, body


async def _replay(ex: Exchange, facts: RequestFacts, meta: dict, body: bytes) -> None:
    """Send a kept answer as it was sent the first time (its output still checked against today's guardrails)."""
    # Nothing reserved, nothing will be charged; the agent is not asked, so its capacity is not taken.
    free = facts._replace(route=None, demand=None)
    ticket = await (admit(ex, free) if facts.key is not None else admit_anonymous(ex, free))
    age = max(0, int(time.time() - meta["created"]))
    try:
        ex.extra_headers += [(HEADER, HIT), (b"age", str(age).encode())]
        content_type = meta["content_type"].encode("latin-1")
        if meta["stream"]:
            await ex.start(200, [(b"content-type", content_type), (b"cache-control", b"no-cache")])
            await ex.send(body, more=False)
        else:
            await ex.respond(200, body, [(b"content-type", content_type)])
    finally:
        await settle(ex, ticket)
    ex.model = meta["model"] or ex.model
    ex.input_tokens, ex.output_tokens, ex.cost_nanos = meta["input_tokens"], meta["output_tokens"], 0
    price = price_for(await prices.get(), ex.model)
    saved = cost_nanos(price, ex.input_tokens, ex.output_tokens)
    ex.details["cache"] = {
        "status": "hit", "saved_usd": format(nanos_to_usd(saved), "f"), "age_seconds": age,
        "first_answered": meta["request_id"],
    }  # fmt: skip


async def keep_answer(ex: Exchange, lookup: Lookup) -> None:
    """Keep the answer just sent, if it is whole, successful, within the size cap and the one asked for."""
    captured, ex.capture = ex.capture, None
    stored = (
        captured is not None
        and lookup.keep
        and ex.status == 200
        and ex.response_finished
        and not (ex.error_type or ex.client_left)
        and not {"fallback", "usage_partial", "usage_missing", "attempts_stopped"} & ex.details.keys()
        and (lookup.policy.streams or not ex.streaming)
    )
    if stored:
        meta = {
            "v": FORMAT, "model": ex.model, "input_tokens": ex.input_tokens, "output_tokens": ex.output_tokens,
            "content_type": ex.captured_type.decode("latin-1"), "stream": ex.streaming, "created": time.time(),
            "request_id": ex.request_id,
        }  # fmt: skip
        value = json.dumps(meta).encode() + b"\n" + bytes(captured)
        try:
            ttl = lookup.policy.ttl_seconds
            stored = await get_hot_state().cache(list(lookup.generation_keys), lookup.unchanged, value, ttl)
        except Exception:
            log.warning("request %s: the response cache could not be written", ex.request_id, exc_info=True)
            stored = False
    ex.details["cache"] = {"status": "miss", "stored": stored}


def forget(target, user, via: str) -> None:
    """Forget what an ``Agent`` (every client's) or a ``Client`` (its own entries) has cached, in the admin trail."""
    from django.db import transaction

    from audit.trail import record_action
    from keys.models import Client

    with transaction.atomic():
        record_action(user, via, "invalidate_cache", target)
        if isinstance(target, Client):
            forget_client(target.pk)
        else:
            forget_agent(target.slug)


def forget_agent(slug: str) -> None:
    """Every cached answer of the agent, for every client, unreachable from now on."""
    store = get_hot_state()
    store.bump_now(store.key("cache-gen", "agent", slug))


def forget_client(client_id: int) -> None:
    """Every answer cached for the client alone (agents whose cache is per client), unreachable from now on."""
    store = get_hot_state()
    store.bump_now(store.key("cache-gen", "client", client_id))


def cache_stats(agent: str, hours: int = 24) -> dict:
    """How an agent's cache did over the last ``hours``, from the audit log: hits, misses, bypasses, hit rate (of
    the requests it could answer: hits and misses) and what the hits saved."""
    from datetime import timedelta

    from django.db.models import Count, DecimalField, Q, Sum
    from django.db.models.fields.json import KT
    from django.db.models.functions import Cast
    from django.utils import timezone

    from audit.models import AuditRecord

    since = timezone.now() - timedelta(hours=hours)
    rows = AuditRecord.objects.filter(agent=agent, created_at__gte=since, details__has_key="cache")
    figures = rows.aggregate(
        hits=Count("pk", filter=Q(details__cache__status="hit")),
        misses=Count("pk", filter=Q(details__cache__status="miss")),
        bypassed=Count("pk", filter=Q(details__cache__status="bypass")),
        saved=Sum(
            Cast(KT("details__cache__saved_usd"), DecimalField(max_digits=20, decimal_places=9)),
            filter=Q(details__cache__status="hit"),
        ),
    )
    answered = figures["hits"] + figures["misses"]
    return {
        "agent": agent,
        "hours": hours,
        "hits": figures["hits"],
        "misses": figures["misses"],
        "bypassed": figures["bypassed"],
        "hit_rate": round(figures["hits"] / answered, 4) if answered else None,
        "saved_usd": format(Decimal(figures["saved"] or 0).quantize(NANO), "f"),
    }
