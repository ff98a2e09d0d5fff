"""The proxy's Channels consumer: protocol only, the steps live in ``routing.endpoints``."""

from __future__ import annotations

import asyncio
import contextlib

from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from routing.endpoints import serve
from routing.exchange import Exchange


class ProxyConsumer(AsyncHttpConsumer):
    """Serves ``/v1/*`` and ``/agents/*``.

    It keeps Channels' consumer interface (``as_asgi``, scope, the ASGI
    messages) but drives the request itself instead of through the generic
    dispatch loop, for three reasons measured on the hot path: the loop makes
    a task and a wait per message and closes database connections in a thread
    after each one (the proxy never touches the database per request); the
    body-size limit must be enforced as chunks arrive, not after the whole
    body is buffered; and while an answer is produced, a client that
    disconnects must cancel the upstream call at once, which the loop cannot
    see while a handler runs. The proxy uses no channel layer.
    """

    channel_layer_alias = "proxy-uses-no-channel-layer"

    async def __call__(self, scope, receive, send):
        self.scope = scope
        limit = settings.GATEWAY["MAX_BODY_BYTES"]
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)
            if not message.get("more_body"):
                break
        too_large = size > limit
        exchange = Exchange(scope, b"" if too_large else b"".join(chunks), too_large, send)
        await self._serve_until_disconnect(exchange, receive)

    @staticmethod
    async def _serve_until_disconnect(exchange: Exchange, receive) -> None:
        this_task = asyncio.current_task()
        left = asyncio.Event()

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            if not exchange.response_finished:
                left.set()
                this_task.cancel()  # stop the upstream call; serve() still settles and audits

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
