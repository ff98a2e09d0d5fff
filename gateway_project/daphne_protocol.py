"""Twisted's HTTP channel, as Daphne workers read requests with it, with the gateway's bounds on a head and a body.

Twisted reads a request's head line by line, then its whole body, before Daphne
hands the request to the application, and its only clock is an idle timeout (60 s)
that every byte resets: a head or a body sent a byte at a time held its connection
for ever, and a body announced with ``Content-Length`` and sent slowly held its
memory and connection as long as the client liked. Its own size bounds (16 KiB
of head, 16 KiB a line) answered a bare 400, or closed the connection without an
answer. Here, as under uvicorn (``uvicorn_protocol``): a head must arrive within
``GATEWAY_HEAD_READ_SECONDS`` of its first byte and stay within
``GATEWAY_MAX_HEAD_BYTES`` (431), and its body within ``GATEWAY_BODY_READ_SECONDS``
of the head's end (408 ``request_body_timeout``), each refusal the gateway's JSON
error (``request_bounds``) with the connection closed. Between requests only the
idle timeout applies, so keep-alive clients keep their idle time.
"""

from __future__ import annotations

from django.conf import settings
from twisted.internet.interfaces import IDelayedCall
from twisted.web import http

from gateway_project.errors import GatewayError
from gateway_project.request_bounds import head_too_large, raw_answer, too_slow


class BoundedHTTPChannel(http.HTTPChannel):
    """``HTTPChannel`` that refuses a request head larger or slower than the gateway allows, or a slow body."""

    def __init__(self):
        super().__init__()
        # The whole head and any one line of it (Twisted's own: 16 KiB each).
        self.totalHeadersSize = self.MAX_LENGTH = settings.GATEWAY["MAX_HEAD_BYTES"]
        self._deadline: IDelayedCall | None = None  # of the head or the body being read

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest:  # the first bytes of a request's head
            self._start_deadline("head", settings.GATEWAY["HEAD_READ_SECONDS"])
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(head_too_large(self.totalHeadersSize))
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(head_too_large(self.totalHeadersSize))

    def allHeadersReceived(self) -> None:
        self._stop_deadline()
        super().allHeadersReceived()
        if self.length != 0:  # a Content-Length above zero, or chunked
            self._start_deadline("body", settings.GATEWAY["BODY_READ_SECONDS"])

    def allContentReceived(self) -> None:
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason) -> None:
        self._stop_deadline()
        super().connectionLost(reason)

    def _start_deadline(self, part: str, seconds: float) -> None:
        self._deadline = self.callLater(seconds, self._too_slow, part, seconds)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, part: str, seconds: float) -> None:
        self._deadline = None
        self._refuse(too_slow(part, seconds))

    def _refuse(self, error: GatewayError) -> None:
        self._stop_deadline()
        if self.transport is None or self.transport.disconnecting:
            return
        self.transport.write(raw_answer(error))
        # As Twisted's own idle timeout does: a client that will not read its answer is cut off after a while.
        self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()


def bounded_channel(factory: http.HTTPFactory):
    """``HTTPFactory.protocol`` for Daphne's factory: Twisted's own, around a ``BoundedHTTPChannel``."""
    return http._GenericHTTPChannelProtocol(BoundedHTTPChannel())
