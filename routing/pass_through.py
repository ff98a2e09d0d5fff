"""How a pass-through call (``/agents/<agent>/…`` and path routes) is metered, one adapter per upstream kind.

A provider agent (OpenAI-compatible, Anthropic) reached through pass-through gets
what its composed APIs get: the body's ``model`` is read and checked against the
key's scopes, the answer's length is capped and reserved, the body is forwarded
re-serialised (what was checked is what is sent), and usage is read from the JSON
answer or from the stream's usage events. A call whose usage cannot be read (a path
that is not one of the provider's metered APIs) is refused, unless the admin marked
the agent ``unmetered_pass_through``. Agent services keep their own contract: usage
from ``X-Usage-*`` headers or a JSON ``usage`` object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from gateway_project.errors import bad_request, forbidden
from routing import protocols
from routing.exchange import parse_json
from routing.sse import AnthropicStreamScanner, OpenAIStreamScanner
from routing.table import AgentRoute

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Plan:
    """What a pass-through call sends and how its answer is metered."""

    body: bytes
    model: str = ""  # the model asked for ("" when the call names none)
    max_output: int | None = None
    stream: bool = False
    keep_usage_events: bool = True  # whether the client asked for the stream's usage chunk
    input_text: str = ""
    unmetered: bool = False  # let through unpriced by the admin's choice
    notes: dict = field(default_factory=dict)

    def scanner(self, kind: str):
        """A reader of the answer's SSE usage events, or None when the answer is not a metered stream."""
        if not self.stream:
            return None
        if kind == "anthropic":
            return AnthropicStreamScanner(self.model)
        return OpenAIStreamScanner(keep_usage_chunk=self.keep_usage_events)


def _path(rest: bytes) -> str:
    return "/" + rest.decode("latin-1").strip("/")


class AgentServiceAdapter:
    """Agent services: the body goes as it came; usage comes from their headers or JSON."""

    def plan(self, route: AgentRoute, method: str, rest: bytes, body: bytes, cap: int) -> Plan:
        return Plan(body, input_text=body[:1000].decode("utf-8", "replace"))


class ProviderAdapter:
    """A provider's metered APIs: JSON bodies naming a ``model``, usage in the answer or its final stream event."""

    metered_paths: frozenset[str] = frozenset()
    free_paths: frozenset[str] = frozenset()  # spend no tokens (token counting, moderation)

    def plan(self, route: AgentRoute, method: str, rest: bytes, body: bytes, cap: int) -> Plan:
        path = _path(rest)
        if method in SAFE_METHODS or path in self.free_paths:
            return Plan(body)
        if path not in self.metered_paths:
            if route.unmetered_pass_through:
                return Plan(body, unmetered=True, notes={"unmetered": True})
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
        limit = protocols.max_tokens(payload)
        stream = payload.get("stream") is True
        payload, keep_usage = self.prepare(path, payload, limit, cap, stream)
        text = protocols.last_user_text(payload["messages"]) if isinstance(payload.get("messages"), list) else ""
        return Plan(
            json.dumps(payload).encode(),
            model=model,
            max_output=limit,
            stream=stream,
            keep_usage_events=keep_usage,
            input_text=text or body[:1000].decode("utf-8", "replace"),
        )

    def prepare(self, path: str, payload: dict, limit, cap: int, stream: bool) -> tuple[dict, bool]:
        """The body to send (capped, asking for usage) and whether the client asked for the usage events itself."""
        return payload, True


class OpenAIAdapter(ProviderAdapter):
    metered_paths = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
    free_paths = frozenset({"/v1/moderations"})

    def prepare(self, path, payload, limit, cap, stream):
        if limit is None and path != "/v1/embeddings":
            payload = {**payload, "max_tokens": cap}
        if not stream:
            return payload, True
        options = payload.get("stream_options")
        wanted = isinstance(options, dict) and options.get("include_usage") is True
        options = options if isinstance(options, dict) else {}
        return {**payload, "stream_options": {**options, "include_usage": True}}, wanted


class AnthropicAdapter(ProviderAdapter):
    metered_paths = frozenset({"/v1/messages"})
    free_paths = frozenset({"/v1/messages/count_tokens"})

    def prepare(self, path, payload, limit, cap, stream):
        if limit is None:
            payload = {**payload, "max_tokens": cap}
        return payload, True


ADAPTERS = {"agent": AgentServiceAdapter(), "openai": OpenAIAdapter(), "anthropic": AnthropicAdapter()}


def plan_for(route: AgentRoute, method: str, rest: bytes, body: bytes, cap: int) -> Plan:
    """How ``method`` on ``rest`` of ``route`` is sent and metered (400 or 403 when it cannot be)."""
    return ADAPTERS.get(route.kind, ADAPTERS["agent"]).plan(route, method, rest, body, cap)
