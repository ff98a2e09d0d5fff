"""Secrets at rest: upstream credentials and webhook signing secrets, encrypted with keys from the environment.

Every secret the gateway must read back (an agent's or target's upstream API key, a
webhook receiver's signing secret) is stored as a Fernet token (AES-128-CBC with an
HMAC-SHA256) under ``GATEWAY_CREDENTIAL_KEYS``: keys newest first. New values are
encrypted with the newest; any key of the ring decrypts. To rotate, put a new key in
front, run ``manage.py rotate_credentials`` (every value re-encrypted with it), then
drop the old key.

``EncryptedTextField`` holds the plaintext in Python and the token in the database.
Its value is never serialised (``dumpdata`` fixtures carry it empty), cannot be
searched, and the admin-action trail, Django admin and the API treat every such
field as a secret (``secret_field_names``). Reading a token no key of the ring
opens fails loudly (``Unreadable``): a key was dropped before the rotation ran.

A credential also belongs to the host it was set for (``HostBoundCredential``).
Whoever may edit an agent but cannot read its provider key could otherwise point it
at a host of their own and let the gateway send the key there. So a save that moves
the URL to another scheme, host or port, and does not set a credential in the same
save, clears the stored one (``credential_cleared`` says so, for the console and the
API to tell the person); a change of path keeps it. The rule is in ``save()``, so the
console, the API and management commands obey it alike; ``QuerySet.update()`` would
bypass it, and nothing changes these URLs that way.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models.functions import Cast
from django.db.models.query_utils import DeferredAttribute


class Unreadable(ImproperlyConfigured):
    """A stored secret that no key of ``GATEWAY_CREDENTIAL_KEYS`` decrypts."""


@lru_cache(maxsize=8)
def _ring(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _keys() -> tuple[str, ...]:
    return tuple(settings.GATEWAY_CREDENTIAL_KEYS)


def encrypt(plaintext: str) -> str:
    """``plaintext`` as a token under the newest key; "" stays "" (no secret set)."""
    if not plaintext:
        return ""
    return _ring(_keys()).encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    """The plaintext of ``token``; "" stays "". Cached, so reloading the routing table costs a look-up."""
    if not token:
        return ""
    return _decrypt(_keys(), token)


@lru_cache(maxsize=4096)
def _decrypt(keys: tuple[str, ...], token: str) -> str:
    try:
        return _ring(keys).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError):
        raise Unreadable(
            "A stored secret cannot be decrypted with any key in GATEWAY_CREDENTIAL_KEYS: the key it was encrypted "
            "with was removed before `manage.py rotate_credentials` re-encrypted it, or it was not written by the "
            "gateway."
        ) from None


def is_current(token: str) -> bool:
    """Whether ``token`` is encrypted with the newest key (``rotate_credentials`` leaves those alone)."""
    try:
        Fernet(_keys()[0]).decrypt(token.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


def new_signing_secret() -> str:
    """A webhook receiver's own signing secret (shown once, stored encrypted)."""
    return "whsec_" + secrets.token_urlsafe(32)


@dataclass
class Rotation:
    """What ``reencrypt_all`` found: per model label, values re-encrypted and values already current."""

    rotated: dict[str, int] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # "app.Model pk field", never a value


def reencrypt_all(*, dry_run: bool = False) -> Rotation:
    """Re-encrypt every stored secret not under the newest key with it (``manage.py rotate_credentials``).

    Reads the raw tokens past the field, so a token already under the newest key is left alone; each
    value is written back only if it is still the token that was read (a change made meanwhile is
    already under the newest key).
    """
    result = Rotation()
    for model in apps.get_models():
        names = sorted(secret_field_names(model))
        if not names:
            continue
        label = model._meta.label
        raw = {f"raw_{name}": Cast(name, output_field=models.TextField()) for name in names}
        rows = model._base_manager.annotate(**raw).values_list("pk", *raw)
        for pk, *tokens in rows.iterator(chunk_size=500):
            for name, token in zip(names, tokens, strict=True):
                if not token:
                    continue
                if is_current(token):
                    result.current[label] = result.current.get(label, 0) + 1
                    continue
                try:
                    plaintext = decrypt(token)
                except Unreadable:
                    result.unreadable.append(f"{label} {pk} {name}")
                    continue
                if not dry_run:
                    model._base_manager.filter(pk=pk, **{name: token}).update(**{name: plaintext})
                result.rotated[label] = result.rotated.get(label, 0) + 1
    return result


