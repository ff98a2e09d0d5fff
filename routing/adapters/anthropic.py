"""Anthropic providers: ``/v1/messages`` with ``x-api-key`` and ``anthropic-version``."""

from __future__ import annotations

import json

from routing import forward, protocols
from routing.adapters.base import ProviderAdapter, note_stream_error
from routing.sse import AnthropicStreamScanner, AnthropicToOpenAIStream

MESSAGES = "/v1/messages"
API_VERSION = "2023-06-01"


class AnthropicAdapter(ProviderAdapter):
    kind = "anthropic"
    metered_paths = frozenset({MESSAGES})
    free_paths = frozenset({"/v1/messages/count_tokens"})

    def credentials(self, route):
        return [(b"x-api-key", route.upstream_api_key.encode())] if route.upstream_api_key else []

    def headers(self, route, ex):
        return {**super().headers(route, ex), "anthropic-version": API_VERSION}

    async def chat(self, ex, route, payload, stream, wants_usage):
        body = json.dumps(protocols.chat_to_anthropic({**payload, "model": ex.model})).encode()
        if stream:
            scanner = AnthropicToOpenAIStream(ex.request_id, ex.model, include_usage=wants_usage)
            await forward.stream_sse(ex, route, MESSAGES, body, scanner, self.headers(route, ex))
            note_stream_error(ex, scanner)
            return
        answer, _ = await forward.call_json(ex, route, MESSAGES, body, self.headers(route, ex))
        chat = protocols.anthropic_to_chat(answer, ex.model, ex.request_id)
        ex.output_text = protocols.chat_text(chat)
        await forward.respond_upstream_json(ex, chat)

    async def messages(self, ex, route, payload, stream):
        body = json.dumps({**payload, "model": ex.model}).encode()  # re-serialised: what was checked is sent
        if stream:
            scanner = AnthropicStreamScanner(ex.model)
            await forward.stream_sse(ex, route, MESSAGES, body, scanner, self.headers(route, ex))
            note_stream_error(ex, scanner)
            return
        answer, content = await forward.call_json(ex, route, MESSAGES, body, self.headers(route, ex))
        ex.output_text = protocols.anthropic_text(answer)
        await forward.respond_json_bytes(ex, content)  # the provider's own bytes, as it sent them

    async def invoke(self, ex, route, text, model, requested, limit):
        body = {
            "model": model,
            "max_tokens": limit or protocols.ANTHROPIC_DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": text}],
        }
        answer, _ = await forward.call_json(ex, route, MESSAGES, json.dumps(body).encode(), self.headers(route, ex))
        ex.output_text = protocols.anthropic_text(answer)

    def prepare_pass_through(self, path, payload, limit, cap, stream):
        return (payload if limit is not None else {**payload, "max_tokens": cap}), True

    def stream_scanner(self, plan):
        return AnthropicStreamScanner(plan.model) if plan.stream else None
