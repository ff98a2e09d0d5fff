"""Run Daphne as a gateway worker, with its shutdown made to wait for every request still in flight.

Daphne 4.2's ``Server.kill_all_applications`` (run before the reactor stops) reads
``details["application_instance"]`` for every connection, but ``application_checker``
deletes that key once a connection's application is done. On a keep-alive connection
whose last request has finished it raises ``KeyError`` before it has cancelled, and
waited for, the applications still running, so requests already answered but still
settling their spend were cut off and lost their audit records. This version skips
finished connections instead.

It also stops taking requests once the stop has begun: Daphne keeps reading keep-alive
connections until the reactor stops, and a request that came in while the others were
being waited for was answered and then cut off before its audit record was queued. Such
a request now gets a 503 (retry elsewhere), and the wait goes on until no application is
left running.

Its HTTP connections are read by ``daphne_protocol.BoundedHTTPChannel``: a request's
head and body have the same bounds in size and time as under uvicorn. An answer's
body and a WebSocket's frames are sent only as fast as the client takes them
(``handle_reply``). Its access log (``rungateway --access-log``) is a log line like
every other (``daphne.access``, in ``GATEWAY_LOG_FORMAT``), without query strings.
Everything else is Daphne's own.
"""

import asyncio
import logging

from daphne import server
from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import defer, reactor

from gateway_project.daphne_protocol import bounded_channel, channel_of
from gateway_project.request_bounds import BODY_BOUNDED, BODY_LATE, ON_HANG_UP, REPORTS_HANG_UP

_create_application = server.Server.create_application
_handle_reply = server.Server.handle_reply
_connection_lost = WebRequest.connectionLost


def create_application(self, protocol, scope):
    """Daphne's, but an HTTP request that arrives once the worker is stopping is refused with a 503, unrun.

    Every HTTP request's scope says the server bounds its body (``request_bounds.BODY_BOUNDED``: it is whole before
    the application runs) and reports a lost connection (``REPORTS_HANG_UP``, ``connection_lost``), and one whose
    body was late says so (``BODY_LATE``)."""
    if getattr(self, "stopping", False) and isinstance(protocol, WebRequest):
        protocol.basic_error(503, b"Service Unavailable", "The gateway is stopping; retry the request.")
        return None
    if isinstance(protocol, WebRequest):  # its body is whole before the application runs, or late
        scope[BODY_BOUNDED] = scope[REPORTS_HANG_UP] = True  # Daphne builds the dict anew for each request
        late = getattr(protocol, "body_late", None)
        if late is not None:
            scope[BODY_LATE] = late
        protocol.gateway_scope = scope
    return _create_application(self, protocol, scope)


def connection_lost(self, reason):
    """Daphne's, then the application's ``ON_HANG_UP``, if it set one: its request ends at once."""
    _connection_lost(self, reason)
    scope = getattr(self, "gateway_scope", None)
    hang_up = scope.get(ON_HANG_UP) if scope is not None else None
    if hang_up is not None:
        scope.pop(ON_HANG_UP)  # once
        hang_up()


async def handle_reply(self, protocol, message):
    """Daphne's, but a message waits while the client has not taken what is already buffered for it, and goes
    nowhere once the client has been cut off for not taking it in time (``BoundedHTTPChannel.until_caught_up``).

    Daphne wrote whatever the application sent into Twisted's unbounded transport buffer, so a relay read an
    agent's whole answer into the worker of a client that read nothing."""
    channel = channel_of(protocol)
    if channel is not None and channel.behind and not await channel.until_caught_up():
        return
    await _handle_reply(self, protocol, message)


# A WebSocket client's frames waiting for the application: past the first, the client is no longer read until they
# are down to the second (an agent that reads nothing made Daphne queue all a client sent, unbounded).
WS_QUEUE_HIGH, WS_QUEUE_LOW, WS_QUEUE_POLL_SECONDS = 4, 1, 0.02
_on_message = WebSocketProtocol.onMessage


def on_message(self, payload, is_binary):
    """Daphne's, but a client whose frames pile up in the application's queue is not read until they are taken."""
    _on_message(self, payload, is_binary)
    queue = getattr(self, "application_queue", None)
    if queue is not None and queue.qsize() >= WS_QUEUE_HIGH and not getattr(self, "reading_paused", False):
        self.reading_paused = True
        self.transport.pauseProducing()
        reactor.callLater(WS_QUEUE_POLL_SECONDS, _resume_when_taken, self)


def _resume_when_taken(protocol) -> None:
    if protocol.transport is None or getattr(protocol.transport, "disconnected", False):
        return
    if protocol.application_queue.qsize() > WS_QUEUE_LOW:
        reactor.callLater(WS_QUEUE_POLL_SECONDS, _resume_when_taken, protocol)
        return
    protocol.reading_paused = False
    protocol.transport.resumeProducing()


def _running(self) -> list:
    instances = (details.get("application_instance") for details in list(self.connections.values()))
    return [instance for instance in instances if instance is not None and not instance.done()]


async def _drain(self) -> None:
    """Cancel the applications still running and wait for them, until none is left (a WebSocket may still open)."""
    while running := _running(self):
        server.logger.info("Killed %i pending application instances", len(running))
        for instance in running:
            instance.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def kill_all_applications(self):
    """Take no more requests, then cancel every application instance still running and make the reactor wait."""
    self.stopping = True
    waited = defer.Deferred.fromFuture(asyncio.ensure_future(_drain(self)))
    waited.addErrback(lambda failure: None)
    return waited


access_log = logging.getLogger("daphne.access")


def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
    """Daphne's access line through logging, so it is JSON when the other lines are; never a query string (a
    browser's WebSocket puts its key there)."""
    request = request.partition("?")[0]
    access_log.info(
        '%s "%s" %s %s', host, request, status or "-", length or "-",
        extra={"client_address": host, "request_line": request, "status": status, "bytes": length},
    )  # fmt: skip


server.Server.create_application = create_application
AccessLogGenerator.write_entry = write_entry
WebSocketProtocol.onMessage = on_message
server.Server.kill_all_applications = kill_all_applications
server.Server.handle_reply = handle_reply
WebRequest.connectionLost = connection_lost
HTTPFactory.protocol = bounded_channel

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
