"""A task that outlives the request that started it (the audit writer, a table's refresh, a listener) serves no
request: its log lines must name none, nor its trace."""

from __future__ import annotations

import json
import logging

import pytest

from gateway_project import logs
from gateway_project.writer import writer
from tests.gateway.test_tracing import exporter, spans_of, traced  # noqa: F401  (the in-process gateway, traced)
from tests.waiting import until


@pytest.fixture
def writer_lines():
    """The JSON lines of ``gateway.writer``, with the request's and the trace's ids as the process adds them."""
    lines: list[dict] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(json.loads(handler.format(record)))
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.RequestContext())
    logger = logging.getLogger("gateway.writer")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def test_the_audit_writers_lines_name_no_request(traced, exporter, writer_lines, monkeypatch):  # noqa: F811
    """The writer's task was made by the first request's audit record, and a task starts with a copy of its
    creator's context: every line it wrote for the life of the process (a batch the database refused, a hook that
    failed) named that request and its trace, one an operator would then look into for nothing."""
    monkeypatch.setattr(writer, "_task", None)  # the next record starts it, as a process's first request does
    first = traced.client().get("/v1/models")
    spans_of(exporter, first)
    until(lambda: writer.pending() == 0, "the first request's record is written")

    async def failing(batch):
        raise RuntimeError("a hook that fails")

    monkeypatch.setattr(writer, "_async_hooks", [failing])
    second = traced.client().get("/v1/models")
    assert first.status_code == second.status_code == 401
    (line, *_) = until(lambda: [line for line in writer_lines if "writer hook" in line["message"]], "a hook failed")
    assert "request_id" not in line and "trace_id" not in line, line
