"""The request context as the audit log keeps it, and the replay of rule sets over the log (the what-if).

The policy stage writes ``details.context`` into every record it sees: the fields of
``keys.policy.CONTEXT_FIELDS`` that the record's columns do not hold already (tags, cost
center, roles, plan, sizes, the requested agent and model, the minute it was decided in).
Empty values are left out, so a plain request adds a few dozen bytes. ``context_of_record``
rebuilds the exact context from a record, so a draft rule set replayed over the log decides
as it would have decided live.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from gateway_project.rows import is_clean, valid_ip
from keys.policy import TOO_LONG, PolicySet, RequestContext

# details.context's names: (variable, field) of the request context -> the key the record keeps it under.
STORED = {
    ("request", "agent"): "agent",
    ("request", "model"): "model",
    ("request", "route"): "route",
    ("request", "body_bytes"): "body_bytes",
    ("request", "tokens"): "tokens",
    ("client", "tags"): "client_tags",
    ("client", "cost_center"): "cost_center",
    ("key", "tags"): "key_tags",
    ("key", "roles"): "roles",
    ("key", "plan"): "plan",
    ("identity", "subject"): "subject",
    ("identity", "groups"): "groups",
}
IDENTITY_ROLES = "identity_roles"  # kept only when they are not the key's roles
UNREADABLE = "unreadable"  # the fields too long for the rules to read (``keys.policy.TOO_LONG``)
ESCAPED = "escaped"  # values the database cannot store as they are (controls, surrogates), as JSON text
FULL_PATH = "path"  # the path, when the record's path column does not keep it as it was
ADDRESS = "ip"  # the client's address, when the record's address column does not keep it as it was
FULL_METHOD = "method"  # the method, when the record's method column does not keep it as it was
METHOD_COLUMN = 10  # AuditRecord.method's length (a test checks they agree)
MINUTE = "minute"  # the minute the rules saw, in minutes since the epoch
LIST_KEYS = frozenset({"client_tags", "key_tags", "roles", "groups", IDENTITY_ROLES})
INT_KEYS = frozenset({"body_bytes", "tokens"})


def audit_context(context: RequestContext, path_column: int) -> dict:
    """What ``details.context`` keeps of ``context``: its values the record's columns lack, empty ones left out,
    so that ``context_of_record`` gives ``context`` back exactly. Runs on every request: a few microseconds."""
    kept: dict = {}
    unreadable, escaped = [], {}
    parts = {"request": context.request, "client": context.client, "key": context.key, "identity": context.identity}
    for (variable, name), stored in STORED.items():
        value = parts[variable][name]
        if not value:  # empty strings and lists, and zero, are what a record without them reads back as
            continue
        kind = type(value)
        if kind is int or (kind is str and value.isprintable()):
            kept[stored] = value
        elif value is TOO_LONG:
            unreadable.append(f"{variable}.{name}")
        else:
            _keep(kept, escaped, stored, value)
    identity_roles = context.identity["roles"]
    if identity_roles != context.key["roles"]:
        _keep(kept, escaped, IDENTITY_ROLES, identity_roles)
    method = context.request["method"]
    if len(method) > METHOD_COLUMN or not method.isprintable():  # the record's method column would cut or clean it
        _keep(kept, escaped, FULL_METHOD, method)
    path, address = context.request["path"], context.request["ip"]
    if path is TOO_LONG:
        unreadable.append("request.path")
    elif len(path) > path_column or not path.isprintable():
        _keep(kept, escaped, FULL_PATH, path)
    if address and valid_ip(address) != address:
        _keep(kept, escaped, ADDRESS, address)
    if unreadable:
        kept[UNREADABLE] = unreadable
    if escaped:
        kept[ESCAPED] = escaped
    kept[MINUTE] = int(context.now.timestamp()) // 60
    return kept


def _keep(kept: dict, escaped: dict, name: str, value) -> None:
    if type(value) is str:
        clean = is_clean(value)
    elif type(value) is list:
        clean = all(map(is_clean, value))
    else:
        clean = True
    if clean:
        kept[name] = value
    else:  # JSON text, ASCII only: stored as it is, read back exactly
        escaped[name] = json.dumps(value)


class NotReplayable(Exception):
    """The record holds no request context (it is older than the policy stage, or never reached it)."""


def context_of_record(record: dict) -> RequestContext:
    """The request context of an audit record (a dict of its columns), as the policy stage saw it."""
    details = record.get("details")
    stored = details.get("context") if isinstance(details, dict) else None
    if not isinstance(stored, dict):
        raise NotReplayable
    escaped = stored.get(ESCAPED)
    if isinstance(escaped, dict):
        stored = dict(stored)
        for name, text in escaped.items():
            if name == MINUTE:
                continue
            try:
                stored[name] = json.loads(text)
            except (TypeError, ValueError, RecursionError):
                continue
    if type(stored.get(MINUTE)) is not int:
        raise NotReplayable
    parts: dict[str, dict] = {
        "request": {
            "method": _text(stored.get(FULL_METHOD)) or record["method"],
            "path": _text(stored.get(FULL_PATH)) or record["path"],
            "ip": _text(stored.get(ADDRESS)) or record.get("client_ip") or "",
        },
        "client": {"slug": record["client_slug"]},
        "key": {"prefix": record["key_prefix"]},
        "identity": {},
    }  # fmt: skip
    for (variable, name), key in STORED.items():
        value = stored.get(key)
        if key in LIST_KEYS:
            value = [item for item in value if isinstance(item, str)] if isinstance(value, list) else []
        elif key in INT_KEYS:
            value = value if type(value) is int else 0
        else:
            value = _text(value)
        parts[variable][name] = value
    roles = stored.get(IDENTITY_ROLES)
    roles = [item for item in roles if isinstance(item, str)] if isinstance(roles, list) else parts["key"]["roles"]
    parts["identity"]["roles"] = list(roles)
    unreadable = stored.get(UNREADABLE)
    for name in unreadable if isinstance(unreadable, list) else ():
        variable, _, member = str(name).partition(".")
        if variable in parts and member in parts[variable]:
            parts[variable][member] = TOO_LONG
    try:
        now = datetime.fromtimestamp(stored[MINUTE] * 60, UTC)
    except (OverflowError, OSError, ValueError, TypeError):
        raise NotReplayable from None
    return RequestContext(parts["request"], parts["client"], parts["key"], parts["identity"], now)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


TOP = 50  # clients, agents and rules listed in a result; the rest are summed as "(others)"
EXAMPLES = 50  # requests the draft newly refuses, listed by id


@dataclass
class Tally:
    """What a draft rule set would have done to the replayed records, against the rules then in force."""

    replayed: int = 0
    without_context: int = 0
    denied_live: int = 0
    denied_draft: int = 0
    newly_denied: int = 0
    newly_allowed: int = 0
    would_deny_draft: int = 0  # records a draft rule in dry run would have matched
    by_rule: Counter = field(default_factory=Counter)  # the draft's deciding deny -> records
    newly_by_rule: Counter = field(default_factory=Counter)
    newly_by_client: Counter = field(default_factory=Counter)
    newly_by_agent: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)  # draft rules whose condition failed -> records
    examples: list = field(default_factory=list)

    def add(self, record: dict, live: PolicySet, draft: PolicySet) -> None:
        try:
            context = context_of_record(record)
        except NotReplayable:
            self.without_context += 1
            return
        self.replayed += 1
        now, then = draft.decide(context), live.decide(context)
        if now.would_deny:
            self.would_deny_draft += 1
        for name in now.failed:
            self.failed[name] += 1
        denied_now, denied_then = now.denied_by is not None, then.denied_by is not None
        self.denied_live += denied_then
        if not denied_now:
            self.newly_allowed += denied_then
            return
        rule = now.denied_by.name
        self.denied_draft += 1
        self.by_rule[rule] += 1
        if denied_then:
            return
        self.newly_denied += 1
        self.newly_by_rule[rule] += 1
        self.newly_by_client[record["client_slug"] or "(no client)"] += 1
        self.newly_by_agent[context.request["agent"] or "(no agent)"] += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append({
                "request_id": record["request_id"], "created_at": record["created_at"].isoformat(),
                "client": record["client_slug"], "agent": context.request["agent"], "method": record["method"],
                "path": record["path"], "status": record["status"], "rule": rule,
            })  # fmt: skip

    def as_dict(self) -> dict:
        return {
            "replayed": self.replayed, "without_context": self.without_context,
            "denied_live": self.denied_live, "denied_draft": self.denied_draft,
            "newly_denied": self.newly_denied, "newly_allowed": self.newly_allowed,
            "would_deny_draft": self.would_deny_draft,
            "by_rule": _top(self.by_rule), "newly_by_rule": _top(self.newly_by_rule),
            "newly_by_client": _top(self.newly_by_client), "newly_by_agent": _top(self.newly_by_agent),
            "failed": _top(self.failed), "examples": self.examples,
        }  # fmt: skip


def _top(counts: Counter) -> list[list]:
    """``[[name, count], ...]`` most first, the tail past ``TOP`` summed as one row."""
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    rows = [[name, count] for name, count in ranked[:TOP]]
    rest = sum(count for _, count in ranked[TOP:])
    if rest:
        rows.append(["(others)", rest])
    return rows
