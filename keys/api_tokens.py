"""Management API tokens: issue, rotate, revoke and check them; shared by the API, its authentication and the CLI.

A token is stored as a SHA-256 hash with a visible prefix, like a gateway key: the
raw token is shown once, when issued. Each has an expiry, ``GATEWAY_API_TOKEN_DAYS``
after issue unless one is given (0 days: tokens do not expire unless told to).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from keys.models import ApiToken, hash_key

DEFAULT = object()  # "the default lifetime" (None means "never expires")


def default_expiry(now: datetime | None = None) -> datetime | None:
    """When a token issued now expires by default; None when ``GATEWAY_API_TOKEN_DAYS`` is 0."""
    days = settings.GATEWAY_API_TOKEN_DAYS
    return (now or timezone.now()) + timedelta(days=days) if days else None


def live_tokens(user):
    """The tokens of ``user`` that would open the API now."""
    now = timezone.now()
    return ApiToken.objects.filter(user=user, revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )


def issue_token(user, expires_at=DEFAULT) -> tuple[ApiToken, str]:
    """A new token for ``user``, returned with its raw secret (never stored); ``expires_at=None`` never expires."""
    now = timezone.now()
    raw = ApiToken.new_secret()
    token = ApiToken(user=user, created_at=now, expires_at=default_expiry(now) if expires_at is DEFAULT else expires_at)
    token.set_secret(raw)
    token.save()
    return token, raw


@transaction.atomic
def replace_tokens(user, expires_at=DEFAULT) -> tuple[ApiToken, str]:
    """Revoke every live token of ``user`` and issue one new one (the CLI's ``--rotate``)."""
    new, raw = issue_token(user, expires_at)
    live_tokens(user).exclude(pk=new.pk).update(revoked_at=new.created_at, replaced_by=new)
    return new, raw


@transaction.atomic
def revoke_tokens(user) -> int:
    """Revoke every live token of ``user`` now; how many there were."""
    return live_tokens(user).update(revoked_at=timezone.now())


class TokenRefused(Exception):
    """A token that does not open the API, with the reason its caller is told."""


@transaction.atomic
def rotate_token(token: ApiToken) -> tuple[ApiToken, str]:
    """Replace ``token`` by a new one of the same lifetime, from now; ``token`` stops working at once.

    ``TokenRefused`` if it no longer works (rotated or revoked meanwhile, or expired).
    """
    list(ApiToken.objects.select_for_update().filter(pk=token.pk).values_list("pk"))
    token.refresh_from_db(fields=["expires_at", "revoked_at", "replaced_by"])
    refusal = _refusal(token)
    if refusal:
        raise TokenRefused(refusal)
    lifetime = token.lifetime
    now = timezone.now()
    new, raw = issue_token(token.user, None if lifetime is None else now + lifetime)
    token.revoked_at, token.replaced_by = new.created_at, new
    token.save(update_fields=["revoked_at", "replaced_by"])
    return new, raw


def _refusal(token: ApiToken) -> str | None:
    if token.revoked_at is not None:
        when = token.revoked_at.isoformat(timespec="seconds")
        if token.replaced_by_id is not None:
            return f"This API token was rotated at {when}; call with the token that replaced it."
        return f"This API token was revoked at {when}; ask an admin for a new one."
    if token.is_expired:
        return (
            f"This API token expired at {token.expires_at.isoformat(timespec='seconds')}; ask an admin for a new one "
            "(manage.py api_token USER --rotate), and rotate tokens before they expire (POST /api/v1/token/rotate/)."
        )
    return None


def authenticate(raw: str) -> ApiToken:
    """The live token ``raw`` is (its ``user`` is who calls); ``TokenRefused`` saying why not."""
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_key(raw)).first()
    if token is None:
        raise TokenRefused("Invalid token.")
    refusal = _refusal(token)
    if refusal:
        raise TokenRefused(refusal)
    if not token.user.is_active:
        raise TokenRefused("User inactive or deleted.")
    return token
