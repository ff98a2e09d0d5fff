"""Typed environment helpers that fail loudly on bad values.

Every setting has an embedded default so the project runs with nothing set;
secrets may also come from a file named by ``<NAME>_FILE``.
"""

import base64
import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_HOST_NAME = re.compile(r"\.?[a-z0-9_]([a-z0-9_-]{0,62}\.)*[a-z0-9_-]{0,63}")


def envstr(name: str, default: str = "") -> str:
    """Return a string setting, reading ``<name>_FILE`` when it is set.

    A ``_FILE`` that is set but empty, names a file that cannot be read, or names an empty file
    fails loudly: falling back to the default would quietly run with a generated secret.
    """
    file_name = f"{name}_FILE"
    if file_name in os.environ:
        path = os.environ[file_name]
        if not path.strip():
            raise ImproperlyConfigured(f"{file_name} is set but empty: name the file that holds {name}, or unset it.")
        try:
            with open(path, encoding="utf-8") as fh:
                value = fh.read().strip()
        except (OSError, UnicodeError) as exc:
            raise ImproperlyConfigured(f"{file_name}={path!r} cannot be read: {exc}") from exc
        if not value:
            raise ImproperlyConfigured(f"{file_name}={path!r} is empty: it must hold {name}.")
        return value
    return os.environ.get(name, default)


def private_file(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path`` (owner-only, 0600), made by ``make()`` the first time.

    The file appears whole or not at all (written aside, then linked into place), so processes
    starting together agree on one value; an existing file readable by others is tightened.
    """
    try:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, make().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    finally:
        aside.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8").strip()


def new_fernet_key() -> str:
    """A fresh key for ``GATEWAY_CREDENTIAL_KEYS``: 32 random bytes, url-safe base64 (Fernet's format)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def envkeyring(name: str) -> list[str]:
    """Comma-separated Fernet keys (newest first) from ``name`` or ``<name>_FILE``; a bad key fails loudly."""
    from cryptography.fernet import Fernet

    keys = [item.strip() for item in envstr(name, "").replace("\n", ",").split(",") if item.strip()]
    for position, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{name}: key {position} is not a Fernet key (32 url-safe base64-encoded bytes; make one with "
                "`manage.py rotate_credentials --new-key`)"
            ) from None
    return keys


def envbool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def envint(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} must be at most {maximum}")
    return value


def envfloat(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def envlist(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


_RATE = re.compile(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)")


def envrate(name: str, default: str) -> str:
    """A request rate such as ``20/hour`` (per second, minute, hour or day), checked now rather than at a request."""
    value = os.environ.get(name, default).strip()
    if not _RATE.fullmatch(value):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate like 20/hour (per s, min, hour or day)")
    return value


def envallowlist(name: str, default: list[str]) -> list[str]:
    """A comma-separated list of networks (``10.0.0.0/8``, ``::1``) and host names (``hooks.example.com``,
    ``.example.com`` for its subdomains), lower-cased; anything else fails loudly."""
    entries = []
    for entry in envlist(name, default):
        entry = entry.lower().strip("[]").rstrip(".")
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_NAME.fullmatch(entry):
                raise ImproperlyConfigured(f"{name}: {entry!r} is neither a network nor a host name") from None
        entries.append(entry)
    return entries
