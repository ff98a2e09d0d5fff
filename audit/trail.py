"""The admin-action trail: record what a person changed, field by field."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from audit.chain import TRAIL_CHAIN
from audit.models import AdminAction
from gateway_project.credentials import secret_field_names

# Fields whose values never go into the trail, with every encrypted field of any model
# (``gateway_project.credentials``). Each is recorded as a short fingerprint, so replacing
# one secret with another still shows as a change.
SECRET_FIELDS = frozenset({"key_hash", "upstream_api_key", "password"})
HIDDEN = "(secret)"


def mask(value) -> str:
    return f"(secret {hashlib.sha256(str(value).encode()).hexdigest()[:8]})"


def _plain(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, models.Model):
        return value.pk
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def snapshot(obj) -> dict:
    """The object's field values as JSON-ready data, secrets masked."""
    fields = [f.name for f in obj._meta.concrete_fields]
    values = model_to_dict(obj, fields=fields)
    values.update({f.name: getattr(obj, f.attname) for f in obj._meta.concrete_fields if not f.editable})
    secret = SECRET_FIELDS | secret_field_names(type(obj))
    return {name: mask(value) if name in secret and value else _plain(value) for name, value in values.items()}


def diff(before: dict, after: dict) -> dict:
    """``{field: [from, to]}`` for every field whose value changed."""
    changed = {}
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            changed[name] = [before.get(name), after.get(name)]
    return changed


def record_event(user, via: str, action: str, object_type: str, object_id="", object_repr="", changes=None):
    """Append one entry to the trail, chained by hash to the one before it."""
    row = dict(
        created_at=timezone.now(),
        actor=getattr(user, "get_username", lambda: "")() or "anonymous",
        actor_id=getattr(user, "pk", None),
        via=via,
        action=action,
        object_type=object_type,
        object_id=str(object_id or ""),
        object_repr=str(object_repr)[:200],
        changes=json.loads(json.dumps(changes or {}, cls=DjangoJSONEncoder)),  # as the database will give it back
    )
    with transaction.atomic():
        TRAIL_CHAIN.chain_rows([row])
        return AdminAction.objects.create(**row)


def record_action(user, via: str, action: str, obj, changes: dict | None = None) -> AdminAction:
    """Append one entry for ``obj`` (already saved, or just deleted)."""
    return record_event(user, via, action, obj._meta.label_lower, obj.pk, obj, changes)


def record_create(user, via, obj) -> AdminAction:
    return record_action(user, via, "create", obj, diff({}, snapshot(obj)))


def record_delete(user, via, obj, before: dict) -> AdminAction:
    return record_action(user, via, "delete", obj, diff(before, {}))


def record_update(user, via, obj, before: dict, action: str = "update", after: dict | None = None):
    """Record the fields that changed since ``before`` (or up to ``after``); nothing if none did."""
    changes = diff(before, snapshot(obj) if after is None else after)
    if not changes:
        return None
    return record_action(user, via, action, obj, changes)
