"""The configurable redaction rules: kept in memory for the recorder, and changed by people with a trail.

The recorder runs synchronously on the gateway's event loop, so it never waits
for the table: it takes the rules as last loaded (``active_rules``), the
built-in defaults until the first load. The gateway loads them once it knows
the caller (``warm_rules``) and the table then reloads every
GATEWAY_CONFIG_REFRESH_SECONDS, compiling each rule once per reload.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from audit.models import RedactionRule
from audit.redaction import DEFAULT_RULES, CompiledRule, PatternError, compile_rule, redact
from audit.trail import record_update, snapshot
from gateway_project.snapshots import RefreshingTable

log = logging.getLogger("gateway.redaction")
SAMPLE_LIMIT = 5000


def load_rules() -> tuple[CompiledRule, ...]:
    """The enabled rules in order, compiled; a stored pattern that no longer compiles is skipped and logged."""
    compiled = []
    for rule in RedactionRule.objects.filter(enabled=True).order_by("order", "id"):
        try:
            compiled.append(compile_rule(rule.name, rule.pattern, rule.replacement, rule.code_check))
        except (*PatternError, KeyError):
            log.error("redaction rule %r cannot be compiled; it is not applied", rule.name)
    return tuple(compiled)


redaction_rules = RefreshingTable(
    "redaction-rules", load_rules, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"]
)


def active_rules() -> tuple[CompiledRule, ...]:
    """The rules as last loaded, without waiting; the built-in defaults before the first load."""
    return redaction_rules.last(DEFAULT_RULES)


async def warm_rules() -> None:
    """Load the rules if they never were and keep them refreshing; a failed load leaves the last (or default) ones."""
    try:
        await redaction_rules.get()
    except Exception as exc:  # the request must not fail because the rules could not be read
        log.warning("redaction rules not loaded yet: %s", exc)


def deletion_refusal(rule: RedactionRule) -> str:
    """Why ``rule`` may not be deleted, or "" when it may."""
    if rule.builtin:
        return "Built-in rules cannot be deleted; switch the rule off instead."
    return ""


def set_enabled(rule: RedactionRule, enabled: bool, user, via: str) -> RedactionRule:
    """Switch a rule on or off and record the change in the admin-action trail."""
    with transaction.atomic():
        rule = RedactionRule.objects.select_for_update().get(pk=rule.pk)
        before = snapshot(rule)
        rule.enabled = enabled
        rule.save(update_fields=["enabled", "updated_at"])
        record_update(user, via, rule, before)
    return rule


def try_rule(rule: RedactionRule, sample: str) -> str:
    """``sample`` as this rule alone would redact it (nothing is stored)."""
    compiled = compile_rule(rule.name, rule.pattern, rule.replacement, rule.code_check)
    return redact(sample[:SAMPLE_LIMIT], (compiled,))
