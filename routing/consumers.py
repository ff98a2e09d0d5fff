"""The proxy's Channels consumer: protocol only, the steps live in ``routing.endpoints``."""

from __future__ import annotations

import asyncio
import contextlib

from channels.generic.http import AsyncHttpConsumer

from gateway_project.request_bounds import ON_HANG_UP, REPORTS_HANG_UP
from routing.endpoints import serve
from routing.exchange import Exchange


class ProxyConsumer(AsyncHttpConsumer):
    """Serves ``/v1/*`` and ``/agents/*``.

    It keeps Channels' consumer interface (``as_asgi``, scope, the ASGI
    messages) but drives the request itself instead of through the generic
    dispatch loop, for three reasons measured on the hot path: the loop makes
    a task and a wait per message and closes database connections in a thread
    after each one (the proxy never touches the database per request); the
    body must not be read before the caller is let in, and then only up to
    the size limit, as chunks arrive (``Exchange.read_body``); and while an
    answer is produced, a client that disconnects must cancel the upstream
    call at once, which the loop cannot see while a handler runs. The proxy
    uses no channel layer.
    """

    channel_layer_alias = "proxy-uses-no-channel-layer"

    async def __call__(self, scope, receive, send):
        self.scope = scope
        # The body is read by the endpoint once the caller may come in (``Exchange.read_body``), never before.
        exchange = Exchange(scope, b"", False, send, receive)
        if scope.get(REPORTS_HANG_UP):
            await self._serve_until_hung_up(exchange, scope)
        else:
            await self._serve_until_disconnect(exchange, receive)

    @staticmethod
    async def _serve_until_hung_up(exchange: Exchange, scope) -> None:
        """Under the gateway's server protocols, which call ``ON_HANG_UP`` when the client's connection is lost."""
        exchange.serve_in(asyncio.current_task())

        def hung_up() -> None:
            if not exchange.response_finished:
                exchange.hang_up()  # stop the upstream call; serve() still settles and audits

        scope[ON_HANG_UP] = hung_up
        try:
            await serve(exchange)
        except asyncio.CancelledError:
            if not exchange.client_left:
                raise  # the server is shutting down, not the client leaving
        finally:
            scope.pop(ON_HANG_UP, None)

    @staticmethod
    async def _serve_until_disconnect(exchange: Exchange, receive) -> None:
        """Under any other server: a task waits for its ``http.disconnect``."""
        exchange.serve_in(asyncio.current_task())
        left = asyncio.Event()

        async def watch():
            await exchange.body_done.wait()  # until then the endpoint itself reads ``receive``
            while (await receive())["type"] != "http.disconnect":
                pass
            if not exchange.response_finished:
                left.set()
                exchange.hang_up()  # stop the upstream call; serve() still settles and audits

        watcher = asyncio.ensure_future(watch())
        try:
            await serve(exchange)
        except asyncio.CancelledError:
            if not left.is_set():
                raise  # the server is shutting down, not the client leaving
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
