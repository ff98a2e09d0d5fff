"""Every webhook receiver has its own signing secret: made when the webhook is set, shown once, stored encrypted,
rotatable, and the only key its deliveries are signed with, so no receiver can sign what another would accept."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from audit.trail import mask
from billing.models import Budget, BudgetAlert
from billing.tasks import record_budget_alert
from gateway_project import webhooks
from gateway_project.celery import app as celery_app
from tests.billing.test_alerts import Receiver, crossing

HOOK = "https://hooks.example.com/budgets/acme"


@pytest.fixture
def receivers(settings):
    """Loopback receivers, allowed; alert tasks run in the test."""
    settings.GATEWAY_WEBHOOK_ALLOWED_HOSTS = [".example.com", "127.0.0.1"]
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    made = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    celery_app.conf.task_always_eager = eager
    for one in made:
        one.stop()


def create(api, acme, **fields):
    body = {"scope": "client", "client": acme.pk, "limit_usd": "100.00", "alert_webhook_url": HOOK, **fields}
    response = api.post("/api/v1/budgets/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def patch(api, budget_id, **fields):
    response = api.patch(f"/api/v1/budgets/{budget_id}/", fields, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def secret_of(budget_id) -> str:
    return Budget.objects.get(pk=budget_id).alert_webhook_secret


def test_a_new_webhook_gets_its_own_secret_shown_in_the_answer_that_made_it_only(operator_api, acme):
    made = create(operator_api, acme)
    secret = made["alert_webhook_secret"]
    assert secret.startswith("whsec_") and secret == secret_of(made["id"])
    assert made["alert_webhook_secret_legacy"] is False
    assert operator_api.get(f"/api/v1/budgets/{made['id']}/").json()["alert_webhook_secret"] is None
    for path in ("/api/v1/budgets/", f"/api/v1/budgets/{made['id']}/", "/api/v1/budgets/status/"):
        assert secret not in operator_api.get(path).content.decode(), path
    other = create(operator_api, acme, alert_webhook_url="https://hooks.example.com/budgets/other")
    assert other["alert_webhook_secret"] != secret  # one per receiver


def test_a_budget_without_a_webhook_has_no_secret(operator_api, acme):
    made = create(operator_api, acme, alert_webhook_url="")
    assert made["alert_webhook_secret"] is None and secret_of(made["id"]) == ""


def test_edits_that_keep_the_receiver_keep_its_secret(operator_api, acme):
    made = create(operator_api, acme)
    for change in ({"limit_usd": "250.00"}, {"alert_webhook_url": HOOK + "/v2"}, {"alert_webhook_url": HOOK.upper()}):
        body = patch(operator_api, made["id"], **change)
        assert body["alert_webhook_secret"] is None, change
        assert secret_of(made["id"]) == made["alert_webhook_secret"], change


def test_a_webhook_moved_to_another_host_gets_a_new_secret_shown_once(operator_api, acme):
    made = create(operator_api, acme)
    moved = patch(operator_api, made["id"], alert_webhook_url="https://other.example.com/hook")
    assert moved["alert_webhook_secret"] not in (None, made["alert_webhook_secret"])
    assert secret_of(made["id"]) == moved["alert_webhook_secret"]  # the old receiver's secret signs nothing now


def test_removing_the_webhook_removes_its_secret(operator_api, acme):
    made = create(operator_api, acme)
    patch(operator_api, made["id"], alert_webhook_url="")
    assert secret_of(made["id"]) == ""


def test_rotating_gives_a_new_secret_once_and_records_it_as_a_fingerprint(operator_api, compliance_api, acme):
    made = create(operator_api, acme)
    path = f"/api/v1/budgets/{made['id']}/rotate-webhook-secret/"
    assert compliance_api.post(path).status_code == 403
    rotated = operator_api.post(path)
    assert rotated.status_code == 200
    secret = rotated.json()["alert_webhook_secret"]
    assert secret.startswith("whsec_") and secret != made["alert_webhook_secret"] and secret == secret_of(made["id"])
    entry = AdminAction.objects.get(action="rotate_webhook_secret")
    assert entry.changes["alert_webhook_secret"] == [mask(made["alert_webhook_secret"]), mask(secret)]
    no_hook = create(operator_api, acme, alert_webhook_url="")
    refused = operator_api.post(f"/api/v1/budgets/{no_hook['id']}/rotate-webhook-secret/")
    assert refused.status_code == 400 and "no webhook" in refused.json()["detail"]


def deliver(budget: Budget, threshold: int = 80) -> BudgetAlert:
    record_budget_alert.delay(**crossing(budget, threshold, "80"))
    return BudgetAlert.objects.get(budget=budget, threshold_percent=threshold)


def test_each_receiver_can_verify_only_its_own_deliveries(receivers, acme, settings):
    first, second = receivers(), receivers()
    one = Budget.objects.create(scope="client", client=acme, limit_usd=100, alert_webhook_url=first.url)
    two = Budget.objects.create(scope="client", client=acme, limit_usd=100, alert_webhook_url=second.url)
    assert deliver(one).webhook_status == deliver(two).webhook_status == "delivered"
    [to_first], [to_second] = first.accepted(), second.accepted()
    assert webhooks.verify(to_first.body, to_first.headers, secret=one.alert_webhook_secret)
    assert webhooks.verify(to_second.body, to_second.headers, secret=two.alert_webhook_secret)
    # The first receiver's secret cannot make (or check) a signature the second would accept, nor can the old
    # shared secret.
    assert not webhooks.verify(to_second.body, to_second.headers, secret=one.alert_webhook_secret)
    assert not webhooks.verify(to_second.body, to_second.headers, secret=settings.GATEWAY_WEBHOOK_SECRET)
    forged = webhooks.signed_headers(to_second.body, secret=one.alert_webhook_secret)
    assert not webhooks.verify(to_second.body, forged, secret=two.alert_webhook_secret)


def test_a_webhook_from_before_own_secrets_signs_with_the_legacy_secret_until_rotated(
    receivers, acme, settings, operator_api
):
    hook = receivers()
    budget = Budget.objects.create(scope="client", client=acme, limit_usd=100, alert_webhook_url=hook.url)
    Budget.objects.filter(pk=budget.pk).update(alert_webhook_secret="")  # as the migration leaves older rows
    budget.refresh_from_db()
    assert operator_api.get(f"/api/v1/budgets/{budget.pk}/").json()["alert_webhook_secret_legacy"] is True
    assert deliver(budget, 80).webhook_status == "delivered"
    [first] = hook.accepted()
    assert webhooks.verify(first.body, first.headers, secret=settings.GATEWAY_WEBHOOK_SECRET)

    secret = operator_api.post(f"/api/v1/budgets/{budget.pk}/rotate-webhook-secret/").json()["alert_webhook_secret"]
    assert operator_api.get(f"/api/v1/budgets/{budget.pk}/").json()["alert_webhook_secret_legacy"] is False
    deliver(Budget.objects.get(pk=budget.pk), 100)
    last = hook.accepted()[-1]
    assert webhooks.verify(last.body, last.headers, secret=secret)
    assert not webhooks.verify(last.body, last.headers, secret=settings.GATEWAY_WEBHOOK_SECRET)
