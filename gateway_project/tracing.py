"""OpenTelemetry traces: off unless an OTLP endpoint is configured, and then exported in batches beside the loop.

``configure`` runs once per server process (``gateway_project.asgi``). While it has
not installed a provider, ``tracer`` is None and the hot path makes no span at all:
every helper that starts one checks it first. Spans go to a ``BatchSpanProcessor``,
whose queue takes them without waiting and whose own thread exports them over
OTLP/HTTP: an exporter that is slow, down or refusing never holds a request, and
what it cannot take is dropped and logged by the SDK. The SDK's exporter reads the
standard ``OTEL_EXPORTER_OTLP_*`` variables itself (headers, timeout, compression,
TLS); the propagators are the SDK's (``OTEL_PROPAGATORS``: W3C ``traceparent`` and
``tracestate``, and baggage, by default).
"""

from __future__ import annotations

import atexit
import logging
import threading
from urllib.parse import urlsplit

from django.conf import settings
from opentelemetry import propagate
from opentelemetry.propagators.textmap import Getter

log = logging.getLogger("gateway.tracing")

tracer = None  # the gateway's ``opentelemetry.trace.Tracer`` once tracing is on; None: off
_provider = None
_flushed_at_exit = False
# The longest a stopping process waits for its queued spans to go: a collector that is down must not hold it.
SHUTDOWN_FLUSH_SECONDS = 5.0


def configure() -> bool:
    """Install the OTLP/HTTP exporter when ``settings.TRACING`` names an endpoint; whether tracing is on."""
    if tracer is not None:
        return True
    if not settings.TRACING["ENDPOINT"]:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = settings.TRACING["ENDPOINT"]
    install(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    url = urlsplit(endpoint)
    where = url.netloc.rpartition("@")[2]  # never a password the URL may hold
    log.info("traces exported to %s://%s%s", url.scheme, where, url.path)
    return True


def install(processor):
    """Make spans with ``processor`` (tests give theirs an in-memory exporter); the provider."""
    global tracer, _provider, _flushed_at_exit
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    # The SDK adds OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (which wins over this default) to the resource.
    resource = Resource.create({"service.name": settings.TRACING["SERVICE_NAME"]})
    # Not the SDK's own exit hook: its shutdown waits on the exporter's retries (up to 30 s).
    limits = SpanLimits(max_span_attribute_length=settings.TRACING["ATTRIBUTE_LENGTH"])
    provider = TracerProvider(resource=resource, span_limits=limits, shutdown_on_exit=False)
    provider.add_span_processor(processor)
    _provider, tracer = provider, provider.get_tracer("agent-gateway")
    if not _flushed_at_exit:  # Daphne's workers exit through it; uvicorn's flush in ``lifespan``
        atexit.register(flush)
        _flushed_at_exit = True
    return provider


def uninstall() -> None:
    """Tracing off again, its spans flushed (tests)."""
    global tracer, _provider
    provider, _provider, tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


def flush(seconds: float = SHUTDOWN_FLUSH_SECONDS) -> bool:
    """Export what is queued, waiting at most ``seconds`` (blocking: call it beside the loop); whether it all went.

    The SDK's ``force_flush`` ignores its timeout (it exports every batch, each for as long as the exporter
    retries), so it runs on a daemon thread that a stopping process does not wait for.
    """
    provider = _provider
    if provider is None:
        return True
    done = threading.Event()

    def export() -> None:
        provider.force_flush()
        done.set()

    threading.Thread(target=export, name="otel-flush", daemon=True).start()
    return done.wait(seconds)


class _RawHeaders(Getter):
    """Reads a carrier of ASGI headers: ``{b"name": b"value"}``, names lower-case."""

    def get(self, carrier, key):
        value = carrier.get(key.encode("latin-1"))
        return None if value is None else [value.decode("latin-1")]

    def keys(self, carrier):
        return [name.decode("latin-1") for name in carrier]


RAW_HEADERS = _RawHeaders()


def incoming_context(headers: dict[bytes, bytes]):
    """The trace context a client sent (``traceparent``, ``tracestate``): the parent of the request's span. A
    malformed one is ignored (the span then starts a trace of its own), as the W3C specification asks."""
    return propagate.extract(headers, getter=RAW_HEADERS)


def with_trace_headers(headers):
    """``headers`` (a dict of str, or a list of byte pairs) with the current span's context in place of any the
    client sent: the upstream's spans are children of the attempt that called it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    fields = propagate.get_global_textmap().fields
    if isinstance(headers, dict):
        kept = {name: value for name, value in headers.items() if name.lower() not in fields}
        kept.update(carrier)
        return kept
    kept = [(name, value) for name, value in headers if name.decode("latin-1").lower() not in fields]
    return kept + [(name.encode("latin-1"), value.encode("latin-1")) for name, value in carrier.items()]


def current_context_carrier() -> dict[str, str]:
    """The current span's context as headers (``traceparent``, ``tracestate``), to keep with work done later
    elsewhere (a queued job); empty when tracing is off."""
    carrier: dict[str, str] = {}
    if tracer is not None:
        propagate.inject(carrier)
    return carrier


def stored_context(carrier: dict[str, str]):
    """The context ``current_context_carrier`` kept: the parent of the later work's span."""
    return propagate.extract(carrier if isinstance(carrier, dict) else {})
