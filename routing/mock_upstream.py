"""A mock upstream for the demo, the tests and the benchmark.

Speaks OpenAI chat completions (JSON and SSE with a final usage chunk),
Anthropic messages (JSON and SSE) and the agent ``/invoke`` shape, with
deterministic answers and token counts; an answer ends at ``max_tokens`` words or
at a stop sequence, and says which. It can be told to be slow or to fail:
per request with ``X-Mock-Delay-Ms`` / ``X-Mock-Status`` headers or a
``"mock": {"delay_ms", "status", "chunk_delay_ms", "usage_output_tokens" (chat), "fail_mid_stream" (messages)}``
body field, or for every request with
``POST /__mock__/config {"delay_ms", "status", "chunk_delay_ms"}``. Any other path echoes the
request (method, path, query, headers, body) as JSON, for pass-through tests.

Faults, for the resilience tests: ``POST /__mock__/faults {"faults": [...], "always": {...}}`` scripts
the next requests, one fault each in order (then ``always``, if given, for every later one), e.g.
"fail twice then succeed" is ``{"faults": [{"status": 503}, {"status": 503}]}``. A fault is
``{"status": N}``, ``{"hang_ms": N}`` (wait, then answer), ``{"drop": true}`` (close the connection
without an answer) or ``{"drop_mid_stream": true}`` (a stream breaks off after its first event, a JSON
answer after a few bytes). ``X-Mock-Fault: drop | drop_mid_stream | hang`` does the same per request.
``GET /__mock__/stats`` counts requests (``requests``, and ``answered``: those that got an answer);
``POST /__mock__/reset`` clears faults and counts, and lets every held request go.

Holds, for tests that must not race a clock: a request with ``X-Mock-Hold: <name>`` (or a ``"mock":
{"hold": "<name>"}`` body field, or a scripted fault ``{"hold": "<name>"}``) waits, before it is answered
as it would have been, until ``POST /__mock__/release {"hold": "<name>"}``; a request named after its
release is not held. ``X-Mock-Hold-Stream`` (``"hold_stream"``) holds a streamed answer the same way after
its first content chunk. ``GET /__mock__/stats`` lists how many requests each name holds now (``held``), so
a test polls for "the call has reached the upstream" instead of sleeping.

``/ws`` is a WebSocket echo agent: text frames come back as ``"echo: <text>"``,
binary frames as they are; ``"say <text>"`` answers ``<text>`` alone; ``"bye"`` closes
with 1000, ``"close <code>"`` with that code, ``"drop"`` breaks the connection without
a close frame. ``GET /__mock__/ws`` lists the latest sessions (query, headers, the text
frames received, the client's close code).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import Counter, deque

from aiohttp import WSMsgType, web

WORDS_PER_CHUNK = 3
MAX_LOGGED_FRAMES = 20  # text frames a WebSocket session keeps in its log (a flood test sends thousands)
MAX_LOGGED_FRAME_CHARS = 1000


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
    return ended_answer(prompt, max_tokens)[0]


def ended_answer(prompt: str, max_tokens: int | None = None, stop=()) -> tuple[str, str, str | None]:
    """The answer, why it ended ("end", "length": cut at ``max_tokens`` words, "stop") and the stop sequence met."""
    words = f"Mock answer to: {prompt.strip()[:120]}".split()
    reason = "end"
    if max_tokens and len(words) > max_tokens:
        words, reason = words[: max(1, max_tokens)], "length"
    text = " ".join(words)
    stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str) and s]
    met = min((s for s in stops if s in text), key=text.find, default=None)
    if met is not None:
        text, reason = text[: text.find(met)], "stop"
    return text, reason, met


class MockUpstream:
    def __init__(self, delay_ms: int = 0, status: int = 200):
        self.config = {"delay_ms": delay_ms, "status": status, "chunk_delay_ms": 0}
        self.requests = 0
        self.answered = 0
        self.faults: deque[dict] = deque()
        self.always: dict = {}
        self.ws_sessions: deque[dict] = deque(maxlen=200)
        self.gates: dict[str, asyncio.Event] = {}  # hold name -> set once released
        self.held: Counter[str] = Counter()  # hold name -> requests waiting on it now
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_post("/__mock__/config", self.configure)
        self.app.router.add_get("/__mock__/stats", self.stats)
        self.app.router.add_post("/__mock__/faults", self.set_faults)
        self.app.router.add_post("/__mock__/reset", self.reset)
        self.app.router.add_post("/__mock__/release", self.release)
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_post("/v1/messages", self.messages)
        self.app.router.add_post("/invoke", self.invoke)
        self.app.router.add_get("/__mock__/ws", self.ws_log)
        self.app.router.add_get("/ws", self.websocket)
        self.app.router.add_route("*", "/{tail:.*}", self.echo)

    async def configure(self, request):
        body = await request.json()
        self.config.update({k: int(v) for k, v in body.items() if k in self.config})
        return web.json_response(self.config)

    async def stats(self, request):
        return web.json_response(
            {
                "requests": self.requests,
                "answered": self.answered,
                "faults_left": len(self.faults),
                "held": dict(self.held),
                **self.config,
            }
        )

    async def set_faults(self, request):
        body = await request.json()
        self.faults = deque(f for f in body.get("faults", []) if isinstance(f, dict))
        self.always = body.get("always") if isinstance(body.get("always"), dict) else {}
        return web.json_response({"faults": list(self.faults), "always": self.always})

    async def reset(self, request):
        self.requests = self.answered = 0
        self.faults.clear()
        self.always = {}
        for gate in self.gates.values():
            gate.set()
        self.gates.clear()
        return web.json_response({"requests": 0})

    async def release(self, request):
        """Let every request held under the name go, and any later one with it pass."""
        name = str((await request.json()).get("hold", ""))
        self.gates.setdefault(name, asyncio.Event()).set()
        return web.json_response({"released": name, "were_held": self.held.get(name, 0)})

    async def _hold(self, name: str) -> None:
        """Wait until the test releases ``name`` (counted in ``held`` meanwhile)."""
        gate = self.gates.setdefault(name, asyncio.Event())
        self.held[name] += 1
        try:
            await gate.wait()
        finally:
            self.held[name] -= 1
            if not self.held[name]:
                del self.held[name]

    def _fault(self, request) -> dict:
        """This request's scripted fault, if any (a header wins over the script)."""
        named = request.headers.get("x-mock-fault", "")
        if named:
            return {"drop": True} if named == "drop" else {"hang_ms": 60_000} if named == "hang" else {named: True}
        if self.faults:
            return self.faults.popleft()
        return dict(self.always)

    @staticmethod
    def _breaks_mid_stream(request) -> bool:
        if request.get("fault", {}).get("drop_mid_stream"):
            request.transport.abort()
            return True
        return False

    async def _between_chunks(self, request, step_delay: float) -> None:
        """After a streamed chunk: the mid-stream hold (once, after the first chunk), then the chunk delay."""
        hold = request.pop("hold_stream", None)
        if hold:
            await self._hold(hold)
        if step_delay:
            await asyncio.sleep(step_delay)

    def _chunk_delay(self, request, mock: dict) -> float:
        """Seconds to wait after each streamed chunk (a gateway's translated calls carry no ``mock`` field)."""
        delay = request.headers.get("x-mock-chunk-delay-ms", mock.get("chunk_delay_ms", self.config["chunk_delay_ms"]))
        return float(delay) / 1000

    async def _behave(self, request, body: dict | None):
        """Apply delay and failure settings; return a failure response or None."""
        self.requests += 1
        fault = request["fault"] = self._fault(request)
        mock = (body or {}).get("mock") if isinstance(body, dict) else None
        mock = mock if isinstance(mock, dict) else {}
        hold = request.headers.get("x-mock-hold") or mock.get("hold") or fault.get("hold")
        if hold:  # first, so a held request then fails, drops or answers as it was told to
            await self._hold(str(hold))
        hold_stream = request.headers.get("x-mock-hold-stream") or mock.get("hold_stream") or fault.get("hold_stream")
        if hold_stream:
            request["hold_stream"] = str(hold_stream)
        if fault.get("hang_ms"):
            await asyncio.sleep(int(fault["hang_ms"]) / 1000)
        if fault.get("drop"):
            request.transport.abort()
            return web.Response(status=599)  # never reaches anyone: the connection is gone
        if fault.get("status"):
            error = {"type": "mock_failure", "message": f"mock upstream scripted to fail with {fault['status']}"}
            return web.json_response({"error": error}, status=int(fault["status"]))
        if fault.get("drop_mid_stream") and not (isinstance(body, dict) and body.get("stream")):
            response = web.StreamResponse(headers={"content-type": "application/json"})
            await response.prepare(request)
            await response.write(b'{"id": "chatcmpl-mock", "choi')
            request.transport.abort()
            return response
        delay = int(request.headers.get("x-mock-delay-ms", mock.get("delay_ms", self.config["delay_ms"])))
        status = int(request.headers.get("x-mock-status", mock.get("status", self.config["status"])))
        if delay:
            await asyncio.sleep(delay / 1000)
        if status >= 400:
            return web.json_response(
                {"error": {"type": "mock_failure", "message": f"mock upstream told to fail with {status}"}},
                status=status,
            )
        self.answered += 1
        return None

    async def chat(self, request):
        body = await request.json()
        failure = await self._behave(request, body)
        if failure:
            return failure
        prompt = " ".join(_text(m.get("content")) for m in body.get("messages", []))
        text, ended, _ = ended_answer(
            prompt, body.get("max_tokens") or body.get("max_completion_tokens"), body.get("stop")
        )
        finish_reason = "length" if ended == "length" else "stop"
        mock = body.get("mock") if isinstance(body.get("mock"), dict) else {}
        # ``answer_model``: play an upstream that answers with another model than the one asked for.
        model = mock.get("answer_model") or body.get("model", "mock-model")
        usage = {"prompt_tokens": count_tokens(prompt), "completion_tokens": count_tokens(text)}
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
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
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
        step_delay = self._chunk_delay(request, mock)
        for i in range(0, len(words), WORDS_PER_CHUNK):
            piece = " ".join(words[i : i + WORDS_PER_CHUNK])
            await event(chunk({"content": piece if i == 0 else " " + piece}))
            if self._breaks_mid_stream(request):
                return response
            await self._between_chunks(request, step_delay)
        await event(chunk({}, finish_reason))
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
        text, ended, stop_sequence = ended_answer(prompt, body.get("max_tokens"), body.get("stop_sequences"))
        stop_reason = {"end": "end_turn", "length": "max_tokens", "stop": "stop_sequence"}[ended]
        model = body.get("model", "claude-mock")
        usage = {"input_tokens": count_tokens(prompt), "output_tokens": count_tokens(text)}
        mock = body.get("mock") if isinstance(body.get("mock"), dict) else {}
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_mock",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": stop_reason,
                    "stop_sequence": stop_sequence,
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
        step_delay = self._chunk_delay(request, mock)
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
            if self._breaks_mid_stream(request):
                return response
            await self._between_chunks(request, step_delay)
        if mock.get("fail_mid_stream"):  # play a provider that breaks off with an error event
            await event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            await response.write_eof()
            return response
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
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

    async def websocket(self, request):
        ws = web.WebSocketResponse(protocols=("echo.v1",))
        if not ws.can_prepare(request).ok:
            return await self.echo(request)  # a plain GET, as any other path
        failure = await self._behave(request, None)
        if failure:
            return failure
        await ws.prepare(request)
        session = {
            "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "subprotocol": ws.ws_protocol,
            "received": [],
            "close_code": None,
        }
        self.ws_sessions.append(session)
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
                continue
            if message.type != WSMsgType.TEXT:
                continue
            if len(session["received"]) < MAX_LOGGED_FRAMES:
                session["received"].append(message.data[:MAX_LOGGED_FRAME_CHARS])
            if message.data.startswith("say "):
                await ws.send_str(message.data[len("say ") :])
            elif message.data == "bye":
                await ws.close(code=1000)
            elif message.data.startswith("close "):
                await ws.close(code=int(message.data.split()[1]))
            elif message.data == "drop":
                request.transport.abort()
            else:
                await ws.send_str(f"echo: {message.data}")
        session["close_code"] = ws.close_code
        return ws

    async def ws_log(self, request):
        return web.json_response(list(self.ws_sessions))

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
        headers = {"x-usage-input-tokens": str(count_tokens(text) if text else 0), "x-usage-output-tokens": "2"}
        # A hostile upstream, on request: headers of its choosing (cookies, HTML) on the echo.
        extra = request.headers.get("x-mock-answer-headers")
        response = web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path,
                "query": request.query_string,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": text,
                "output": f"echo: {text[:100]}",
                # ``x-mock-pad-bytes``: an answer that large, its usage at the end (embeddings of many inputs).
                "pad": "x" * int(request.headers.get("x-mock-pad-bytes", "0")),
                "usage": {"input_tokens": count_tokens(text) if text else 0, "output_tokens": 2},
            },
            headers=headers,
        )
        for name, value in (json.loads(extra) if extra else {}).items():
            response.headers.popall(name, None)
            for one in value if isinstance(value, list) else [value]:
                response.headers.add(name, one)
        return response


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
