"""Creating, revoking and describing keys: shared by the console, the API and the CLI."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from keys.models import ApiKey, Client


def issue_key(client: Client, **fields) -> tuple[ApiKey, str]:
    """Create a key for ``client``; return it with the raw secret, which is never stored."""
    raw = ApiKey.new_secret()
    key = ApiKey(client=client, **fields)
    key.set_secret(raw)
    key.full_clean()
    key.save()
    return key, raw


def revoke_key(key: ApiKey) -> ApiKey:
    """Revoke ``key`` now; every gateway process refuses it within a second."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


@transaction.atomic
def client_for_slug(slug: str, *, name: str = "") -> tuple[Client, bool]:
    """Return the client with ``slug``, creating it if needed."""
    return Client.objects.get_or_create(slug=slug, defaults={"name": name or slug})


def mark_keys_used(rows: list[dict]) -> None:
    """Writer hook: set ``last_used_at`` for the keys seen in a batch of usage/audit rows."""
    used: dict[int, object] = {}
    for row in rows:
        key_id = row.get("api_key_id")
        if key_id is not None:
            used[key_id] = max(row["created_at"], used.get(key_id, row["created_at"]))
    for key_id, when in used.items():
        ApiKey.objects.filter(pk=key_id).update(last_used_at=when)
