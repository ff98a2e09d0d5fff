"""Which ASGI application serves which path."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from audit.consumers import LiveFeedConsumer
from routing.consumers import ProxyConsumer

PROXY_PREFIXES = ("/v1/", "/agents/")


class GatewayHttpRouter:
    """Send gateway paths to the proxy consumer and the rest to Django.

    A prefix test instead of Channels' ``URLRouter`` keeps the hot path free of
    regular-expression resolving; the proxy parses its own paths.
    """

    def __init__(self, django_app):
        self.django_app = django_app
        self.proxy_app = ProxyConsumer.as_asgi()

    async def __call__(self, scope, receive, send):
        if scope["path"].startswith(PROXY_PREFIXES):
            return await self.proxy_app(scope, receive, send)
        return await self.django_app(scope, receive, send)


websocket_application = AllowedHostsOriginValidator(
    AuthMiddlewareStack(URLRouter([path("ws/console/feed/", LiveFeedConsumer.as_asgi())]))
)
