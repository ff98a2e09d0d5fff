"""Which model a request is priced at, decided once at admission from what will be sent upstream.

``quote_for`` is the only place that decides it: the model sent, plus every model
the answer may come from instead (the agent's served models when it is asked by
its slug without a default model, its fallbacks' models, and the dearer models its
upstream was caught answering with). ``report_dearer_answer`` is called when an
answer still came from a dearer model than reserved: the agent learns the model
(a Celery task adds it to ``Agent.dearer_models``), so it cannot happen again once
the routing table is reloaded. A stream names its model in its first event, so a
stream from a dearer model is stopped there (``dearer_than_reserved``): only answers
read whole (whose cost is spent by the time the gateway sees their model) can exceed
their reservation, and only until the model is learnt.
"""

from __future__ import annotations

import asyncio
import logging
import time

from billing.pricing import Quote, priced_over, prices, quote
from routing.table import AgentRoute, RoutingTable

log = logging.getLogger("gateway.pricing")
# Dearer models this process saw, priced in at once: requests admitted after the first such answer reserve for it
# before the routing table (reloaded from the database every few seconds) has it too. Kept for LEARNT_SECONDS, by
# when the table has it, or an admin has removed it on purpose.
_learnt: dict[str, dict[str, float]] = {}
_learnt_version = 0  # changes with every model learnt, so remembered quotes are priced again
LEARNT_SECONDS = 300.0
QUOTE_SECONDS = 5.0
_quotes: dict[tuple, tuple[AgentRoute, Quote]] = {}


def _learnt_models(agent: str) -> list[str]:
    seen = _learnt.get(agent)
    if not seen:
        return []
    now = time.monotonic()
    return [model for model, at in seen.items() if now - at < LEARNT_SECONDS]


def sent_model(route: AgentRoute, requested: str) -> str:
    """The model asked of the upstream for a request naming ``requested`` (a model, or the agent's slug)."""
    if requested and requested != route.slug:
        return requested
    return route.default_model or requested


async def quote_for(route: AgentRoute, requested: str, table: RoutingTable | None = None) -> Quote:
    """The quote of a request for ``requested`` on ``route``: the dearest price its answer could be charged at.

    Remembered for a few seconds per route, table and prices as loaded (a scheduled price takes effect within
    ``QUOTE_SECONDS``), so the hot path prices a request with a dictionary look-up.
    """
    price_table = await prices.get()
    key = (id(route), requested, id(table), id(price_table), _learnt_version, int(time.monotonic() // QUOTE_SECONDS))
    found = _quotes.get(key)
    if found is not None and found[0] is route:
        return found[1]
    quoted = _quote(route, requested, table, price_table)
    if len(_quotes) > 4096:
        _quotes.clear()
    _quotes[key] = (route, quoted)
    return quoted


def _quote(route: AgentRoute, requested: str, table: RoutingTable | None, price_table) -> Quote:
    model = sent_model(route, requested)
    may_answer = [*route.dearer_models, *_learnt_models(route.slug)]
    upstream_chooses = not model or (model == route.slug and not route.default_model)
    if upstream_chooses:
        may_answer += route.served_models
    if table is not None:
        for slug in route.fallbacks:
            fallback = table.agents.get(slug)
            if fallback is not None:
                may_answer += [fallback.default_model, *fallback.dearer_models, *_learnt_models(slug)]
                if not fallback.default_model:
                    upstream_chooses = upstream_chooses or not fallback.served_models
                    may_answer += fallback.served_models
    # An upstream asked for nothing in particular, that names no models it serves, may answer with any.
    any_model = upstream_chooses and not route.served_models
    return quote(price_table, model, [m for m in may_answer if m], any_model=any_model)


def dearer_than_reserved(quote_: Quote | None, model: str) -> bool:
    """Whether an answer that names ``model`` costs more per token than ``quote_`` reserved (prices as last loaded)."""
    table = prices.last()
    return bool(quote_ is not None and model and table is not None and priced_over(table, quote_, model))


def report_dearer_answer(agent: str, model: str, request_id: str) -> None:
    """Price ``model`` into ``agent``'s reservations in this process at once, and hand it to Celery for every
    process (``Agent.dearer_models``); once per process and pair while learnt; never blocks."""
    global _learnt_version
    if not agent or not model or model in _learnt_models(agent):
        return
    _learnt.setdefault(agent, {})[model] = time.monotonic()
    _learnt_version += 1
    log.warning("agent %s answered request %s with %s, priced above what was reserved", agent, request_id, model)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        _enqueue(agent, model, request_id)
        return
    loop.run_in_executor(None, _enqueue, agent, model, request_id)


def _enqueue(agent: str, model: str, request_id: str) -> None:
    try:
        from routing.tasks import note_dearer_model

        note_dearer_model.delay(agent, model, request_id)
    except Exception:  # still priced in by this process; the next process to see it tries again
        log.exception("could not queue the dearer model %s of agent %s", model, agent)
