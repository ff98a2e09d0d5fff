"""Console sign-in through OpenID Connect in headless Chromium: a real provider on loopback (django-oauth-toolkit),
the code flow with PKCE, users made on first sign-in with the roles their groups map to, local accounts untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from tests.browser.test_console_flows import sign_in
from tests.servers import ROOT, Gateway, free_port, wait_for_port

PASSWORD = "provider-password-1"
USERS = {"ada": ["gw-admins", "staff"], "carl": ["auditors"], "sam": ["sales"], "olga": ["gw-ops"]}


@pytest.fixture(scope="module")
def sso(seeded, tmp_path_factory):
    """A gateway whose console signs in through a provider on loopback, and that provider."""
    provider_port = free_port()
    issuer = f"http://127.0.0.1:{provider_port}/o"
    client_id, secret = f"console-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    gateway = Gateway(
        GATEWAY_OIDC_CLIENT_ID=client_id, GATEWAY_OIDC_CLIENT_SECRET=secret, GATEWAY_OIDC_NAME="Test IdP",
        GATEWAY_OIDC_AUTHORIZATION_URL=f"{issuer}/authorize/", GATEWAY_OIDC_TOKEN_URL=f"{issuer}/token/",
        GATEWAY_OIDC_USERINFO_URL=f"{issuer}/userinfo/", GATEWAY_OIDC_JWKS_URL=f"{issuer}/.well-known/jwks.json",
        GATEWAY_OIDC_ROLE_MAP="gw-admins=admin,auditors=compliance,gw-ops=operator",
    )  # fmt: skip
    directory = tmp_path_factory.mktemp("oidc-provider")
    log = open(Path(settings.VAR_DIR) / f"oidc-provider-{provider_port}.log", "wb")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS", "DATABASE", "REDIS"))},
        "OIDC_TEST_DIR": str(directory), "OIDC_TEST_USERS": json.dumps(USERS), "OIDC_TEST_PASSWORD": PASSWORD,
        "OIDC_TEST_CLIENT_ID": client_id, "OIDC_TEST_CLIENT_SECRET": secret,
        "OIDC_TEST_REDIRECT": f"{gateway.url}/oidc/callback/",
    }  # fmt: skip
    provider = subprocess.Popen([sys.executable, "-m", "tests.oidc_provider.serve", str(provider_port)], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for_port(provider_port, provider)
        yield gateway, issuer
    finally:
        provider.terminate()
        provider.wait(10)
        log.close()
        gateway.stop()


def sign_in_through_provider(page, gateway, username: str) -> None:
    page.goto(f"{gateway.url}/console/login/")
    page.click("#sso")
    page.wait_for_selector("#provider-sign-in")  # the provider's own page
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("#provider-sign-in")
    page.wait_for_load_state("networkidle")


def test_an_admin_of_the_provider_signs_in_and_gets_the_role_their_group_maps_to(sso, page, screenshot, live_db):
    from django.contrib.auth import get_user_model

    from audit.models import AdminAction
    from gateway_project import roles
    from gateway_project.models import AuthEvent, ConsoleIdentity

    gateway, issuer = sso
    page.goto(f"{gateway.url}/console/login/")
    assert "Sign in with Test IdP" in page.text_content("#sso")
    screenshot(page, "sign-in-sso")
    sign_in_through_provider(page, gateway, "ada")
    assert page.url.startswith(f"{gateway.url}/console/"), page.url
    assert "Sign in" not in page.title()
    link = ConsoleIdentity.objects.select_related("user").get(issuer=issuer, user__username="ada")
    assert roles.roles_of(link.user) == {roles.ADMIN} and not link.user.has_usable_password()
    assert AuthEvent.objects.filter(username="ada", outcome=AuthEvent.SIGNED_IN).exists()
    assert AdminAction.objects.filter(via="oidc", object_type="auth.user", object_id=str(link.user.pk)).exists()
    # Admin pages work: the users page lists them.
    page.goto(f"{gateway.url}/console/users/")
    assert "ada" in page.text_content("main")
    assert get_user_model().objects.filter(username="ada").count() == 1


def test_groups_that_map_to_no_role_are_not_let_in(sso, page, live_db):
    from django.contrib.auth import get_user_model

    gateway, _ = sso
    sign_in_through_provider(page, gateway, "sam")
    assert page.url.startswith(f"{gateway.url}/console/login/"), page.url
    assert page.locator("#sso-failed").count() == 1
    assert not get_user_model().objects.filter(username__startswith="sam").exists()


def test_a_local_account_of_the_same_name_is_neither_taken_over_nor_touched(sso, page, live_db):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from gateway_project import roles

    gateway, _ = sso
    User = get_user_model()
    local = User.objects.create_user("carl", "carl@example.com", "local-password-1")
    local.groups.add(Group.objects.get(name=roles.OPERATOR))
    sign_in_through_provider(page, gateway, "carl")
    assert page.url.startswith(f"{gateway.url}/console/"), page.url
    arrived = User.objects.get(console_identity__subject__isnull=False, username__startswith="carl-")
    assert roles.roles_of(arrived) == {roles.COMPLIANCE}
    local.refresh_from_db()
    assert roles.roles_of(local) == {roles.OPERATOR} and local.check_password("local-password-1")
    # Local sign-in still works beside it.
    page.context.clear_cookies()
    sign_in(page, gateway, "carl", "local-password-1")
    assert page.url.startswith(f"{gateway.url}/console/")


def test_roles_follow_the_providers_groups_at_every_sign_in(sso, page, live_db):
    from django.contrib.auth.models import Group

    from gateway_project import roles
    from gateway_project.models import ConsoleIdentity

    gateway, _ = sso
    sign_in_through_provider(page, gateway, "olga")
    user = ConsoleIdentity.objects.get(user__username="olga").user
    assert roles.roles_of(user) == {roles.OPERATOR}
    user.groups.add(Group.objects.get(name=roles.ADMIN))  # granted in the console, not at the provider
    page.context.clear_cookies()
    sign_in_through_provider(page, gateway, "olga")
    user = type(user).objects.get(pk=user.pk)
    assert roles.roles_of(user) == {roles.OPERATOR}
