"""What each finished request adds to the gateway's metrics: counted from its audit row, so the two agree.

Called once per request (``Exchange.record``) and once per upstream attempt
(``resilience``), on the event loop: no I/O, a dictionary update per series
(``gateway_project.metrics.pending``, under its lock), handed to prometheus-client
every second.
"""

from __future__ import annotations

import time

from django.conf import settings

from gateway_project import metrics as m

ENABLED = settings.GATEWAY["METRICS"]["ENABLED"]
count, observe = m.pending.count, m.pending.observe


def operation(path: str) -> str:
    """The GenAI operation a path asks for (gen_ai.operation.name), or ``invoke_agent`` for an agent's own API."""
    if path.startswith("/v1/chat/") or path.startswith("/v1/messages"):
        return "chat"
    if path.startswith("/v1/completions"):
        return "text_completion"
    if path.startswith("/v1/embeddings"):
        return "embeddings"
    if path.startswith("/v1/responses"):
        return "generate_content"
    return "invoke_agent"


def observe_request(ex, row: dict) -> None:
    """Count one finished request as its audit ``row`` says (agent, model, status, tokens, cost) and time it."""
    if ENABLED:
        with m.pending.lock:  # one request's series together, never halfway into a hand-over
            _observe_request(ex, row)


def _observe_request(ex, row: dict) -> None:
    now = time.perf_counter()
    status = row["status"]
    agent, model, code = m.agents(row["agent"]), model_label(row["model"], status), m.codes(row["error_type"])
    count(m.REQUESTS, (agent, model, m.status_class(status), code))
    labels = (operation(ex.path), model, agent)
    observe(m.REQUEST_DURATION, (*labels, code), now - ex.started)
    if ex.response_at:
        observe(m.OVERHEAD, (agent,), max(0.0, ex.response_at - ex.started - ex.upstream_seconds))
    if ex.streaming and ex.first_byte_at:
        observe(m.TIME_TO_FIRST_TOKEN, labels, ex.first_byte_at - ex.started)
        if row["output_tokens"] > 1:
            observe(m.TIME_PER_OUTPUT_TOKEN, labels, (now - ex.first_byte_at) / (row["output_tokens"] - 1))
    client = m.clients(row["client_slug"])
    if row["input_tokens"]:
        observe(m.TOKEN_USAGE, ("input", *labels), row["input_tokens"])
        count(m.TOKENS, (client, agent, model, "input"), row["input_tokens"])
    if row["output_tokens"]:
        observe(m.TOKEN_USAGE, ("output", *labels), row["output_tokens"])
        count(m.TOKENS, (client, agent, model, "output"), row["output_tokens"])
    if row["cost_usd"]:
        count(m.COST, (client, agent, model), float(row["cost_usd"]))
    cache = row["details"].get("cache")
    if cache is not None:
        count(m.CACHE, (agent, cache["status"]))
        if "saved_usd" in cache:
            count(m.CACHE_SAVED, (client, agent, model), float(cache["saved_usd"]))
    if status >= 400:
        reason = m.refusal_reason(status, row["error_type"])
        if reason is not None:
            count(m.REFUSALS, (reason, code))


def model_label(model: str, status: int) -> str:
    """A request's model label. A name not kept yet takes one of the cap's places only when the request was answered
    or the gateway knows the model (an agent serves it, the price table prices it): any caller can make names up
    for an agent that serves every model, each refused by its upstream, and the first names a process saw kept
    their places, so every real model after them was counted as ``other``."""
    kept = m.models.kept(model)
    if kept is not None:
        return kept
    if status < 400 or _known(model):
        return m.models(model)
    return m.OTHER


def _known(model: str) -> bool:
    from billing.pricing import prices
    from routing.models import AUTO_MODEL
    from routing.table import routing_table

    table = routing_table.last()
    if table is not None and (model in table.by_model or model in table.agents):
        return True
    return not model or model == AUTO_MODEL or model in prices.last({})


def observe_attempt(agent: str, target: str, outcome: str, seconds: float) -> None:
    """One upstream attempt: its time to the answer's headers (or its failure), by outcome."""
    if ENABLED:
        labels = (m.agents(agent), m.targets(target), m.codes(outcome))
        with m.pending.lock:
            observe(m.UPSTREAM_DURATION, labels, seconds)
