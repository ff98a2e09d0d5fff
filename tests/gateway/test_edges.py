"""The gateway's edges under attack: paths, headers, bodies and callers that try to get past it.

Each test here failed on ee0d162 (issue 12). Paths are sent with ``http.client``,
which puts them on the wire as written; httpx would normalise ``..`` away first.
"""

from __future__ import annotations

import http.client
import json
import socket
import uuid

import pytest

from tests.servers import Gateway, read_answer
from tests.waiting import until, wait_for

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def edge_gateway(seeded, request):
    server = Gateway(
        server=request.param,
        GATEWAY_TRUSTED_PROXIES="1",
        GATEWAY_PROXY_ONLY_HOSTS="gw.example",
        GATEWAY_AUTH_FAILURES_PER_MINUTE="3",
    )
    yield server
    server.stop()


@pytest.fixture
def based_agent(live_db, seeded, edge_gateway, wait_for_agent):
    """An agent whose upstream lives under a base path, as real deployments often do."""
    from routing.models import Agent

    slug = f"based-{uuid.uuid4().hex[:8]}"
    agent = Agent.objects.create(
        slug=slug, name=slug, kind="agent", upstream_url=f"{seeded.url}/tenant/a", timeout_seconds=10
    )
    wait_for_agent(slug, edge_gateway)
    yield agent
    agent.delete()


def raw_request(gateway, method, path, headers=None, body=None):
    """Send ``path`` byte for byte; return (status, headers, body as JSON or text)."""
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        content = response.read()
        try:
            parsed = json.loads(content)
        except ValueError:
            parsed = content.decode("latin-1")
        return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
    finally:
        conn.close()


def record_of(request_id: str):
    from audit.models import AuditRecord

    return wait_for(lambda: AuditRecord.objects.filter(request_id=request_id).first())


ESCAPES = [
    "/../../admin/",
    "/%2e%2e/%2e%2e/admin/",
    "/%2E./admin",
    "/..%2fadmin",
    "/x/../../../",
    "/./x",
    "/x%3Fadmin=1",
    "/x%23frag",
    "/x%0d%0aSet-Cookie:%20a=b",
    "/x%00y",
    "/x%5c..%5cadmin",
    "/x%zz",
    "/%2e%2e;/y",
    "/x/..;/..;/z",
    "/%252e%252e/admin",
    "/x%252fadmin",
    "/%c0%ae%c0%ae/admin",
    "/%ef%bc%8e%ef%bc%8e/admin",
]


@pytest.mark.parametrize("tail", ESCAPES)
def test_a_path_that_could_leave_the_agents_base_is_refused(edge_gateway, make_key, based_agent, tail):
    raw, _ = make_key()
    status, headers, body = raw_request(
        edge_gateway, "GET", f"/agents/{based_agent.slug}{tail}", {"Authorization": f"Bearer {raw}"}
    )
    assert status == 400, body
    assert body["error"]["code"] == "invalid_path"
    assert body["error"]["request_id"] == headers["x-request-id"]
    assert record_of(headers["x-request-id"]).status == 400  # refused, and still in the log


def test_a_plain_path_reaches_the_upstream_under_its_base(edge_gateway, make_key, based_agent):
    raw, _ = make_key()
    status, _, echo = raw_request(
        edge_gateway, "GET", f"/agents/{based_agent.slug}/docs/a%20b?x=1&api_key=leak", {"X-API-Key": raw}
    )
    assert status == 200, echo
    assert echo["raw_path"].startswith("/tenant/a/docs/a%20b")
    assert echo["query"] == "x=1"  # a key in the query never goes upstream


def test_an_anonymous_path_route_cannot_be_walked_out_of(edge_gateway, live_db, seeded):
    from routing.models import Agent, PathRoute

    agent = Agent.objects.create(
        slug=f"pr-{uuid.uuid4().hex[:8]}", name="pr", kind="agent", upstream_url=f"{seeded.url}/svc",
        upstream_api_key="sk-upstream-secret",
    )  # fmt: skip
    prefix = f"/open-{uuid.uuid4().hex[:6]}"
    route = PathRoute.objects.create(prefix=prefix, agent=agent, auth_required=False, upstream_path="/search")
    try:
        # Served once the gateway has re-read its routing table (every 0.2 s in the tests).
        ok, _, echo = until(lambda: (a := raw_request(edge_gateway, "GET", f"{prefix}/q"))[0] != 404 and a, "served")
        assert ok == 200 and echo["path"] == "/svc/search/q"
        for tail in ("/../../admin", "/%2e%2e/%2e%2e/admin", "/..%2f..%2fadmin"):
            status, _, body = raw_request(edge_gateway, "GET", prefix + tail)
            assert status == 400 and body["error"]["code"] == "invalid_path", (tail, body)
    finally:
        route.delete()
        agent.delete()


