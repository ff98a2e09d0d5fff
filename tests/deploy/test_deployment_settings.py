"""Served beyond this machine, the deployment protections are on by default, and Django's deploy check is clean."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED = {
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "console.example.com,gateway.example.com",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "GATEWAY_AUDIT_CHAIN_KEY": secrets.token_hex(32),
    "GATEWAY_AUDIT_CHECKPOINT_KEY": secrets.token_hex(32),
    "GATEWAY_CREDENTIAL_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    "DATABASE_URL": "postgres://gateway@db.internal:5432/gateway",
    "REDIS_URL": "redis://redis.internal:6379/0",
}
NAMES = [
    "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER",
]  # fmt: skip


def _settings(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))}
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {NAMES!r}}}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], env={**env, "DJANGO_SETTINGS_MODULE": "gateway_project.settings", **extra},
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_deployment_is_protected_by_default():
    values = _settings(DEPLOYED)
    assert values["SECURE_SSL_REDIRECT"] and values["SESSION_COOKIE_SECURE"] and values["CSRF_COOKIE_SECURE"]
    assert values["SECURE_HSTS_SECONDS"] >= 31_536_000
    assert values["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


def test_a_machine_of_ones_own_is_not_redirected_to_https():
    values = _settings({"DJANGO_DEBUG": "0"})
    assert not values["SECURE_SSL_REDIRECT"] and not values["SESSION_COOKIE_SECURE"]
    assert values["SECURE_PROXY_SSL_HEADER"] is None


def test_each_protection_can_be_switched_by_its_variable():
    values = _settings({**DEPLOYED, "DJANGO_SECURE_SSL_REDIRECT": "0", "DJANGO_SECURE_HSTS_SECONDS": "60"})
    assert not values["SECURE_SSL_REDIRECT"] and values["SECURE_HSTS_SECONDS"] == 60


def test_djangos_deploy_check_is_clean_for_a_deployment():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL"))}
    run = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env={**env, **DEPLOYED}, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
