"""Path-route matching, upstream paths, deprecation headers and keyword hits, without servers."""

from datetime import UTC, datetime

from routing.content_routing import capability_hits
from routing.deprecation import deprecation_headers
from routing.path_routes import PathRouteEntry, match


def entry(prefix, upstream_path="", methods=()):
    return PathRouteEntry(1, prefix, frozenset(methods), "a", upstream_path, None, None, True, 0, False)


def test_the_longest_prefix_wins_on_a_segment_boundary():
    paths = {p: entry(p) for p in ("/api", "/api/v1/search", "/api/v1")}
    assert match(paths, "/api/v1/search/deep").prefix == "/api/v1/search"
    assert match(paths, "/api/v1/search").prefix == "/api/v1/search"
    assert match(paths, "/api/v1/search/").prefix == "/api/v1/search"
    assert match(paths, "/api/v1/searching").prefix == "/api/v1"
    assert match(paths, "/api/x").prefix == "/api"
    assert match(paths, "/apix") is None and match(paths, "/") is None and match({}, "/api") is None


def test_the_upstream_path_replaces_the_prefix_or_the_own_path_goes_up():
    assert entry("/s", "/query").upstream_rest(b"/s/a/b") == b"/query/a/b"
    assert entry("/s", "/query/").upstream_rest(b"/s/a") == b"/query/a"
    assert entry("/s", "/query").upstream_rest(b"/s") == b"/query"
    assert entry("/s", "/query").upstream_rest(b"/s/") == b"/query/"
    assert entry("/s").upstream_rest(b"/s/a") == b"/s/a"
    # The prefix is cut by segments: letters of it sent percent-encoded do not shift the rest.
    assert entry("/api/s", "/q").upstream_rest(b"/api/%73/a%20b") == b"/q/a%20b"


def test_methods_and_the_allow_header():
    route = entry("/s", methods=("POST", "GET"))
    assert route.allows("GET") and not route.allows("DELETE") and route.allow_header == "GET, POST"
    assert entry("/s").allows("DELETE")


def test_deprecation_and_sunset_headers():
    since, sunset = datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 3, 1, 12, tzinfo=UTC)
    assert deprecation_headers(False, since, sunset) == ()
    assert deprecation_headers(True, since, None) == ((b"deprecation", b"@1796083200"),)  # 2026-12-01T00:00Z
    assert deprecation_headers(True, since, sunset)[1] == (b"sunset", b"Mon, 01 Mar 2027 12:00:00 GMT")


def test_keywords_and_capability_names_count_once_each_in_order():
    hits = capability_hits(
        "Find FACTS, then find code; research!", {"find": "research", "facts": "research"}, {"code", "research"}
    )
    assert hits == {"research": ["find", "facts", "research"], "code": ["code"]}
