"""Secrets in the settings fail loudly: a deployed gateway needs its secret key and credential keys, a ``*_FILE`` that
is empty or unreadable is an error rather than a quiet fallback, and the secrets an embedded run generates are
readable by their owner only."""

from __future__ import annotations

import base64
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOYED = {
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "console.example.com,gateway.example.com",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "GATEWAY_CREDENTIAL_KEYS": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
}


def fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def load_settings(var_dir: Path, **extra: str) -> subprocess.CompletedProcess:
    """Load the settings in a fresh process with only ``extra`` of ours set; print the credential keys."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_URL", "REDIS_URL", "GATEWAY_CREDENTIAL_KEYS"))
    }
    code = "from django.conf import settings as s; print(','.join(s.GATEWAY_CREDENTIAL_KEYS))"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DJANGO_SETTINGS_MODULE": "gateway_project.settings", "GATEWAY_VAR_DIR": str(var_dir), **extra},
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip


def test_a_deployed_gateway_without_credential_keys_refuses_to_start(tmp_path):
    run = load_settings(tmp_path, **{k: v for k, v in DEPLOYED.items() if k != "GATEWAY_CREDENTIAL_KEYS"})
    assert run.returncode != 0 and "GATEWAY_CREDENTIAL_KEYS (or GATEWAY_CREDENTIAL_KEYS_FILE) must be set" in run.stderr
    assert not (tmp_path / "credential_key").exists()


def test_a_deployed_gateway_without_a_secret_key_refuses_to_start(tmp_path):
    run = load_settings(tmp_path, **{k: v for k, v in DEPLOYED.items() if k != "DJANGO_SECRET_KEY"})
    assert run.returncode != 0 and "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set" in run.stderr
    assert not (tmp_path / "secret_key").exists()


def test_an_empty_or_unreadable_secret_file_is_an_error_not_a_fallback(tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    broken = ((str(empty), "is empty"), (str(tmp_path / "missing"), "cannot be read"), ("", "set but empty"))
    for value, said in broken:
        run = load_settings(tmp_path, DJANGO_SECRET_KEY_FILE=value)
        assert run.returncode != 0 and "DJANGO_SECRET_KEY_FILE" in run.stderr and said in run.stderr, run.stderr
    assert not (tmp_path / "secret_key").exists()  # no generated key stood in for the one the file should hold
    for value, said in broken:
        run = load_settings(tmp_path, GATEWAY_CREDENTIAL_KEYS_FILE=value)
        assert run.returncode != 0 and "GATEWAY_CREDENTIAL_KEYS_FILE" in run.stderr and said in run.stderr
    assert not (tmp_path / "credential_key").exists()


def test_credential_keys_come_from_a_file_one_a_line_newest_first(tmp_path):
    new, old = fernet_key(), fernet_key()
    keys = tmp_path / "keys"
    keys.write_text(f"{new}\n{old}\n")
    run = load_settings(tmp_path, GATEWAY_CREDENTIAL_KEYS_FILE=str(keys))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == f"{new},{old}"


def test_a_key_that_is_not_a_fernet_key_is_refused_without_being_echoed(tmp_path):
    run = load_settings(tmp_path, GATEWAY_CREDENTIAL_KEYS=f"{fernet_key()},not-a-key-s3cr3t")
    assert run.returncode != 0 and "key 2 is not a Fernet key" in run.stderr
    assert "not-a-key-s3cr3t" not in run.stderr


def test_an_embedded_run_generates_its_secrets_readable_by_their_owner_only(tmp_path):
    old_umask = os.umask(0o022)
    try:
        first = load_settings(tmp_path)
        second = load_settings(tmp_path)
    finally:
        os.umask(old_umask)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout  # generated once, then read
    for name in ("secret_key", "credential_key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


def test_a_secret_key_file_left_readable_by_others_is_tightened(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text(secrets.token_urlsafe(50))
    key_file.chmod(0o644)
    assert load_settings(tmp_path).returncode == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
