"""The OpenAPI schema and the Swagger UI, served without any CDN."""

import re

import pytest
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator


def test_the_schema_documents_the_keys_endpoints(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/keys/" in schema["paths"]
    assert "/api/v1/keys/{id}/revoke/" in schema["paths"]
    assert "put" not in schema["paths"]["/api/v1/keys/{id}/"]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v1/cost-centers/", {"get", "post"}),
        ("/api/v1/cost-centers/{id}/", {"get", "put", "patch", "delete"}),
        ("/api/v1/plans/", {"get", "post"}),
        ("/api/v1/plans/{id}/", {"get", "put", "patch", "delete"}),
        ("/api/v1/budgets/", {"get", "post"}),
        ("/api/v1/budgets/{id}/", {"get", "put", "patch", "delete"}),
        ("/api/v1/budgets/{id}/status/", {"get"}),
        ("/api/v1/budgets/status/", {"get"}),
        ("/api/v1/alerts/", {"get"}),
        ("/api/v1/alerts/{id}/", {"get"}),
        ("/api/v1/alerts/{id}/acknowledge/", {"post"}),
        ("/api/v1/prices/", {"get", "post"}),
        ("/api/v1/usage/", {"get"}),
    ],
)
def test_the_schema_documents_the_billing_endpoints(api, path, methods):
    paths = api.get("/api/schema/", {"format": "json"}).json()["paths"]
    assert set(paths[path]) - {"parameters"} == methods


def test_the_schema_documents_budget_status_and_filters(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    assert {"spent_usd", "remaining_usd", "percent", "period_start", "period_end", "exhausted"} <= set(
        components["BudgetStatus"]["properties"]
    )
    detail = schema["paths"]["/api/v1/budgets/{id}/"]["get"]["responses"]["200"]["content"]["application/json"]
    assert "status" in components[detail["schema"]["$ref"].rsplit("/", 1)[-1]]["properties"]
    report = schema["paths"]["/api/v1/budgets/status/"]["get"]
    assert {"scope", "limit", "offset"} <= {p["name"] for p in report["parameters"]}
    prices = schema["paths"]["/api/v1/prices/"]["get"]
    assert {"model", "in_force"} <= {p["name"] for p in prices["parameters"]}
    assert "effective_from" in components["ModelPriceRequest"]["properties"]


def test_the_schema_generates_without_warnings(db):
    GENERATOR_STATS.reset()
    SchemaGenerator().get_schema(request=None, public=True)
    assert not GENERATOR_STATS._warn_cache and not GENERATOR_STATS._error_cache, dict(
        **GENERATOR_STATS._warn_cache, **GENERATOR_STATS._error_cache
    )


def test_the_schema_shows_the_raw_key_only_in_the_create_response(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    created = schema["paths"]["/api/v1/keys/"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    issued = schema["components"]["schemas"][created["$ref"].rsplit("/", 1)[-1]]
    assert "key" in issued["properties"]
    assert "key" not in schema["components"]["schemas"]["ApiKey"]["properties"]
    assert "key_hash" not in str(schema)


def test_the_docs_page_loads_its_scripts_locally(api):
    response = api.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "swagger-ui" in html
    assert not re.search(r"""<script[^>]+src=["']?(https?:)?//""", html)
    assert not re.search(r"""<link[^>]+href=["']?(https?:)?//""", html)
    assert not re.search(r"""\bcdn[\w.-]*\.(com|net|org|io)\b|unpkg|jsdelivr|cdnjs""", html.lower())


def test_every_operation_documents_the_errors_it_can_answer(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail"]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            places = {parameter["in"] for parameter in operation.get("parameters", [])}
            expected = {"401", "403", "429"}
            expected |= {"404"} if "path" in places else set()
            expected |= {"400"} if "query" in places or method in ("post", "put", "patch", "delete") else set()
            expected |= {"415"} if "requestBody" in operation else set()
            responses = operation["responses"]
            assert expected <= set(responses), (method, path)
            # A 400 may declare a body of its own (a report's); the others are the uniform error.
            assert all(responses[code]["content"] == error for code in expected - {"400"}), (method, path)
            assert "400" not in expected or "application/json" in responses["400"]["content"], (method, path)
