"""The console's own records: authentication events (sign-ins, failures, throttling, sign-outs), OIDC links."""

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


class ConsoleIdentity(models.Model):
    """The link from a console user to their account at the OpenID Connect provider (``gateway_project.oidc``).

    Sign-ins through the provider find their user by this link (issuer and subject), never
    by e-mail address: an account at the provider with a local admin's address must not
    become that admin.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="console_identity")
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_groups = models.JSONField(default=list, blank=True, help_text="The groups the provider sent last time.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="one_user_per_oidc_subject")]

    def __str__(self):
        return f"{self.subject} at {self.issuer}"
