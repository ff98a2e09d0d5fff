"""uvicorn's httptools protocol with a bound on a request's head: its size and the time it takes to arrive.

httptools keeps whatever header bytes a client sends until the head ends, and
uvicorn sets no limit: one anonymous connection grew a worker by 60 MB and was
never answered, and a head sent a byte at a time held its connection for ever.
Both happen before the application (and so before any key check) sees the
request, so they are bounded here: past ``GATEWAY_MAX_HEAD_BYTES`` the client gets
431, past ``GATEWAY_HEAD_READ_SECONDS`` 408 (the gateway's JSON error,
``request_bounds``), and the connection is closed. So is a console or API request's
body past ``GATEWAY_BODY_READ_SECONDS`` from its head's end (Django waited for it as
long as the client liked). A gateway request's body gets the same time, but is
refused by the application, after the key check (``routing.exchange``): the timer
marks the scope ``BODY_LATE`` and wakes the application's wait for the body, so
the application keeps no timer of its own per request (``BODY_BOUNDED``). A lost
connection calls the application's ``ON_HANG_UP``: no task a request waits for it.
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway_project.errors import GatewayError
from gateway_project.request_bounds import (
    BODY_BOUNDED,
    BODY_LATE,
    ON_HANG_UP,
    PROXY_PREFIXES,
    REPORTS_HANG_UP,
    head_too_large,
    raw_answer,
    too_slow,
)
from gateway_project.routing import is_path_route_now


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that refuses a request head larger or slower than the gateway allows."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True  # until this request's head is complete
        self._head_begun = False  # the parser has begun this request's head (its bytes may not be counted)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None  # of the body of the request being read
        self._body_wait = None  # (callback, cycle): the body still to come, its timer not yet started

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Timers start once a read is parsed, and only for what it left unfinished: most requests come whole in
        # one read, and a timer started and cancelled for each of them was CPU for nothing.
        if self._body_wait is not None:  # the head ended in this read and the body did not: time it from now
            callback, cycle = self._body_wait
            self._body_wait = None
            seconds = settings.GATEWAY["BODY_READ_SECONDS"]
            self._body_timer = asyncio.get_running_loop().call_later(seconds, callback, cycle, seconds)
        if not self._in_head:
            return
        # Checked once the bytes are parsed: a read may hold the head's end and a body (a client's one write of
        # both), and only a head still unfinished is too large. httptools kept at most one read past the limit.
        limit = settings.GATEWAY["MAX_HEAD_BYTES"]
        if self._head_bytes > limit:
            self._refuse(head_too_large(limit))
        elif self._head_timer is None and (self._head_begun or self._head_bytes):
            seconds = settings.GATEWAY["HEAD_READ_SECONDS"]
            self._head_timer = asyncio.get_running_loop().call_later(seconds, self._head_too_slow, seconds)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True

    def on_headers_complete(self) -> None:
        self._in_head = self._head_begun = False
        self._stop_timer()
        super().on_headers_complete()
        path = self.scope.get("path")  # unset for a WebSocket upgrade
        if path is None:
            return
        if path.startswith(PROXY_PREFIXES) or is_path_route_now(self.scope["raw_path"]):
            self.scope[BODY_BOUNDED] = self.scope[REPORTS_HANG_UP] = True  # the cycle's dict: the application's
            late = self._body_late
        else:  # Django's request (console, API): it reads the body whole before any view runs, unbounded in time
            late = self._body_too_slow
        # Timed once this read is parsed, if the body is still to come: most bodies come with their head.
        self._body_wait = (late, self.cycle)

    def on_message_complete(self) -> None:
        self._body_wait = None
        self._stop_body_timer()
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # the next request on this connection starts its own head

    def connection_lost(self, exc) -> None:
        self._stop_timer()
        self._stop_body_timer()
        cycle = self.cycle
        hang_up = cycle.scope.get(ON_HANG_UP) if cycle is not None and not cycle.response_complete else None
        super().connection_lost(exc)
        if hang_up is not None:
            hang_up()

    def _body_too_slow(self, cycle, seconds: float) -> None:
        self._body_timer = None
        if cycle is self.cycle and not cycle.response_started:
            self._refuse(too_slow("body", seconds))

    def _body_late(self, cycle, seconds: float) -> None:
        """A gateway request's body is late: say so in its scope and wake the application's wait for it, which
        then refuses it (after the key check, in its API's shape, audited)."""
        self._body_timer = None
        if cycle is self.cycle and not cycle.response_complete and cycle.more_body:
            cycle.scope[BODY_LATE] = seconds
            cycle.message_event.set()

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_too_slow(self, seconds: float) -> None:
        self._head_timer = None
        if self._in_head and (self._head_begun or self._head_bytes):
            self._refuse(too_slow("head", seconds))

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, error: GatewayError) -> None:
        self._stop_timer()
        self._in_head = False
        if not self.transport.is_closing():
            self.transport.write(raw_answer(error))
            self.transport.close()
