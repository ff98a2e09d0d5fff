"""Anthropic's Messages API as the gateway serves it, whatever provider answers.

A ``POST /v1/messages`` request is checked here; for an OpenAI-compatible
provider or an agent it is translated to their shape, and their answer back
into an Anthropic message. An Anthropic provider gets the request as it came.
Streams are translated in ``routing.sse``.
"""

from __future__ import annotations

from gateway_project.errors import bad_request
from routing.protocols import chat_text, usage_from_json

ROLES = ("user", "assistant")
# Parts of Anthropic's API with no counterpart elsewhere: they need an Anthropic provider.
ANTHROPIC_ONLY = ("tools", "tool_choice", "thinking", "mcp_servers", "container")
# OpenAI finish_reason -> Anthropic stop_reason. OpenAI does not say whether a stop sequence ended
# the answer, so "stop" is always "end_turn".
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "refusal",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
}


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_content(content, where: str, *, text_only: bool = False) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list) or (not content and not text_only):
        raise bad_request(f"'{where}' must be a string or a non-empty list of content blocks.")
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise bad_request(f"'{where}.{i}' must be a content block: an object with a 'type'.")
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            raise bad_request(f"'{where}.{i}.text' must be a string.")
        if text_only and block["type"] != "text":
            raise bad_request(f"'{where}.{i}' must be a text block.")


def validate_messages(payload) -> None:
    """Refuse, with a 400 that says what is wrong, a body Anthropic's API would refuse."""
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    if not isinstance(payload.get("model"), str) or not payload["model"]:
        raise bad_request("'model' is required and must be a string.", "missing_field")
    if "max_tokens" not in payload:
        raise bad_request("'max_tokens' is required.", "missing_field")
    if not _positive_int(payload["max_tokens"]):
        raise bad_request("'max_tokens' must be a positive integer.")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' is required and must be a non-empty list.", "missing_field")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise bad_request(f"'messages.{i}.role' must be 'user' or 'assistant'.")
        _check_content(message.get("content"), f"messages.{i}.content")
    if payload.get("system") is not None:
        _check_content(payload["system"], "system", text_only=True)
    stops = payload.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)):
        raise bad_request("'stop_sequences' must be a list of non-empty strings.")
    for name in ("temperature", "top_p"):
        value = payload.get(name)
        if value is not None and (not _number(value) or not 0 <= value <= 1):
            raise bad_request(f"'{name}' must be a number from 0 to 1.")
    if payload.get("top_k") is not None and not _positive_int(payload["top_k"]):
        raise bad_request("'top_k' must be a positive integer.")
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise bad_request("'stream' must be true or false.")
    metadata = payload.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or not isinstance(metadata.get("user_id"), str | None)):
        raise bad_request("'metadata' must be an object whose 'user_id' is a string.")


# --- Anthropic request -> OpenAI chat request -----------------------------


def ensure_translatable(payload: dict, model: str) -> None:
    """400 for what only an Anthropic model understands, rather than answer without it."""
    for name in ANTHROPIC_ONLY:
        if payload.get(name) is not None:
            raise bad_request(
                f"'{name}' needs an Anthropic model; '{model}' is served through another API.", "unsupported_parameter"
            )


def _chat_part(block: dict, where: str) -> dict:
    if block["type"] == "text":
        return {"type": "text", "text": block["text"]}
    source = block.get("source") if block["type"] == "image" else None
    if isinstance(source, dict) and source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    raise bad_request(
        f"'{where}' is a '{block['type']}' block, which only an Anthropic model accepts.", "unsupported_content"
    )


def _chat_content(content, where: str):
    if isinstance(content, str):
        return content
    parts = [_chat_part(block, f"{where}.{i}") for i, block in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def system_text(system) -> str:
    if isinstance(system, list):
        return "\n".join(block["text"] for block in system)
    return system or ""


def messages_to_chat(payload: dict, model: str) -> dict:
    """The OpenAI chat request for an Anthropic one (``top_k``, a sampling hint OpenAI lacks, is dropped)."""
    ensure_translatable(payload, model)
    messages = []
    system = system_text(payload.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(payload["messages"]):
        messages.append(
            {"role": message["role"], "content": _chat_content(message["content"], f"messages.{i}.content")}
        )
    body = {"model": model, "messages": messages, "max_tokens": payload["max_tokens"]}
    for name in ("temperature", "top_p"):
        if payload.get(name) is not None:
            body[name] = payload[name]
    if payload.get("stop_sequences"):
        body["stop"] = payload["stop_sequences"]
    user = (payload.get("metadata") or {}).get("user_id")
    if user:
        body["user"] = user
    if payload.get("stream"):
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the gateway meters from it
    return body


# --- answers -> Anthropic message -----------------------------------------


def message(request_id: str, model: str, text: str, input_tokens: int, output_tokens: int, stop_reason="end_turn"):
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}] if text else [],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def chat_to_message(answer: dict, model: str, request_id: str) -> dict:
    choices = answer.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    input_tokens, output_tokens = usage_from_json(answer) or (0, 0)
    answered = answer.get("model")
    reason = choice.get("finish_reason")
    return message(
        request_id,
        answered if isinstance(answered, str) and answered else model,
        chat_text(answer),
        input_tokens,
        output_tokens,
        STOP_REASONS.get(reason, "end_turn") if isinstance(reason, str) else "end_turn",
    )


def error_payload(error_type: str, text: str) -> dict:
    """An Anthropic error object, as an ``error`` stream event carries it."""
    return {"type": "error", "error": {"type": error_type, "message": text}}
