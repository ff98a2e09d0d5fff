"""The agent page's resilience settings, its targets formset, live circuit health and closing circuits."""

from __future__ import annotations

import asyncio

import pytest
from django.utils import timezone

from audit.models import AdminAction
from routing import balance
from routing.circuits import agent_health
from routing.models import Agent, Target
from routing.table import route_of
from tests.console.test_agents_and_budgets import edit_data


@pytest.fixture
def research(db):
    return Agent.objects.create(slug="t-research", name="Research", upstream_url="http://10.0.0.5:9000")


@pytest.fixture
def backup(db):
    return Agent.objects.create(slug="t-backup", name="Backup", kind="openai", upstream_url="http://10.0.0.6:9000")


def targets_data(*rows, initial=0):
    data = {"targets-TOTAL_FORMS": str(len(rows)), "targets-INITIAL_FORMS": str(initial),
            "targets-MIN_NUM_FORMS": "0", "targets-MAX_NUM_FORMS": "1000"}  # fmt: skip
    for i, row in enumerate(rows):
        data.update({f"targets-{i}-{name}": value for name, value in row.items()})
    return data


def open_circuit(agent: Agent) -> None:
    """Fail the agent's first target once under a one-failure breaker, as the gateway would."""
    route = route_of(agent)

    async def fail():
        lease = await balance.acquire(route, set(), 60)
        await balance.release(lease, "fail", 5)

    asyncio.run(fail())


def test_an_operator_sets_retries_fallbacks_breaker_and_targets(operator, research, backup):
    data = edit_data(
        research, strategy="least_busy", max_retries="3", retry_statuses="503, 502, 429", fallbacks="t-backup",
        breaker_failures="4", breaker_window_seconds="30", breaker_cooldown_seconds="10",
    )  # fmt: skip
    data |= targets_data(
        {"name": "v1", "url": "http://10.0.0.7:9000", "weight": "95", "max_concurrent": "8", "enabled": "on"},
        {"name": "v2-canary", "url": "http://10.0.0.8:9000", "weight": "5", "max_concurrent": "0", "enabled": "on"},
    )
    response = operator.post(f"/console/agents/{research.pk}/edit/", data)
    assert response.status_code == 302, response.content.decode()
    research.refresh_from_db()
    assert (research.strategy, research.max_retries, research.retry_statuses) == ("least_busy", 3, [429, 502, 503])
    assert research.fallbacks == ["t-backup"]
    assert (research.breaker_failures, research.breaker_window_seconds, research.breaker_cooldown_seconds) == (
        4,
        30,
        10,
    )
    targets = {t.name: (t.url, t.weight, t.max_concurrent) for t in research.targets.all()}
    assert targets == {"v1": ("http://10.0.0.7:9000", 95, 8), "v2-canary": ("http://10.0.0.8:9000", 5, 0)}
    actions = list(AdminAction.objects.order_by("seq").values_list("action", "object_type"))
    assert actions == [("update", "routing.agent"), ("create", "routing.target"), ("create", "routing.target")]


