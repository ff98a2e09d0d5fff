"""What the hot path asks of keys: who is calling, may they, and within which limits."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from gateway_project.addresses import counted_as
from gateway_project.errors import GatewayError, forbidden
from gateway_project.hotstate import HotState, RateAdjust, RateCheck, get_hot_state
from gateway_project.logs import background_task
from gateway_project.snapshots import SnapshotCache
from keys.models import ALL, ApiKey, hash_key
from keys.origins import allows

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    """An immutable copy of a key and its client, as the hot path needs it."""

    key_id: int
    prefix: str
    client_id: int
    client_slug: str
    cost_center_id: int | None
    state: str  # active, disabled, revoked, client_disabled
    expires_at: float | None
    allowed_agents: frozenset[str] | None  # None: every agent
    allowed_models: frozenset[str] | None  # None: every model of an allowed agent
    requests_per_minute: int
    requests_per_day: int  # 0: no daily limit
    tokens_per_minute: int
    max_concurrent: int
    issued_at: float  # when the key was created: tables read before it may miss its budgets
    audit_previews: bool  # whether its client's audit records keep (redacted) previews
    client_requests_per_minute: int = 0  # shared by all the client's keys; 0: none
    client_tokens_per_minute: int = 0
    roles: frozenset[str] = frozenset()  # the agent roles it carries (``AgentRole`` slugs)
    client_tags: tuple[str, ...] = ()  # what policy rules read as client.tags, key.tags ...
    key_tags: tuple[str, ...] = ()
    cost_center_slug: str = ""
    plan_slug: str = ""
    allowed_origins: tuple[str, ...] = ()  # web origins its client allows (CORS; ``keys.origins``)
    # A caller with a JWT (``keys.identities``): the token's subject, groups and roles (already in ``roles``), its
    # provider's slug and its expiry. Empty for an API key.
    subject: str = ""
    groups: tuple[str, ...] = ()
    identity_roles: frozenset[str] = frozenset()
    identity_provider: str = ""
    token_expires_at: float | None = None

    def as_json(self) -> dict:
        """The snapshot as JSON (a job keeps the key it was admitted with): sets as sorted lists."""
        state = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            state[name] = (
                sorted(value) if isinstance(value, frozenset) else list(value) if isinstance(value, tuple) else value
            )
        return state

    @classmethod
    def from_json(cls, state: dict) -> KeySnapshot:
        """The snapshot ``as_json`` gave (a field added since is left at its default)."""
        values = {}
        for name, spec in cls.__dataclass_fields__.items():
            if name not in state:
                continue
            value, default = state[name], spec.default
            if isinstance(default, frozenset) or name in _SCOPES:
                value = None if value is None else frozenset(value)
            elif isinstance(default, tuple):
                value = tuple(value)
            values[name] = value
        return cls(**values)

    @property
    def ends_at(self) -> float | None:
        """When the key, or the caller's token, stops being accepted; None: never."""
        ends = [moment for moment in (self.expires_at, self.token_expires_at) if moment is not None]
        return min(ends) if ends else None

    def may_use_agent(self, slug: str) -> bool:
        return self.allowed_agents is None or slug in self.allowed_agents

    def may_use_model(self, model: str) -> bool:
        """An empty ``model`` means the agent's own default, which the agent scope covers."""
        return self.allowed_models is None or not model or model in self.allowed_models

    def may_call(self, agent) -> bool:
        """Whether the key may call ``agent`` (its slug, and the ``required_role`` it may have): both the key's
        agent scope and the agent's role."""
        return self.may_use_agent(agent.slug) and (not agent.required_role or agent.required_role in self.roles)


_SCOPES = ("allowed_agents", "allowed_models")  # None (everything) or a set


def _scope(values) -> frozenset[str] | None:
    """None means everything; an empty set means nothing."""
    return None if ALL in (values or ()) else frozenset(values or ())


