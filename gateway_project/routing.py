"""Which ASGI application serves which path."""

from urllib.parse import unquote

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.urls import path

from audit.consumers import LiveFeedConsumer
from gateway_project.metrics import serve_metrics
from gateway_project.request_bounds import PROXY_PREFIXES
from routing.consumers import ProxyConsumer
from routing.path_routes import match
from routing.table import routing_table
from routing.ws_proxy import WebSocketProxyConsumer

METRICS_PATH = "/metrics"


class GatewayHttpRouter:
    """Send gateway paths and path routes to the proxy consumer and the rest to Django.

    A prefix test instead of Channels' ``URLRouter`` keeps the hot path free of
    regular-expression resolving; the proxy parses its own paths. Path routes come
    from the in-memory routing table (a dictionary look-up per path segment), so a
    route saved in the console serves traffic after the next refresh, no restart.
    """

    def __init__(self, django_app):
        self.django_app = django_app
        self.proxy_app = ProxyConsumer.as_asgi()
        self.proxy_only_hosts = frozenset(host.lower().encode() for host in settings.GATEWAY["PROXY_ONLY_HOSTS"])

    async def __call__(self, scope, receive, send):
        path = scope["path"]
        if path == METRICS_PATH:
            return await serve_metrics(scope, receive, send)
        if path.startswith(PROXY_PREFIXES) or await self._is_path_route(path):
            return await self.proxy_app(scope, receive, send)
        if self.proxy_only_hosts and (_host(scope) or b"") in self.proxy_only_hosts | {b""}:
            return await _not_on_this_host(send)  # a request naming no host is refused too: fail closed
        return await self.django_app(scope, receive, send)

    @staticmethod
    async def _is_path_route(path: str) -> bool:
        try:
            table = await routing_table.get()
        except Exception:  # no table yet (the database is away): Django answers, as before path routes
            return False
        return match(table.paths, path) is not None


def is_path_route_now(target: bytes) -> bool:
    """Whether a request target (path and query, raw) is a path route's in the routing table as last loaded, without
    waiting: for a server's channel deciding how to read a body (``daphne_protocol``)."""
    table = routing_table.last()
    if table is None:
        return False
    return match(table.paths, unquote(target.partition(b"?")[0].decode("latin-1"))) is not None


def _host(scope) -> bytes:
    """The request's host name as Django would read it: lower case, no port, no trailing dot."""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value.strip().lower()
            host = host[: host.rindex(b":")] if b":" in host and not host.endswith(b"]") else host
            return host.rstrip(b".")
    return b""


async def _not_on_this_host(send) -> None:
    """The console, the API and admin are not served on a gateway-only host name."""
    body = (
        b'{"error": {"type": "not_found_error", "code": "unknown_endpoint", "param": null, '
        b'"message": "This host serves the gateway only; the console and the management API are on their own host."}}'
    )
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-content-type-options", b"nosniff")]  # fmt: skip
    await send({"type": "http.response.start", "status": 404, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class GatewayWebsocketRouter:
    """Send ``/agents/`` sessions to the WebSocket proxy and the rest to the console's live feed.

    The proxy's clients are programs that present an API key, not browsers with a
    console session: they often send no ``Origin`` at all, which the origin check
    refuses. That check exists because a browser attaches its cookies to a
    cross-site WebSocket handshake; the proxy reads no cookies and trusts only a
    key the caller must present itself, so a foreign page gains nothing there
    that it could not do over HTTP. The console's feed keeps both the origin
    check and the session lookup.
    """

    def __init__(self, console_app):
        self.console_app = console_app
        self.proxy_app = WebSocketProxyConsumer.as_asgi()

    async def __call__(self, scope, receive, send):
        if scope["path"].startswith("/agents/"):
            return await self.proxy_app(scope, receive, send)
        return await self.console_app(scope, receive, send)


websocket_application = GatewayWebsocketRouter(
    AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([path("ws/console/feed/", LiveFeedConsumer.as_asgi())])))
)