def test_targets_are_changed_and_deleted_on_the_agent_page(operator, research):
    v1 = Target.objects.create(agent=research, name="v1", url="http://10.0.0.7:9000")
    v2 = Target.objects.create(agent=research, name="v2", url="http://10.0.0.8:9000")
    data = edit_data(research) | targets_data(
        {"id": str(v1.pk), "name": "v1", "url": "http://10.0.0.7:9000", "weight": "50", "max_concurrent": "0",
         "enabled": "on"},
        {"id": str(v2.pk), "name": "v2", "url": "http://10.0.0.8:9000", "weight": "100", "max_concurrent": "0",
         "DELETE": "on"},
        initial=2,
    )  # fmt: skip
    assert operator.post(f"/console/agents/{research.pk}/edit/", data).status_code == 302
    assert list(research.targets.values_list("name", "weight")) == [("v1", 50)]
    trail = {(a.action, a.object_repr) for a in AdminAction.objects.filter(object_type="routing.target")}
    assert trail == {("update", "t-research/v1"), ("delete", "t-research/v2")}
    assert AdminAction.objects.get(action="update", object_type="routing.target").changes["weight"] == [100, 50]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fallbacks": "t-nowhere"}, "No such agent: t-nowhere."),
        ({"fallbacks": "t-research"}, "An agent cannot fall back to itself."),
        ({"retry_statuses": "503, 200"}, "is not an HTTP status from 400 to 599"),
        ({"retry_statuses": "oops"}, "is not an HTTP status from 400 to 599"),
        ({"breaker_failures": "0"}, "greater than or equal to 1"),
        ({"breaker_cooldown_seconds": "0"}, "Must be above zero."),
        ({"max_retries": "11"}, "less than or equal to 10"),
        ({"strategy": "random"}, "Select a valid choice."),
    ],
)
def test_bad_resilience_settings_are_form_errors(operator, research, fields, message):
    response = operator.post(f"/console/agents/{research.pk}/edit/", edit_data(research, **fields))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not AdminAction.objects.exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://files.example.com/", "must start with http:// or https://"),
        ("http://169.254.169.254/", "169.254.169.254 is cloud metadata"),
        ("http://[64:ff9b::a9fe:a9fe]/", "inside an IPv6 address"),
    ],
)
def test_a_bad_target_is_a_form_error_and_nothing_is_saved(operator, research, url, message):
    data = edit_data(research, name="Renamed") | targets_data(
        {"name": "v1", "url": url, "weight": "1", "max_concurrent": "0", "enabled": "on"}
    )
    response = operator.post(f"/console/agents/{research.pk}/edit/", data)
    assert response.status_code == 400 and message in response.content.decode()
    research.refresh_from_db()
    assert research.name == "Research" and not research.targets.exists()


def test_the_agent_list_and_page_show_live_circuits_and_a_reset_closes_them(operator, research):
    Target.objects.create(agent=research, name="v1", url="http://10.0.0.7:9000")
    Agent.objects.filter(pk=research.pk).update(breaker_failures=1, breaker_cooldown_seconds=60)
    research.refresh_from_db()
    balance.reset(route_of(research))
    page = operator.get("/console/agents/").content.decode()
    assert "v1" in page and "closed" in page and "0 in flight" in page

    open_circuit(research)
    assert agent_health(research)["targets"][0]["circuit"] == "open"
    page = operator.get("/console/agents/").content.decode()
    assert ">open " in page and "Close v1" in page
    assert ">open " in operator.get(f"/console/agents/{research.pk}/edit/").content.decode()

    response = operator.post(f"/console/agents/{research.pk}/reset-circuit/", {"target": "v1"})
    assert response.status_code == 302
    assert agent_health(research)["targets"][0]["circuit"] == "closed"
    action = AdminAction.objects.get(action="reset_circuit")
    assert (action.via, action.changes) == ("console", {"targets": ["v1"]})


def test_compliance_sees_circuits_but_cannot_reset_them(compliance, research):
    assert compliance.get("/console/agents/").status_code == 200
    assert compliance.post(f"/console/agents/{research.pk}/reset-circuit/").status_code == 403


def test_an_operator_deprecates_an_agent_with_a_sunset(operator, research):
    data = edit_data(research, deprecated="on", sunset_at="2027-03-01T12:00") | targets_data()
    response = operator.post(f"/console/agents/{research.pk}/edit/", data)
    assert response.status_code == 302, response.content.decode()
    research.refresh_from_db()
    assert research.deprecated and (research.sunset_at.year, research.sunset_at.month) == (2027, 3)
    page = operator.get(f"/console/agents/{research.pk}/edit/").content.decode()
    assert 'name="sunset_at"' in page and 'value="2027-03-01T12:00"' in page


def test_a_sunset_with_an_offset_no_place_uses_is_a_form_error(operator, research):
    data = edit_data(research, deprecated="on", sunset_at="2027-03-01T12:00+15:00") | targets_data()
    response = operator.post(f"/console/agents/{research.pk}/edit/", data)
    assert response.status_code == 400
    assert "Give a UTC offset from -12:00 to +14:00" in response.content.decode()
    research.refresh_from_db()
    assert research.sunset_at is None


