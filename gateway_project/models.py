"""The console's own records: authentication events (sign-ins, failures, throttling, sign-outs)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

USERNAME_LENGTH = 150  # Django's username column
USER_AGENT_LENGTH = 200


class AuthEvent(models.Model):
    """One authentication event: who tried, from where, and what came of it. Never holds a password or token.

    ``username`` is the name typed (or the user's, for a sign-out), whether or not
    such a user exists; ``user`` is set when the event belongs to a known user.
    Kept ``GATEWAY_AUTH_EVENT_RETENTION_DAYS``, then deleted by the retention task.
    """

    SIGNED_IN = "signed_in"
    FAILED = "failed"
    REFUSED = "refused"
    THROTTLED = "throttled"
    SIGNED_OUT = "signed_out"
    TOKEN_FAILED = "token_failed"
    OUTCOMES = [
        (SIGNED_IN, "signed in"),
        (FAILED, "wrong username or password"),
        (REFUSED, "right password, not allowed here"),
        (THROTTLED, "throttled"),
        (SIGNED_OUT, "signed out"),
        (TOKEN_FAILED, "API token refused"),
    ]
    CONSOLE = "console"
    ADMIN = "admin"
    API = "api"
    VIAS = [(CONSOLE, "console"), (ADMIN, "Django admin"), (API, "API")]

    created_at = models.DateTimeField(db_index=True)
    outcome = models.CharField(max_length=20, choices=OUTCOMES)
    via = models.CharField(max_length=10, choices=VIAS)
    username = models.CharField(max_length=USERNAME_LENGTH, blank=True, help_text="The username tried.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="auth_events"
    )
    address = models.GenericIPAddressField(null=True, blank=True, help_text="The client's real address.")
    user_agent = models.CharField(max_length=USER_AGENT_LENGTH, blank=True)
    detail = models.CharField(max_length=200, blank=True, help_text="Why: which limit throttled it, what was refused.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["username", "created_at"], name="authevent_username_time"),
            models.Index(fields=["address", "created_at"], name="authevent_address_time"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.username or '—'} {self.outcome}"
