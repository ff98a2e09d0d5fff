"""Console sign-in through an OpenID Connect provider (mozilla-django-oidc), beside local accounts.

Configured from the environment (``GATEWAY_OIDC_*``, see the README); when it is, the sign-in
page offers the provider. The code flow runs with PKCE and a nonce; the ID token is verified
with the provider's keys. A user is found by the link of their provider account (issuer and
subject, ``ConsoleIdentity``), never by e-mail address, and is made on first sign-in. Their
console roles follow the provider's groups at every sign-in (``GATEWAY_OIDC_ROLE_MAP``: group
to role); someone whose groups map to no role is not let in. Every role change is in the
admin-action trail, by ``oidc``.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import SuspiciousOperation
from django.db import IntegrityError, transaction
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from audit.trail import record_event
from gateway_project import roles
from gateway_project.models import ConsoleIdentity

VIA = "oidc"
_NOT_IN_USERNAME = re.compile(r"[^A-Za-z0-9_.@+-]")  # ASCII: no name that looks like another's (a Cyrillic o)


def enabled() -> bool:
    return bool(getattr(settings, "OIDC_RP_CLIENT_ID", ""))


def roles_for(groups) -> set[str]:
    """The console roles ``groups`` (the provider's groups claim) map to by ``GATEWAY_OIDC_ROLE_MAP``."""
    if isinstance(groups, str):
        groups = groups.split()
    if not isinstance(groups, list):
        return set()
    mapping = settings.GATEWAY_OIDC_ROLE_MAP
    return {mapping[group] for group in groups if isinstance(group, str) and group in mapping}


class ConsoleOIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend, finding users by their provider link and keeping their roles in step."""

    def get_or_create_user(self, access_token, id_token, payload):
        claims = self.get_userinfo(access_token, id_token, payload)
        issuer, subject = payload.get("iss"), payload.get("sub")
        if not isinstance(issuer, str) or not isinstance(subject, str) or not subject or len(subject) > 255:
            raise SuspiciousOperation("The ID token has no usable iss and sub.")
        if claims.get("sub") != subject:  # OpenID Connect Core 5.3.2: the userinfo must be the token's subject's
            raise SuspiciousOperation("The userinfo answer is not the ID token's subject's.")
        granted = roles_for(claims.get(settings.GATEWAY_OIDC_GROUPS_CLAIM))
        link = ConsoleIdentity.objects.select_related("user").filter(issuer=issuer, subject=subject).first()
        if not granted:  # taken out of every mapped group: whatever roles they held go too (sessions, API tokens)
            if link is not None:
                self._set_roles(link.user, set(), claims.get(settings.GATEWAY_OIDC_GROUPS_CLAIM))
            raise SuspiciousOperation(f"{subject} at {issuer}: no group of theirs maps to a console role.")
        user = link.user if link is not None else self._new_user(issuer, subject, claims)
        if not user.is_active:
            return None  # an admin disabled them in the console: the provider does not override that
        self._set_roles(user, granted, claims.get(settings.GATEWAY_OIDC_GROUPS_CLAIM))
        return user

    def _new_user(self, issuer: str, subject: str, claims: dict):
        User = get_user_model()
        email = claims.get("email") if isinstance(claims.get("email"), str) else ""
        wanted = claims.get("preferred_username") or email.partition("@")[0] or subject
        base = _NOT_IN_USERNAME.sub("-", str(wanted))[:140] or "user"
        with transaction.atomic():
            username, n = base, 1
            while User.objects.filter(username=username).exists():  # a local account keeps its name
                n += 1
                username = f"{base}-{n}"
            user = User(username=username, email=email[:254])
            user.set_unusable_password()  # signs in through the provider only
            try:
                with transaction.atomic():
                    user.save()
                    ConsoleIdentity.objects.create(user=user, issuer=issuer, subject=subject)
            except IntegrityError:  # a sign-in of the same person, or of the same name, at the same moment: again
                raise SuspiciousOperation("Another sign-in took this account's name or link; sign in again.") from None
            record_event(user, VIA, "create", "auth.user", user.pk, username,
                         changes={"username": [None, username], "oidc_subject": [None, subject]})  # fmt: skip
        return user

    def _set_roles(self, user, granted: set[str], groups) -> None:
        held = set(roles.roles_of(user)) - ({roles.ADMIN} if user.is_superuser else set())
        if held == granted:
            return
        with transaction.atomic():
            user.groups.remove(*Group.objects.filter(name__in=roles.ROLES))
            user.groups.add(*Group.objects.filter(name__in=granted))
            user._gateway_roles = None
            ConsoleIdentity.objects.filter(user=user).update(last_groups=groups if isinstance(groups, list) else [])
            record_event(user, VIA, "update", "auth.user", user.pk, user.get_username(),
                         changes={"roles": [sorted(held), sorted(granted)]})  # fmt: skip
