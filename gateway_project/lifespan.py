"""ASGI lifespan: servers that speak it (uvicorn) flush the audit buffer and the queued spans on shutdown.

Daphne does not speak lifespan; there the writer's and the tracer provider's exit
hooks do the same. Both are needed because uvicorn ends its process by re-raising
the stop signal, so exit hooks never run there.
"""

import asyncio

from gateway_project import tracing
from gateway_project.writer import writer


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await writer.flush()  # written, or spooled to disk if the database refuses it: never dropped
            await asyncio.to_thread(tracing.flush)  # what is queued, for a few seconds at most
            await send({"type": "lifespan.shutdown.complete"})
            return
