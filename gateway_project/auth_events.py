"""Authentication events: recorded from Django's auth signals, the sign-in throttle and the API; filtered; expired.

Sign-ins, failures and sign-outs come from Django's own signals, so the console,
Django admin and anything else that calls ``authenticate``/``login`` are covered
alike. A throttled sign-in and a refused API token are recorded by their callers,
at most once a minute per address and name (``once_a_minute``): a flood of them
must not become a flood of rows.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.cache import cache
from django.dispatch import receiver
from django.utils import timezone

from gateway_project.addresses import request_address
from gateway_project.models import USER_AGENT_LENGTH, USERNAME_LENGTH, AuthEvent

ONCE_A_MINUTE = 60


def via_of(request) -> str:
    """Where the attempt was made: Django admin, the API or the console."""
    path = getattr(request, "path", "") or ""
    if path.startswith("/admin/"):
        return AuthEvent.ADMIN
    if path.startswith("/api/"):
        return AuthEvent.API
    return AuthEvent.CONSOLE


def user_named(username: str):
    """The user ``username`` names, or None (failures are recorded for names that exist and names that do not)."""
    if not username:
        return None
    User = get_user_model()
    return User.objects.filter(**{User.USERNAME_FIELD: username}).first()


def record(request, outcome: str, username: str = "", user=None, detail: str = "", once_a_minute: bool = False):
    """Write one event; with ``once_a_minute``, only the first of its kind from this address for this name."""
    address = request_address(request) if request is not None else None
    if once_a_minute:
        name = hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:32]
        if not cache.add(f"auth-event:{outcome}:{address}:{name}", 1, ONCE_A_MINUTE):
            return None
    meta = getattr(request, "META", {}) if request is not None else {}
    return AuthEvent.objects.create(
        created_at=timezone.now(),
        outcome=outcome,
        via=via_of(request),
        username=username[:USERNAME_LENGTH],
        user=user,
        address=address,
        user_agent=str(meta.get("HTTP_USER_AGENT", ""))[:USER_AGENT_LENGTH],
        detail=detail[:200],
    )


@receiver(user_logged_in, dispatch_uid="gateway-auth-event-signed-in")
def _signed_in(sender, request, user, **kwargs):
    record(request, AuthEvent.SIGNED_IN, user.get_username(), user)


@receiver(user_login_failed, dispatch_uid="gateway-auth-event-failed")
def _failed(sender, credentials, request=None, **kwargs):
    # ``credentials`` has its password masked by Django; only the username is kept.
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or credentials.get("username") or "")
    record(request, AuthEvent.FAILED, username, user_named(username))


@receiver(user_logged_out, dispatch_uid="gateway-auth-event-signed-out")
def _signed_out(sender, request, user, **kwargs):
    if user is not None:
        record(request, AuthEvent.SIGNED_OUT, user.get_username(), user)


def record_token_failure(request, reason: str) -> None:
    """An API request whose credentials were refused (never the token itself: only why)."""
    record(request, AuthEvent.TOKEN_FAILED, detail=reason, once_a_minute=True)


def delete_expired(now=None) -> int:
    """Delete the events older than ``GATEWAY_AUTH_EVENT_RETENTION_DAYS`` (0 keeps them for ever); how many."""
    days = settings.GATEWAY_AUTH_EVENT_RETENTION_DAYS
    if not days:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    return AuthEvent.objects.filter(created_at__lt=cutoff).delete()[0]


class AuthEventFilterForm(forms.Form):
    """The console's filters of the events: when, what came of it, which name and which address."""

    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    outcome = forms.ChoiceField(required=False, choices=[("", "any"), *AuthEvent.OUTCOMES])
    via = forms.ChoiceField(required=False, choices=[("", "any"), *AuthEvent.VIAS])
    username = forms.CharField(required=False, max_length=USERNAME_LENGTH)
    address = forms.GenericIPAddressField(required=False)

    LOOKUPS = {"since": "created_at__gte", "until": "created_at__lt", "outcome": "outcome", "via": "via",
               "username": "username", "address": "address"}  # fmt: skip

    def filter(self, queryset=None):
        """The events matching the valid fields (invalid ones are reported by the form)."""
        queryset = AuthEvent.objects.select_related("user") if queryset is None else queryset
        data = self.cleaned_data if self.is_valid() else {}
        return queryset.filter(**{self.LOOKUPS[name]: value for name, value in data.items() if value not in (None, "")})