def test_upstream_cookies_and_html_are_defused(edge_gateway, make_key):
    raw, _ = make_key()
    hostile = {"set-cookie": ["sessionid=stolen; Path=/", "csrftoken=x"], "content-type": "text/html"}
    response = edge_gateway.client(raw).get(
        "/agents/research/page", headers={"x-mock-answer-headers": json.dumps(hostile)}
    )
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == "sandbox"
    assert response.headers["content-type"] == "text/html"


def test_gateway_answers_carry_the_security_headers_errors_included(edge_gateway):
    response = edge_gateway.client().get("/v1/models", headers={"X-Forwarded-For": "192.0.2.200"})
    assert response.status_code == 401
    assert response.headers["x-content-type-options"] == "nosniff"


def test_client_forwarding_claims_and_connection_named_headers_are_not_forwarded(edge_gateway, make_key, audit_of):
    raw, _ = make_key()
    response = edge_gateway.client(raw).get(
        "/agents/research/who",
        headers={
            "X-Forwarded-For": "6.6.6.6, 198.51.100.7",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "https",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "Connection": "keep-alive, x-secret-hop",
            "X-Secret-Hop": "1",
            "Accept-Encoding": "gzip",
        },
    )
    echo = response.json()
    sent = echo["headers"]
    for name in ("x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "forwarded", "x-real-ip", "x-secret-hop"):
        assert name not in sent, name
    assert sent["accept-encoding"] == "identity"  # so usage can be read on the way back
    # One trusted proxy: the right-most hop is the client, whatever it wrote further left.
    assert audit_of(response).client_ip == "198.51.100.7"


def test_a_forwarded_for_that_is_not_an_address_is_kept_aside_not_believed(edge_gateway, make_key, audit_of):
    raw, _ = make_key()
    response = edge_gateway.client(raw).get("/v1/models", headers={"X-Forwarded-For": "not-an-ip"})
    assert response.status_code == 200
    record = audit_of(response)
    assert record.client_ip == "127.0.0.1"
    assert record.details["forwarded_for_invalid"] == "not-an-ip"


def test_a_body_with_duplicate_keys_is_forwarded_as_it_was_checked(
    edge_gateway, make_key, live_db, seeded, wait_for_agent
):
    from routing.models import Agent

    agent = Agent.objects.create(
        slug=f"dup-{uuid.uuid4().hex[:8]}", name="dup", kind="openai", upstream_url=f"{seeded.url}/echo",
        served_models=[f"m-{uuid.uuid4().hex[:6]}", "gpt-4o-mini"], default_model="",
    )  # fmt: skip
    try:
        wait_for_agent(agent.slug, edge_gateway)
        raw, _ = make_key(agents=[agent.slug], models=[agent.served_models[0]])
        model = agent.served_models[0]
        body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "model": "' + model + '"}'
        status, _, answer = raw_request(
            edge_gateway, "POST", CHAT, {"Authorization": f"Bearer {raw}", "Content-Type": "application/json"},
            body.encode(),
        )  # fmt: skip
        assert status == 200, answer
        sent = answer["body"]
        assert sent.count('"model"') == 1 and json.loads(sent)["model"] == model
    finally:
        agent.delete()


def test_deeply_nested_json_is_a_400_not_a_500(edge_gateway, make_key):
    raw, _ = make_key()
    body = b"[" * 60_000
    status, _, answer = raw_request(
        edge_gateway, "POST", CHAT, {"Authorization": f"Bearer {raw}", "Content-Type": "application/json"}, body
    )
    assert status == 400 and answer["error"]["code"] == "invalid_json"