# --- the model field --------------------------------------------------------------


class _TrackedAttribute(DeferredAttribute):
    """Notes every assignment after the instance was loaded, so a save can tell "set now" from "kept"."""

    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = value
        instance.__dict__.setdefault("_secrets_assigned", set()).add(self.field.attname)


class EncryptedTextField(models.TextField):
    """Plaintext in Python, a Fernet token in the database; never serialised, never searched."""

    descriptor_class = _TrackedAttribute
    _LOOKUPS = frozenset({"exact", "isnull"})  # only `= ""` (no secret) and IS NULL mean anything on tokens

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value else value

    def get_db_prep_save(self, value, connection):
        value = self.get_prep_value(value)
        return encrypt(value) if value else value

    def value_to_string(self, obj):
        return ""  # dumpdata, and every serializer Django has: the secret stays in the database

    def get_lookup(self, lookup_name):
        return super().get_lookup(lookup_name) if lookup_name in self._LOOKUPS else None


def secret_field_names(model) -> frozenset[str]:
    """The names of ``model``'s encrypted fields."""
    return frozenset(f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField))


class TracksSecretAssignments(models.Model):
    """A model that knows which of its encrypted fields were assigned since it was loaded or saved."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        saved = kwargs.get("update_fields")
        assigned = self.__dict__.get("_secrets_assigned", set())
        self.__dict__["_secrets_assigned"] = set() if saved is None else assigned - set(saved)

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance.__dict__.pop("_secrets_assigned", None)
        return instance

    def refresh_from_db(self, using=None, fields=None, from_queryset=None):
        assigned = self.__dict__.get("_secrets_assigned", set())
        kept = {name for name in assigned if fields is not None and name not in fields}
        super().refresh_from_db(using=using, fields=fields, from_queryset=from_queryset)
        self.__dict__["_secrets_assigned"] = kept

    def secret_assigned(self, name: str) -> bool:
        """Whether ``name`` was set on this instance since it was loaded or last saved."""
        return name in self.__dict__.get("_secrets_assigned", ())


# --- a credential bound to its URL's origin -------------------------------------------

DEFAULT_PORTS = {"http": 80, "https": 443}


def _host(raw: str) -> str:
    """A host name as DNS and browsers compare it: case, a trailing dot and IDN spellings folded; address
    literals in their one canonical form (``127.1`` is ``127.0.0.1``, ``::0:1`` is ``::1``)."""
    host = raw.strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(ipaddress.IPv4Address(socket.inet_aton(host)))
    except (OSError, ValueError):
        pass
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return host.lower()


def origin(url: object) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of ``url``, default ports filled in; None when it has no usable one."""
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in DEFAULT_PORTS:
        return None
    return scheme, _host(parts.hostname), port or DEFAULT_PORTS[scheme]


def same_origin(first: object, second: object) -> bool:
    """Whether both URLs name the same scheme, host and port (anything unreadable counts as different)."""
    mine = origin(first)
    return mine is not None and mine == origin(second)


class HostBoundCredential(TracksSecretAssignments):
    """A model whose stored credential is cleared when a save moves its URL to another origin without setting one.

    Subclasses name the ``URL_FIELD`` and the (encrypted) ``CREDENTIAL_FIELD``.
    """

    URL_FIELD = ""
    CREDENTIAL_FIELD = "upstream_api_key"
    # Set by save(): True when this save cleared the stored credential because the URL's origin changed.
    credential_cleared = False

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        self.credential_cleared = False
        fields = kwargs.get("update_fields")
        if (
            not self._state.adding
            and (fields is None or self.URL_FIELD in fields)
            and getattr(self, self.CREDENTIAL_FIELD)
            and not self.secret_assigned(self.CREDENTIAL_FIELD)
        ):
            stored = (
                type(self)
                ._base_manager.using(kwargs.get("using") or self._state.db)
                .filter(pk=self.pk)
                .values_list(self.URL_FIELD, flat=True)
                .first()
            )
            if stored is not None and not same_origin(stored, getattr(self, self.URL_FIELD)):
                setattr(self, self.CREDENTIAL_FIELD, "")
                self.credential_cleared = True
                if fields is not None:
                    kwargs["update_fields"] = [*fields, self.CREDENTIAL_FIELD]
        super().save(*args, **kwargs)
