"""The gateway's Prometheus metrics: their definitions, bounded labels, and the ``/metrics`` exposition.

Metrics are counted in-process with prometheus-client. Under ``rungateway`` each
worker process writes its values to files in one directory
(``PROMETHEUS_MULTIPROC_DIR``, prometheus-client's multiprocess mode) and a
scrape, whichever worker answers it, adds up every process's files: counters
stay correct however many workers run and whichever is asked. Run alone (a test,
``runserver``), the values live in this process's registry.

Names follow the OpenTelemetry GenAI semantic conventions where one exists
(``gen_ai.server.request.duration`` is ``gen_ai_server_request_duration_seconds``
here, as an OpenTelemetry collector would export it to Prometheus); the rest are
the gateway's own, prefixed ``gateway_``. Every label a caller or an upstream can
vary (client, agent, model, error code) is bounded: each process gives its own
value to the first ``cap`` it sees and counts the rest as ``other``.
"""

from __future__ import annotations

import asyncio
import atexit
import hmac
import ipaddress
import logging
import os
import threading
from bisect import bisect_left

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

log = logging.getLogger("gateway.metrics")

OTHER = "other"
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
LABEL_LENGTH = 100  # a label value longer than this is cut: a model name is never this long

# This process's registry (single-process mode); in multiprocess mode the values go to files and a scrape reads
# them through a fresh registry (``exposition``).
REGISTRY = CollectorRegistry(auto_describe=True)


class BoundedLabel:
    """A label's values as seen, the first ``cap`` distinct ones kept; later ones count as ``other``.

    Per process: two workers may disagree on which values they kept once the cap is
    reached, but every request is counted exactly once under some value, so sums
    over the label stay exact.
    """

    def __init__(self, cap: int):
        self.cap = cap
        self._seen: dict[str, str] = {}
        self._lock = threading.Lock()

    def kept(self, value: str) -> str | None:
        """The label ``value`` already has, or None when it has none yet (nothing is taken)."""
        return self._seen.get(value)

    def __call__(self, value: str) -> str:
        kept = self._seen.get(value)
        if kept is not None:
            return kept
        with self._lock:
            if value in self._seen:
                return self._seen[value]
            if len(self._seen) >= self.cap:
                return OTHER
            kept = value[:LABEL_LENGTH] if value != OTHER else OTHER
            self._seen[value] = kept
            return kept


def _caps() -> dict:
    return settings.GATEWAY["METRICS"]


clients = BoundedLabel(_caps()["MAX_CLIENTS"])
agents = BoundedLabel(_caps()["MAX_AGENTS"])
models = BoundedLabel(_caps()["MAX_MODELS"])
codes = BoundedLabel(_caps()["MAX_CODES"])
targets = BoundedLabel(_caps()["MAX_AGENTS"] * 4)

# OpenTelemetry GenAI semantic conventions' advised buckets.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# What the gateway itself adds is well under a second: finer buckets at the low end.
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

MODEL_LABELS = ("gen_ai_operation_name", "gen_ai_request_model", "agent")

