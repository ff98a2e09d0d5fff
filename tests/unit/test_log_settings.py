"""The log settings: the format and level variables are checked, and the levels each logger gets."""

from __future__ import annotations

import logging
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway_project.logs import PLAIN, PlainFormatter, QueryDropped, RequestContext, logging_config, request_id


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


def test_a_stderr_nobody_reads_never_holds_the_caller():
    """A full pipe blocks whoever writes to it: the lines wait in the handler's queue (and past its bound are dropped
    and counted), and the caller goes on."""
    import logging
    import os
    import threading

    from gateway_project.logs import BackgroundStreamHandler

    handler = BackgroundStreamHandler()
    read_end, write_end = os.pipe()
    writer = os.fdopen(write_end, "w")
    handler._listener.handlers[0].setStream(writer)
    handler.setFormatter(logging.Formatter("%(message)s"))
    record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "x" * 200 + " %s", ("line",), None)
    done = threading.Event()

    def log_many():
        for _ in range(BackgroundStreamHandler.QUEUE_LINES + 2_000):
            handler.handle(record)
        done.set()

    threading.Thread(target=log_many, daemon=True).start()
    assert done.wait(60), "the caller was held by the stream"
    assert handler.dropped > 0
    drained = threading.Thread(
        target=lambda: [None for _ in iter(lambda: os.read(read_end, 1 << 16), b"")], daemon=True
    )
    drained.start()
    handler.close()  # writes what waits, now that someone reads
    writer.close()
    drained.join(10)
    os.close(read_end)


def test_a_clients_path_cannot_forge_a_log_line():
    from hypothesis import given
    from hypothesis import strategies as st

    from routing.access_log import printable

    @given(st.text(max_size=80))
    def check(path):
        shown = printable(path)
        assert "\n" not in shown and "\r" not in shown and "\u2028" not in shown and "\x1b" not in shown
        if path.isprintable():
            assert shown == path

    check()
    assert printable("/v1/x\nINFO gateway.access fake") == "/v1/x\\nINFO gateway.access fake"


@settings(max_examples=300)
@given(message=st.text(), argument=st.text())
def test_a_plain_line_is_one_line_whatever_its_message_holds(message, argument):
    """A message (a server's access line with a client's request line in it) cannot forge a second line."""
    formatter = PlainFormatter(PLAIN)
    record = logging.LogRecord("daphne.access", logging.INFO, __file__, 1, "%s %s", (message, argument), None)
    line = formatter.format(record)
    assert len(line.splitlines()) <= 1
    if (message + argument).isprintable():
        assert line.endswith(f"{message} {argument}")  # nothing to escape: the line as it was


def test_a_plain_lines_traceback_keeps_its_lines():
    formatter = PlainFormatter(PLAIN)
    try:
        raise ValueError("broken")
    except ValueError:
        record = logging.LogRecord("gateway", logging.ERROR, __file__, 1, "GET /a\r\nforged", (), sys.exc_info())
    first, *rest = formatter.format(record).splitlines()
    assert first.endswith("GET /a\\r\\nforged") and rest[0] == "Traceback (most recent call last):"
