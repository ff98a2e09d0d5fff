"""Policy drafts and the what-if replay after an attack (issue 14)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from tests.waiting import until


@pytest.fixture
def user(live_db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(f"attacker-{uuid.uuid4().hex[:8]}", is_superuser=True)


def test_a_record_whose_escaped_minute_is_not_a_number_is_replayed_from_its_plain_minute(user, live_db):
    """One hostile record never fails the whole replay: an escaped minute is never read (the minute is always stored
    plain), and a record whose plain minute is not a number is counted without context. The window lies ten days
    back, where no other test writes, so the counts are exact."""
    from audit.models import AuditRecord
    from keys import whatif
    from keys.models import PolicyWhatIf

    then = timezone.now() - timedelta(days=10, seconds=uuid.uuid4().int % 100_000)
    for minute in (29_000_000, "29000000"):
        AuditRecord.objects.create(
            request_id=uuid.uuid4().hex,
            created_at=then - timedelta(seconds=1),
            method="POST",
            path="/v1/agent/invoke",
            status=200,
            details={"context": {"minute": minute, "escaped": {"minute": '"x"'}}},
        )
    job = whatif.request_what_if(user, then - timedelta(seconds=2), then, via="api")
    job = PolicyWhatIf.objects.get(pk=job.pk)
    assert job.status == PolicyWhatIf.DONE, (job.status, job.error)
    assert (job.results["replayed"], job.results["without_context"]) == (1, 1)


def test_a_method_longer_than_its_column_is_replayed_as_it_was_decided(gateway, make_key, audit_of, live_db):
    """Live the rule refuses the request; replayed from its own audit record, the same rules refuse it too."""
    from keys.models import PolicyRule
    from keys.policy import compile_rules
    from keys.policy_drafts import live_rules
    from keys.policy_replay import context_of_record
    from keys.whatif import RECORD_COLUMNS

    raw, key = make_key()
    rule = PolicyRule.objects.create(
        name=f"no long methods {uuid.uuid4().hex[:6]}",
        effect="deny",
        condition=f"client.slug == '{key.client.slug}' && request.method == 'PROPPATCHXY'",
    )
    try:
        with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {raw}"}, timeout=30) as client:
            answer = until(
                lambda: (r := client.request("PROPPATCHXY", "/agents/research/x")).status_code == 403 and r,
                "the rule in force",
            )
        assert answer.json()["error"]["code"] == "policy_denied"
        record = audit_of(answer)
        assert record.details["policy"]["denied_by"] == rule.name
        row = {"id": record.id, **{name: getattr(record, name) for name in RECORD_COLUMNS}}
        replayed = compile_rules(live_rules()).decide(context_of_record(row))
        assert replayed.denied_by is not None, (record.method, record.details["context"])
    finally:
        rule.delete()
