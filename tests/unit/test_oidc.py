"""The console's OpenID Connect settings and group mapping alone (the sign-in itself: tests/browser)."""

from __future__ import annotations

import os
import subprocess
import sys

from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from gateway_project.oidc import roles_for
from tests.servers import ROOT

MAP = {"gw-admins": "admin", "auditors": "compliance"}


GROUPS = st.lists(st.one_of(st.sampled_from([*MAP, "sales"]), st.integers(), st.none()), max_size=6)


@override_settings(GATEWAY_OIDC_ROLE_MAP=MAP)
@given(st.one_of(st.none(), st.integers(), st.text(max_size=30), GROUPS))
def test_groups_map_to_roles_and_anything_else_to_none(groups):
    granted = roles_for(groups)
    names = groups.split() if isinstance(groups, str) else groups if isinstance(groups, list) else []
    assert granted == {MAP[name] for name in names if isinstance(name, str) and name in MAP}


def check_with(**env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_OIDC", "PYTEST"))}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env={**environment, **env},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_a_half_configured_provider_or_an_unknown_role_stops_the_start_saying_what_is_missing():
    missing = check_with(GATEWAY_OIDC_CLIENT_ID="console", GATEWAY_OIDC_ROLE_MAP="staff=admin")
    assert missing.returncode != 0 and "GATEWAY_OIDC_TOKEN_URL" in missing.stderr
    unknown = check_with(GATEWAY_OIDC_ROLE_MAP="staff=superuser")
    assert unknown.returncode != 0 and "names no role superuser" in unknown.stderr
