"""No read of the management API is unbounded: pages have a ceiling, costly actions a per-user rate, docs a login."""

import pytest
from django.core.cache import cache
from django.test import Client as Browser
from django.utils import timezone

from audit.models import AuditRecord
from gateway_project.env import envrate
from gateway_project.throttles import ActionRateThrottle
from tests.api.conftest import user_with_role


@pytest.fixture
def rates(monkeypatch):
    """``rates(verify="2/hour")``: the costly actions' rates for this test, with no history from earlier ones."""

    def set_rates(**scoped):
        monkeypatch.setattr(ActionRateThrottle, "THROTTLE_RATES", {**ActionRateThrottle.THROTTLE_RATES, **scoped})
        cache.clear()

    yield set_rates
    cache.clear()


def test_a_page_holds_at_most_1000_records_whatever_limit_is_asked(api):
    now = timezone.now()
    AuditRecord.objects.bulk_create(
        AuditRecord(request_id=f"bulk-{i}", created_at=now, method="POST", path="/v1/chat/completions", status=200)
        for i in range(1001)
    )
    page = api.get("/api/v1/audit/", {"limit": 100_000_000}).json()
    assert len(page["results"]) == 1000 and page["next"]
    assert len(api.get(page["next"]).json()["results"]) == 1


@pytest.mark.parametrize("path", ["/api/v1/audit/verify/", "/api/v1/admin-actions/verify/"])
def test_chain_verification_is_limited_per_user_with_retry_after(api, compliance_api, rates, path):
    rates(verify="2/hour")
    statuses = [api.get(path).status_code for _ in range(2)]
    refused = api.get(path)
    assert statuses == [200, 200] and refused.status_code == 429
    assert int(refused["Retry-After"]) > 0
    assert compliance_api.get(path).status_code == 200  # another user has an allowance of their own
    assert api.get("/api/v1/audit/").status_code == 200  # and the other reads are not held back


def test_both_chains_share_one_verification_allowance(api, rates):
    rates(verify="1/hour")
    assert api.get("/api/v1/audit/verify/").status_code == 200
    assert api.get("/api/v1/admin-actions/verify/").status_code == 429


def test_export_jobs_are_limited_per_user_with_retry_after(compliance_api, rates):
    rates(export="1/hour")
    assert compliance_api.post("/api/v1/audit-exports/", {"format": "csv"}, format="json").status_code == 202
    refused = compliance_api.post("/api/v1/audit-exports/", {"format": "csv"}, format="json")
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert compliance_api.get("/api/v1/audit-exports/").status_code == 200  # following the export is not limited


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/", "/api/redoc/"])
def test_the_schema_and_docs_are_for_staff_only(anonymous_api, outsider_api, compliance_api, path):
    assert anonymous_api.get(path).status_code == 401
    assert outsider_api.get(path).status_code == 403
    assert compliance_api.get(path).status_code == 200
    browser = Browser()
    browser.force_login(user_with_role("ops", "operator"))
    assert browser.get(path).status_code == 200  # a console session is enough


def test_a_rate_setting_that_is_not_a_rate_stops_the_start(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("GATEWAY_VERIFY_RATE", "20 per hour")
    with pytest.raises(ImproperlyConfigured, match="not a rate"):
        envrate("GATEWAY_VERIFY_RATE", "20/hour")
    monkeypatch.setenv("GATEWAY_VERIFY_RATE", "5/min")
    assert envrate("GATEWAY_VERIFY_RATE", "20/hour") == "5/min"
