"""What every upstream adapter shares: the pass-through plan, and the provider pass-through rules.

An adapter owns everything that depends on an upstream's kind: the credentials it
expects, the request it is sent for each of the gateway's APIs, the URL paths it
serves, how its usage is read from JSON and from streams, and how its errors are
told apart. Endpoints pick ``adapter_for(route)`` per attempt (a fallback may be
of another kind); nothing else branches on the kind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gateway_project.errors import bad_request, forbidden, not_found
from routing import protocols
from routing.exchange import Exchange, parse_json
from routing.table import AgentRoute

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Plan:
    """What a pass-through call sends and how its answer is metered."""

    body: bytes
    model: str = ""  # the model asked for ("" when the call names none)
    max_output: int | None = None
    stream: bool = False
    keep_usage_events: bool = True  # whether the client asked for the stream's usage chunk itself
    input_text: str = ""
    notes: dict = field(default_factory=dict)  # facts for the audit record's details


def note_stream_error(ex: Exchange, scanner) -> None:
    """An upstream that failed mid-stream (its error went on to the client) is an error in the audit record."""
    if getattr(scanner, "error", ""):
        ex.error_type = ex.error_type or "upstream_error"
        ex.details["upstream_stream_error"] = scanner.error


def _path(rest: bytes) -> str:
    return "/" + rest.decode("latin-1").strip("/")


class Adapter:
    """The interface; see the module docstring."""

    kind = ""

    def credentials(self, route: AgentRoute) -> list[tuple[bytes, bytes]]:
        """The headers that carry the gateway's own upstream credential (never a client's)."""
        if not route.upstream_api_key:
            return []
        return [(b"authorization", f"Bearer {route.upstream_api_key}".encode())]

    def headers(self, route: AgentRoute, ex: Exchange) -> dict[str, str]:
        """Headers for a call the gateway composes itself (chat, messages, invoke)."""
        headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            "x-request-id": ex.request_id,
            "x-client-id": ex.key.client_slug,
        }
        headers.update((name.decode(), value.decode()) for name, value in self.credentials(route))
        return headers

    def check_messages(self, payload: dict, model: str) -> None:
        """Raise 400 if an Anthropic-shaped request cannot be sent to this kind (before anything is admitted)."""

    async def chat(self, ex: Exchange, route: AgentRoute, payload: dict, stream: bool, wants_usage: bool) -> None:
        raise NotImplementedError

    async def messages(self, ex: Exchange, route: AgentRoute, payload: dict, stream: bool) -> None:
        raise NotImplementedError

    async def invoke(self, ex: Exchange, route: AgentRoute, text: str, model: str, requested: str, limit) -> None:
        raise NotImplementedError

    def plan(self, route: AgentRoute, method: str, rest: bytes, body: bytes, cap: int) -> Plan:
        """How a pass-through call is sent and metered (400 or 403 when it cannot be)."""
        return Plan(body, input_text=body[:1000].decode("utf-8", "replace"))

    def stream_scanner(self, plan: Plan):
        """A reader of a pass-through answer's stream usage, or None."""
        return None


class ProviderAdapter(Adapter):
    """A provider's metered APIs: JSON bodies naming a ``model``, usage in the answer or its final stream event.

    Through pass-through, a call to one of them is scoped, capped and metered like
    the gateway's own APIs; reads and free APIs pass unpriced; anything else is
    refused unless the admin marked the agent ``unmetered_pass_through``.
    """

    metered_paths: frozenset[str] = frozenset()
    free_paths: frozenset[str] = frozenset()  # spend no tokens (token counting, moderation)

    def plan(self, route: AgentRoute, method: str, rest: bytes, body: bytes, cap: int) -> Plan:
        path = _path(rest)
        if method in SAFE_METHODS and body:
            raise bad_request(
                f"A {method} request to a provider agent may not carry a body: reads pass unpriced, so a body an "
                "upstream might act on is refused.",
                "body_not_allowed",
            )
        if method in SAFE_METHODS or path in self.free_paths:
            return Plan(body)
        if path not in self.metered_paths:
            if route.unmetered_pass_through:
                return Plan(body, notes={"unmetered": True})
            raise forbidden(
                f"The gateway cannot meter {method} {path} on the agent '{route.slug}', so it does not pass it "
                f"through. Use its metered APIs ({', '.join(sorted(self.metered_paths))}), or ask an admin to "
                "allow unmetered pass-through for this agent.",
                "unmetered_pass_through",
            )
        payload = parse_json(body)
        if not isinstance(payload, dict):
            raise bad_request("The request body must be a JSON object.")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise bad_request("'model' is required and must be a string.", "missing_field")
        if not route.serves(model):
            raise not_found(f"The agent '{route.slug}' does not serve the model '{model}'.", "model_not_found")
        protocols.refuse_unpriced(payload, route)
        stream = protocols.stream_flag(payload)
        payload, keep_usage = self.prepare_pass_through(path, payload, protocols.max_tokens(payload), cap, stream)
        cap = protocols.answer_cap(payload)  # as sent: the cap added when the client set none
        limit = cap * self.answers(path, payload) if cap is not None else None
        messages = payload.get("messages")
        text = protocols.last_user_text(messages) if isinstance(messages, list) and messages else ""
        return Plan(
            json.dumps(payload).encode(),  # re-serialised: what was checked is what is sent
            model=model,
            max_output=limit,
            stream=stream,
            keep_usage_events=keep_usage,
            input_text=text or body[:1000].decode("utf-8", "replace"),
        )

    def answers(self, path: str, payload: dict) -> int:
        """How many answers of the capped length the call is billed for (OpenAI's ``n``)."""
        return protocols.choices(payload)

    def prepare_pass_through(self, path: str, payload: dict, limit, cap: int, stream: bool) -> tuple[dict, bool]:
        """The body to send (capped, asking for usage) and whether the client asked for the usage events itself."""
        return payload, True