def snapshot_of(key: ApiKey) -> dict:
    """Serialise a key (with its client loaded) into the cached snapshot form."""
    if key.revoked_at is not None:
        state = "revoked"
    elif not key.is_active:
        state = "disabled"
    elif not key.client.is_active:
        state = "client_disabled"
    else:
        state = "active"
    return {
        "key_id": key.pk,
        "prefix": key.prefix,
        "client_id": key.client_id,
        "client_slug": key.client.slug,
        "cost_center_id": key.client.cost_center_id,
        "state": state,
        "expires_at": key.expires_at.timestamp() if key.expires_at else None,
        "allowed_agents": list(key.allowed_agents or []),
        "allowed_models": list(key.allowed_models or []),
        "requests_per_minute": key.requests_per_minute,
        "requests_per_day": key.requests_per_day,
        "tokens_per_minute": key.tokens_per_minute,
        "max_concurrent": key.max_concurrent,
        "issued_at": key.created_at.timestamp(),
        "audit_previews": key.client.audit_previews,
        "client_requests_per_minute": key.client.requests_per_minute or 0,
        "client_tokens_per_minute": key.client.tokens_per_minute or 0,
        "roles": list(key.roles or []),
        "client_tags": list(key.client.tags or []),
        "key_tags": list(key.tags or []),
        "cost_center_slug": key.client.cost_center.slug if key.client.cost_center_id else "",
        "plan_slug": key.plan.slug if key.plan_id else "",
        "allowed_origins": list(key.client.allowed_origins or []),
    }


def _decode(raw: dict) -> KeySnapshot:
    return KeySnapshot(
        **{
            **raw,
            "allowed_agents": _scope(raw["allowed_agents"]),
            "allowed_models": _scope(raw["allowed_models"]),
            "roles": frozenset(raw["roles"]),
            "client_tags": tuple(raw["client_tags"]),
            "key_tags": tuple(raw["key_tags"]),
            "allowed_origins": tuple(raw["allowed_origins"]),
        }
    )


def snapshot_for(key: ApiKey) -> KeySnapshot:
    """The snapshot the hot path would hold for ``key`` (with its client loaded)."""
    return _decode(snapshot_of(key))


def _load(key_hash: str) -> dict | None:
    key = ApiKey.objects.select_related("client__cost_center", "plan").filter(key_hash=key_hash).first()
    return None if key is None else snapshot_of(key)


key_snapshots = SnapshotCache("keysnap7", _load, _decode, local_seconds=lambda: settings.GATEWAY["KEY_CACHE_SECONDS"])


@database_sync_to_async
def key_as_saved(key_id: int) -> KeySnapshot | None:
    """The key as the database holds it now, past every cache: a change to it has just been announced."""
    key = ApiKey.objects.select_related("client__cost_center", "plan").filter(pk=key_id).first()
    return None if key is None else snapshot_for(key)


def presented_key(headers: dict[bytes, bytes]) -> str | None:
    """The raw key from ``Authorization: Bearer`` or ``X-API-Key``, if any."""
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    value = headers.get(b"x-api-key")
    if value and value.strip():
        return value.decode("latin-1").strip()
    return None


_REFUSALS = {
    "revoked": ("key_revoked", "This API key has been revoked."),
    "disabled": ("key_disabled", "This API key is disabled."),
    "client_disabled": ("client_disabled", "The client this API key belongs to is disabled."),
}


AUTH_BLOCKS = "auth-blocks"  # the announcements' topic: "<seconds> <address counted as>"


def _counted_as(address: str | None) -> str:
    """The IPv4 address, or the IPv6 network (``GATEWAY_AUTH_FAILURE_IPV6_PREFIX``), failures count against."""
    return counted_as(address, settings.GATEWAY["AUTH_FAILURE_IPV6_PREFIX"])


def _too_many(retry: int) -> GatewayError:
    limit = settings.GATEWAY["AUTH_FAILURES_PER_MINUTE"]
    return GatewayError(
        429, "rate_limit_error", "too_many_failed_authentications",
        f"Too many failed authentications from this address ({limit} a minute). Retry after {retry} s.",
        [(b"retry-after", str(retry).encode())],
    )  # fmt: skip


