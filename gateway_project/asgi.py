"""ASGI entry point: the proxy consumer for gateway paths, Django for everything else."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from gateway_project import tracing  # noqa: E402
from gateway_project.lifespan import lifespan  # noqa: E402
from gateway_project.routing import GatewayHttpRouter, websocket_application  # noqa: E402

tracing.configure()  # off unless an OTLP endpoint is configured

application = ProtocolTypeRouter(
    {"http": GatewayHttpRouter(django_asgi_app), "websocket": websocket_application, "lifespan": lifespan}
)

# Everything loaded so far lives as long as the process: move it out of the
# collector's sight, and collect the young generation less often, so full
# collections stop walking the whole Django heap every few hundred requests.
gc.collect()
gc.freeze()
gc.set_threshold(50_000, 20, 100)
