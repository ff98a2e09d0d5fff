"""Log lines: JSON (one object a line, for collectors) or plain text, from every logger the process has.

The gateway's own loggers, Django's (``django``, ``django.request``, ``django.server``),
Daphne's and Twisted's, uvicorn's (``uvicorn.error``, ``uvicorn.access``) and the
server supervisor's all go to one stderr handler in one format. A line logged while a
request is served names it (``request_id``) and, with tracing on, its trace and span
(``trace_id``, ``span_id``): ``RequestContext`` adds them to every record.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import logging
import logging.handlers
import os
import queue
from contextvars import ContextVar

from django.core.exceptions import ImproperlyConfigured
from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from gateway_project import tracing

# The request the running task serves: set by the proxy as it begins one (each request runs in a task of its own).
request_id: ContextVar[str] = ContextVar("request_id", default="")

FORMATS = ("json", "plain")
PLAIN = "%(asctime)s %(levelname)s %(name)s %(message)s"


def background_task(coro, name: str | None = None) -> asyncio.Task:
    """``coro`` as a task of the running loop that serves no request. A task starts with a copy of its creator's
    context: one a request happened to start (the audit writer, a table's refresh, a listener) would otherwise name
    that request and its trace on every line it writes for the life of the process."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())


class RequestContext(logging.Filter):
    """Adds the request id and, with tracing on, the current trace and span ids to a record (unless it has its
    own, as the access line does)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            current = request_id.get()
            if current:
                record.request_id = current
        if tracing.tracer is not None and not hasattr(record, "trace_id"):
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id, record.span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        return True


class BackgroundStreamHandler(logging.handlers.QueueHandler):
    """Writes to stderr from a thread of its own: a line never waits on the stream on the event loop (a collector
    that reads stderr slowly, a full pipe), and its JSON is made there too.

    The message itself is made in the caller (from its arguments as they are then), and the filters run there
    (the request's and the trace's ids are the caller's context). At most ``QUEUE_LINES`` wait; more are dropped
    and counted rather than hold a request. A forked child (a Celery worker's pool) starts a thread of its own.
    """

    QUEUE_LINES = 10_000

    def __init__(self):
        super().__init__(queue.Queue(self.QUEUE_LINES))
        self.dropped = 0
        self._listener: logging.handlers.QueueListener | None = None
        self._start()
        os.register_at_fork(after_in_child=self._start)
        atexit.register(self.close)

    def _start(self) -> None:
        self.queue = queue.Queue(self.QUEUE_LINES)  # a child's: the parent's thread is not there to empty it
        self._listener = _Listener(self.queue, _FormattedBy(self))
        self._listener.start()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.message = record.getMessage()
        record.msg, record.args = record.message, None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Write what waits, then stop the thread (at exit)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        super().close()


class _Listener(logging.handlers.QueueListener):
    """The standard listener, whose stop waits ``STOP_SECONDS`` at most: at exit, a stream nobody reads must not
    hold the process (its thread is a daemon: left behind, it goes with the process)."""

    STOP_SECONDS = 5.0

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self.queue.put(self._sentinel, timeout=self.STOP_SECONDS)
        except queue.Full:
            return
        thread.join(self.STOP_SECONDS)


class _FormattedBy(logging.StreamHandler):
    """The background thread's stderr handler, in the format configured on its ``BackgroundStreamHandler``."""

    def __init__(self, owner: logging.Handler):
        super().__init__()
        self.owner = owner

    def format(self, record: logging.LogRecord) -> str:
        return self.owner.format(record)


class QueryDropped(logging.Filter):
    """uvicorn's lines without query strings (its access line's path, its WebSocket handshake's): a browser's
    WebSocket puts its key there (``?api_key=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, str) and arg.startswith("/") for arg in args):
            record.args = tuple(
                arg.partition("?")[0] if isinstance(arg, str) and arg.startswith("/") else arg for arg in args
            )
        return True


class PlainFormatter(logging.Formatter):
    """Text lines whose message cannot start a line of its own: its control characters escaped (a request line's
    ``%0d%0a`` decoded into an access line by a server would otherwise forge a line in the gateway's name). A
    traceback, added after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def json_formatter() -> JsonFormatter:
    """``{"level", "logger", "message", "timestamp", ...}`` and whatever a line adds (``extra``), but Django's request
    object: its repr holds the query string."""
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp=True,
        reserved_attrs=[*RESERVED_ATTRS, "request"],
    )


def logging_config(level: str, fmt: str, server_access: bool = False) -> dict:
    """Django's ``LOGGING``: everything to stderr in ``fmt``; the gateway's, Django's and the servers' loggers at
    ``level`` ("" : INFO for the gateway and the servers, so each request has its line, WARNING for the rest). The
    servers' own access lines (every request, the console's too) only with ``server_access``."""
    if fmt not in FORMATS:
        raise ImproperlyConfigured(f"GATEWAY_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    if level and not isinstance(logging.getLevelName(level.upper()), int):
        raise ImproperlyConfigured(f"GATEWAY_LOG_LEVEL={level!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    own_level, other_level = (level.upper(), level.upper()) if level else ("INFO", "WARNING")
    handler = {"()": BackgroundStreamHandler, "formatter": fmt, "filters": ["request_context"]}
    own = {"handlers": ["console"], "level": own_level, "propagate": False}
    quiet = {"handlers": ["console"], "level": other_level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"()": PlainFormatter, "format": PLAIN}, "json": {"()": json_formatter}},
        "filters": {
            "request_context": {"()": RequestContext},
            "query_dropped": {"()": QueryDropped},
        },
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": other_level},
        "loggers": {
            "gateway": own,
            "django": quiet,
            "django.server": own,
            "daphne": own,
            "twisted": own,
            "uvicorn": own,
            "uvicorn.error": {**own, "filters": ["query_dropped"]},
            "celery": own,  # a worker's start, each task's outcome (``celery.app.trace``)
            # One warning a span while a collector is down, on the request's own path: its exporter's errors (one a
            # batch, on its own thread) say enough.
            "opentelemetry.sdk._shared_internal": {**own, "level": "ERROR"},
            # A client's malformed baggage or tracestate is ignored (W3C), but the API warns of it with the header's
            # text, a line a member and without bound for baggage members not in ASCII: a header in the log, and
            # one request's thousands of lines crowding out every other request's.
            "opentelemetry.baggage": {**own, "level": "ERROR"},
            "opentelemetry.trace.span": {**own, "level": "ERROR"},
            "uvicorn.access": {**own, "level": own_level if server_access else "WARNING", "filters": ["query_dropped"]},
            "daphne.access": {**own, "level": own_level if server_access else "WARNING"},
        },
    }