class BlockedAddresses:
    """The addresses (as counted) every gateway process refuses outright, each until a monotonic moment.

    The failures are counted in the hot state, shared by every process; this is each
    process's copy of the verdict, so that refusing costs a dictionary look-up, not a
    round trip. A process that blocks an address announces it (``HotState.announce``),
    and every process's listener copies it, so a guess that lands on another process
    is refused unlooked-up there too. A process that was not listening (starting, or
    reconnecting to Redis) learns of a block from the count at its first failure.
    """

    def __init__(self):
        self._until: dict[str, float] = {}
        self._listener: asyncio.Task | None = None

    def refusal(self, counted: str) -> GatewayError | None:
        """The 429 for ``counted`` while it is blocked, or None."""
        self._listen()
        until = self._until.get(counted)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            self._until.pop(counted, None)
            return None
        return _too_many(max(1, math.ceil(left)))

    def hold(self, counted: str, seconds: float) -> None:
        now = time.monotonic()
        if len(self._until) > 100_000:  # bounded: the lapsed go, and if that is not enough, all (the count stays)
            self._until = {address: until for address, until in self._until.items() if until > now}
            if len(self._until) > 50_000:
                self._until = {}
        self._until[counted] = max(self._until.get(counted, 0.0), now + seconds)

    async def block(self, counted: str, seconds: int) -> None:
        """Block ``counted`` here at once and announce it to every process."""
        self.hold(counted, seconds)
        await get_hot_state().announce(AUTH_BLOCKS, f"{seconds} {counted}")

    def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done() or self._listener.get_loop() is not loop:
            self._listener = background_task(self._follow(), name="auth-blocks")

    async def _follow(self) -> None:
        async with contextlib.aclosing(get_hot_state().announcements(AUTH_BLOCKS)) as blocks:
            async for block in blocks:
                seconds, _, counted = (block or "").partition(" ")
                if counted and seconds.isdigit():
                    self.hold(counted, int(seconds))


blocked = BlockedAddresses()


def refuse_if_blocked(address: str | None) -> None:
    """Raise 429 for an address past its failed-authentication limit, before any look-up: a guess then tells the
    guesser nothing, a right key included, whichever process it reaches."""
    refusal = blocked.refusal(_counted_as(address))
    if refusal is not None:
        raise refusal


async def note_failed_authentication(address: str | None) -> None:
    """Count a failed authentication from ``address``; past the per-minute limit, raise 429 instead of the 401.

    Counted in the hot state (Redis: shared by every gateway process, so guessing keys
    costs the same wherever the guesses land), against the IPv4 address or the IPv6
    network. The failure that spends the limit blocks the address at once, so the next
    attempt is refused before its look-up, here and (announced) in every process.
    """
    store = get_hot_state()
    counted = _counted_as(address)
    limit = settings.GATEWAY["AUTH_FAILURES_PER_MINUTE"]
    check = RateCheck("auth_failures", store.key("authfail", counted), limit, 1)
    result = await store.admit([check], [], [])
    if not result.ok:
        retry = max(1, math.ceil(result.retry_after_ms / 1000))
        await blocked.block(counted, retry)
        raise _too_many(retry)
    if result.remaining.get(check.name) == 0:
        # The next failure would be refused: at most one interval of the limit away.
        await blocked.block(counted, max(1, math.ceil(check.period_ms / limit / 1000)))


async def identify(headers: dict[bytes, bytes]) -> KeySnapshot:
    """Return the snapshot of the presented key, or raise 401 when there is none or it is unknown."""
    raw = presented_key(headers)
    if raw is None:
        raise GatewayError(
            401,
            "authentication_error",
            "missing_api_key",
            "No API key given. Send it (or a token from an identity provider) as 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>'.",
        )
    if looks_like_jwt(raw):  # a token from an identity provider (keys.identities)
        from keys.identities import identify_token

        return await identify_token(raw)
    snapshot = await key_snapshots.get(hash_key(raw))
    if snapshot is None:
        raise GatewayError(401, "authentication_error", "invalid_api_key", "The API key is not valid.")
    return snapshot


def looks_like_jwt(raw: str) -> bool:
    """A JWS in compact form: three base64url parts, the first a JSON object (``eyJ`` is ``{"``); no API key is."""
    return raw.startswith("eyJ") and raw.count(".") == 2