REQUESTS = Counter(
    "gateway_requests",
    "Requests the gateway answered, by agent, model, status class and the gateway's error code.",
    ("agent", "model", "status_class", "error_code"),
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "gen_ai_server_request_duration_seconds",
    "Whole request duration, from its arrival to its answer's last byte (gen_ai.server.request.duration).",
    (*MODEL_LABELS, "error_type"),
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Streamed answers: from the request's arrival to its first event relayed (gen_ai.server.time_to_first_token).",
    MODEL_LABELS,
    buckets=TTFT_BUCKETS,
    registry=REGISTRY,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "gen_ai_server_time_per_output_token_seconds",
    "Streamed answers: time after the first event, per output token after the first "
    "(gen_ai.server.time_per_output_token).",
    MODEL_LABELS,
    buckets=TPOT_BUCKETS,
    registry=REGISTRY,
)
TOKEN_USAGE = Histogram(
    "gen_ai_client_token_usage",
    "Tokens per request as the upstream reported (or the gateway charged), by type (gen_ai.client.token.usage).",
    ("gen_ai_token_type", *MODEL_LABELS),
    buckets=TOKEN_BUCKETS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "gateway_tokens",
    "Tokens charged, by client, agent, model and type (input or output); the audit log's totals.",
    ("client", "agent", "model", "type"),
    registry=REGISTRY,
)
COST = Counter(
    "gateway_cost_usd",
    "Cost charged in US dollars, by client, agent and model; the audit log's totals.",
    ("client", "agent", "model"),
    registry=REGISTRY,
)
REFUSALS = Counter(
    "gateway_refusals",
    "Requests the gateway itself refused, by reason (authentication, rate, budget, scope, policy, guardrail, "
    "invalid_request) and error code.",
    ("reason", "code"),
    registry=REGISTRY,
)
CACHE = Counter(
    "gateway_cache_requests",
    "Requests to agents that cache answers, by result: hit, miss (asked upstream) or bypass (not cacheable).",
    ("agent", "result"),
    registry=REGISTRY,
)
CACHE_SAVED = Counter(
    "gateway_cache_saved_usd",
    "What cache hits would have cost at their model's price, by client, agent and model.",
    ("client", "agent", "model"),
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "gateway_overhead_seconds",
    "What the gateway added: from the request's arrival to its answer's start, less the time spent waiting for "
    "upstream answers' headers.",
    ("agent",),
    buckets=OVERHEAD_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "gateway_upstream_duration_seconds",
    "Each upstream attempt, from its start to the upstream's answer headers (or its failure), by outcome.",
    ("agent", "target", "outcome"),
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
AUDIT_QUEUE = Gauge(
    "gateway_audit_queue_rows",
    "Audit and usage rows queued in the gateway's processes, not yet written.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)


class Pending:
    """This process's counts and observations not yet handed to prometheus-client, added up per labelled series.

    A prometheus-client increment in multiprocess mode takes a lock and writes its
    file: about 1 µs, and a request makes more than a dozen. Here a request costs a
    dictionary update per series (a histogram's bucket found by bisection), and
    ``flush`` hands each series' total over once, every ``FLUSH_SECONDS``, before a
    scrape, and at exit. Callers hold ``lock`` while they count (once for all of a
    request's series): a Celery worker with a thread pool runs jobs, each on a loop of
    its own, in one process, and an update must not land in a table being handed over.
    """

    def __init__(self):
        self.lock = threading.RLock()  # re-entered: a count with no loop running hands over at once
        self._counts: dict[tuple, float] = {}
        self._observed: dict[tuple, list] = {}  # (histogram, labels) -> [sum, count per bucket...]
        self._bounds: dict[object, tuple[float, ...]] = {}
        self._children: dict[tuple, object] = {}
        self.scheduled = False

    def count(self, metric, labels: tuple, amount: float = 1) -> None:
        key = (metric, labels)
        self._counts[key] = self._counts.get(key, 0) + amount
        if not self.scheduled:
            self._schedule()

    def observe(self, metric, labels: tuple, value: float) -> None:
        key = (metric, labels)
        series = self._observed.get(key)
        if series is None:
            bounds = self._bounds.get(metric)
            if bounds is None:
                bounds = self._bounds[metric] = tuple(metric._upper_bounds)
            series = self._observed[key] = [0.0] + [0] * len(bounds)
        series[0] += value
        series[1 + bisect_left(self._bounds[metric], value)] += 1
        if not self.scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a command, a Celery task's synchronous part): now
            self.flush()
            return
        self.scheduled = True
        loop.call_later(_caps()["FLUSH_SECONDS"], self.flush)

    def flush(self) -> None:
        """Hand every series' total to prometheus-client (its values, or its files in multiprocess mode)."""
        with self.lock:
            self.scheduled = False
            counts, self._counts = self._counts, {}
            observed, self._observed = self._observed, {}
        for (metric, labels), amount in counts.items():
            self._child(metric, labels).inc(amount)
        for (metric, labels), series in observed.items():
            child = self._child(metric, labels)
            # prometheus-client (pinned) keeps a histogram's sum and buckets as values of its own: an observation
            # is one increment of each, so a bucket's count is added in one increment here.
            child._sum.inc(series[0])
            for bucket, hits in zip(child._buckets, series[1:], strict=True):
                if hits:
                    bucket.inc(hits)

    def _child(self, metric, labels: tuple):
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels) if labels else metric
        return child


pending = Pending()
atexit.register(pending.flush)


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


def refusal_reason(status: int, code: str) -> str | None:
    """Why the gateway itself refused a request (None: it did not; an upstream's failure is not a refusal)."""
    if not code or status < 400 or code.startswith(("upstream", "dearer_model")) or status >= 500:
        return None
    if status == 401 or code in ("key_revoked", "key_expired", "too_many_failed_authentications", "origin_not_allowed"):
        return "authentication"
    if status == 429:
        return "rate"
    if status == 402 or code.startswith("budget"):
        return "budget"
    if code == "policy_denied":
        return "policy"
    if code == "guardrail_blocked":
        return "guardrail"
    if status == 403:
        return "scope"
    if code == "client_disconnected":
        return None
    return "invalid_request"


# --- the /metrics endpoint -------------------------------------------------------------------------------------


def may_scrape(peer: str | None, authorization: bytes) -> bool:
    """A scraper is let in by the bearer token (``GATEWAY_METRICS_TOKEN``) or from an allowed network."""
    config = _caps()
    token = config["TOKEN"]
    if token and authorization.startswith(b"Bearer "):
        return hmac.compare_digest(authorization[7:].strip(), token.encode())
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in config["ALLOW_NETWORKS"])


