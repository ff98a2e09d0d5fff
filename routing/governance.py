"""The policy stage of the hot path: the request's context as the rules read it, and their decision.

Runs after the request is routed and priced and before admission takes anything
(``endpoints``), so a refusal costs no quota and no budget. The rules and their
compiled programs are ``keys.policy``'s; this module only builds the context from
what the request's facts and exchange know, and turns a deny into the gateway's 403.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from audit.models import AuditRecord
from gateway_project.errors import forbidden
from keys.access import KeySnapshot
from keys.policy import MAX_CONTEXT_TEXT, TOO_LONG, RequestContext, policy_table
from keys.policy_replay import audit_context
from routing.admission import input_estimate
from routing.exchange import Exchange
from routing.facts import RequestFacts

_NO_KEY = ({"slug": "", "tags": [], "cost_center": ""}, {"prefix": "", "tags": [], "roles": [], "plan": ""},
           {"subject": "", "roles": [], "groups": []})  # fmt: skip
PATH_COLUMN = AuditRecord._meta.get_field("path").max_length
_minute: list = [-1.0, None]  # the current minute, and its timestamp: one datetime a minute, not one a request


def _now() -> datetime:
    minute = time.time() // 60
    if minute != _minute[0]:
        _minute[0], _minute[1] = minute, datetime.fromtimestamp(minute * 60, UTC)
    return _minute[1]


def request_context(ex: Exchange, facts: RequestFacts) -> RequestContext:
    """What the rules may read of this request (``keys.policy.CONTEXT_FIELDS``)."""
    route, demand = facts.route, facts.demand
    body = ex.body if isinstance(ex.body, bytes) else b""
    model, path = ex.model or "", ex.path
    request = {
        "agent": route.slug if route is not None else "",
        "model": model if len(model) <= MAX_CONTEXT_TEXT else TOO_LONG,
        "method": ex.method,
        "path": path if len(path) <= MAX_CONTEXT_TEXT else TOO_LONG,
        "route": facts.path_route.prefix if facts.path_route is not None else "",
        "ip": ex.client_ip or "",
        "body_bytes": len(body),
        "tokens": demand.input_tokens if demand is not None else input_estimate(body),
    }
    key = facts.key
    if key is None:
        return RequestContext(request, *_NO_KEY, _now())
    return RequestContext(request, *_key_context(key), _now())


def _key_context(key: KeySnapshot) -> tuple[dict, dict, dict]:
    roles = sorted(key.roles)  # a set: in a fixed order, so equal roles are equal values to the rules' memory
    return (
        {"slug": key.client_slug, "tags": list(key.client_tags), "cost_center": key.cost_center_slug},
        {"prefix": key.prefix, "tags": list(key.key_tags), "roles": roles, "plan": key.plan_slug},
        {"subject": key.subject, "roles": roles, "groups": list(key.groups)},
    )


async def govern(ex: Exchange, facts: RequestFacts) -> None:
    """403 ``policy_denied`` when an enforced deny rule matches; what the rules did goes into the audit record
    (``details.policy``: the deny, dry-run denies that matched, a final allow, conditions that failed), with the
    context they read (``details.context``), so a draft rule set can be replayed over the log."""
    context = request_context(ex, facts)
    ex.details["context"] = audit_context(context, PATH_COLUMN)
    rules = await policy_table.get()
    if not rules:
        return
    decision = rules.decide(context)
    notes = decision.notes
    if notes:
        ex.details["policy"] = notes
    rule = decision.denied_by
    if rule is not None:
        because = f": {rule.message}" if rule.message else "."
        raise forbidden(f"The gateway's policy rule '{rule.name}' refuses this request{because}", "policy_denied")
