"""A gateway process's log in JSON: every line an object, one access line per request, Django's and the servers'
lines in the same format, and no secret in any of them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.gateway.test_trace_export import collector
from tests.servers import ROOT, Gateway, read_answer, server_env, stop
from tests.waiting import until

CLIENT_TRACE = "5bf92f3577b34da6a3ce929d0e0e4737"
# What each server logs once it runs its application: its own start, in its own logger.
SERVER_LINES = {"daphne": ("daphne.cli", "Starting server at"), "uvicorn": ("uvicorn.error", "Started server process")}


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_every_line_is_json_and_each_request_has_one_naming_it(
    server, canned, live_db, seeded, make_key, wait_for_agent
):
    from routing.models import Agent

    agent = Agent.objects.create(
        slug=f"j-{uuid.uuid4().hex[:8]}", name="j", kind="openai", upstream_url=seeded.url,
        served_models=["json-model"], default_model="json-model", timeout_seconds=5,
    )  # fmt: skip
    receiver = collector(canned)
    gateway = Gateway(server=server, GATEWAY_LOG_FORMAT="json", GATEWAY_LOG_LEVEL="INFO",
                      GATEWAY_SERVER_ACCESS_LOG="1",
                      OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url.replace("//", "//otel:pw-in-url@"))  # fmt: skip
    raw, key = make_key()
    try:
        wait_for_agent(agent.slug, gateway)
        with gateway.client(raw) as client:
            body = {"model": "json-model", "messages": [{"role": "user", "content": "a private prompt"}]}
            answer = client.post("/v1/chat/completions", json=body,
                                 headers={"traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-01"})  # fmt: skip
            refused = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-not-a-key"})
        assert answer.status_code == 200, answer.text
        assert refused.status_code == 401
        assert gateway.client().get("/console/no-such-page/?api_key=sk-in-a-query").status_code == 404
        ws_url = gateway.url.replace("http://", "ws://") + f"/agents/research/ws?api_key={raw}"  # a browser's way
        with connect(ws_url, open_timeout=10) as ws:
            ws.send("say hi")
            assert ws.recv(timeout=10) == "hi"
            session_id = dict(ws.response.headers).get("x-request-id")
    finally:
        assert gateway.stop() == 0
        agent.delete()
    text = (Path(settings.VAR_DIR) / f"gateway-{gateway.port}.log").read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert all({"timestamp", "level", "logger", "message"} <= line.keys() for line in lines)

    (access,) = [line for line in lines if line.get("request_id") == answer.headers["x-request-id"]
                 and line["logger"] == "gateway.access"]  # fmt: skip
    assert access["level"] == "INFO"
    assert (access["method"], access["path"], access["status"], access["error_code"]) == (
        "POST", "/v1/chat/completions", 200, ""
    )  # fmt: skip
    assert (access["agent"], access["client"], access["key_prefix"]) == (agent.slug, key.client.slug, key.prefix)
    assert access["model"] == "json-model" and access["input_tokens"] > 0 and access["output_tokens"] > 0
    assert access["latency_ms"] > 0 and access["cost_usd"] >= 0
    assert access["trace_id"] == CLIENT_TRACE and len(access["span_id"]) == 16
    (denied,) = [line for line in lines if line.get("request_id") == refused.headers["x-request-id"]
                 and line["logger"] == "gateway.access"]  # fmt: skip
    assert (denied["status"], denied["error_code"], denied["client"]) == (401, "invalid_api_key", "")

    (session,) = [line for line in lines if line["logger"] == "gateway.access" and line["method"] == "WS"]
    assert (session["path"], session["status"], session["agent"]) == ("/agents/research/ws", 101, "research")
    assert session_id in (None, session["request_id"])  # Daphne sends no handshake headers

    django = [line for line in lines if line["logger"] == "django.request" and "/console/" in line["message"]]
    assert [(line["level"], line["message"], line["status_code"]) for line in django] == [
        ("WARNING", "Not Found: /console/no-such-page/", 404)
    ]
    assert "request" not in django[0]  # Django's request object: its repr holds the query string
    name, start = SERVER_LINES[server]
    assert any(line["logger"] == name and line["message"].startswith(start) for line in lines)
    served = [line["message"] for line in lines if line["logger"] == f"{server}.access"]  # the server's own lines
    assert any("/console/no-such-page/" in message and "404" in message for message in served), served
    assert any(line["logger"] == "gateway.server" and "worker(s) on" in line["message"] for line in lines)

    assert any(line["logger"] == "gateway.tracing" and receiver.url in line["message"] for line in lines)
    for secret in (raw, "sk-not-a-key", "a private prompt", "sk-in-a-query", "pw-in-url"):
        assert secret not in text


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_head_refused_before_the_application_has_its_access_line_and_its_count(server, seeded):
    """The server's protocol answers an oversized head 431 and a dripping one 408 before any application runs: each
    is still one access line naming the request id the client was given, and a refusal on ``/metrics``."""
    gateway = Gateway(server=server, GATEWAY_LOG_FORMAT="json", GATEWAY_LOG_LEVEL="INFO",
                      GATEWAY_MAX_HEAD_BYTES="8192", GATEWAY_HEAD_READ_SECONDS="1")  # fmt: skip
    answers = {}
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
            conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n")  # unended
            answers[431] = read_answer(conn)
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as conn:
            conn.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")  # and nothing more
            answers[408] = read_answer(conn)
        ids = {}
        for status, answer in answers.items():
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 %d " % status), answer[:200]
            ids[status] = json.loads(body)["error"]["request_id"]
        scraped = until(lambda: _refusals(gateway) or None, "the refusals are counted")
        assert scraped == {"request_head_too_large": 1.0, "request_head_timeout": 1.0}
    finally:
        assert gateway.stop() == 0
    text = (Path(settings.VAR_DIR) / f"gateway-{gateway.port}.log").read_text()
    access = [json.loads(line) for line in text.splitlines() if '"gateway.access"' in line]
    for status, code in ((431, "request_head_too_large"), (408, "request_head_timeout")):
        (line,) = [line for line in access if line["request_id"] == ids[status]]
        assert (line["status"], line["error_code"], line["level"]) == (status, code, "INFO")


def _refusals(gateway) -> dict[str, float]:
    answer = httpx.get(f"{gateway.url}/metrics", timeout=10)
    return {
        sample.labels["code"]: sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "gateway_refusals_total" and sample.labels["reason"] == "invalid_request"
    }


@pytest.mark.skipif(not settings.REDIS_URL, reason="a worker needs the production profile's Redis broker")
def test_a_celery_workers_lines_are_the_gateways_json_lines(seeded, tmp_path):
    """A worker's start and a task's outcome, each one JSON object a line, at the gateway's level
    (``GATEWAY_LOG_LEVEL``), not in Celery's own format."""
    from gateway_project.celery import app

    name = f"logs-{uuid.uuid4().hex[:8]}"
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "gateway_project", "--quiet", "worker", "--pool", "threads",
             "-c", "1", "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "-Q", name],
            cwd=ROOT, env=server_env(CELERY_TASK_ALWAYS_EAGER="0", GATEWAY_LOG_FORMAT="json", GATEWAY_LOG_LEVEL="INFO"),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            until(lambda: " ready." in log_path.read_text(), "the worker is ready", seconds=60)
            result = app.send_task("routing.tasks.expire_stuck_jobs", queue=name)
            until(lambda: "succeeded" in log_path.read_text(), "the worker ran the task", seconds=60)
            assert result.id in log_path.read_text()
        finally:
            assert stop(proc, seconds=30) == 0
    text = log_path.read_text()
    # Celery prints (not logs) a line or two of its own: its shutdown, a warning to root before logging is set up.
    assert not [line for line in text.splitlines() if line.startswith("[")], "a line in Celery's own format"
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    by_logger = {line["logger"] for line in lines}
    assert {"celery.apps.worker", "celery.app.trace"} <= by_logger, by_logger
    (done,) = [line for line in lines if line["logger"] == "celery.app.trace"]
    assert done["level"] == "INFO" and "expire_stuck_jobs" in done["message"] and "succeeded" in done["message"]
