"""OpenAI-compatible providers: ``/v1/chat/completions`` (and, through pass-through, completions and embeddings)."""

from __future__ import annotations

import json

from routing import anthropic_shape, forward, protocols
from routing.adapters.base import ProviderAdapter, note_stream_error
from routing.sse import OpenAIStreamScanner, OpenAIToAnthropicStream

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


class OpenAIAdapter(ProviderAdapter):
    kind = "openai"
    metered_paths = frozenset({CHAT, COMPLETIONS, "/v1/embeddings"})
    free_paths = frozenset({"/v1/moderations"})

    async def chat(self, ex, route, payload, stream, wants_usage):
        body = {**payload, "model": ex.model or payload["model"]}
        if stream:
            # The gateway asks for the final usage chunk, and hides it from a client that did not ask for it.
            body["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
            scanner = OpenAIStreamScanner(keep_usage_chunk=wants_usage)
            await forward.stream_sse(ex, route, CHAT, json.dumps(body).encode(), scanner, self.headers(route, ex))
            return
        # Re-serialised, never the client's bytes: the upstream sees exactly what was checked (one ``model``).
        answer, content = await forward.call_json(ex, route, CHAT, json.dumps(body).encode(), self.headers(route, ex))
        ex.output_text = protocols.chat_text(answer)
        await forward.respond_json_bytes(ex, content)  # the provider's own bytes, as it sent them

    def check_messages(self, payload, model):
        anthropic_shape.messages_to_chat(payload, model)

    async def messages(self, ex, route, payload, stream):
        body = json.dumps(anthropic_shape.messages_to_chat(payload, ex.model)).encode()
        if stream:
            scanner = OpenAIToAnthropicStream(ex.request_id, ex.model)
            await forward.stream_sse(ex, route, CHAT, body, scanner, self.headers(route, ex))
            note_stream_error(ex, scanner)
            return
        answer, _ = await forward.call_json(ex, route, CHAT, body, self.headers(route, ex))
        ex.output_text = protocols.chat_text(answer)
        await forward.respond_upstream_json(ex, anthropic_shape.chat_to_message(answer, ex.model, ex.request_id))

    async def invoke(self, ex, route, text, model, requested, limit):
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        if limit:
            body["max_tokens"] = limit
        answer, _ = await forward.call_json(ex, route, CHAT, json.dumps(body).encode(), self.headers(route, ex))
        ex.output_text = protocols.chat_text(answer)

    def answers(self, path, payload):
        return protocols.completion_answers(payload) if path == COMPLETIONS else protocols.choices(payload)

    def prepare_pass_through(self, path, payload, limit, cap, stream):
        if limit is None and path != "/v1/embeddings":
            payload = {**payload, "max_tokens": cap}
        if not stream:
            return payload, True
        options = payload.get("stream_options")
        wanted = isinstance(options, dict) and options.get("include_usage") is True
        options = options if isinstance(options, dict) else {}
        return {**payload, "stream_options": {**options, "include_usage": True}}, wanted

    def stream_scanner(self, plan):
        return OpenAIStreamScanner(keep_usage_chunk=plan.keep_usage_events) if plan.stream else None
