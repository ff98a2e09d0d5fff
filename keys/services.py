"""Creating, revoking and describing keys: shared by the console, the API and the CLI."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from keys.models import AgentRole, ApiKey, Client, Plan

IDENTITY_KEY_PREFIX = "idk_"  # the visible prefix of an identity key (its secret is never used)


def issue_key(client: Client, plan: Plan | None = None, **fields) -> tuple[ApiKey, str]:
    """Create a key for ``client``; return it with the raw secret, which is never stored.

    A ``plan`` gives the limits the caller does not set (and, through billing, its budget).
    """
    if plan is not None:
        fields = {**plan.key_defaults(), **fields}
    raw = ApiKey.new_secret()
    key = ApiKey(client=client, plan=plan, **fields)
    key.set_secret(raw)
    key.full_clean()
    key.save()
    return key, raw


def role_holders(role: AgentRole) -> list[ApiKey]:
    """The keys that hold ``role``."""
    # A text match narrows the rows on every database (SQLite has no JSON containment), the list decides.
    candidates = ApiKey.objects.filter(roles__icontains=role.slug).select_related("client")
    return [key for key in candidates if role.slug in (key.roles or [])]


def role_refusal(role: AgentRole) -> str:
    """Why ``role`` may not be deleted (agents require it), or ""."""
    agents = sorted(role.agents.values_list("slug", flat=True))
    if not agents:
        return ""
    named = f"agent {agents[0]} requires" if len(agents) == 1 else f"agents {', '.join(agents)} require"
    return f"The {named} this role: give them another role, or none, first."


POLICY_ACTIVITY_WINDOW = timedelta(hours=24)
POLICY_ACTIVITY_ROWS = 100_000  # the newest records read for the counts: a page view stays bounded


def policy_activity(window: timedelta = POLICY_ACTIVITY_WINDOW) -> dict[str, tuple[int, int, int]]:
    """Per rule name: the requests it refused, those it would have refused (dry run) and those its condition failed
    on, in the audit records of the last ``window``."""
    from audit.models import AuditRecord

    since = timezone.now() - window
    notes = (
        AuditRecord.objects.filter(created_at__gte=since, details__has_key="policy")
        .order_by("-id")
        .values_list("details__policy", flat=True)[:POLICY_ACTIVITY_ROWS]
    )
    counts: dict[str, list[int]] = {}
    for note in notes:
        if not isinstance(note, dict):
            continue
        if note.get("denied_by"):
            counts.setdefault(note["denied_by"], [0, 0, 0])[0] += 1
        for name in note.get("would_deny") or ():
            counts.setdefault(name, [0, 0, 0])[1] += 1
        for name in note.get("failed") or ():
            counts.setdefault(name, [0, 0, 0])[2] += 1
    return {name: tuple(values) for name, values in counts.items()}


def guardrail_activity(window: timedelta = POLICY_ACTIVITY_WINDOW) -> dict[str, dict[str, int]]:
    """Per guardrail name: the requests it blocked, redacted and flagged, in the audit records of the last
    ``window`` (``details.guardrails``)."""
    from audit.models import AuditRecord

    since = timezone.now() - window
    notes = (
        AuditRecord.objects.filter(created_at__gte=since, details__has_key="guardrails")
        .order_by("-id")
        .values_list("details__guardrails", flat=True)[:POLICY_ACTIVITY_ROWS]
    )
    counts: dict[str, dict[str, int]] = {}
    for entries in notes:
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("guardrail"), str):
                tally = counts.setdefault(entry["guardrail"], {"block": 0, "redact": 0, "flag": 0})
                if entry.get("action") in tally:
                    tally[entry["action"]] += 1
    return counts


def revoke_key(key: ApiKey) -> ApiKey:
    """Revoke ``key`` now; every gateway process refuses it within a second."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


DEFAULT_ROTATION_GRACE = timedelta(hours=24)
MAX_ROTATION_GRACE = timedelta(days=30)
MAX_ROTATION_GRACE_HOURS = int(MAX_ROTATION_GRACE.total_seconds()) // 3600  # the console and the API ask in hours