# --- the response cache ---------------------------------------------------------------------------------------------


def test_an_operator_turns_the_response_cache_on_and_bad_settings_are_form_errors(operator, research):
    data = edit_data(research, cache_enabled="on", cache_ttl_seconds="0") | targets_data()
    response = operator.post(f"/console/agents/{research.pk}/edit/", data)
    assert response.status_code == 400
    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    data = edit_data(research, cache_enabled="on", cache_max_entry_bytes="99999999") | targets_data()
    assert operator.post(f"/console/agents/{research.pk}/edit/", data).status_code == 400
    data = edit_data(research, cache_enabled="on", cache_ttl_seconds="60", cache_shared="on") | targets_data()
    assert operator.post(f"/console/agents/{research.pk}/edit/", data).status_code == 302
    research.refresh_from_db()
    assert (research.cache_enabled, research.cache_ttl_seconds, research.cache_shared) == (True, 60, True)
    assert research.cache_max_entry_bytes == 262_144  # not sent: kept


def test_the_agent_page_shows_its_cache_hit_rate_and_saving_and_forgets_on_request(operator, compliance, research):
    from audit.models import AuditRecord
    from gateway_project.hotstate import get_hot_state
    from routing.response_cache import forget_agent

    Agent.objects.filter(pk=research.pk).update(cache_enabled=True)
    for status, saved in (("hit", "0.001500000"), ("hit", "0.000500000"), ("miss", None), ("bypass", None)):
        cache = {"status": status, **({"saved_usd": saved} if saved else {})}
        AuditRecord.objects.create(request_id=f"r-{status}-{saved}", created_at=timezone.now(), method="POST",
                                   path="/v1/chat/completions", status=200, agent=research.slug,
                                   details={"cache": cache})  # fmt: skip
    page = operator.get(f"/console/agents/{research.pk}/edit/").content.decode()
    assert 'id="cache-hit-rate">67%' in page and 'id="cache-hits">2' in page and 'id="cache-misses">1' in page
    assert 'id="cache-saved">$0.002000000' in page
    store = get_hot_state()
    generation = store.key("cache-gen", "agent", research.slug)
    before = store.bump_now(generation)
    assert compliance.post(f"/console/agents/{research.pk}/forget-cache/").status_code == 403
    assert operator.post(f"/console/agents/{research.pk}/forget-cache/").status_code == 302
    assert store.bump_now(generation) == before + 2  # the console bumped it once
    assert AdminAction.objects.filter(action="invalidate_cache", via="console").count() == 1
    forget_agent(research.slug)


def test_an_agent_whose_cache_saved_nothing_says_so_plainly(operator, research):
    from routing.response_cache import cache_stats

    Agent.objects.filter(pk=research.pk).update(cache_enabled=True)
    assert cache_stats(research.slug) == {
        "agent": research.slug, "hours": 24, "hits": 0, "misses": 0, "bypassed": 0, "hit_rate": None,
        "saved_usd": "0.000000000",
    }  # fmt: skip
    page = operator.get(f"/console/agents/{research.pk}/edit/").content.decode()
    assert 'id="cache-hit-rate">\u2013' in page and 'id="cache-saved">$0.000000000' in page


def test_the_client_page_forgets_what_is_cached_for_that_client(operator, compliance, acme):
    from gateway_project.hotstate import get_hot_state

    store = get_hot_state()
    generation = store.key("cache-gen", "client", acme.pk)
    before = store.bump_now(generation)
    assert "Forget cached answers" in operator.get(f"/console/clients/{acme.pk}/").content.decode()
    assert compliance.post(f"/console/clients/{acme.pk}/forget-cache/").status_code == 403
    response = operator.post(f"/console/clients/{acme.pk}/forget-cache/")
    assert response.status_code == 302 and response["Location"] == f"/console/clients/{acme.pk}/"
    assert store.bump_now(generation) == before + 2  # the console bumped it once
    action = AdminAction.objects.get(action="invalidate_cache")
    assert (action.via, action.object_id) == ("console", str(acme.pk))
