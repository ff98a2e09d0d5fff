"""What is known of a request, as one immutable value built in steps.

identity (the key) -> route (the agent or path route, and the model asked for)
-> priced model (the quote) -> demand (what admission must reserve). Each step
returns a new value; nothing writes into one. Admission takes the finished facts
and its ticket keeps them, so the settle prices and releases exactly what was
admitted, whatever happened to the exchange meanwhile (fallbacks, the upstream's
own account of its model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from billing.pricing import Quote
from keys.access import KeySnapshot
from routing.path_routes import PathRouteEntry
from routing.table import AgentRoute


@dataclass(frozen=True, slots=True)
class Demand:
    """What a metered request asks of the limits and budgets."""

    input_tokens: int  # the estimate of its input (about four bytes a token)
    max_output: int | None  # the client's own cap on the answer, if it set one
    default_output: int | None  # the agent's default answer length, for a request without a cap
    hold_seconds: float  # how long its reservation may stand before it lapses
    # Input the body's size does not show (images, documents: ``protocols.referenced_input_tokens``): reserved and
    # allowed as a charge, not counted against tokens per minute before it is billed.
    input_allowance: int = 0

    @property
    def estimated_input(self) -> int:
        """The input as estimated: what an answer whose usage is unknown is charged (``admission.input_bound`` is
        what may be charged, and reserved)."""
        return self.input_tokens + self.input_allowance


class RequestFacts(NamedTuple):
    """Immutable (a named tuple): each step is one construction, where a frozen dataclass's ``replace`` cost five
    times as much, four times a request."""

    request_id: str
    key: KeySnapshot | None = None
    route: AgentRoute | None = None
    path_route: PathRouteEntry | None = None
    requested: str = ""  # the model (or agent slug) the request names
    quote: Quote | None = None
    demand: Demand | None = None  # None: admitted without tokens or cost (lists, reports, WebSocket sessions)

    def identified(self, key: KeySnapshot) -> RequestFacts:
        return RequestFacts(self.request_id, key, self.route, self.path_route, self.requested, self.quote, self.demand)

    def routed(self, route: AgentRoute, requested: str = "", path_route: PathRouteEntry | None = None):
        return RequestFacts(self.request_id, self.key, route, path_route, requested, self.quote, self.demand)

    def priced(self, quote: Quote) -> RequestFacts:
        return RequestFacts(self.request_id, self.key, self.route, self.path_route, self.requested, quote, self.demand)

    def demanding(self, demand: Demand) -> RequestFacts:
        return RequestFacts(self.request_id, self.key, self.route, self.path_route, self.requested, self.quote, demand)

    @property
    def metered(self) -> bool:
        return self.demand is not None

    @property
    def default_model(self) -> str:
        """The model priced when the answer names none: the route's default."""
        return self.route.default_model if self.route is not None else ""
