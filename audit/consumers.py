"""The console's live feed over a WebSocket: protocol only."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from audit.live import FEED_GROUP
from gateway_project import roles


class LiveFeedConsumer(AsyncJsonWebsocketConsumer):
    """Pushes each saved batch of requests to signed-in console users who may read the log."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(roles.may)(user, roles.READ):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(FEED_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(FEED_GROUP, self.channel_name)

    async def requests_recorded(self, event):
        await self.send_json({"requests": event["requests"]})
