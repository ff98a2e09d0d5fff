"""A mock upstream for the demo, the tests and the benchmark.

Speaks OpenAI chat completions (JSON and SSE with a final usage chunk),
Anthropic messages (JSON and SSE) and the agent ``/invoke`` shape, with
deterministic answers and token counts. It can be told to be slow or to fail:
per request with ``X-Mock-Delay-Ms`` / ``X-Mock-Status`` headers or a
``"mock": {"delay_ms", "status", "chunk_delay_ms", "usage_output_tokens"}`` body field, or for every request with
``POST /__mock__/config {"delay_ms", "status"}``. Any other path echoes the
request (method, path, query, headers, body) as JSON, for pass-through tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time

from aiohttp import web

WORDS_PER_CHUNK = 3


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: about four characters a token."""
    return max(1, math.ceil(len(text) / 4))


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def answer_for(prompt: str, max_tokens: int | None = None) -> str:
    words = f"Mock answer to: {prompt.strip()[:120]}".split()
    if max_tokens:
        words = words[: max(1, max_tokens)]
    return " ".join(words)


class MockUpstream:
    def __init__(self, delay_ms: int = 0, status: int = 200):
        self.config = {"delay_ms": delay_ms, "status": status}
        self.requests = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/__mock__/config", self.configure)
        self.app.router.add_get("/__mock__/stats", self.stats)
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/messages", self.messages)
        self.app.router.add_post("/invoke", self.invoke)
        self.app.router.add_route("*", "/{tail:.*}", self.echo)

    async def configure(self, request):
        body = await request.json()
        self.config.update({k: int(v) for k, v in body.items() if k in ("delay_ms", "status")})
        return web.json_response(self.config)

    async def stats(self, request):
        return web.json_response({"requests": self.requests, **self.config})

    async def _behave(self, request, body: dict | None):
        """Apply delay and failure settings; return a failure response or None."""
        self.requests += 1
        mock = (body or {}).get("mock") if isinstance(body, dict) else None
        mock = mock if isinstance(mock, dict) else {}
        delay = int(request.headers.get("x-mock-delay-ms", mock.get("delay_ms", self.config["delay_ms"])))
        status = int(request.headers.get("x-mock-status", mock.get("status", self.config["status"])))
        if delay:
            await asyncio.sleep(delay / 1000)
        if status >= 400:
            return web.json_response(
                {"error": {"type": "mock_failure", "message": f"mock upstream told to fail with {status}"}},
                status=status,
            )
        return None

    async def chat(self, request):
        body = await request.json()
        failure = await self._behave(request, body)
        if failure:
            return failure
        prompt = " ".join(_text(m.get("content")) for m in body.get("messages", []))
        text = answer_for(prompt, body.get("max_tokens") or body.get("max_completion_tokens"))
        model = body.get("model", "mock-model")
        usage = {"prompt_tokens": count_tokens(prompt), "completion_tokens": count_tokens(text)}
        mock = body.get("mock") if isinstance(body.get("mock"), dict) else {}
        if "usage_output_tokens" in mock:  # play a model that bills its whole answer budget
            usage["completion_tokens"] = int(mock["usage_output_tokens"])
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        created = int(time.time())
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-mock",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await response.prepare(request)

        async def event(obj):
            await response.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        def chunk(delta, finish=None):
            return {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        await event(chunk({"role": "assistant", "content": ""}))
        words = text.split(" ")
        mock = body.get("mock") if isinstance(body.get("mock"), dict) else {}
        step_delay = float(request.headers.get("x-mock-chunk-delay-ms", mock.get("chunk_delay_ms", 0))) / 1000
        for i in range(0, len(words), WORDS_PER_CHUNK):
            piece = " ".join(words[i : i + WORDS_PER_CHUNK])
            await event(chunk({"content": piece if i == 0 else " " + piece}))
            if step_delay:
                await asyncio.sleep(step_delay)
        await event(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await event({**chunk({}), "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def messages(self, request):
        body = await request.json()
        failure = await self._behave(request, body)
        if failure:
            return failure
        prompt = " ".join(_text(m.get("content")) for m in body.get("messages", []))
        if body.get("system"):
            prompt = f"{_text(body['system'])} {prompt}"
        text = answer_for(prompt, body.get("max_tokens"))
        model = body.get("model", "claude-mock")
        usage = {"input_tokens": count_tokens(prompt), "output_tokens": count_tokens(text)}
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_mock",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def event(name, obj):
            await response.write(f"event: {name}\ndata: {json.dumps(obj)}\n\n".encode())

        await event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_mock",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
                },
            },
        )
        await event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        words = text.split(" ")
        for i in range(0, len(words), WORDS_PER_CHUNK):
            piece = " ".join(words[i : i + WORDS_PER_CHUNK])
            await event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece if i == 0 else " " + piece},
                },
            )
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response

    async def invoke(self, request):
        body = await request.json()
        failure = await self._behave(request, body)
        if failure:
            return failure
        prompt = _text(body.get("input", ""))
        text = answer_for(prompt, body.get("max_tokens"))
        usage = {"input_tokens": count_tokens(prompt), "output_tokens": count_tokens(text)}
        return web.json_response(
            {"output": text, "model": body.get("model") or "mock-agent-model", "usage": usage},
            headers={"x-request-id-seen": request.headers.get("x-request-id", "")},
        )

    async def echo(self, request):
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        failure = await self._behave(request, body)
        if failure:
            return failure
        text = raw.decode("utf-8", "replace")
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": text,
                "output": f"echo: {text[:100]}",
                "usage": {"input_tokens": count_tokens(text) if text else 0, "output_tokens": 2},
            },
            headers={"x-usage-input-tokens": str(count_tokens(text) if text else 0), "x-usage-output-tokens": "2"},
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--status", type=int, default=200)
    args = parser.parse_args(argv)
    mock = MockUpstream(args.delay_ms, args.status)
    web.run_app(mock.app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
