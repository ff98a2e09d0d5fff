"""The console's Routes and Content routing pages, per role, with validation and the admin-action trail."""

from __future__ import annotations

import pytest

from audit.models import AdminAction
from routing.models import Agent, CapabilityKeyword, PathRoute


@pytest.fixture
def search_agent(db):
    return Agent.objects.create(
        slug="t-search", name="Search", upstream_url="http://10.0.0.5:9000", capabilities=["rag"]
    )


@pytest.fixture
def route(search_agent):
    return PathRoute.objects.create(prefix="/api/v1/search", methods=["POST"], agent=search_agent, timeout_seconds=15)


def route_data(**fields):
    data = {"prefix": "/api/v1/search/", "methods": "post, get", "agent": "t-search", "upstream_path": "/query",
            "timeout_seconds": "15", "max_retries": "1", "auth_required": "on", "requests_per_minute": "30",
            "protocol": "plain", "sunset_at": "", "is_active": "on"}  # fmt: skip
    return {**data, **fields}


def test_every_role_reads_the_routes_and_content_routing_pages(compliance, route):
    CapabilityKeyword.objects.create(keyword="lookup", capability="rag")
    page = compliance.get("/console/routes/").content.decode()
    assert "/api/v1/search" in page and "t-search" in page and "15 s" in page
    assert "New route" not in page
    keywords = compliance.get("/console/content-routing/").content.decode()
    assert "lookup" in keywords and "rag" in keywords and "t-search" in keywords
    assert "Add keyword" not in keywords
    nav = compliance.get("/console/agents/").content.decode()
    assert 'href="/console/routes/"' in nav and 'href="/console/content-routing/"' in nav


def test_the_route_list_searches_prefixes_and_agents(compliance, route, search_agent):
    other = Agent.objects.create(slug="t-writer", name="Writer", upstream_url="http://10.0.0.6:9000")
    PathRoute.objects.create(prefix="/api/v1/draft", agent=other)
    by_prefix = compliance.get("/console/routes/", {"q": "DRAFT"}).content.decode()
    assert "/api/v1/draft" in by_prefix and "/api/v1/search" not in by_prefix
    by_agent = compliance.get("/console/routes/", {"q": "t-search"}).content.decode()
    assert "/api/v1/search" in by_agent and "/api/v1/draft" not in by_agent
    assert 'value="t-search"' in by_agent  # the search stays in its box


def test_a_user_without_a_role_and_compliance_cannot_change_routes(nobody, compliance, route):
    assert nobody.get("/console/routes/").status_code == 403
    assert compliance.get("/console/routes/new/").status_code == 403
    assert compliance.post("/console/routes/new/", route_data(prefix="/api/other")).status_code == 403
    assert compliance.post(f"/console/routes/{route.pk}/toggle/").status_code == 403
    assert compliance.post("/console/content-routing/new/", {"keyword": "x", "capability": "y"}).status_code == 403
    assert PathRoute.objects.count() == 1 and not CapabilityKeyword.objects.exists()


def test_an_operator_creates_a_route_and_the_trail_records_it(operator, search_agent):
    response = operator.post("/console/routes/new/", route_data())
    assert response.status_code == 302 and response["Location"] == "/console/routes/"
    route = PathRoute.objects.get()
    assert route.prefix == "/api/v1/search" and route.methods == ["POST", "GET"] and route.agent == search_agent
    assert (route.timeout_seconds, route.max_retries, route.requests_per_minute) == (15, 1, 30)
    action = AdminAction.objects.get()
    assert (action.actor, action.via, action.action, action.object_type) == (
        "olga",
        "console",
        "create",
        "routing.pathroute",
    )


