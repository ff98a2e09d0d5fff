"""The one place an upstream URL is built, from the path exactly as the client sent it.

Every forwarded request's URL comes from ``upstream_url``: the agent's (or path
route's) base, plus the rest of the client's path taken from the ASGI
``raw_path`` (percent-encoding as sent, never a decoded copy), plus the query
minus any ``api_key``. A path that could leave the base (``.``/``..`` segments,
raw or encoded), that hides a separator (encoded ``/ ? #``), or that carries
backslashes, control characters or broken escapes is refused with 400
``invalid_path`` before anything is sent; and the URL as the HTTP client parsed
it must still start with the base, whatever the parser normalised.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_plus, unquote_to_bytes

import httpx

from gateway_project.errors import bad_request

# Encoded characters that would change the path's structure once a server decodes them (once, or twice: %25…):
# / ? # \ . and every control character (C0, DEL), and the overlong UTF-8 leads (C0, C1) that old decoders
# turned into the same.
_ENCODED_FORBIDDEN = re.compile(rb"%(?:25)?(2[fF]|3[fF]|23|5[cC]|[01][0-9a-fA-F]|7[fF])|%[cC][01]|%25(2[eE])")
_BROKEN_ESCAPE = re.compile(rb"%(?![0-9a-fA-F]{2})")
_RAW_FORBIDDEN = re.compile(rb"[\x00-\x20\x7f\\#?]")
# A dot segment, also with path parameters (``..;x``, which Tomcat-like servers read as ``..``).
_DOT_SEGMENT = re.compile(rb"^(\.|%2[eE]){1,2}(;.*)?$")
QUERY_KEY = "api_key"

_parsed: dict[tuple[str, bytes], httpx.URL] = {}


def invalid_path(reason: str):
    return bad_request(f"The request path is not allowed: {reason}.", "invalid_path")


def check_raw_path(raw: bytes) -> None:
    """Raise 400 ``invalid_path`` unless ``raw`` is a plain path that stays where it is put."""
    if _RAW_FORBIDDEN.search(raw):
        raise invalid_path("it contains a control character, a space, a backslash, '?' or '#'")
    if b"%" in raw:
        if _BROKEN_ESCAPE.search(raw):
            raise invalid_path("it contains a '%' that is not a percent-escape")
        if _ENCODED_FORBIDDEN.search(raw):
            raise invalid_path("it contains an encoded '/', '?', '#', '\\' or control character")
    if (b"." in raw or b"%2" in raw) and any(_DOT_SEGMENT.match(segment) for segment in raw.split(b"/")):
        raise invalid_path("it contains a '.' or '..' segment")
    if b"%" in raw and _normalises_to_dots(raw):
        raise invalid_path("it contains a segment that reads as '.' or '..' once normalised")


def _normalises_to_dots(raw: bytes) -> bool:
    """Whether a segment decodes and NFKC-normalises to a dot segment (fullwidth dots, one dot leader, …)."""
    for segment in raw.split(b"/"):
        if b"%" not in segment:
            continue
        text = unicodedata.normalize("NFKC", unquote_to_bytes(segment).decode("utf-8", "replace"))
        if text.split(";", 1)[0] in (".", ".."):
            return True
    return False


def raw_path_of(scope: dict) -> bytes:
    """The path as the client sent it (servers that give no ``raw_path`` get the decoded path re-encoded)."""
    raw = scope.get("raw_path")
    if raw:
        return raw.split(b"?", 1)[0]
    return scope["path"].encode("utf-8", "surrogateescape")


def query_without_key(query: bytes) -> bytes:
    """The query string minus every ``api_key`` parameter: an upstream never sees a caller's key."""
    if not query or b"key" not in query.lower():
        return query
    pairs = query.split(b"&")
    kept = [pair for pair in pairs if pair and unquote_plus(pair.split(b"=", 1)[0].decode("latin-1")) != QUERY_KEY]
    return b"&".join(kept)


def upstream_url(base: str, rest: bytes, query: bytes = b"") -> httpx.URL:
    """``base`` + ``/`` + ``rest`` (a raw path, checked here) + the query minus its key, parsed once and cached.

    The check comes first and the parsed URL is checked again: whatever the HTTP
    client normalises, the path it will send must start with the base's path.
    """
    query = query_without_key(query)
    cache_key = (base, rest + b"?" + query)
    found = _parsed.get(cache_key)
    if found is not None:
        return found
    check_raw_path(rest)
    for byte in query:
        if byte < 0x21 or byte == 0x7F or byte == 0x23:  # control characters, spaces and '#' never go upstream
            raise bad_request("The query string contains a control character, a space or '#'.", "invalid_query")
    base = base.rstrip("/")
    text = f"{base}/{rest.decode('latin-1').lstrip('/')}"
    try:
        url = httpx.URL(text)
        if query:
            url = url.copy_with(query=query)
    except (httpx.InvalidURL, ValueError):
        raise invalid_path("it cannot be made into a URL") from None
    base_path = httpx.URL(base).raw_path.split(b"?", 1)[0].rstrip(b"/")
    sent = url.raw_path.split(b"?", 1)[0]
    if not (sent == base_path or sent.startswith(base_path + b"/") or (not base_path and sent.startswith(b"/"))):
        raise invalid_path("it leaves the upstream's base path")
    if len(_parsed) > 4096:
        _parsed.clear()
    _parsed[cache_key] = url
    return url