def test_failed_authentication_is_limited_per_address(edge_gateway, audit_of):
    address = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
    client = edge_gateway.client()
    answers = [client.get("/v1/models", headers={"Authorization": "Bearer nope", "X-Forwarded-For": address})
               for _ in range(5)]  # fmt: skip
    assert [a.status_code for a in answers[:3]] == [401, 401, 401]
    assert answers[3].status_code == 429
    assert answers[3].json()["error"]["code"] == "too_many_failed_authentications"
    assert int(answers[3].headers["retry-after"]) >= 1
    assert audit_of(answers[4]).status == 429  # refused, and still audited
    # Another address is not affected.
    other = client.get("/v1/models", headers={"Authorization": "Bearer nope", "X-Forwarded-For": "192.0.2.1"})
    assert other.status_code == 401


def test_console_paths_are_not_served_on_a_gateway_only_host(edge_gateway, make_key):
    raw, _ = make_key()
    console = edge_gateway.client().get("/console/", headers={"Host": "gw.example"})
    assert console.status_code == 404 and console.json()["error"]["code"] == "unknown_endpoint"
    assert edge_gateway.client().get("/api/v1/", headers={"Host": "gw.example:8000"}).status_code == 404
    assert edge_gateway.client(raw).get("/v1/models", headers={"Host": "gw.example"}).status_code == 200
    assert edge_gateway.client().get("/console/", headers={"Host": "127.0.0.1"}).status_code in (200, 302)


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_an_unauthenticated_body_is_not_read(live_db, seeded, server):
    """A client announcing 50 MB without a key gets its 401 before sending any of it (Daphne too: its channel ends
    a body declared over the limit at the head, ``daphne_protocol``)."""
    gateway = Gateway(server=server)
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Expect: 100-continue\r\nContent-Length: 52428800\r\n\r\n"
            )
            answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]  # not "100 Continue": the body is not wanted
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "missing_api_key"
    finally:
        gateway.stop()


OVER = 65536  # tests.servers.Gateway's GATEWAY_MAX_BODY_BYTES


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_refused_unread_in_the_apis_shape_and_audited(
    edge_gateway, make_key, audit_for, chunked
):
    """Key first, then 413 in the Messages API's own shape, with an audit record, on both servers: the body past the
    limit is never read (a declared one not at all, a chunked one no further than the limit)."""
    raw, key = make_key()
    head = (
        b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + raw.encode()
        + b"\r\nanthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
    )  # fmt: skip
    if chunked:
        body = b"%x\r\n%s\r\n" % (OVER, b" " * OVER) + b"a\r\n" + b" " * 10 + b"\r\n"  # no last chunk
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + body
    else:
        request = head + b"Content-Length: 70000000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", edge_gateway.port), timeout=10) as sock:
        sock.sendall(request)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert error["type"] == "error" and error["error"]["type"] == "request_too_large"
    assert [row.status for row in audit_for(key)] == [413]


def test_a_head_and_body_larger_than_the_head_limit_in_one_write_are_served(edge_gateway, make_key):
    """Only an unfinished head is too large: uvicorn's bound counted a whole read, so a client writing its head and a
    body of ~64 KiB at once got a false 431."""
    raw, _ = make_key()
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 65_400}]}).encode()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + raw.encode()
        + b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )  # fmt: skip
    assert len(head + body) > 65536 >= len(body)  # over the head limit (tests.servers), within the body's
    with socket.create_connection(("127.0.0.1", edge_gateway.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


def test_unknown_keys_are_remembered_as_unknown(live_db, settings):
    """A stream of made-up keys costs one database look-up per key, not one per request."""
    import asyncio

    from gateway_project.snapshots import SnapshotCache

    loads = []

    def load(ident):
        loads.append(ident)
        return None

    async def ask_twice():
        first = SnapshotCache("test-absent", load, dict, local_seconds=lambda: 0)
        second = SnapshotCache("test-absent", load, dict, local_seconds=lambda: 0)  # another process's cache
        ident = uuid.uuid4().hex
        assert await first.get(ident) is None
        assert await second.get(ident) is None

    asyncio.run(ask_twice())
    from gateway_project.hotstate import get_hot_state

    expected = 1 if get_hot_state().shared else 2
    assert wait_for(lambda: len(loads) == expected, 1) or len(loads) == expected
