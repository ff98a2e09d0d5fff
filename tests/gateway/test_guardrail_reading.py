"""What output and input guardrails read of pass-through traffic and of jobs, through a live gateway (the session's
Daphne) and a canned upstream on loopback: JSON read as JSON, any status, compressed answers, binary left alone."""

from __future__ import annotations

import gzip
import json

from tests.waiting import until

INVOKE = "/v1/agent/invoke"
EMAIL = "ada.lovelace@example.com"
CARD = "4111111111111111"


def in_force(client, action: str) -> None:
    """Wait until the client's new output guardrail acts on the research agent's echo."""
    if action == "block":
        until(lambda: client.post(INVOKE, json={"agent": "research", "input": EMAIL}).status_code == 403, "in force")
    else:
        until(lambda: "[EMAIL]" in client.post(INVOKE, json={"agent": "research", "input": EMAIL}).text, "in force")


def setup(gateway, guardrails, make_key, agents, canned, action="redact", stage="output"):
    agent = agents(canned.url)
    raw, key = make_key()
    guardrails(stage=stage, detectors=["email", "card"], action=action, clients=[key.client.slug])
    client = gateway.client(raw)
    in_force(client, action)  # an input rule redacting shows in the echo as an output rule does
    return agent, client


def test_a_pass_through_json_answer_is_read_as_json_at_any_status(gateway, guardrails, make_key, agents, canned):
    agent, client = setup(gateway, guardrails, make_key, agents, canned)
    escaped = b'{"result": "write to ada.lovelace\\u0040example.com", "id": "' + CARD.encode() + b'"}'
    canned.set("/ok", escaped)
    canned.set("/broken", {"error": {"message": f"no account for {EMAIL}"}}, status=404)
    ok, broken = client.get(f"/agents/{agent.slug}/ok"), client.get(f"/agents/{agent.slug}/broken")
    assert ok.status_code == 200 and ok.json() == {"result": "write to [EMAIL]", "id": "[CARD]"}
    assert int(ok.headers["content-length"]) == len(ok.content)
    assert broken.status_code == 404 and broken.json() == {"error": {"message": "no account for [EMAIL]"}}


def test_a_blocked_pass_through_answer_is_a_403_not_an_answer_cut_short(
    gateway, guardrails, make_key, agents, canned, audit_of
):
    agent, client = setup(gateway, guardrails, make_key, agents, canned, action="block")
    canned.set("/ok", {"result": "x " * 20_000 + f" {EMAIL}"})  # past 32 K: checked beside the event loop
    canned.set("/page", f"<p>{EMAIL}</p>".encode(), content_type="text/html")
    answer, page = client.get(f"/agents/{agent.slug}/ok"), client.get(f"/agents/{agent.slug}/page")
    for refused in (answer, page):
        assert refused.status_code == 403, refused.text[:200]
        assert refused.json()["error"]["code"] == "guardrail_blocked" and EMAIL not in refused.text
    assert audit_of(answer).details["guardrails"][0]["action"] == "block"


def test_a_compressed_pass_through_answer_is_read_and_sent_uncompressed(gateway, guardrails, make_key, agents, canned):
    agent, client = setup(gateway, guardrails, make_key, agents, canned)
    canned.set("/gz", gzip.compress(json.dumps({"result": f"mail {EMAIL}"}).encode()), **{"content-encoding": "gzip"})
    canned.set("/br", b"\x1b\x00\x00", **{"content-encoding": "br"})
    plain, unreadable = client.get(f"/agents/{agent.slug}/gz"), client.get(f"/agents/{agent.slug}/br")
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.json() == {"result": "mail [EMAIL]"}
    assert unreadable.status_code == 502 and unreadable.json()["error"]["code"] == "upstream_unreadable"


def test_a_binary_pass_through_answer_is_relayed_byte_for_byte(gateway, guardrails, make_key, agents, canned):
    agent, client = setup(gateway, guardrails, make_key, agents, canned, action="block")
    image = b"\x89PNG\r\n\x1a\n" + EMAIL.encode() + bytes(range(256))
    canned.set("/logo.png", image, content_type="image/png")
    answer = client.get(f"/agents/{agent.slug}/logo.png")
    assert answer.status_code == 200 and answer.content == image


def test_a_pass_through_json_request_is_read_as_json(gateway, guardrails, make_key, agents, canned):
    agent, client = setup(gateway, guardrails, make_key, agents, canned, stage="input")
    canned.set("/in", {"ok": True})
    body = (
        b'{"note": "from ada.lovelace\\u0040example.com", "id": "' + CARD.encode() + b'", "' + EMAIL.encode() + b'": 1}'
    )
    answer = client.post(f"/agents/{agent.slug}/in", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    sent = json.loads(next(seen for path, seen in reversed(canned.seen) if path == "/in"))
    assert sent == {"note": "from [EMAIL]", "id": "[CARD]", "[EMAIL]": 1}


def test_an_upstreams_refusal_quoted_in_the_gateways_error_is_checked(
    gateway, guardrails, make_key, agents, canned, audit_of
):
    agent, client = setup(gateway, guardrails, make_key, agents, canned)
    canned.set("/invoke", {"error": {"message": f"unknown account {EMAIL}"}}, status=422)
    refused = client.post(INVOKE, json={"agent": agent.slug, "input": "hello"})
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "upstream_rejected"
    assert EMAIL not in refused.text and "unknown account [EMAIL]" in refused.json()["error"]["message"]
    assert EMAIL not in (audit_of(refused).output_preview or "")
