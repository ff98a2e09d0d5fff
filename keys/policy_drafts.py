"""Draft policy rules: the rule set as it would be with them published, and publishing them.

A draft is a new rule, or a change to a rule in force (``draft_of``), that the gateway does
not apply. The what-if (``keys.whatif``) replays the draft set over past traffic; publishing
puts every draft in force in one transaction, each change in the admin-action trail.
"""

from __future__ import annotations

from types import SimpleNamespace

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.trail import record_action, record_delete, record_update, snapshot
from keys.models import PolicyRule

RULE_FIELDS = ("name", "description", "position", "effect", "condition", "final", "dry_run", "message", "is_active")


def live_rules() -> list[PolicyRule]:
    """The rules in force (active or not), in order."""
    return list(PolicyRule.objects.filter(draft=False).order_by("position", "pk"))


def draft_set() -> list[PolicyRule]:
    """Every rule as it would be with the drafts published (active or not), in the order they would run: each
    rule in force replaced by its draft, if it has one, and the new drafts added."""
    rules = PolicyRule.objects.select_related("pending_draft").order_by("position", "pk")
    chosen = []
    for rule in rules:
        if not rule.draft:
            chosen.append(getattr(rule, "pending_draft", None) or rule)
        elif rule.draft_of_id is None:
            chosen.append(rule)
    return sorted(chosen, key=lambda rule: (rule.position, rule.draft_of_id or rule.pk))


def rules_to_test(with_drafts: bool) -> list[PolicyRule]:
    """The active rules the tester runs: those in force, or those there would be with the drafts published."""
    return [rule for rule in (draft_set() if with_drafts else live_rules()) if rule.is_active]


def rule_copies(rules: list[PolicyRule]) -> list[dict]:
    """The active rules of ``rules`` as JSON (what a what-if keeps of the rules it measured)."""
    return [
        {"id": rule.draft_of_id or rule.pk, "draft": rule.draft, **{name: getattr(rule, name) for name in RULE_FIELDS}}
        for rule in rules
        if rule.is_active
    ]


def rows_of(copies: list[dict]) -> list[SimpleNamespace]:
    """Rule copies in the shape ``keys.policy.compile_rules`` reads."""
    return [SimpleNamespace(pk=copy["id"], **{name: copy[name] for name in RULE_FIELDS}) for copy in copies]


def drafts() -> list[PolicyRule]:
    return list(PolicyRule.objects.filter(draft=True).select_related("draft_of").order_by("position", "pk"))


def publish_drafts(user, via: str) -> list[PolicyRule]:
    """Put every draft in force, all or none; the rules now in force that changed. ``ValidationError`` when one of
    them could not be (two drafts naming their rules alike), and nothing is published."""
    published = []
    with transaction.atomic():
        pending = list(PolicyRule.objects.select_for_update().filter(draft=True).order_by("position", "pk"))
        for draft in pending:
            target = draft.draft_of
            if target is None:
                before = snapshot(draft)
                draft.draft = False
                _valid(draft)
                draft.save(update_fields=["draft", "updated_at"])
                record_update(user, via, draft, before, action="publish")
                published.append(draft)
                continue
            before = snapshot(target)
            for name in RULE_FIELDS:
                setattr(target, name, getattr(draft, name))
            draft_before, draft_pk = snapshot(draft), draft.pk
            draft.delete()  # first: the rule may take the draft's name
            draft.pk = draft_pk
            record_delete(user, via, draft, draft_before)
            _valid(target)
            target.save()
            if record_update(user, via, target, before, action="publish") is None:
                record_action(user, via, "publish", target, {})
            published.append(target)
    return published


def _valid(rule: PolicyRule) -> None:
    try:
        rule.full_clean()
    except ValidationError as error:
        messages = "; ".join(f"{name}: {' '.join(texts)}" for name, texts in error.message_dict.items())
        raise ValidationError(f"The draft “{rule.name}” cannot be published ({messages}).") from None