def rotation_refusal(key: ApiKey) -> str | None:
    """Why ``key`` cannot be rotated, or None: the successor of a key that no longer works would revive it."""
    if key.identity_provider_id is not None or key.prefix.startswith(IDENTITY_KEY_PREFIX):
        return "This is an identity key: it has no secret to rotate (its provider's tokens are served through it)."
    if key.is_revoked:
        return "This key is revoked; issue a new key instead of rotating it."
    if key.is_expired:
        return "This key has expired; issue a new key instead of rotating it."
    if not key.is_active:
        return "This key is disabled; a successor would not be. Enable it first, or issue a new key."
    if key.replaced_by_id is not None:
        return f"This key was already rotated (its successor is {key.replaced_by.prefix}…); rotate the successor."
    return None


@transaction.atomic
def rotate_key(key: ApiKey, grace: timedelta = DEFAULT_ROTATION_GRACE) -> tuple[ApiKey, str]:
    """Issue a successor with the same scopes and limits; the old key expires after ``grace``.

    Refused (``ValidationError``) for a key ``rotation_refusal`` names, and for a grace
    outside 0 to ``MAX_ROTATION_GRACE``.
    """
    if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
        raise ValidationError({"grace": f"The grace period must be between 0 and {MAX_ROTATION_GRACE.days} days."})
    # Two rotations at once: the second waits for the first's row lock and then sees its successor.
    list(ApiKey.objects.select_for_update().filter(pk=key.pk).values_list("pk"))
    key.refresh_from_db(fields=["is_active", "expires_at", "revoked_at", "replaced_by", "identity_provider"])
    refusal = rotation_refusal(key)
    if refusal:
        raise ValidationError(refusal)
    successor, raw = issue_key(
        key.client,
        plan=key.plan,
        name=key.name,
        allowed_agents=key.allowed_agents,
        allowed_models=key.allowed_models,
        roles=key.roles,
        requests_per_minute=key.requests_per_minute,
        requests_per_day=key.requests_per_day,
        tokens_per_minute=key.tokens_per_minute,
        max_concurrent=key.max_concurrent,
        expires_at=key.expires_at,
    )
    ends = timezone.now() + grace
    key.expires_at = min(key.expires_at, ends) if key.expires_at else ends
    key.replaced_by = successor
    key.save(update_fields=["expires_at", "replaced_by"])
    return successor, raw


@transaction.atomic
def client_for_slug(slug: str, *, name: str = "") -> tuple[Client, bool]:
    """Return the client with ``slug``, creating it if needed."""
    return Client.objects.get_or_create(slug=slug, defaults={"name": name or slug})


def mark_keys_used(batch: dict) -> None:
    """Writer hook: set ``last_used_at`` for the keys seen in a batch of rows ({model: rows})."""
    used: dict[int, object] = {}
    for row in (row for rows in batch.values() for row in rows):
        key_id = row.get("api_key_id")
        if key_id is not None:
            used[key_id] = max(row["created_at"], used.get(key_id, row["created_at"]))
    for key_id, when in used.items():
        ApiKey.objects.filter(pk=key_id).update(last_used_at=when)


def identity_key(provider_id: int, client_slug: str) -> ApiKey | None:
    """The identity key through which ``provider``'s tokens for the client ``client_slug`` are served, made on first
    use (with no usable secret: nobody ever sees one); None when there is no such client or provider."""
    from django.db import IntegrityError

    from keys.models import IdentityProvider

    provider = IdentityProvider.objects.filter(pk=provider_id).first()
    client = Client.objects.filter(slug=client_slug).first()
    if provider is None or client is None:
        return None
    if provider.client_id is None and not provider.may_name(client):
        return None
    found = ApiKey.objects.filter(identity_provider=provider, client=client).first()
    if found is not None:
        return found
    key = ApiKey(client=client, identity_provider=provider, **provider.key_fields())
    key.set_secret(IDENTITY_KEY_PREFIX + secrets.token_urlsafe(32))
    try:
        with transaction.atomic():
            key.save()
    except IntegrityError:  # another process made it first
        return ApiKey.objects.filter(identity_provider=provider, client=client).first()
    return key
