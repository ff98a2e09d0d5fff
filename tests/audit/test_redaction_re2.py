"""Custom redaction rules run on RE2: no pattern an admin writes can hold a gateway worker.

RE2 matches in time linear in the text, and refuses what it cannot match that
way (backreferences, lookarounds); the built-in rules stay on Python's ``re``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
from django.core.exceptions import ValidationError

from audit.models import AdminAction, RedactionRule
from audit.redaction import BUILTIN_RULES, compile_rule, redact, validate_pattern
from audit.redaction_rules import load_rules

CATASTROPHIC = r"(\w+\s?)+$"  # on Python's re, seconds at 24 characters and for ever at 100,000
UNSUPPORTED = [r"(\w)\1", r"secret(?=:)", r"secret(?!s)", r"(?<=id=)\d+", r"(?<!x)\d+"]
RULES = "/api/v1/redaction-rules/"


def test_the_catastrophic_pattern_is_accepted_and_redacts_100k_adversarial_characters_at_once():
    validate_pattern(CATASTROPHIC)
    # In a child process: a regex engine that backtracks holds the GIL, so only a process can be timed out.
    program = textwrap.dedent(
        f"""
        from audit.redaction import compile_rule
        rule = compile_rule("words", {CATASTROPHIC!r}, "[X]")
        print(rule.apply("a" * 100_000 + "!"), rule.apply("ab " * 33_333 + "cd"))
        """
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a" * 100_000 + "!", "[X]"]


@pytest.mark.parametrize("pattern", UNSUPPORTED)
def test_a_pattern_re2_cannot_run_is_refused_in_the_console_saying_why(console_as, pattern):
    form = {"name": "Lookaround", "pattern": pattern, "replacement": "[L]", "order": 1}
    page = console_as("admin").post("/console/audit/redaction/new/", form)
    assert page.status_code == 400
    text = page.content.decode()
    assert "RE2" in text and "backreferences" in text and "lookarounds" in text
    assert not RedactionRule.objects.filter(name="Lookaround").exists()


@pytest.mark.parametrize("pattern", UNSUPPORTED)
def test_a_pattern_re2_cannot_run_is_a_400_through_the_api_saying_why(api_as, pattern):
    rule = {"name": "Lookaround", "pattern": pattern, "replacement": "[L]"}
    response = api_as("admin").post(RULES, rule, format="json")
    assert response.status_code == 400
    assert "RE2 keeps redaction time linear" in response.json()["pattern"][0]
    assert not AdminAction.objects.filter(object_type="audit.redactionrule").exists()


def test_a_pattern_that_is_no_regular_expression_at_all_still_says_so():
    with pytest.raises(ValidationError, match="Not a valid regular expression: missing \\)"):
        validate_pattern("(unclosed")


def test_a_custom_rule_on_re2_redacts_through_the_api_and_the_table(api_as):
    rule = {"name": "Words", "pattern": CATASTROPHIC, "replacement": "[WORDS]"}
    created = api_as("admin").post(RULES, rule, format="json")
    assert created.status_code == 201
    rules = load_rules()
    assert rules[-1].name == "Words" and rules[-1].apply("see you later") == "[WORDS]"


def test_a_stored_rule_re2_cannot_run_is_skipped_and_logged(db, caplog):
    RedactionRule.objects.create(name="Old lookbehind", pattern=r"(?<=acct=)\d+", replacement="[A]")  # no validators
    with caplog.at_level(logging.ERROR, logger="gateway.redaction"):
        rules = load_rules()
    assert "Old lookbehind" not in [rule.name for rule in rules]
    assert "Old lookbehind" in caplog.text
    assert compile_rule("x", r"acct=\d+", "[A]").apply("acct=42") == "[A]"


def test_every_builtin_rule_keeps_working_though_two_need_lookarounds(db):
    for rule in BUILTIN_RULES:
        validate_pattern(rule.pattern)  # their rows pass the model's validation, so their forms still save
    RedactionRule.objects.filter(builtin=True).update(enabled=True)
    rules = load_rules()
    assert [rule.name for rule in rules] == [rule.name for rule in BUILTIN_RULES]
    assert redact("from 10.0.0.12, call +1 415-555-0132", rules) == "from [IP], call [PHONE]"


def test_a_builtin_rule_with_a_lookaround_is_switched_off_through_its_console_form(console_as):
    rule = RedactionRule.objects.get(builtin=True, name__startswith="Phone")
    form = {"name": rule.name, "pattern": rule.pattern, "replacement": rule.replacement, "order": rule.order}
    assert console_as("admin").post(f"/console/audit/redaction/{rule.pk}/", form).status_code == 302
    rule.refresh_from_db()
    assert not rule.enabled and rule.pattern == BUILTIN_RULES[5].pattern


def test_a_custom_rule_may_copy_a_builtin_pattern_and_redacts_as_it_does(api_as):
    rule = {"name": "My phones", "pattern": BUILTIN_RULES[5].pattern, "replacement": "[TEL]"}
    assert api_as("admin").post(RULES, rule, format="json").status_code == 201
    custom = next(rule for rule in load_rules() if rule.name == "My phones")
    assert custom.apply("call 415-555-0132") == "call [TEL]"
