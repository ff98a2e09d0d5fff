"""Path routes and content routing's keyword map over the management API."""

import pytest

from audit.models import AdminAction
from routing.models import Agent, CapabilityKeyword, PathRoute

ROUTE = {
    "prefix": "/api/v1/search",
    "methods": ["POST"],
    "agent": "rag",
    "timeout_seconds": 15,
    "requests_per_minute": 30,
    "protocol": "plain",
}


@pytest.fixture
def rag(db):
    return Agent.objects.create(slug="rag", name="RAG", upstream_url="http://rag:9000", capabilities=["research"])


def test_it_creates_a_route_and_records_it_in_the_trail(api, rag):
    response = api.post("/api/v1/routes/", ROUTE, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["prefix"] == "/api/v1/search" and body["agent"] == "rag" and body["methods"] == ["POST"]
    assert body["auth_required"] is True and body["deprecated"] is False and body["is_active"] is True
    route = PathRoute.objects.get()
    assert (route.timeout_seconds, route.requests_per_minute) == (15, 30)
    action = AdminAction.objects.get()
    assert (action.via, action.action, action.object_type) == ("api", "create", "routing.pathroute")


def test_it_lists_filters_updates_and_deletes_routes(api, rag):
    other = Agent.objects.create(slug="other", name="Other", upstream_url="http://other:9000")
    PathRoute.objects.create(prefix="/a/one", agent=rag)
    route = PathRoute.objects.create(prefix="/b/two", agent=other, protocol="sse")
    assert [r["prefix"] for r in api.get("/api/v1/routes/?agent=other").json()["results"]] == ["/b/two"]
    assert [r["prefix"] for r in api.get("/api/v1/routes/?protocol=sse").json()["results"]] == ["/b/two"]
    changed = api.patch(
        f"/api/v1/routes/{route.pk}/", {"deprecated": True, "sunset_at": "2027-03-01T00:00:00Z"}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["deprecated"] is True
    assert api.delete(f"/api/v1/routes/{route.pk}/").status_code == 204
    assert list(AdminAction.objects.order_by("id").values_list("action", flat=True)) == ["update", "delete"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prefix": "no-slash"}, "prefix"),
        ({"prefix": "/v1/chat/completions"}, "prefix"),
        ({"prefix": "/api/v1/clients"}, "prefix"),
        ({"prefix": "/api/v1/reports"}, "prefix"),
        ({"prefix": "/static/x"}, "prefix"),
        ({"prefix": "/ws"}, "prefix"),
        ({"methods": ["FETCH"]}, "methods"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": -3}, "timeout_seconds"),
        ({"agent": "missing"}, "agent"),
        ({"upstream_path": "relative"}, "upstream_path"),
        ({"protocol": "grpc"}, "protocol"),
    ],
)
def test_it_refuses_bad_routes(api, rag, fields, field):
    response = api.post("/api/v1/routes/", {**ROUTE, **fields}, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not PathRoute.objects.exists()


def test_a_prefix_is_stored_without_its_trailing_slash_and_is_unique(api, rag):
    assert api.post("/api/v1/routes/", {**ROUTE, "prefix": "/x/y/"}, format="json").json()["prefix"] == "/x/y"
    again = api.post("/api/v1/routes/", {**ROUTE, "prefix": "/x/y"}, format="json")
    assert again.status_code == 400 and "prefix" in again.json()


def test_compliance_reads_routes_and_keywords_but_changes_nothing(compliance_api, rag):
    PathRoute.objects.create(prefix="/a/one", agent=rag)
    assert compliance_api.get("/api/v1/routes/").status_code == 200
    assert compliance_api.get("/api/v1/capability-keywords/").status_code == 200
    assert compliance_api.post("/api/v1/routes/", ROUTE, format="json").status_code == 403
    refused = compliance_api.post("/api/v1/capability-keywords/", {"keyword": "a", "capability": "b"}, format="json")
    assert refused.status_code == 403


def test_an_operator_edits_the_keyword_map(operator_api):
    created = operator_api.post(
        "/api/v1/capability-keywords/", {"keyword": " Find ", "capability": "Research"}, format="json"
    )
    assert created.status_code == 201
    assert (created.json()["keyword"], created.json()["capability"]) == ("find", "research")
    duplicate = operator_api.post("/api/v1/capability-keywords/", {"keyword": "FIND", "capability": "x"}, format="json")
    assert duplicate.status_code == 400 and "keyword" in duplicate.json()
    phrase = operator_api.post("/api/v1/capability-keywords/", {"keyword": "find me", "capability": "x"}, format="json")
    assert phrase.status_code == 400
    pk = created.json()["id"]
    assert (
        operator_api.patch(f"/api/v1/capability-keywords/{pk}/", {"capability": "web"}, format="json").status_code
        == 200
    )
    assert CapabilityKeyword.objects.get().capability == "web"
    assert [
        r["keyword"] for r in operator_api.get("/api/v1/capability-keywords/?capability=web").json()["results"]
    ] == ["find"]
    assert operator_api.delete(f"/api/v1/capability-keywords/{pk}/").status_code == 204
    assert list(AdminAction.objects.order_by("id").values_list("action", flat=True)) == ["create", "update", "delete"]


@pytest.mark.parametrize("agent", ["r\x00ag", ["rag"], {"slug": "rag"}])
def test_a_route_naming_its_agent_with_what_no_slug_can_be_is_refused(api, rag, agent):
    response = api.post("/api/v1/routes/", {**ROUTE, "agent": agent}, format="json")
    assert response.status_code == 400
    assert response.json()["agent"] == ["Invalid value."]
