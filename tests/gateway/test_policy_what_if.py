"""What-if on real traffic, under both servers: drafts replayed over the request log predict exactly what the same
traffic meets once they are published."""

from __future__ import annotations

import uuid

import pytest

from tests.waiting import until

INVOKE = "/v1/agent/invoke"


@pytest.fixture(scope="module")
def server(either_server):
    return either_server


def invoke(server, raw, agent):
    with server.client(raw) as client:
        return client.post(INVOKE, json={"agent": agent, "input": "hello"})


def test_a_what_if_predicts_what_the_published_drafts_refuse_and_let_through(
    server, make_key, admin_api, audit_for, audit_of, live_db
):
    from keys.models import PolicyRule

    api = admin_api(server)
    alpha_raw, alpha = make_key()
    beta_raw, beta = make_key()
    a, b, tag = alpha.client.slug, beta.client.slug, uuid.uuid4().hex[:6]
    live = api.post("/api/v1/policy-rules/", json={
        "name": f"beta no research {tag}", "effect": "deny",
        "condition": f"client.slug == '{b}' && request.agent == 'research'",
    })  # fmt: skip
    assert live.status_code == 201, live.text
    live = live.json()
    until(lambda: invoke(server, beta_raw, "research").status_code == 403, "the live rule in force")

    # Traffic under the rules in force: beta's research refused, the rest answered.
    sent = [(alpha_raw, "research"), (alpha_raw, "writing"), (alpha_raw, "writing"), (beta_raw, "research"),
            (beta_raw, "research"), (beta_raw, "writing")]  # fmt: skip
    answers = [invoke(server, raw, agent) for raw, agent in sent]
    assert [r.status_code for r in answers] == [200, 200, 200, 403, 403, 200]

    # Drafts: a new rule refusing alpha's writing, and a change of the live rule to beta's writing instead.
    new = api.post("/api/v1/policy-rules/", json={
        "name": f"alpha no writing {tag}", "effect": "deny", "draft": True,
        "condition": f"client.slug == '{a}' && request.agent == 'writing'",
    })  # fmt: skip
    assert new.status_code == 201, new.text
    change = api.post("/api/v1/policy-rules/", json={
        "name": live["name"], "effect": "deny", "draft": True, "draft_of": live["id"],
        "condition": f"client.slug == '{b}' && request.agent == 'writing'",
    })  # fmt: skip
    assert change.status_code == 201, change.text
    # The drafts are not in force: alpha still writes.
    assert [invoke(server, alpha_raw, "writing").status_code for _ in range(3)] == [200] * 3
    assert len(audit_for(alpha, 6)) == 6 and all(audit_of(answer) for answer in answers)  # the log has them all

    job = api.post("/api/v1/policy-what-ifs/", json={"window": "hour"})
    assert job.status_code == 202, job.text
    job = api.get(f"/api/v1/policy-what-ifs/{job.json()['id']}/").json()
    assert (job["status"], job["percent"]) == ("done", 100), job
    results = job["results"]
    ours = {a, b}
    newly = {e["request_id"] for e in results["examples"] if e["client"] in ours}
    # Every alpha writing since the live rule (five), and beta's one writing; the examples list at most 50.
    expected_writing = {
        r.headers["x-request-id"] for r, (_, agent) in zip(answers, sent, strict=True) if agent == "writing"
    }
    assert expected_writing <= newly
    assert dict(map(tuple, results["newly_by_client"]))[a] == 5
    assert dict(map(tuple, results["newly_by_client"]))[b] == 1
    assert dict(map(tuple, results["newly_by_rule"]))[new.json()["name"]] == 5
    assert results["newly_allowed"] >= 2 + 1  # beta's two research answers and the first 403 the wait saw
    assert [rule["name"] for rule in job["draft_rules"] if rule["draft"]] == sorted(
        [live["name"], new.json()["name"]], key=lambda name: [rule["name"] for rule in job["draft_rules"]].index(name)
    )

    # Published, the same traffic meets what the what-if said.
    published = api.post("/api/v1/policy-rules/publish/")
    assert published.status_code == 200, published.text
    assert {rule["name"] for rule in published.json()["published"]} >= {live["name"], new.json()["name"]}
    assert not PolicyRule.objects.filter(draft=True, name__endswith=tag).exists()
    assert PolicyRule.objects.get(pk=live["id"]).condition.endswith("request.agent == 'writing'")
    until(lambda: invoke(server, alpha_raw, "writing").status_code == 403, "the published drafts in force")
    assert [invoke(server, raw, agent).status_code for raw, agent in sent] == [200, 403, 403, 200, 200, 403]
    for name in (live["name"], new.json()["name"]):
        PolicyRule.objects.filter(name=name).delete()


def test_a_what_if_window_is_checked(server, admin_api, live_db):
    api = admin_api(server)
    for body, field in [({"window": "year"}, "window"), ({}, "window"),
                        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "start"),
                        ({"start": "2025-01-01T00:00:00Z", "end": "2025-03-01T00:00:00Z"}, "start"),
                        ({"window": "day", "start": "2025-01-01T00:00:00Z"}, "window")]:  # fmt: skip
        answer = api.post("/api/v1/policy-what-ifs/", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert field in answer.json(), answer.text