def exposition(extra_collectors=(), accept: str = "") -> tuple[bytes, str]:
    """Every metric, in the format the scraper accepts (Prometheus text or OpenMetrics), and its content type:
    this process's, or every worker's in multiprocess mode, and what ``extra_collectors`` read now (shared
    state: circuits, budgets)."""
    if MULTIPROCESS:
        from gateway_project.metrics_archive import ArchivingAwareCollector

        registry = CollectorRegistry(auto_describe=True)
        ArchivingAwareCollector(registry)
    else:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Local())
    for collector in extra_collectors:
        registry.register(collector)
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type


class _Local:
    """This process's own metrics, re-registered with each scrape's registry beside the scraped collectors."""

    def collect(self):
        return REGISTRY.collect()


async def serve_metrics(scope, receive, send) -> None:
    """``GET /metrics``: the exposition for an allowed scraper; a JSON error (401, 403, 404, 405) for anyone else.

    Served before Django (``GatewayHttpRouter``): a scraper names a worker by its address, which no
    ``ALLOWED_HOSTS`` lists, and a gateway-only host serves it too.
    """
    from channels.db import DatabaseSyncToAsync

    from gateway_project.addresses import client_address
    from gateway_project.errors import GatewayError
    from gateway_project.ids import new_id
    from gateway_project.metrics_scrape import SharedStateCollector

    request_id = new_id()
    headers = dict(scope["headers"])
    peer = (scope.get("client") or (None,))[0]
    trusted = settings.GATEWAY["TRUSTED_PROXIES"]
    forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"] if trusted else []
    address, _unusable = client_address(peer, forwarded, trusted)
    error = None
    if not _caps()["ENABLED"]:
        error = GatewayError(404, "not_found_error", "unknown_endpoint", "Metrics are switched off (GATEWAY_METRICS).")
    elif scope["method"] not in ("GET", "HEAD"):
        error = GatewayError(405, "invalid_request_error", "method_not_allowed", "Use GET for /metrics.",
                             [(b"allow", b"GET, HEAD")])  # fmt: skip
    elif not may_scrape(address, headers.get(b"authorization", b"")):
        if _caps()["TOKEN"]:
            error = GatewayError(401, "authentication_error", "invalid_metrics_token",
                                 "Send the metrics token as Authorization: Bearer <token>.",
                                 [(b"www-authenticate", b'Bearer realm="metrics"')])  # fmt: skip
        else:
            error = GatewayError(403, "permission_error", "metrics_not_allowed",
                                 "This address may not read /metrics (GATEWAY_METRICS_ALLOW).")  # fmt: skip
    if error is None:
        try:
            pending.flush()  # this worker's latest, before it is read
            accept = headers.get(b"accept", b"").decode("latin-1")
            # Not thread-sensitive: the scrape's queries (a budget's spend summed from its usage rows...) would hold
            # the one thread every other synchronous database call of this process waits for (key look-ups, audit
            # writes).
            read = DatabaseSyncToAsync(exposition, thread_sensitive=False)
            body, content_type = await read([SharedStateCollector()], accept)
        except Exception:  # the metrics directory full or gone: the scraper is told, the worker goes on
            log.exception("metrics: the exposition could not be made")
            error = GatewayError(503, "api_error", "metrics_unavailable", "The metrics could not be read; see the "
                                 "gateway's logs.")  # fmt: skip
    if error is not None:
        body, status = error.body(request_id), error.status
        head = [(b"content-type", b"application/json"), *error.headers]
    else:
        status, head = 200, [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")]
    head += [(b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode()),
             (b"x-content-type-options", b"nosniff")]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
