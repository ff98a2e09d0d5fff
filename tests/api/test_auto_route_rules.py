"""Model auto-routing's rules over the management API: create, validate, reorder, delete, and the schema."""

import pytest

from audit.models import AdminAction
from routing.models import Agent, AutoRouteRule

RULE = {"name": "code questions", "position": 10, "model": "gpt-4o", "keywords": ["python", "Stack Trace"],
        "min_complexity": 0.3, "asks_for": ["tools"], "max_output_per_million": "20"}  # fmt: skip


@pytest.fixture
def providers(db):
    Agent.objects.create(slug="openai", name="OpenAI", kind="openai", upstream_url="http://10.0.0.5:9000",
                         served_models=["gpt-4o", "gpt-4o-mini"], capabilities=["tools"])  # fmt: skip
    return Agent.objects.create(slug="assistant", name="Assistant", kind="openai", upstream_url="http://10.0.0.6:9000",
                                served_models=["small", "large"], default_model="auto")  # fmt: skip


def test_an_admin_creates_a_rule_and_the_trail_records_it(api, providers):
    response = api.post("/api/v1/auto-route-rules/", RULE, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["keywords"] == ["python", "Stack Trace"] and body["agent"] is None and body["enabled"] is True
    assert body["asks_for"] == ["tools"] and body["max_output_per_million"] == "20.000000"
    action = AdminAction.objects.get()
    assert (action.via, action.action, action.object_type) == ("api", "create", "routing.autorouterule")


def test_it_lists_updates_and_deletes_rules(api, providers):
    first = AutoRouteRule.objects.create(name="a", position=20, model="gpt-4o")
    second = AutoRouteRule.objects.create(name="b", position=10, model="gpt-4o-mini")
    assert [r["name"] for r in api.get("/api/v1/auto-route-rules/").json()["results"]] == ["b", "a"]
    moved = api.patch(f"/api/v1/auto-route-rules/{first.pk}/", {"position": 5}, format="json")
    assert moved.status_code == 200, moved.json()
    assert [r["name"] for r in api.get("/api/v1/auto-route-rules/").json()["results"]] == ["a", "b"]
    assert api.delete(f"/api/v1/auto-route-rules/{second.pk}/").status_code == 204
    assert list(AdminAction.objects.order_by("id").values_list("action", flat=True)) == ["update", "delete"]


def test_an_agents_rules_name_its_models_and_it_must_auto_route(api, providers):
    made = api.post("/api/v1/auto-route-rules/", {"name": "big", "agent": "assistant", "model": "large",
                                                  "min_prompt_tokens": 2000}, format="json")  # fmt: skip
    assert made.status_code == 201 and made.json()["agent"] == "assistant"
    other = api.post("/api/v1/auto-route-rules/", {"name": "x", "agent": "assistant", "model": "gpt-4o"}, format="json")
    assert other.status_code == 400 and "does not list this model" in str(other.json()["model"])
    plain = api.post("/api/v1/auto-route-rules/", {"name": "x", "agent": "openai", "model": "gpt-4o"}, format="json")
    assert plain.status_code == 400 and "default model must be" in str(plain.json()["agent"])


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": "auto"}, "model"),
        ({"model": "no-such-model"}, "model"),
        ({"keywords": ["c++"]}, "keywords"),
        ({"keywords": ["x" * 51]}, "keywords"),
        ({"keywords": [f"w{i}" for i in range(21)]}, "keywords"),
        ({"keywords": "python"}, "keywords"),
        ({"asks_for": ["audio"]}, "asks_for"),
        ({"min_complexity": 1.5}, "min_complexity"),
        ({"max_complexity": -0.1}, "max_complexity"),
        ({"min_complexity": 0.8, "max_complexity": 0.2}, "max_complexity"),
        ({"min_prompt_tokens": 500, "max_prompt_tokens": 100}, "max_prompt_tokens"),
        ({"min_prompt_tokens": -1}, "min_prompt_tokens"),
        ({"max_input_per_million": "-1"}, "max_input_per_million"),
        ({"is_default": True}, "is_default"),
        ({"agent": "nobody"}, "agent"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_rules_are_refused_with_the_field_that_is_wrong(api, providers, fields, field):
    response = api.post("/api/v1/auto-route-rules/", {**RULE, **fields}, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert not AutoRouteRule.objects.exists()


def test_one_default_a_scope_without_conditions(api, providers):
    default = {"name": "fallback", "model": "gpt-4o-mini", "is_default": True}
    assert api.post("/api/v1/auto-route-rules/", default, format="json").status_code == 201
    again = api.post("/api/v1/auto-route-rules/", {**default, "name": "another"}, format="json")
    assert again.status_code == 400 and "default already" in str(again.json()["is_default"])
    scoped = api.post("/api/v1/auto-route-rules/", {**default, "agent": "assistant", "model": "small"}, format="json")
    assert scoped.status_code == 201  # the agent's own default


def test_only_admins_and_operators_change_rules(operator_api, compliance_api, providers):
    assert compliance_api.get("/api/v1/auto-route-rules/").status_code == 200
    assert compliance_api.post("/api/v1/auto-route-rules/", RULE, format="json").status_code == 403
    assert operator_api.post("/api/v1/auto-route-rules/", RULE, format="json").status_code == 201


def test_the_schema_documents_the_rules(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    assert set(schema["paths"]["/api/v1/auto-route-rules/"]) - {"parameters"} == {"get", "post"}
    assert set(schema["paths"]["/api/v1/auto-route-rules/{id}/"]) - {"parameters"} == {"get", "put", "patch",
                                                                                        "delete"}  # fmt: skip
    components = schema["components"]["schemas"]
    properties = components["AutoRouteRule"]["properties"]
    capability = components[properties["asks_for"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert capability["enum"] == ["tools", "vision", "json"]
    assert {"keywords", "min_complexity", "max_output_per_million", "is_default", "agent"} <= set(properties)
