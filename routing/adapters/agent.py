"""Agent services: ``POST /invoke`` with ``{input, model?, max_tokens?}``; usage in their JSON or headers."""

from __future__ import annotations

import json

from routing import anthropic_shape, forward, protocols
from routing.adapters.base import Adapter
from routing.exchange import Exchange
from routing.sse import anthropic_stream_of, openai_stream_of
from routing.table import AgentRoute


class AgentServiceAdapter(Adapter):
    kind = "agent"

    async def _ask(self, ex: Exchange, route: AgentRoute, text: str, model: str, limit) -> None:
        body = protocols.invoke_body(text, model, limit)
        answer, _ = await forward.call_json(ex, route, "/invoke", json.dumps(body).encode(), self.headers(route, ex))
        ex.output_text = protocols.agent_text(answer)

    async def chat(self, ex, route, payload, stream, wants_usage):
        await self._ask(ex, route, ex.input_text, ex.model, protocols.max_tokens(payload))
        model = ex.model or route.slug
        if stream:  # an agent service answers whole: sent on as one stream
            usage = (ex.input_tokens, ex.output_tokens)
            await ex.start(200, forward.SSE_HEADERS)
            await ex.send(openai_stream_of(ex.request_id, model, ex.output_text, usage, wants_usage), more=False)
            return
        chat = protocols.chat_completion(ex.request_id, model, ex.output_text, ex.input_tokens, ex.output_tokens)
        await forward.respond_upstream_json(ex, chat)

    def check_messages(self, payload, model):
        anthropic_shape.ensure_translatable(payload, model)

    async def messages(self, ex, route, payload, stream):
        self.check_messages(payload, ex.model)
        await self._ask(ex, route, ex.input_text, ex.model, payload["max_tokens"])
        model, usage = ex.model or route.slug, (ex.input_tokens, ex.output_tokens)
        if stream:
            await ex.start(200, forward.SSE_HEADERS)
            await ex.send(anthropic_stream_of(ex.request_id, model, ex.output_text, usage), more=False)
            return
        await forward.respond_upstream_json(ex, anthropic_shape.message(ex.request_id, model, ex.output_text, *usage))

    async def invoke(self, ex, route, text, model, requested, limit):
        await self._ask(ex, route, text, requested, limit)
