"""The log settings: the format and level variables are checked, and the levels each logger gets."""

from __future__ import annotations

import logging

import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_project.logs import QueryDropped, RequestContext, logging_config, request_id


def test_a_format_or_level_the_gateway_does_not_know_stops_it():
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_LOG_FORMAT"):
        logging_config("", "xml")
    with pytest.raises(ImproperlyConfigured, match="GATEWAY_LOG_LEVEL"):
        logging_config("LOUD", "json")


def test_unset_the_gateway_and_the_servers_say_info_and_the_rest_warning():
    config = logging_config("", "json")
    loggers = config["loggers"]
    assert [loggers[name]["level"] for name in ("gateway", "daphne", "uvicorn.error", "django")] == [
        "INFO", "INFO", "INFO", "WARNING"
    ]  # fmt: skip
    assert config["root"]["level"] == "WARNING"
    assert loggers["uvicorn.access"]["level"] == loggers["daphne.access"]["level"] == "WARNING"  # no server lines
    assert logging_config("", "json", server_access=True)["loggers"]["uvicorn.access"]["level"] == "INFO"
    loggers = logging_config("error", "plain")["loggers"]
    assert {logger["level"] for name, logger in loggers.items() if not name.endswith(".access")} == {"ERROR"}


def test_a_line_names_the_request_being_served_and_no_other():
    line = logging.LogRecord("gateway.proxy", logging.ERROR, __file__, 1, "failed", (), None)
    RequestContext().filter(line)
    assert not hasattr(line, "request_id")
    token = request_id.set("abc123")
    try:
        RequestContext().filter(line)
    finally:
        request_id.reset(token)
    assert line.request_id == "abc123"


def test_uvicorn_lines_lose_their_query_strings():
    access = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "GET", "/agents/a/ws?api_key=sk-1", "1.1", 101), None)  # fmt: skip
    handshake = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
                                  ("1.2.3.4:5", "/agents/a/ws?api_key=sk-2"), None)  # fmt: skip
    for record in (access, handshake):
        QueryDropped().filter(record)
    assert access.getMessage() == '1.2.3.4:5 - "GET /agents/a/ws HTTP/1.1" 101'
    assert handshake.getMessage() == '1.2.3.4:5 - "WebSocket /agents/a/ws" [accepted]'
