"""Targets, resilience settings and live health of agents over the management API."""

from __future__ import annotations

import asyncio

import pytest

from audit.models import AdminAction
from routing import balance
from routing.models import Agent, Target
from routing.table import load_table, route_of


@pytest.fixture
def coder(db):
    return Agent.objects.create(slug="coder", name="Coder", upstream_url="http://coder:9000")


@pytest.fixture
def writer(db):
    return Agent.objects.create(slug="writer", name="Writer", kind="openai", upstream_url="http://writer:9000")


def test_it_sets_an_agents_resilience_settings(api, coder, writer):
    response = api.patch(
        f"/api/v1/agents/{coder.pk}/",
        {"strategy": "latency", "max_retries": 4, "retry_statuses": [503, 502, 503], "fallbacks": ["writer"],
         "breaker_failures": 3, "breaker_window_seconds": 20, "breaker_cooldown_seconds": 5},
        format="json",
    )  # fmt: skip
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["strategy"], body["max_retries"], body["retry_statuses"], body["fallbacks"]) == (
        "latency", 4, [502, 503], ["writer"],
    )  # fmt: skip
    coder.refresh_from_db()
    assert (coder.breaker_failures, coder.breaker_window_seconds, coder.breaker_cooldown_seconds) == (3, 20, 5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fallbacks", ["nowhere"], "No such agent: nowhere."),
        ("fallbacks", ["coder"], "An agent cannot fall back to itself."),
        ("fallbacks", "writer", "Give a list of"),
        ("retry_statuses", [200], "from 400 to 599"),
        ("breaker_cooldown_seconds", 0, "above zero"),
        ("breaker_failures", 0, "greater than or equal to 1"),
        ("strategy", "random", "is not a valid choice"),
    ],
)
def test_it_refuses_bad_resilience_settings(api, coder, writer, field, value, message):
    response = api.patch(f"/api/v1/agents/{coder.pk}/", {field: value}, format="json")
    assert response.status_code == 400
    assert message in str(response.json()[field])


def test_targets_are_created_listed_by_agent_and_trailed(api, coder, writer):
    created = api.post(
        "/api/v1/targets/",
        {"agent": "coder", "name": "v2-canary", "url": "http://10.0.0.9:9000", "weight": 5, "max_concurrent": 4},
        format="json",
    )
    assert created.status_code == 201, created.json()
    Target.objects.create(agent=writer, name="w1", url="http://writer-1:9000")
    by_slug = api.get("/api/v1/targets/?agent=coder").json()["results"]
    by_id = api.get(f"/api/v1/targets/?agent={coder.pk}").json()["results"]
    assert [t["name"] for t in by_slug] == [t["name"] for t in by_id] == ["v2-canary"]
    assert by_slug[0] | {"id": 0, "created_at": ""} == {
        "id": 0, "agent": "coder", "name": "v2-canary", "url": "http://10.0.0.9:9000", "weight": 5,
        "max_concurrent": 4, "enabled": True, "created_at": "", "has_upstream_api_key": False,
        "credential_source": "none", "upstream_api_key_cleared": False,
    }  # fmt: skip
    assert AdminAction.objects.filter(action="create", object_type="routing.target").count() == 1
    duplicate = api.post(
        "/api/v1/targets/", {"agent": "coder", "name": "v2-canary", "url": "http://10.0.0.1:1"}, format="json"
    )
    assert duplicate.status_code == 400 and "already has a target" in str(duplicate.json())


def test_compliance_reads_targets_but_cannot_change_them(compliance_api, coder):
    assert compliance_api.get("/api/v1/targets/").status_code == 200
    refused = compliance_api.post("/api/v1/targets/", {"agent": "coder", "name": "x", "url": "http://10.0.0.1:1"})
    assert refused.status_code == 403


def test_health_shows_each_targets_circuit_and_a_reset_closes_it(api, coder):
    Target.objects.create(agent=coder, name="a", url="http://coder-a:9000")
    Target.objects.create(agent=coder, name="b", url="http://coder-b:9000", enabled=False)
    Agent.objects.filter(pk=coder.pk).update(breaker_failures=1, breaker_cooldown_seconds=60)
    coder.refresh_from_db()
    route = route_of(coder)
    balance.reset(route)

    async def fail_once():
        lease = await balance.acquire(route, set(), 60)
        await balance.release(lease, "fail", 12)

    asyncio.run(fail_once())
    health = api.get(f"/api/v1/agents/{coder.pk}/health/").json()
    assert (health["agent"], health["strategy"]) == ("coder", "weighted")
    [target] = health["targets"]  # only enabled targets serve
    assert (target["target"], target["circuit"], target["in_flight"]) == ("a", "open", 0)
    assert 0 < target["open_for_seconds"] <= 60 and target["error_rate"] > 0 and target["latency_ms"] == 12

    assert api.post(f"/api/v1/agents/{coder.pk}/reset-circuit/", {"target": "nope"}, format="json").status_code == 400
    reset = api.post(f"/api/v1/agents/{coder.pk}/reset-circuit/", {}, format="json")
    assert reset.status_code == 200 and reset.json()["targets"][0]["circuit"] == "closed"
    assert AdminAction.objects.get(action="reset_circuit").changes == {"targets": ["a"]}


