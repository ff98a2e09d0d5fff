"""Schemathesis against the served OpenAPI schema, as each role: no 5xx, and every answer is the one declared.

The schema is fetched from /api/schema/ with the persona's token, and every operation is called in-process
through Django's WSGI handler with schemathesis' own WSGI transport. The management API is synchronous Django,
so the handler runs in the test's thread on the test's database connection: each call sees the data the test
made, and is rolled back after it (a savepoint per call). Destructive calls (DELETE, revoke, reset-circuit, ..)
therefore cannot change what the next call sees. A live server (or schemathesis' ASGI transport, which runs the
app on a thread of its own) would need committed data that every destructive call changes for the next.
Generation is bounded and the same every run: a fixed seed, no example database, EXAMPLES per operation.
Operations run as subtests of one test per role (``schemathesis.pytest.from_fixture`` does not run under
pytest 9), each failure reported with schemathesis' curl line to reproduce it.

Checks: ``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance`` and
``response_schema_conformance``. Not run: ``response_headers_conformance`` (no operation declares headers),
``negative_data_rejection`` and ``positive_data_acceptance`` (they judge 4xx against schemathesis' reading of
the schema: a string filter such as ``?client=`` cannot be negated meaningfully, and a valid-looking body may
still name a slug in use), ``use_after_free`` and ``ensure_resource_availability`` (stateful checks; each call
here is rolled back), and the auth checks (``ignored_auth``: tests/api/test_access.py covers every role and no
credentials).
"""

from __future__ import annotations

import uuid
import zlib
from datetime import timedelta
from decimal import Decimal

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from audit.export_jobs import request_export, write_export
from audit.models import AdminAction, ArchivedRun, AuditArchive, AuditExport, AuditRecord, QuarantinedRow, RedactionRule
from billing.models import Budget, BudgetAlert, ModelPrice, UsageRecord
from billing.periods import period_of
from gateway_project import roles
from gateway_project.models import AuthEvent
from keys.models import AgentRole, Client, CostCenter, Plan, PolicyRule
from keys.services import issue_key
from routing.models import Agent, CapabilityKeyword, PathRoute, Target

SEED = 13
EXAMPLES = 8  # per operation and persona, valid and invalid mixed: enough to meet the offsets PostgreSQL refuses
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The persona's token is sent with every call; schemathesis must not generate credentials of its own.
CONFIG = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
# The personas of tests/api/conftest.py: the fixture that gives each role's API client, and its user's name.
PERSONAS = {
    roles.ADMIN: ("api", "admin"),
    roles.OPERATOR: ("operator_api", "olga"),
    roles.COMPLIANCE: ("compliance_api", "carl"),
}


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler, keeping the test's connection open between requests as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(db, settings, tmp_path):
    """One object of every kind the API serves (two where their states answer differently), by URL segment."""
    settings.GATEWAY_EXPORT_DIR = tmp_path / "exports"
    settings.GATEWAY_ARCHIVE_DIR = tmp_path / "archive"
    now = timezone.now()
    center = CostCenter.objects.create(name="Research", slug="research", code="R-1")
    plan = Plan.objects.create(name="Pro", slug="pro", monthly_budget_usd=Decimal("50"))
    acme = Client.objects.create(name="Acme", slug="acme", cost_center=center)
    key, _ = issue_key(acme, plan=plan, name="ci", allowed_agents=["*"])
    revoked, _ = issue_key(acme, name="old", revoked_at=now)
    office = PolicyRule.objects.create(name="office", effect="deny", condition="!ip_in(request.ip, ['10.0.0.0/8'])")
    watch = PolicyRule.objects.create(name="watch", effect="allow", final=True, dry_run=True, condition="true")
    analyst = AgentRole.objects.create(slug="analyst", name="Analyst")
    unused = AgentRole.objects.create(slug="unused", name="Unused")
    key.roles = ["analyst", "unused"]
    key.save()
    agent = Agent.objects.create(
        slug="research", name="Research", upstream_url="http://10.0.0.5:9000", required_role=analyst
    )
    target = Target.objects.create(agent=agent, name="v1", url="http://10.0.0.6:9000")
    route = PathRoute.objects.create(prefix="/api/v1/search", methods=["POST"], agent=agent)
    keyword = CapabilityKeyword.objects.create(keyword="paper", capability="research")
    budget = Budget.objects.create(scope=Budget.CLIENT, client=acme, limit_usd=Decimal("100"))
    month = period_of("monthly")
    alert = BudgetAlert.objects.create(
        budget=budget, period_key=month.key, period_start=month.start, period_end=month.end, threshold_percent=80,
        spent_usd=Decimal("80"), limit_usd=budget.limit_usd,
    )  # fmt: skip
    price = ModelPrice.objects.create(
        model="gpt-4o", effective_from=now - timedelta(days=1), input_per_million=2, output_per_million=8
    )
    record = AuditRecord.objects.create(
        request_id=uuid.uuid4().hex, created_at=now - timedelta(hours=1), client_id=acme.pk, client_slug="acme",
        key_prefix=key.prefix, agent="research", model="gpt-4o", method="POST", path="/v1/chat/completions",
        status=200, input_tokens=10, output_tokens=5, cost_usd=Decimal("0.00006"),
    )  # fmt: skip
    usage = UsageRecord.objects.create(
        request_id=record.request_id, created_at=record.created_at, client=acme, api_key=key, cost_center=center,
        agent="research", model="gpt-4o", input_tokens=10, output_tokens=5, cost_usd=Decimal("0.00006"),
    )  # fmt: skip
    archive = AuditArchive.objects.create(
        file_name="audit-archive-fuzz.jsonl.gz", sha256="0" * 64, records=1, first_seq=1, last_seq=1,
        oldest_at=now - timedelta(days=100), newest_at=now - timedelta(days=100), policy={"default_days": 90},
    )  # fmt: skip
    ArchivedRun.objects.create(archive=archive, first_seq=1, last_seq=1, prev_hash="0" * 64, last_hash="1" * 64)
    quarantined = QuarantinedRow.objects.create(
        model="audit.AuditRecord", request_id="bad", row={"path": "/v1/x"}, reason="invalid byte sequence"
    )
    rule = RedactionRule.objects.create(name="Ticket", pattern=r"TCK-\d{6}", replacement="[TICKET]")
    sign_in = AuthEvent.objects.create(
        created_at=now, outcome=AuthEvent.FAILED, via=AuthEvent.CONSOLE, username="mallory", address="203.0.113.5"
    )
    return {
        "cost-centers": [center.pk],
        "plans": [plan.pk],
        "clients": [acme.pk],
        "keys": [key.pk, revoked.pk],
        "agent-roles": [analyst.pk, unused.pk],
        "policy-rules": [office.pk, watch.pk],
        "agents": [agent.pk],
        "targets": [target.pk],
        "routes": [route.pk],
        "capability-keywords": [keyword.pk],
        "budgets": [budget.pk],
        "alerts": [alert.pk],
        "prices": [price.pk],
        "audit": [record.pk],
        "usage": [usage.pk],
        "admin-actions": list(AdminAction.objects.values_list("pk", flat=True)[:1]),
        "audit-archives": [archive.pk],
        "audit-quarantine": [quarantined.pk],
        "auth-events": [sign_in.pk],
        "redaction-rules": [rule.pk, RedactionRule.objects.filter(builtin=True).values_list("pk", flat=True)[0]],
    }


