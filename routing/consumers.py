"""The proxy's Channels consumer: protocol only, the steps live in ``routing.endpoints``."""

from __future__ import annotations

import asyncio

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from routing.endpoints import serve
from routing.exchange import Exchange


class ProxyConsumer(AsyncHttpConsumer):
    """Serves ``/v1/*`` and ``/agents/*``.

    Three departures from the stock consumer, each for the hot path: no
    channel layer (the alias is unconfigured, so no channel per request); no
    database-connection cleanup per message (the proxy never touches the
    database on the request path); and the body-size limit is enforced as
    chunks arrive, while the response is produced in its own task so a client
    that disconnects cancels the upstream call at once.
    """

    channel_layer_alias = "proxy-uses-no-channel-layer"

    async def __call__(self, scope, receive, send):
        self._receive = receive
        self._size = 0
        self._too_large = False
        await super().__call__(scope, receive, send)

    async def dispatch(self, message):
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def http_request(self, message):
        chunk = message.get("body", b"")
        if not self._too_large:
            self._size += len(chunk)
            if self._size > settings.GATEWAY["MAX_BODY_BYTES"]:
                self._too_large = True
                self.body.clear()
            else:
                self.body.append(chunk)
        if message.get("more_body"):
            return
        exchange = Exchange(self.scope, b"".join(self.body), self._too_large, self.send)
        self.body.clear()
        await self._serve_until_disconnect(exchange)
        raise StopConsumer()

    async def _serve_until_disconnect(self, exchange: Exchange) -> None:
        work = asyncio.ensure_future(serve(exchange))
        disconnect = asyncio.ensure_future(self._receive())
        try:
            await asyncio.wait({work, disconnect}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done() and exchange.response_finished:
                # The server says goodbye after a complete answer: let settling and audit finish.
                await work
        finally:
            if not work.done():
                work.cancel()  # the client went away (or we are shutting down): stop the upstream call
            disconnect.cancel()
            await asyncio.gather(work, disconnect, return_exceptions=True)