def ensure_usable(snapshot: KeySnapshot) -> None:
    """Raise 403 for a disabled, revoked or expired key, or a key of a disabled client; 401 for a token that
    expired (a session outliving it)."""
    if snapshot.state != "active":
        code, message = _REFUSALS[snapshot.state]
        raise forbidden(message, code)
    if snapshot.expires_at is not None and snapshot.expires_at <= time.time():
        raise forbidden("This API key has expired.", "key_expired")
    if snapshot.token_expires_at is not None and snapshot.token_expires_at <= time.time():
        raise GatewayError(401, "authentication_error", "token_expired", "The token has expired.")


def carry_identity(fresh: KeySnapshot | None, held: KeySnapshot) -> KeySnapshot | None:
    """``fresh`` (a key as saved now) with the token identity ``held`` was served with, if any: a session opened
    with a JWT keeps its token's roles, subject and expiry when its identity key changes."""
    if fresh is None or not held.subject or fresh.subject:
        return fresh
    return dataclasses.replace(
        fresh, roles=fresh.roles | held.identity_roles, subject=held.subject, groups=held.groups,
        identity_roles=held.identity_roles, identity_provider=held.identity_provider,
        token_expires_at=held.token_expires_at,
    )  # fmt: skip


def ensure_origin(snapshot: KeySnapshot, origin: bytes | None) -> None:
    """403 for a browser on an origin the key's client does not allow, when the client allows any (``keys.origins``)."""
    if origin is None or not snapshot.allowed_origins or allows(snapshot.allowed_origins, origin.decode("latin-1")):
        return
    raise forbidden(
        f"This API key's client does not allow browser calls from the origin {origin.decode('latin-1')!r}: an admin "
        "adds it to the client's allowed origins.",
        "origin_not_allowed",
    )


def authorize(snapshot: KeySnapshot, agent, model: str = "") -> None:
    """Raise 403 unless the key's scopes cover this agent and model, and it holds the role the agent requires.

    ``agent`` is anything with the agent's ``slug`` and ``required_role`` ("" for none): the routing table's
    entry, which this app does not import."""
    if not snapshot.may_use_agent(agent.slug):
        raise forbidden(f"This API key may not use the agent '{agent.slug}'.", "agent_not_allowed")
    if agent.required_role and agent.required_role not in snapshot.roles:
        raise forbidden(
            f"The agent '{agent.slug}' requires the role '{agent.required_role}', which this API key does not hold.",
            "role_required",
        )
    if not snapshot.may_use_model(model):
        raise forbidden(f"This API key may not use the model '{model}'.", "model_not_allowed")


def rate_checks(store: HotState, snapshot: KeySnapshot, tokens: int) -> list[RateCheck]:
    """The key's per-minute limits for a request estimated at ``tokens`` tokens, and its client's, shared by all
    the client's keys (so that more keys are not more capacity)."""
    checks = [RateCheck("requests", store.key("rpm", snapshot.key_id), snapshot.requests_per_minute, 1)]
    if snapshot.requests_per_day:
        checks.append(
            RateCheck("requests_per_day", store.key("rpd", snapshot.key_id), snapshot.requests_per_day, 1, DAY_MS)
        )
    if tokens:
        checks.append(RateCheck("tokens", store.key("tpm", snapshot.key_id), snapshot.tokens_per_minute, tokens))
    client = snapshot.client_id
    if snapshot.client_requests_per_minute:
        checks.append(
            RateCheck("client_requests", store.key("client-rpm", client), snapshot.client_requests_per_minute, 1)
        )
    if tokens and snapshot.client_tokens_per_minute:
        checks.append(
            RateCheck("client_tokens", store.key("client-tpm", client), snapshot.client_tokens_per_minute, tokens)
        )
    return checks


def token_correction(store: HotState, snapshot: KeySnapshot, estimated: int, actual: int) -> list[RateAdjust]:
    """Move the key's (and its client's) token counter from the estimate to what the upstream really used."""
    if actual == estimated:
        return []
    delta = actual - estimated
    adjusts = [RateAdjust(store.key("tpm", snapshot.key_id), snapshot.tokens_per_minute, delta)]
    if snapshot.client_tokens_per_minute:
        limit = snapshot.client_tokens_per_minute
        adjusts.append(RateAdjust(store.key("client-tpm", snapshot.client_id), limit, delta))
    return adjusts


def concurrency_key(store: HotState, snapshot: KeySnapshot) -> str:
    return store.key("conc", snapshot.key_id)
