"""Wire shapes: build upstream requests per agent kind, read answers and usage back.

OpenAI chat completions is the gateway's lingua franca; Anthropic messages
and the agent ``/invoke`` shape are translated to and from it here.
"""

from __future__ import annotations

import json
import math
import re
import time

from django.conf import settings

from gateway_project.errors import bad_request

ANTHROPIC_DEFAULT_MAX_TOKENS = 1024


def _text(content) -> str:
    """Plain text of an OpenAI or Anthropic message content (string or parts); whatever else an upstream sends: ""."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _blocks_text(answer: dict) -> str:
    """The text blocks of an Anthropic answer's ``content``, skipping what is not a text block."""
    content = answer.get("content")
    if not isinstance(content, list):
        return content if isinstance(content, str) else ""
    return "".join(
        block["text"]
        for block in content
        if isinstance(block, dict) and block.get("type", "text") == "text" and isinstance(block.get("text"), str)
    )


def validate_chat(payload) -> None:
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise bad_request("'model' is required and must be a string.", "missing_field")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise bad_request("'messages' is required and must be a non-empty list of objects.", "missing_field")
    max_tokens(payload)
    stream_flag(payload)
    stop = payload.get("stop")
    if (
        stop is not None
        and not isinstance(stop, str)
        and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise bad_request("'stop' must be a string or a list of strings.")


def validate_invoke(payload) -> None:
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    if not isinstance(payload.get("input"), str) or not payload["input"].strip():
        raise bad_request("'input' is required and must be a non-empty string.", "missing_field")
    for name in ("agent", "model"):
        if name in payload and payload[name] is not None and not isinstance(payload[name], str):
            raise bad_request(f"'{name}' must be a string.")
    max_tokens(payload)


MAX_CHOICES = 128


def max_tokens(payload: dict) -> int | None:
    """The answer's cap the client set: the larger of ``max_tokens`` and ``max_completion_tokens`` (an upstream may
    honour either), times ``n`` answers; None when it set neither."""
    cap = answer_cap(payload)
    return cap * choices(payload) if cap is not None else None


def answer_cap(payload: dict) -> int | None:
    """The cap on one answer: the larger of ``max_tokens`` and ``max_completion_tokens``; None when neither is set."""
    caps = []
    for name in ("max_completion_tokens", "max_tokens"):
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise bad_request(f"'{name}' must be a positive integer.")
        caps.append(value)
    return max(caps) if caps else None


def completion_answers(payload: dict) -> int:
    """How many answers a legacy ``/v1/completions`` call is billed for: ``best_of`` (generated, though only ``n``
    come back) or ``n``, for each prompt of a batch (a list of strings, or of token lists)."""
    best_of = payload.get("best_of")
    if best_of is not None and (not isinstance(best_of, int) or isinstance(best_of, bool) or best_of < 1):
        raise bad_request("'best_of' must be a positive integer.")
    prompt = payload.get("prompt")
    batch = isinstance(prompt, list) and bool(prompt) and all(isinstance(p, (str, list)) for p in prompt)
    return max(choices(payload), best_of or 1) * (len(prompt) if batch else 1)


def choices(payload: dict) -> int:
    """How many answers the request asks for (OpenAI's ``n``), each billed."""
    n = payload.get("n")
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CHOICES:
        raise bad_request(f"'n' must be an integer from 1 to {MAX_CHOICES}.")
    return n


def stream_flag(payload: dict) -> bool:
    """``stream`` as the request means it: a boolean, or 400 (a string "true" would stream unmetered)."""
    value = payload.get("stream", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request("'stream' must be true or false.")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.")
    return value


def last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return _text(messages[-1].get("content")) if messages else ""


# --- usage ---------------------------------------------------------------


# The most tokens an upstream may report for one request: the usage columns' range. Past it an answer is hostile
# or broken, and counting it whole would overflow the spend counters and the usage row alike.
MAX_REPORTED_TOKENS = 2**31 - 1


def _int(value) -> int:
    """A token count an upstream reported: a non-negative integer, at most ``MAX_REPORTED_TOKENS``; else 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, MAX_REPORTED_TOKENS)


def tokens_in_text(text: str) -> int:
    """A generous estimate of the tokens of ``text``, for an answer whose usage never came: a token per four
    ASCII characters, and one per other character (a CJK character is about one, often more than four bytes)."""
    if text.isascii():
        return -(-len(text) // 4)
    other = sum(1 for char in text if ord(char) > 127)
    return -(-(len(text) - other) // 4) + other


def usage_from_json(obj) -> tuple[int, int] | None:
    """(input, output) tokens from an OpenAI, Anthropic or agent ``usage`` object."""
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
    if "input_tokens" in usage or "output_tokens" in usage:
        return anthropic_input(usage), _int(usage.get("output_tokens"))
    return None


# Anthropic bills prompt-cache writes at 1.25 times the input price when cached five minutes, twice when cached an
# hour, and reads at a tenth of it.
CACHE_WRITE_FACTOR, CACHE_HOUR_WRITE_FACTOR, CACHE_READ_FACTOR = 1.25, 2.0, 0.1
CACHE_FIELDS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def anthropic_input(usage: dict) -> int:
    """An Anthropic ``usage``'s input in input-price tokens: its ``input_tokens`` leave out the prompt cache's
    writes and reads, which are billed too (a prompt cached whole reports a handful of input tokens).

    Writes are split by ``cache_creation`` into five-minute and one-hour ones; what the split does not account for
    (no split given) is charged as one-hour writes, the dearer.
    """
    written, read = (_int(usage.get(name)) for name in CACHE_FIELDS)
    split = usage.get("cache_creation")
    split = split if isinstance(split, dict) else {}
    hour = _int(split.get("ephemeral_1h_input_tokens"))
    minutes = min(_int(split.get("ephemeral_5m_input_tokens")), max(0, written - hour))
    hour = max(hour, written - minutes)  # the writes the split leaves unexplained count as the dearer kind
    total = (
        _int(usage.get("input_tokens"))
        + math.ceil(minutes * CACHE_WRITE_FACTOR + hour * CACHE_HOUR_WRITE_FACTOR)
        + math.ceil(read * CACHE_READ_FACTOR)
    )
    return min(total, MAX_REPORTED_TOKENS)


def usage_from_headers(headers) -> tuple[int, int] | None:
    """(input, output) tokens from ``X-Usage-Input-Tokens`` / ``X-Usage-Output-Tokens``."""
    raw_in, raw_out = headers.get("x-usage-input-tokens"), headers.get("x-usage-output-tokens")
    if raw_in is None and raw_out is None:
        return None
    try:
        return _int(max(0, int(raw_in or 0))), _int(max(0, int(raw_out or 0)))
    except ValueError:
        return None


# --- OpenAI chat <-> Anthropic messages ----------------------------------


# Parts of OpenAI's chat API with no translation to Anthropic's here: refused rather than dropped.
_TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call")


def _anthropic_block(part, where: str) -> dict:
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    image = part.get("image_url") if isinstance(part, dict) and part.get("type") == "image_url" else None
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[len("data:") :].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if isinstance(url, str) and url:
        return {"type": "image", "source": {"type": "url", "url": url}}
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    raise bad_request(
        f"'{where}' is a '{kind}' part, which cannot be sent to an Anthropic model.", "unsupported_content"
    )


def _anthropic_content(content, where: str):
    """A chat message's content as Anthropic's: a string, or text and image blocks."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise bad_request(f"'{where}' must be a string or a list of content parts.")
    blocks = [_anthropic_block(part, f"{where}.{i}") for i, part in enumerate(content)]
    return blocks[0]["text"] if len(blocks) == 1 and blocks[0]["type"] == "text" else blocks


def chat_to_anthropic(payload: dict) -> dict:
    """The Anthropic messages request for a chat one; tool calling is refused, not silently dropped."""
    for name in _TOOL_FIELDS:
        if payload.get(name):
            raise bad_request(
                f"'{name}' cannot be sent to an Anthropic model through this API.", "unsupported_parameter"
            )
    if isinstance(payload.get("n"), int) and payload["n"] > 1:
        raise bad_request("An Anthropic model gives one choice per request: 'n' must be 1.", "unsupported_parameter")
    system, messages = [], []
    for i, m in enumerate(payload["messages"]):
        role = m.get("role")
        if role in ("tool", "function") or m.get("tool_calls"):
            raise bad_request(
                f"'messages.{i}' is a tool call or result, which cannot be sent to an Anthropic model.",
                "unsupported_content",
            )
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        else:
            content = _anthropic_content(m.get("content"), f"messages.{i}.content")
            messages.append({"role": "assistant" if role == "assistant" else "user", "content": content})
    body = {
        "model": payload["model"],
        "messages": messages,
        "max_tokens": max_tokens(payload) or ANTHROPIC_DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = "\n".join(system)
    for name in ("temperature", "top_p", "stream"):
        if payload.get(name) is not None:
            body[name] = payload[name]
    if payload.get("stop"):
        stop = payload["stop"]
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(payload.get("user"), str) and payload["user"]:
        body["metadata"] = {"user_id": payload["user"]}
    return body


# Anthropic stop_reason -> OpenAI finish_reason
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def anthropic_to_chat(answer: dict, model: str, request_id: str) -> dict:
    text = _blocks_text(answer)
    input_tokens, output_tokens = usage_from_json(answer) or (0, 0)
    answered = answer.get("model")
    return chat_completion(
        request_id,
        answered if isinstance(answered, str) and answered else model,
        text,
        input_tokens,
        output_tokens,
        FINISH_REASONS.get(answer.get("stop_reason"), "stop") if isinstance(answer.get("stop_reason"), str) else "stop",
    )


def chat_completion(request_id, model, text, input_tokens, output_tokens, finish_reason="stop") -> dict:
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


def chat_text(answer: dict) -> str:
    try:
        return _text(answer["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        return ""


# --- agent /invoke -------------------------------------------------------


def invoke_body(text: str, model: str, limit: int | None) -> dict:
    body = {"input": text}
    if model:
        body["model"] = model
    if limit:
        body["max_tokens"] = limit
    return body


def agent_text(answer) -> str:
    if not isinstance(answer, dict):
        return ""
    output = answer.get("output")
    return output if isinstance(output, str) else _text(output)


def anthropic_text(answer: dict) -> str:
    return _blocks_text(answer)


# Content parts whose billed input the body's size does not show (OpenAI's chat and Responses shapes, Anthropic's).
IMAGE_PARTS = frozenset({"image_url", "image", "input_image"})
DOCUMENT_PARTS = frozenset({"file", "document", "input_file"})
AUDIO_PARTS = frozenset({"input_audio", "audio"})  # billed at audio token prices, several times the text ones
# What a body must hold (in any case) to name a media part or a cache's time to live, or to hide one behind a
# ``\u`` escape. Looked for with ``in`` in the lowered bytes: a case-blind regular expression of alternatives
# cost more than the rest of the check.
_MEDIA_HINTS = (b"image", b"file", b"document", b"audio", b"ttl", b"\\u")


def _may_name_media(body: bytes) -> bool:
    lowered = body.lower()
    for hint in _MEDIA_HINTS:  # a loop, not any() of a generator: half the cost on a small body
        if hint in lowered:
            return True
    return False


def content_parts(node):
    """Every content part (a dict with a ``type``) in ``node``, however nested (a tool result's content too); an
    image, document or audio part is not looked into (its ``source`` has a ``type`` of its own), except a
    document made of content blocks."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str):
                yield node
                if kind in DOCUMENT_PARTS:
                    source = node.get("source")
                    if isinstance(source, dict) and source.get("type") == "content":
                        stack.append(source.get("content"))  # a document of content blocks: images among them
                    continue
                if kind in IMAGE_PARTS or kind in AUDIO_PARTS:
                    continue
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def referenced_input_tokens(body: bytes) -> int:
    """The input an upstream may bill beyond what the body's size shows: ``IMAGE_INPUT_TOKENS`` per image part and
    ``DOCUMENT_INPUT_TOKENS`` per document or file part, wherever they are nested (a tool result's content too).

    A 60-byte document URL can bill a model's whole context window, and a small
    base64 image thousands of tokens: reserved at four bytes a token, such a request
    spent ten times what it reserved, past a hard budget. A document whose text is
    in the body (source ``text`` or ``content``) needs no allowance. The body is read
    again only when it may hold such a part (or hides names behind ``\\u`` escapes).
    """
    if not _may_name_media(body):
        return 0
    try:
        node = json.loads(body)
    except (ValueError, RecursionError):
        return 0
    images = documents = 0
    for part in content_parts(node):
        kind = part["type"]
        if kind in IMAGE_PARTS:
            images += 1
        elif kind in DOCUMENT_PARTS:
            source = part.get("source")
            documents += not (isinstance(source, dict) and source.get("type") in ("text", "content"))
    allowance = settings.GATEWAY
    referenced = images * allowance["IMAGE_INPUT_TOKENS"] + documents * allowance["DOCUMENT_INPUT_TOKENS"]
    if _caches_for_an_hour(node):  # a write at twice the input price: the body and what it refers to, once more
        return 2 * referenced + len(body)
    return referenced


def _caches_for_an_hour(node) -> bool:
    """Whether a request asks Anthropic to cache anything for an hour (``cache_control.ttl`` "1h")."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            control = node.get("cache_control")
            if isinstance(control, dict) and control.get("ttl") == "1h":
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


# Billed beyond the tokens an answer reports: OpenAI's priority tiers and audio; server-side tools (Anthropic's web
# search at a price per search, code execution per container hour, web fetch and remote MCP servers whose results
# are input the body does not show; OpenAI's search models' ``web_search_options``).
METERED_TIERS = frozenset({"auto", "default", "flex"})
UNPRICED_TOOL_TYPES = ("web_search", "web_fetch", "code_execution")
# Billed beyond what the gateway can reserve: web searches, MCP and container time, and a predicted output's
# rejected tokens (at the output price, past ``max_tokens``).
UNPRICED_FIELDS = ("web_search_options", "mcp_servers", "container", "prediction")


def refuse_unpriced(payload: dict, route) -> None:
    """400 for what an upstream bills beyond the tokens the gateway meters, unless an admin marked the agent
    ``unmetered_pass_through``: a key must not spend what its budget cannot see."""
    tier = payload.get("service_tier")
    if tier is not None and not isinstance(tier, str):
        raise bad_request("'service_tier' must be a string.")
    if route.unmetered_pass_through:
        return
    if tier is not None and tier not in METERED_TIERS:
        _unpriced(f"service_tier '{tier[:40]}'", route)
    for name in UNPRICED_FIELDS:
        if payload.get(name) is not None:
            _unpriced(f"'{name}'", route)
    modalities = payload.get("modalities")
    if payload.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        _unpriced("audio output", route)
    tools = payload.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith(UNPRICED_TOOL_TYPES):
            _unpriced(f"the server tool '{kind[:60]}'", route)
    if any(part.get("type") in AUDIO_PARTS for part in content_parts(payload.get("messages"))):
        _unpriced("audio input", route)


# Anthropic betas that bill beyond the prices the gateway knows (prompts past 200K tokens at a long-context rate).
UNPRICED_BETAS = ("context-1m",)


def refuse_unpriced_headers(headers: list[tuple[bytes, bytes]], route) -> None:
    """400 for a metered pass-through call whose ``anthropic-beta`` header switches on a pricing the gateway does
    not meter, unless the agent is ``unmetered_pass_through``."""
    if route.unmetered_pass_through:
        return
    for name, value in headers:
        if name.lower() == b"anthropic-beta":
            for beta in value.decode("latin-1").split(","):
                if beta.strip().lower().startswith(UNPRICED_BETAS):
                    _unpriced(f"the beta '{beta.strip()[:60]}'", route)


def _unpriced(what: str, route) -> None:
    raise bad_request(
        f"{what} is billed beyond the tokens the gateway meters, so it is not sent to the agent '{route.slug}' "
        "(an admin may allow unmetered pass-through for the agent).",
        "unpriced_option",
    )


# As the tokenizers split text before merging (cl100k, o200k): a run of letters (a capital starts a new one), up
# to three digits, or any one other character that is not a space; no token spans two of these pieces.
_PIECES = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]{1,3}|[^\sA-Za-z0-9]")


def dense_input_estimate(body: bytes) -> int:
    """Input tokens of ``body`` for a charge made without the upstream's count (an unread or cut answer): the pieces
    the tokenizers split text into before merging (letters, digits, other characters; no token spans two), each a
    token for every four letters (rounded up) or for up to three digits. Four letters a token charged "a1a1…" (a
    token a character) a quarter of its bill, and four bytes a token a prompt of small numbers ("0 0 0 …") half."""
    text = body.decode("utf-8", "replace")
    return sum((len(piece) + 3) // 4 if piece[0].isalpha() else 1 for piece in _PIECES.findall(text))
