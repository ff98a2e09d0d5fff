"""The chain keys for checking exports offline, as an auditor holding them would give them to verify_export.py."""

import os
from pathlib import Path

from django.conf import settings


def key_file(directory: Path) -> Path:
    """A file of the settings' chain keys, newest first, one a line (what ``--key-file`` takes)."""
    path = directory / "chain-keys"
    path.write_text("".join(key.decode() + "\n" for key in settings.GATEWAY_AUDIT_CHAIN_KEYS))
    path.chmod(0o600)
    return path


def offline_env() -> dict[str, str]:
    """An environment for verify_export.py with the chain keys in ``GATEWAY_AUDIT_CHAIN_KEY``, as an auditor may set."""
    env = {name: value for name, value in os.environ.items() if name != "GATEWAY_AUDIT_CHAIN_KEY_FILE"}
    env["GATEWAY_AUDIT_CHAIN_KEY"] = ",".join(key.decode() for key in settings.GATEWAY_AUDIT_CHAIN_KEYS)
    return env