def test_an_admin_edits_deprecates_deactivates_and_deletes_a_route(admin, route):
    data = route_data(prefix=route.prefix, deprecated="on", sunset_at="2027-03-01T12:00")
    assert admin.get(f"/console/routes/{route.pk}/edit/").status_code == 200
    assert admin.post(f"/console/routes/{route.pk}/edit/", data).status_code == 302
    route.refresh_from_db()
    assert route.deprecated and route.sunset_at.year == 2027
    assert "deprecated" in admin.get("/console/routes/").content.decode()
    assert admin.post(f"/console/routes/{route.pk}/toggle/").status_code == 302
    route.refresh_from_db()
    assert not route.is_active
    assert admin.get(f"/console/routes/{route.pk}/delete/").status_code == 200
    assert admin.post(f"/console/routes/{route.pk}/delete/").status_code == 302
    assert not PathRoute.objects.exists()
    assert list(AdminAction.objects.order_by("id").values_list("action", flat=True)) == [
        "update",
        "deactivate",
        "delete",
    ]


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"prefix": "api/x"}, "prefix", "Start the prefix with"),
        ({"prefix": "/"}, "prefix", "would take every path"),
        ({"prefix": "/v1/chat"}, "prefix", "shadow the gateway"),
        ({"prefix": "/agents"}, "prefix", "shadow the gateway"),
        ({"prefix": "/console/routes"}, "prefix", "shadow the gateway"),
        ({"prefix": "/api"}, "prefix", "shadow the gateway"),  # would take /api/v1/, the management API
        ({"prefix": "/api/docs"}, "prefix", "shadow the gateway"),
        ({"prefix": "/a//b"}, "prefix", "single"),
        ({"methods": "POST, FETCH"}, "methods", "FETCH"),
        ({"timeout_seconds": "0"}, "timeout_seconds", "above zero"),
        ({"upstream_path": "query"}, "upstream_path", "Start the upstream path"),
    ],
)
def test_the_route_form_refuses_bad_values(operator, search_agent, fields, field, message):
    response = operator.post("/console/routes/new/", route_data(**fields))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors and message in " ".join(errors[field])
    assert not PathRoute.objects.exists()


def test_an_operator_maps_edits_and_removes_keywords(operator, search_agent):
    response = operator.post("/console/content-routing/new/", {"keyword": " Lookup ", "capability": "RAG"})
    assert response.status_code == 302 and response["Location"] == "/console/content-routing/"
    keyword = CapabilityKeyword.objects.get()
    assert (keyword.keyword, keyword.capability) == ("lookup", "rag")
    page = operator.get("/console/content-routing/").content.decode()
    assert "Add keyword" in page and "t-search" in page
    duplicate = operator.post("/console/content-routing/new/", {"keyword": "LOOKUP", "capability": "other"})
    assert duplicate.status_code == 400 and "already mapped" in duplicate.content.decode()
    two_words = operator.post("/console/content-routing/new/", {"keyword": "look up", "capability": "rag"})
    assert two_words.status_code == 400
    edit = operator.post(f"/console/content-routing/{keyword.pk}/edit/", {"keyword": "lookup", "capability": "web"})
    assert edit.status_code == 302
    assert "no agent has it" in operator.get("/console/content-routing/").content.decode()
    assert operator.post(f"/console/content-routing/{keyword.pk}/delete/").status_code == 302
    assert not CapabilityKeyword.objects.exists()
    actions = list(AdminAction.objects.order_by("id").values_list("action", "object_type"))
    assert actions == [("create", "routing.capabilitykeyword"), ("update", "routing.capabilitykeyword"),
                       ("delete", "routing.capabilitykeyword")]  # fmt: skip


def test_a_sunset_with_an_offset_no_place_uses_is_a_form_error(admin, route):
    data = route_data(prefix=route.prefix, deprecated="on", sunset_at="2027-03-01T12:00-23:00")
    response = admin.post(f"/console/routes/{route.pk}/edit/", data)
    assert response.status_code == 400
    assert "Give a UTC offset from -12:00 to +14:00" in response.content.decode()
    route.refresh_from_db()
    assert route.sunset_at is None
