"""ASGI lifespan: servers that speak it (uvicorn) flush the audit buffer on shutdown.

Daphne does not speak lifespan; there the writer's exit hook does the same. Both
are needed because uvicorn ends its process by re-raising the stop signal, so
exit hooks never run there.
"""

import asyncio

from gateway_project.writer import writer

SHUTDOWN_FLUSH_TRIES = 10


async def lifespan(scope, receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            for attempt in range(SHUTDOWN_FLUSH_TRIES):
                if await writer.flush():
                    await send({"type": "lifespan.shutdown.complete"})
                    return
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
            await send(
                {
                    "type": "lifespan.shutdown.failed",
                    "message": f"{writer.pending()} audit/usage rows could not be written: the database refused them",
                }
            )
            return
