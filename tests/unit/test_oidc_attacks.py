"""Console sign-in through OpenID Connect after an attack (gateway_project/oidc.py), at the backend."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import SuspiciousOperation
from django.test import override_settings

ISSUER = "https://idp.example"
MAP = {"gw-admins": "admin", "auditors": "compliance"}


def backend(userinfo: dict):
    from gateway_project.oidc import ConsoleOIDCBackend

    made = ConsoleOIDCBackend.__new__(ConsoleOIDCBackend)  # no provider endpoints needed to test the user logic
    made.get_userinfo = lambda access_token, id_token, payload: userinfo
    return made


def sign_in(subject, **claims):
    return backend({"sub": subject, **claims}).get_or_create_user("at", "it", {"iss": ISSUER, "sub": subject})


@pytest.fixture(autouse=True)
def roles_exist(live_db):
    from django.contrib.auth.models import Group

    from gateway_project import roles

    for name in roles.ROLES:
        Group.objects.get_or_create(name=name)


@override_settings(GATEWAY_OIDC_ROLE_MAP=MAP, GATEWAY_OIDC_GROUPS_CLAIM="groups")
def test_a_person_taken_out_of_every_mapped_group_loses_their_console_roles(live_db):
    from gateway_project import roles

    subject = uuid.uuid4().hex
    user = sign_in(subject, preferred_username=f"ada-{subject[:6]}", groups=["gw-admins"])
    assert roles.roles_of(user) == {roles.ADMIN}
    # The provider's admins take them out of gw-admins: the sign-in is refused ("no role no entry") ...
    with pytest.raises(SuspiciousOperation):
        sign_in(subject, groups=["sales"])
    # ... and the account loses its roles: its open console sessions and API tokens with them.
    user = type(user).objects.get(pk=user.pk)
    assert roles.roles_of(user) == frozenset(), roles.roles_of(user)


@override_settings(GATEWAY_OIDC_ROLE_MAP=MAP, GATEWAY_OIDC_GROUPS_CLAIM="groups")
def test_a_provider_username_cannot_look_like_a_local_admins(live_db):
    from django.contrib.auth import get_user_model

    local = get_user_model().objects.create_user(f"root{uuid.uuid4().hex[:4]}", is_superuser=True)
    lookalike = local.username.replace("o", "\u043e")  # Cyrillic o
    user = sign_in(uuid.uuid4().hex, preferred_username=lookalike, groups=["auditors"])
    assert user.username != local.username
    assert user.username.isascii(), (user.username, local.username)
