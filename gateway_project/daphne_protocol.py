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
error (``request_bounds``) with the connection closed. A gateway request whose body is
late is handed to the application instead, marked late, so that it is refused like
any other: after the key check, in its API's shape, with an audit record. Between requests only the
idle timeout applies, so keep-alive clients keep their idle time.

A body over ``GATEWAY_MAX_BODY_BYTES`` is never read whole: Twisted spooled all of it
(to a temporary file) before the application ran, so a client without a key had the
gateway read as much as it cared to send. A declared ``Content-Length`` over the limit
to a gateway path now ends the body at the head (no ``100 Continue``), and a chunked
body ends once it passes the limit: the application gets the request at once, with what was read, answers
it in its own order and shape (401 for a bad key before 413, an audit record for
either), and the client is no longer read (TCP pushes back on it); the connection closes
with the answer.

An answer is written only as fast as its client takes it, as uvicorn does: Twisted's
transport buffered whatever the application wrote, so a client that read nothing had
a whole relayed answer (or a WebSocket session's frames) held in the worker. The
transport tells its registered producer, this channel (after a WebSocket upgrade too,
as the connection's transport stays the same), when its buffer for the client passes
its size (64 KiB) and when it has drained; ``until_caught_up`` lets a send wait in
between (``daphne_worker.handle_reply``). A client that has not taken what is
buffered for it (those 64 KiB and the last chunk or frame written) within
``GATEWAY_CLIENT_WRITE_SECONDS`` has its connection aborted: the application sees
the disconnect any client that hangs up causes.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from django.conf import settings
from twisted.internet.interfaces import IDelayedCall
from twisted.web import http

from gateway_project.errors import GatewayError
from gateway_project.request_bounds import PROXY_PREFIXES, head_too_large, raw_answer, too_slow

_GATEWAY_PATHS = tuple(prefix.encode() for prefix in PROXY_PREFIXES)

log = logging.getLogger("gateway.server")

# A connection's transport -> its channel, which stays the transport's producer after a WebSocket upgrade.
_channels: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class BoundedHTTPChannel(http.HTTPChannel):
    """``HTTPChannel`` that refuses a request head larger or slower than the gateway allows, or a slow body."""

    def __init__(self):
        super().__init__()
        # The whole head and any one line of it (Twisted's own: 16 KiB each).
        self.totalHeadersSize = self.MAX_LENGTH = settings.GATEWAY["MAX_HEAD_BYTES"]
        self._deadline: IDelayedCall | None = None  # of the head or the body being read
        self.behind = False  # the transport holds more for the client than its buffer size
        self._waiters: list[asyncio.Future] = []  # sends waiting for the client to catch up
        self._cut = False  # aborted: the client did not catch up within CLIENT_WRITE_SECONDS
        self._body_ended = False  # a body over the limit was ended early: the rest of it is never read
        self._gateway = False  # the request being read is the gateway's (``_for_gateway``)

    def connectionMade(self) -> None:
        super().connectionMade()  # registers this channel as the transport's streaming producer
        _channels[self.transport] = self

    def pauseProducing(self) -> None:
        self.behind = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._caught_up()
        super().resumeProducing()

    def stopProducing(self) -> None:
        self._caught_up()  # the connection is gone (called even once the connection is a WebSocket's)
        super().stopProducing()

    async def until_caught_up(self) -> bool:
        """Return once the client has taken what the transport held for it, or its connection is gone; False when
        it has not within ``GATEWAY_CLIENT_WRITE_SECONDS``, its connection now aborted."""
        if self._cut:
            return False
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        seconds = settings.GATEWAY["CLIENT_WRITE_SECONDS"]
        try:
            async with asyncio.timeout(seconds):
                await waiter
            return True
        except TimeoutError:
            self._cut = True
            log.info(
                "client %s did not take its answer's buffered bytes in %g s: connection aborted", self._peer(), seconds
            )
            self.transport.abortConnection()
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _caught_up(self) -> None:
        self.behind = False
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _peer(self) -> str:
        peer = self.transport.getPeer()
        return f"{getattr(peer, 'host', peer)}:{getattr(peer, 'port', '')}"

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
        self._gateway = self._for_gateway()
        over = self._gateway and self.length is not None and self.length > settings.GATEWAY["MAX_BODY_BYTES"]
        if over:  # the application refuses it from its Content-Length: the body is never needed
            self.requests[-1].requestHeaders.removeHeader(b"expect")  # no 100 Continue: don't send it
            self.length, self._transferDecoder = 0, None  # Twisted then hands the request on at once
        super().allHeadersReceived()
        if over:
            self._end_body()
        elif self.length != 0:  # a Content-Length above zero, or chunked
            self._start_deadline("body", settings.GATEWAY["BODY_READ_SECONDS"])

    def rawDataReceived(self, data: bytes) -> None:
        if self._body_ended:
            return  # the rest of a body over the limit, if the client sent it before TCP pushed back: dropped
        super().rawDataReceived(data)
        if self._handlingRequest or not self.requests or not self._gateway:
            return
        content = self.requests[-1].content  # a chunked body being read
        if content is not None and content.tell() > settings.GATEWAY["MAX_BODY_BYTES"]:
            self._end_body()
            self.allContentReceived()  # the application sees a body over the limit and refuses it

    def _for_gateway(self) -> bool:
        """The request being read is the gateway's (its application refuses a body it will not take, in order and
        audited); the console's and the API's are read whole, as Django expects, or refused here."""
        target = getattr(self, "_path", b"")
        if target.startswith(_GATEWAY_PATHS):
            return True
        from gateway_project.routing import is_path_route_now  # needs the apps loaded

        return is_path_route_now(target)

    def _end_body(self) -> None:
        """Read no more of this connection: its answer closes it."""
        self._body_ended = True
        self.persistent = False
        self.requests[-1].responseHeaders.setRawHeaders(b"connection", [b"close"])
        self._networkProducer.pauseProducing()

    def allContentReceived(self) -> None:
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason) -> None:
        self._stop_deadline()
        self._caught_up()
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
        if part == "body" and self._gateway:  # the application refuses it after the key (``BODY_LATE``)
            self.requests[-1].body_late = seconds
            self._end_body()
            self.allContentReceived()
            return
        self._refuse(too_slow(part, seconds))

    def _refuse(self, error: GatewayError) -> None:
        self._stop_deadline()
        if self.transport is None or self.transport.disconnecting:
            return
        self.transport.write(raw_answer(error))
        # As Twisted's own idle timeout does: a client that will not read its answer is cut off after a while.
        self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()


def channel_of(protocol) -> BoundedHTTPChannel | None:
    """The channel of a Daphne protocol's connection (an HTTP request's or a WebSocket's)."""
    transport = getattr(protocol, "transport", None)
    return None if transport is None else _channels.get(transport)


def bounded_channel(factory: http.HTTPFactory):
    """``HTTPFactory.protocol`` for Daphne's factory: Twisted's own, around a ``BoundedHTTPChannel``."""
    return http._GenericHTTPChannelProtocol(BoundedHTTPChannel())
