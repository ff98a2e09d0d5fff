"""One request/response through the gateway: what was asked, what was sent back, and its audit facts."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from django.conf import settings

from audit.recorder import record_request
from billing.pricing import nanos_to_usd
from gateway_project.addresses import client_address
from gateway_project.errors import GatewayError, bad_request
from gateway_project.ids import new_id
from gateway_project.request_bounds import BODY_BOUNDED, BODY_LATE, too_slow
from keys.access import KeySnapshot
from keys.origins import answer_headers, origin_table
from routing.facts import RequestFacts
from routing.guarding import StreamBlocked
from routing.observe import observe_request
from routing.upstream_url import raw_path_of

log = logging.getLogger("gateway.proxy")

JSON = (b"content-type", b"application/json")
EVENT_STREAM = b"text/event-stream"
# On every answer the gateway sends: an upstream's answer is served on the gateway's origin, so a browser must
# neither sniff it into HTML nor run it with the origin's rights (cookies, storage) if it is HTML.
UNTRUSTED_ANSWER_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"content-security-policy", b"sandbox")]


class ClientLeft(Exception):
    """The client went away before its request body was complete."""


class Exchange:
    def __init__(self, scope: dict, body: bytes, too_large: bool, send, receive=None):
        self.request_id = new_id()
        self.started = time.perf_counter()
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.raw_path: bytes = raw_path_of(scope)
        self.query: bytes = scope.get("query_string", b"")
        self.raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.origin: bytes | None = self.headers.get(b"origin")  # a browser's: its answers may carry CORS headers
        self.body = body
        self.too_large = too_large
        self._send = send
        self._receive = receive  # set: the body is still to be read (``read_body``)
        self._scope = scope  # the server's protocol may mark the body late in it while it is read (BODY_LATE)
        self.body_done = asyncio.Event()
        if receive is None:
            self.body_done.set()
        self.client_left = False
        # While > 0, a client's hang-up does not cancel the request at once (``hang_up``): the admission script is
        # running, and what it takes must be known to be given back.
        self.hang_up_held = 0
        self.hang_up_pending = False
        self._task: asyncio.Task | None = None
        client = scope.get("client")
        trusted = settings.GATEWAY["TRUSTED_PROXIES"]
        forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"] if trusted else []
        self.client_ip, bad_forwarded = client_address(client[0] if client else None, forwarded, trusted)
        # Response state
        self.status = 0
        self.response_started = False
        self.response_finished = False
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.dialect = "openai"  # the API shape the client speaks, which its errors follow; see speak_anthropic
        # Audit facts, filled in as the request goes along
        self.facts = RequestFacts(self.request_id)  # replaced, never changed, as each step learns more
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
        self.output_estimate = 0  # tokens of the answer as relayed, estimated from its text (see charged_usage)
        self.output_guard = None  # the output guardrails, when any apply (``routing.guarding.OutputGuard``)
        # Timings for the metrics (``routing.observe``), from ``time.perf_counter``
        self.upstream_seconds = 0.0  # spent waiting for upstream answers' headers, every attempt's
        self.response_at = 0.0  # when the answer's head went to the client
        self.first_byte_at = 0.0  # when its first body bytes did
        self.streaming = False  # the answer is an event stream
        # The answer as sent, kept for the response cache while it is wanted (``routing.response_cache``)
        self.capture: bytearray | None = None
        self.capture_limit = 0
        self.captured_type = b""
        if bad_forwarded:
            self.details["forwarded_for_invalid"] = bad_forwarded

    # --- request --------------------------------------------------------
    @property
    def key(self) -> KeySnapshot | None:
        """The caller's key, once identified (``facts.key``)."""
        return self.facts.key

    def learn(self, facts: RequestFacts) -> RequestFacts:
        """Hold the facts as the latest step built them (they describe this request: same id)."""
        assert facts.request_id == self.request_id
        self.facts = facts
        return facts

    async def read_body(self) -> bytes:
        """Read the body once, as it arrives, up to the size limit (past it, no more is read and none is kept).

        Called only once the caller is known to be allowed in, so an unauthenticated
        request is refused without its body ever being read; a declared
        ``Content-Length`` over the limit is refused without reading a byte.
        """
        receive, self._receive = self._receive, None
        if receive is None:
            return self.body
        scope = self._scope
        if BODY_LATE in scope:
            raise too_slow("body", scope[BODY_LATE])
        if b"content-encoding" in self.headers and any(  # looked for in the dict first: most bodies have none
            name == b"content-encoding" and value.replace(b",", b" ").lower().split() not in ([], [b"identity"])
            for name, value in self.raw_headers
        ):  # the body's size, documents and JSON would be what the gateway cannot see
            raise GatewayError(
                415, "invalid_request_error", "unsupported_content_encoding",
                "The gateway reads request bodies as sent: send this one without a Content-Encoding.",
            )  # fmt: skip
        limit = settings.GATEWAY["MAX_BODY_BYTES"]
        declared = self.headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            self.too_large = True
            return self.body  # not read: the server drops the rest with the connection
        if scope.get(BODY_BOUNDED):  # the server times the body (and wakes this read when it is late)
            chunks = await self._read_chunks(receive, limit)
        else:
            seconds = settings.GATEWAY["BODY_READ_SECONDS"]
            try:
                async with asyncio.timeout(seconds):  # a body sent a byte at a time holds a connection, not for ever
                    chunks = await self._read_chunks(receive, limit)
            except TimeoutError:
                raise too_slow("body", seconds) from None
        self.body = b"".join(chunks) if chunks is not None else b""
        self.too_large = chunks is None
        self.body_done.set()
        if self.client_left:  # it hung up meanwhile (``hang_up``): no upstream call for it
            raise ClientLeft
        return self.body

    async def _read_chunks(self, receive, limit: int) -> list[bytes] | None:
        """The body's chunks as they arrive, or None once past ``limit`` (not read further: the server drops the
        rest with the connection). 408 when the server marks it late, ``ClientLeft`` when the client goes."""
        chunks: list[bytes] = []
        size = 0
        scope = self._scope
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.client_left = True
                raise ClientLeft
            if BODY_LATE in scope:
                raise too_slow("body", scope[BODY_LATE])
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks

    async def ensure_size(self) -> None:
        """Read the body; raise 413 if it was over the limit (it was not kept)."""
        await self.read_body()
        if self.too_large:
            raise GatewayError(
                413,
                "invalid_request_error",
                "request_too_large",
                f"The request body is larger than {settings.GATEWAY['MAX_BODY_BYTES']} bytes.",
            )

    async def json(self):
        """The body as JSON, after the size check: 413 comes before 400."""
        await self.ensure_size()
        return parse_json(self.body)

    def header(self, name: bytes, default: str = "") -> str:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else default

    def serve_in(self, task: asyncio.Task) -> None:
        """``task`` serves this exchange: the one ``hang_up`` cancels."""
        self._task = task

    @property
    def defers_hang_up(self) -> bool:
        """Whether a hang-up of this exchange's client is what cancels its task, and so may wait (``hang_up``)."""
        return self._task is not None

    def hang_up(self) -> None:
        """The client went away: cancel the request's task, stopping the upstream call (``serve`` still settles and
        audits), or, while an admission runs (``hang_up_held``), as soon as it has returned what it took.

        Before the body is read (the caller not yet let in) it is only noted: the key check runs to its end, so a
        guess counts against its address however soon its client hangs up, and ``read_body`` then ends the request.
        """
        self.client_left = True
        if not self.body_done.is_set():
            return
        if self.hang_up_held:
            self.hang_up_pending = True
        elif self._task is not None:
            self._task.cancel()

    # --- response -------------------------------------------------------
    def speak_anthropic(self) -> None:
        """Answer errors in Anthropic's shape, with the ``request-id`` header its SDK reads."""
        self.dialect = "anthropic"
        self.extra_headers.append((b"request-id", self.request_id.encode()))

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    async def start(self, status: int, headers: list[tuple[bytes, bytes]], *, checked: bool = False) -> None:
        if self.output_guard is not None and 200 <= status < 300 and not checked:
            headers = self.output_guard.started(headers)
        self.status = status
        self.response_started = True
        self.response_at = time.perf_counter()
        self.streaming = any(name == b"content-type" and value.startswith(EVENT_STREAM) for name, value in headers)
        if self.capture is not None:
            self._capture_start(status, headers)
        if self.client_left:
            return
        await self._send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *headers,
                    *self.extra_headers,
                    *UNTRUSTED_ANSWER_HEADERS,
                    *(self._cors_headers() if self.origin is not None else ()),
                    *self._unread_body_headers(),
                    (b"x-request-id", self.request_id.encode()),
                    (b"x-response-time-ms", f"{self.elapsed_ms():.2f}".encode()),
                ],
            }
        )

    def _capture_start(self, status: int, headers) -> None:
        """Keep capturing only a 200 answer that its upstream lets be stored; note its content type. Not one sent
        compressed (an upstream may ignore the gateway's ``Accept-Encoding: identity``): a hit is replayed with its
        content type only, so its bytes must be readable without their ``Content-Encoding``. Not one that says it
        varies on a request header the cache's key does not hold (``Vary``): a pass-through request's other headers
        are forwarded, and an agent answering per end user would have one user's answer replayed to the next."""
        for name, value in headers:
            if name == b"content-type":
                self.captured_type = value
            elif name == b"cache-control" and not _reusable(value, stream=self.streaming):
                self.capture = None
            elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                self.capture = None
            elif name == b"vary" and not _varies_within_key(value):
                self.capture = None
        if status != 200:
            self.capture = None

    def _cors_headers(self) -> list[tuple[bytes, bytes]]:
        """What lets the browser read this answer: its key's client's origins, or before the key is known (a 401,
        a 429 for failed keys), any active client's."""
        key = self.facts.key
        return answer_headers(self.origin, key.allowed_origins if key is not None else origin_table.last(frozenset()))

    def _unread_body_headers(self) -> list[tuple[bytes, bytes]]:
        """A body the gateway never read (a refused caller's) ends the connection: the server must not keep reading
        it, and the next request on the connection could not be told from its tail."""
        if self._receive is None:
            return []
        declared = self.headers.get(b"content-length", b"0")
        if (declared.isdigit() and int(declared) > 0) or b"transfer-encoding" in self.headers:
            return [(b"connection", b"close")]
        return []

    async def send(self, data: bytes, *, more: bool = True) -> None:
        guard = self.output_guard
        if guard is not None and guard.mode in ("sse", "text") and not guard.ended:
            try:
                data = guard.feed(data, final=not more)
            except StreamBlocked as stop:  # the client is told in the stream; the answer then ends (``fail``)
                if not self.client_left:
                    await self._send({"type": "http.response.body", "body": stop.event, "more_body": True})
                raise stop.error from None
        if not more:
            self.response_finished = True
        elif not self.first_byte_at and data:
            self.first_byte_at = time.perf_counter()
        if self.capture is not None:
            if len(self.capture) + len(data) > self.capture_limit:
                self.capture = None  # larger than the cache keeps
            else:
                self.capture += data
        if self.client_left:
            return
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = (JSON,)) -> None:
        checked = self.output_guard is not None and 200 <= status < 300
        if checked:  # every complete answer, a fallback's after a refused one's too
            body = self.output_guard.whole(body, headers)  # 403 ``guardrail_blocked`` on a block
        await self.start(status, [*headers, (b"content-length", str(len(body)).encode())], checked=checked)
        await self.send(body, more=False)

    async def respond_json(self, status: int, obj) -> None:
        await self.respond(status, json.dumps(obj).encode())

    async def fail(self, error: GatewayError) -> None:
        """Send ``error`` as the response, or, if the answer had already begun, end it."""
        self.error_type = error.code
        if self.output_guard is not None and error.code == "upstream_rejected":
            error = self.output_guard.quoted(error)  # the upstream's own words, checked as its answer would be
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
        if key is not None and key.subject:  # a caller with a token: who, never the token
            self.details["identity"] = {"provider": key.identity_provider, "subject": key.subject}
        row = record_request(
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
        try:
            observe_request(self, row)
        except Exception:  # a metric never costs a request its answer or its record
            log.exception("request %s: metrics not counted", self.request_id)


# What a pass-through request's cache key holds of its headers (``response_cache.raw_request``), and the encoding
# the gateway always asks for.
KEYED_HEADERS = frozenset({"accept", "content-type", "accept-encoding"})


def _reusable(cache_control: bytes, *, stream: bool) -> bool:
    """Whether an answer's ``Cache-Control`` lets a cache reuse it without asking its upstream again: not with
    ``no-store`` or ``private``, nor (RFC 9111 5.2.2.4) ``no-cache`` or a ``max-age``/``s-maxage`` of 0, except on
    an event stream, where ``no-cache`` is what every server sends to keep proxies from buffering it."""
    for part in cache_control.decode("latin-1").lower().split(","):
        name, _, argument = part.partition("=")
        name, argument = name.strip(), argument.strip().strip('"')
        if name in ("no-store", "private"):
            return False
        if not stream and (name == "no-cache" or (name in ("max-age", "s-maxage") and argument == "0")):
            return False
    return True


def _varies_within_key(vary: bytes) -> bool:
    """Whether an answer's ``Vary`` names only headers the response cache's key holds (``*``: any, so not)."""
    names = {part.strip().lower() for part in vary.decode("latin-1").split(",")} - {""}
    return names <= KEYED_HEADERS


def parse_json(body: bytes):
    """A request body as JSON, or 400: malformed, nested too deep to read (no input may cost a 5xx), or not UTF-8.

    JSON between systems is UTF-8 (RFC 8259). ``json.loads`` would also read UTF-16 and UTF-32, which the checks
    that scan the raw bytes (``protocols.referenced_input_tokens``) cannot see into: such a body hid its documents
    from the reservation.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("The request body must be JSON encoded as UTF-8.", "invalid_json") from None
    try:
        node = json.loads(text)
    except (ValueError, RecursionError):
        raise bad_request("The request body is not valid JSON (or is nested too deeply).", "invalid_json") from None
    if _nested_deeper_than(node, MAX_JSON_DEPTH, text):
        raise bad_request(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels.", "invalid_json")
    return node


# JSON this deep is read, then written again further down the stack (re-serialised for the upstream, stored in a
# job): read near Python's recursion limit, a body failed there with a 500.
MAX_JSON_DEPTH = 128


def _nested_deeper_than(node, limit: int, text: str) -> bool:
    if text.count("[") + text.count("{") <= limit:  # cannot be (the common case, counted in C)
        return False
    stack = [(node, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values() if isinstance(value, (dict, list)))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node if isinstance(value, (dict, list)))
    return False