def test_an_agent_without_targets_reports_its_own_upstream(api, coder):
    [target] = api.get(f"/api/v1/agents/{coder.pk}/health/").json()["targets"]
    assert (target["target"], target["url"], target["circuit"]) == ("upstream", "http://coder:9000", "closed")


def test_it_marks_an_agent_deprecated_with_a_sunset(api, coder):
    response = api.patch(
        f"/api/v1/agents/{coder.pk}/", {"deprecated": True, "sunset_at": "2027-03-01T00:00:00Z"}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["deprecated"] is True and response.json()["sunset_at"].startswith("2027-03-01")
    coder.refresh_from_db()
    assert coder.deprecated and coder.sunset_at.year == 2027
    headers = dict(load_table().deprecations["coder"])  # what the gateway will send, from its next table
    assert headers[b"sunset"] == b"Mon, 01 Mar 2027 00:00:00 GMT"
    assert api.patch(f"/api/v1/agents/{coder.pk}/", {"sunset_at": "soon"}, format="json").status_code == 400


def declared_answer(api, path: str, method: str) -> tuple[dict, dict]:
    """The schema component an operation declares for its 200 answer, and the schema's components."""
    schema = api.get("/api/schema/", {"format": "json"}).json()
    answer = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
    components = schema["components"]["schemas"]
    return components[answer["$ref"].rsplit("/", 1)[-1]], components


@pytest.mark.parametrize(
    ("method", "path"), [("get", "/api/v1/agents/{id}/health/"), ("post", "/api/v1/agents/{id}/reset-circuit/")]
)
def test_health_and_a_reset_answer_the_shape_the_schema_declares(api, coder, method, path):
    Target.objects.create(agent=coder, name="a", url="http://coder-a:9000")
    answer = getattr(api, method)(path.replace("{id}", str(coder.pk)), format="json").json()
    declared, components = declared_answer(api, path, method)
    assert set(declared["properties"]) == set(answer) == {"agent", "strategy", "fallbacks", "targets"}
    target = components[declared["properties"]["targets"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert set(target["properties"]) == set(answer["targets"][0])
    assert target["properties"]["latency_ms"]["nullable"]  # before a target's first answer


def test_a_reset_takes_an_object_naming_a_target_or_nothing(api, coder):
    reset = f"/api/v1/agents/{coder.pk}/reset-circuit/"
    assert api.post(reset, ["upstream"], format="json").status_code == 400
    assert api.post(reset, {"target": "upstream"}, format="json").status_code == 200
    schema = api.get("/api/schema/", {"format": "json"}).json()
    body = schema["paths"]["/api/v1/agents/{id}/reset-circuit/"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/ResetCircuitRequest")


@pytest.mark.parametrize("agent", ["co\x00der", ["coder"]])
def test_a_target_naming_its_agent_with_what_no_slug_can_be_is_refused(api, coder, agent):
    response = api.post("/api/v1/targets/", {"agent": agent, "name": "a", "url": "http://10.0.0.9:9000"}, format="json")
    assert response.status_code == 400
    assert response.json()["agent"] == ["Invalid value."]


def test_the_target_list_filtered_by_digits_that_are_no_id_is_empty(api, coder):
    Target.objects.create(agent=coder, name="a", url="http://coder-a:9000")
    response = api.get("/api/v1/targets/", {"agent": "²"})  # str.isdigit() says yes, int() says no
    assert (response.status_code, response.json()["results"]) == (200, [])


def test_the_target_lists_agent_filter_refuses_a_nul_and_is_in_the_schema(api, coder):
    response = api.get("/api/v1/targets/", {"agent": "co\x00der"})
    assert response.status_code == 400 and "agent" in response.json()
    schema = api.get("/api/schema/", {"format": "json"}).json()
    assert "agent" in {parameter["name"] for parameter in schema["paths"]["/api/v1/targets/"]["get"]["parameters"]}
