"""The OpenAPI schema and the Swagger UI, served without any CDN."""

import re


def test_the_schema_documents_the_keys_endpoints(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/keys/" in schema["paths"]
    assert "/api/v1/keys/{id}/revoke/" in schema["paths"]
    assert "put" not in schema["paths"]["/api/v1/keys/{id}/"]


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
    assert "cdn" not in html.lower()