def own_exports(user) -> list[str]:
    """A queued export (no file yet) and a finished one (a file to download), both the user's."""
    queued = request_export(user, AuditExport.RECORDS, "csv", {}, via="api")
    done = request_export(user, AuditExport.TRAIL, "jsonl", {}, via="api")
    AuditExport.objects.filter(pk=done.pk).update(status=AuditExport.RUNNING, started_at=timezone.now())
    done.refresh_from_db()
    write_export(done)
    return [str(queued.pk), str(done.pk)]


def with_known_ids(case, ids: dict[str, list]) -> None:
    """Point a generated ``{id}`` at an object that exists, chosen by the generated value (so still deterministic).

    Ids that are not even of the right type stay as generated: they exercise the 404s.
    """
    if "id" not in (case.path_parameters or {}):
        return
    resource = case.operation.path.removeprefix("/api/v1/").split("/", 1)[0]
    generated = case.path_parameters["id"]
    choices = ids.get(resource) or []
    if choices and isinstance(generated, type(choices[0])):
        case.path_parameters["id"] = choices[zlib.crc32(repr(generated).encode()) % len(choices)]


def strategies(operation):
    """Valid requests, and (where the operation has something to get wrong) invalid ones."""
    options = [operation.as_strategy(GenerationMode.POSITIVE)]
    if operation.query or operation.body or operation.path_parameters:
        options.append(operation.as_strategy(GenerationMode.NEGATIVE))
    return st.one_of(options)


@pytest.mark.parametrize("role", roles.ROLES)
def test_every_operation_answers_as_declared(role, world, wsgi_app, subtests, request):
    fixture, username = PERSONAS[role]
    auth = {"Authorization": request.getfixturevalue(fixture)._credentials["HTTP_AUTHORIZATION"]}
    user = get_user_model().objects.get(username=username)
    ids = {**world, "audit-exports": own_exports(user) if roles.may(user, roles.EXPORT) else [str(uuid.uuid4())]}
    cache.clear()  # the per-user rates count in the cache, and users' ids repeat across tests
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, config=CONFIG, headers=auth)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 80

    for operation in operations:
        with subtests.test(msg=operation.label):

            @settings(
                max_examples=EXAMPLES, database=None, deadline=None, print_blob=False,
                phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            @seed(SEED)
            @given(case=strategies(operation))
            def answers_as_declared(case):
                with_known_ids(case, ids)
                with transaction.atomic():
                    response = case.call(headers=auth)
                    transaction.set_rollback(True)
                case.validate_response(response, checks=CHECKS)

            answers_as_declared()
