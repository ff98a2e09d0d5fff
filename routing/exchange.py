"""One request/response through the gateway: what was asked, what was sent back, and its audit facts."""

from __future__ import annotations

import json
import time
import uuid

from django.conf import settings

from audit.recorder import record_request
from billing.pricing import nanos_to_usd
from gateway_project.errors import GatewayError, bad_request
from gateway_project.hotstate import TargetRelease
from keys.access import KeySnapshot

JSON = (b"content-type", b"application/json")


class Exchange:
    def __init__(self, scope: dict, body: bytes, too_large: bool, send):
        self.request_id = uuid.uuid4().hex
        self.started = time.perf_counter()
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query: bytes = scope.get("query_string", b"")
        self.raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.body = body
        self.too_large = too_large
        self._send = send
        client = scope.get("client")
        self.client_ip = client[0] if client else None
        if settings.GATEWAY["TRUST_FORWARDED_FOR"] and b"x-forwarded-for" in self.headers:
            self.client_ip = self.headers[b"x-forwarded-for"].decode("latin-1").split(",")[0].strip()
        # Response state
        self.status = 0
        self.response_started = False
        self.response_finished = False
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.dialect = "openai"  # the API shape the client speaks, which its errors follow; see speak_anthropic
        # Audit facts, filled in as the request goes along
        self.key: KeySnapshot | None = None
        self.agent = ""
        self.target = ""  # the upstream that was called
        self.details: dict = {}  # further audit facts: retries, fallbacks, WebSocket traffic
        self.model = ""
        self.error_type = ""
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_nanos = 0
        self.input_text = ""
        self.output_text = ""
        # Set by admission when a settle will follow: the last target attempt's release then goes with it.
        self.settles_targets = False
        self.pending_release: TargetRelease | None = None
        self.first_lease = None  # a target taken with the admission, for the first attempt (routing.balance.Lease)

    # --- request --------------------------------------------------------
    def ensure_size(self) -> None:
        """Raise 413 if the body was over the limit (it was not kept)."""
        if self.too_large:
            raise GatewayError(
                413,
                "invalid_request_error",
                "request_too_large",
                f"The request body is larger than {settings.GATEWAY['MAX_BODY_BYTES']} bytes.",
            )

    def json(self):
        """The body as JSON, after the size check: 413 comes before 400."""
        self.ensure_size()
        try:
            return json.loads(self.body)
        except ValueError:
            raise bad_request("The request body is not valid JSON.", "invalid_json") from None

    def header(self, name: bytes, default: str = "") -> str:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else default

    # --- response -------------------------------------------------------
    def speak_anthropic(self) -> None:
        """Answer errors in Anthropic's shape, with the ``request-id`` header its SDK reads."""
        self.dialect = "anthropic"
        self.extra_headers.append((b"request-id", self.request_id.encode()))

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.response_started = True
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *headers,
                    *self.extra_headers,
                    (b"x-request-id", self.request_id.encode()),
                    (b"x-response-time-ms", f"{self.elapsed_ms():.2f}".encode()),
                ],
            }
        )

    async def send(self, data: bytes, *, more: bool = True) -> None:
        if not more:
            self.response_finished = True
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = (JSON,)) -> None:
        await self.start(status, [*headers, (b"content-length", str(len(body)).encode())])
        await self.send(body, more=False)

    async def respond_json(self, status: int, obj) -> None:
        await self.respond(status, json.dumps(obj).encode())

    async def fail(self, error: GatewayError) -> None:
        """Send ``error`` as the response, or, if the answer had already begun, end it."""
        self.error_type = error.code
        if self.response_started:
            if not self.response_finished:
                await self.send(b"", more=False)
            return
        body = error.anthropic_body(self.request_id) if self.dialect == "anthropic" else error.body(self.request_id)
        await self.respond(error.status, body, [JSON, *error.headers])

    # --- audit ----------------------------------------------------------
    def record(self) -> None:
        key = self.key
        previews = key is None or key.audit_previews  # a client may have its previews switched off
        record_request(
            request_id=self.request_id,
            method=self.method,
            path=self.path,
            status=self.status,
            error_type=self.error_type,
            latency_ms=self.elapsed_ms(),
            client_id=key.client_id if key else None,
            client_slug=key.client_slug if key else "",
            api_key_id=key.key_id if key else None,
            key_prefix=key.prefix if key else "",
            agent=self.agent,
            target=self.target,
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=nanos_to_usd(self.cost_nanos),
            client_ip=self.client_ip,
            user_agent=self.header(b"user-agent"),
            input_text=self.input_text if previews else "",
            output_text=self.output_text if previews else "",
            details=self.details,
        )
