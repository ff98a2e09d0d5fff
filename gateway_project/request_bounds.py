"""The refusals of a request whose head or body breaks the gateway's bounds on its size or the time it takes.

A request's head is bounded by the server's protocol (``uvicorn_protocol``,
``daphne_protocol``), before any application or key check sees the request: the
client gets the gateway's JSON error, with a request id, and the connection closed.
A gateway request's body is refused by the application, after the key check, in the
API's own shape and audited (``routing.exchange``), from what the server's protocol
says in the scope (``BODY_LATE``): under Daphne, which reads a body before the
application runs, once the channel gave up waiting for it; under uvicorn, when the
protocol's timer from the head's end fires while the application still waits for
it. The console's and the API's bodies keep the server's 408.
"""

from __future__ import annotations

import logging
import os

from gateway_project.errors import GatewayError

access = logging.getLogger("gateway.access")
# The gateway's own paths (the proxy's), as opposed to the console's and the management API's.
PROXY_PREFIXES = ("/v1/", "/agents/")
# Scope key: Daphne handed on a gateway request whose body did not arrive within this many seconds (the application
# refuses it 408 after the key check, as under uvicorn; ``daphne_protocol``).
BODY_LATE = "gateway.body_late"
# Scope key: the server bounds this gateway request's body in time itself (Daphne hands the application a whole
# body or ``BODY_LATE``; uvicorn's protocol sets ``BODY_LATE`` and wakes the reader when the time is up), so the
# application need not keep a timer of its own per request.
BODY_BOUNDED = "gateway.body_bounded"
# Scope keys: the server's protocol (``uvicorn_protocol``, ``daphne_worker``) says it calls what the application
# puts under ``ON_HANG_UP`` when the client's connection is lost, so the application keeps no task a request
# waiting for the disconnect (``routing.consumers``).
REPORTS_HANG_UP = "gateway.reports_hang_up"
ON_HANG_UP = "gateway.on_hang_up"
REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
# Every gateway answer carries these (routing.exchange): nothing in it may act on the gateway's origin.
ANSWER_HEADERS = b"x-content-type-options: nosniff\r\ncontent-security-policy: sandbox\r\n"


def head_too_large(limit: int) -> GatewayError:
    message = f"The request's head (request line and headers) is over {limit} bytes."
    return GatewayError(431, "invalid_request_error", "request_head_too_large", message)


def too_slow(part: str, seconds: float) -> GatewayError:
    """408 for a request ``part`` ("head" or "body") that did not arrive within ``seconds``."""
    return GatewayError(
        408, "invalid_request_error", f"request_{part}_timeout",
        f"The request {part} did not arrive within {seconds:g} s.", [(b"connection", b"close")],
    )  # fmt: skip


def raw_answer(error: GatewayError) -> bytes:
    """The whole HTTP/1.1 answer to a request refused before any application saw it, closing the connection.

    Logged as any request is (one ``gateway.access`` line with its request id, which the
    client was given) and counted as a refusal: a flood of oversized or dripping heads
    is seen in the log and on ``/metrics``, not only by the clients refused.
    """
    request_id = os.urandom(16).hex()
    _log_refusal(error, request_id)
    body = error.body(request_id)
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n"
        b"x-request-id: %s\r\n%s\r\n%s"
        % (error.status, REASONS.get(error.status, b"Error"), len(body), request_id.encode(), ANSWER_HEADERS, body)
    )


def _log_refusal(error: GatewayError, request_id: str) -> None:
    from django.conf import settings

    from gateway_project import metrics

    if settings.GATEWAY["METRICS"]["ENABLED"]:
        reason = metrics.refusal_reason(error.status, error.code)
        with metrics.pending.lock:
            metrics.pending.count(metrics.REFUSALS, (reason, metrics.codes(error.code)))
    fields = {"request_id": request_id, "method": "", "path": "", "status": error.status, "error_code": error.code}
    access.info("- - %s %s request_id=%s", error.status, error.code, request_id, extra=fields)
