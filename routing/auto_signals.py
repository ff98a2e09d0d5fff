"""What model auto-routing reads of a request: its complexity, its keywords and the capabilities it asks for.

Pure functions of the request's text and body, bounded in cost whatever they are
given (only the first ``MAX_READ_CHARS`` characters of a text are read) and never
raising: the hot path computes them once per auto-routed request, and the rules
(``routing.auto_route``) compare them.

The complexity score is a number from 0 to 1, two decimals:

    0.40 * min(1, words / 1500)           how long the prompt is
  + 0.30 * min(1, code fences / 4)        ``` pairs: code to read or write
  + 0.15 * min(1, question marks / 5)     how many things are asked
  + 0.15 * min(1, reasoning words / 5)    different ones of "why", "explain", "prove", ...

Each part only grows as text is appended after a space or a line break, so the
score never falls when a prompt grows so (a property test checks it).
"""

from __future__ import annotations

import re
import string

from django.core.exceptions import ValidationError

from routing.protocols import IMAGE_PARTS

# Only the start of a text is read: a megabyte prompt costs no more than this, and every part saturates long before.
MAX_READ_CHARS = 100_000
MAX_KEYWORDS = 20
MAX_KEYWORD_LENGTH = 50
CAPABILITIES = ("tools", "vision", "json")

WORDS_AT_FULL_LENGTH = 1500
FENCES_AT_FULL = 4
QUESTIONS_AT_FULL = 5
CUES_AT_FULL = 5
REASONING_CUES = frozenset(
    {"why", "explain", "prove", "derive", "analyze", "analyse", "compare", "design", "optimize", "optimise",
     "refactor", "debug", "tradeoffs", "architecture", "algorithm", "complexity", "reasoning", "evaluate"}
)  # fmt: skip
# Punctuation splits words as spaces do ("step-by-step" is three words, "don't" two); "_" joins them, as in code.
# Unicode punctuation common in prose: dashes, curly quotes, guillemets, the ellipsis, CJK and full-width marks.
_PROSE_PUNCTUATION = (
    "\u2013\u2014\u2018\u2019\u201c\u201d\u00ab\u00bb\u2026\u00b7"
    "\u3001\u3002\u300c\u300d\u3010\u3011\uff01\uff08\uff09\uff0c\uff1a\uff1b\uff1f"
)
_SEPARATORS = str.maketrans(dict.fromkeys(string.punctuation.replace("_", "") + _PROSE_PUNCTUATION, " "))
_KEYWORD_CHARS = re.compile(r"[\w\s'-]+")

JSON_FORMATS = frozenset({"json_object", "json_schema"})


def read(text) -> tuple[float, str]:
    """The complexity score of ``text`` (the formula is in the module's docstring) and its words (``words_of``),
    reading it once; 0 and no words for anything not text."""
    score, words, _vocabulary = read_all(text)
    return score, words


def read_all(text) -> tuple[float, str, frozenset[str]]:
    """``read``, and the set of the text's different words: a keyword with a word not in it cannot match, found
    without scanning the text (``first_keyword``)."""
    if not isinstance(text, str) or not text:
        return 0.0, " ", frozenset()
    text = text[:MAX_READ_CHARS]
    words = _words(text)
    vocabulary = frozenset(words)
    cues = len(REASONING_CUES.intersection(vocabulary))  # different ones: "why why why why why" is not five
    score = (
        0.40 * min(1.0, len(words) / WORDS_AT_FULL_LENGTH)
        + 0.30 * min(1.0, text.count("```") // 2 / FENCES_AT_FULL)
        + 0.15 * min(1.0, text.count("?") / QUESTIONS_AT_FULL)
        + 0.15 * min(1.0, cues / CUES_AT_FULL)
    )
    return round(min(1.0, score), 2), " " + " ".join(words) + " ", vocabulary


def complexity(text) -> float:
    """The prompt's complexity from 0 to 1."""
    return read(text)[0]


def words_of(text) -> str:
    """The text's words, lower-cased and joined by single spaces, with a space at each end: what keywords are
    looked for in (a keyword matches whole words only: "code" is not found in "decode")."""
    return read(text)[1]


def _words(text: str) -> list[str]:
    """Lower-cased words: runs of anything but spaces and punctuation (a translation and a split: a third of the
    cost of a regular expression's ``\\w+`` on a 2 KB prompt)."""
    return text[:MAX_READ_CHARS].lower().translate(_SEPARATORS).split()


def normal_keyword(keyword: str) -> str:
    """A keyword as it is matched: its words, lower-cased, joined by single spaces ("Step-By-Step" -> "step by
    step")."""
    return " ".join(_words(keyword))


def clean_keywords(value) -> list[str]:
    """Keywords as saved: at most ``MAX_KEYWORDS``, each a word or phrase of letters, digits, spaces, hyphens and
    apostrophes, at most ``MAX_KEYWORD_LENGTH`` characters; trimmed, duplicates dropped."""
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError("Give a list of words or phrases.")
    kept: list[str] = []
    for raw in value:
        keyword = " ".join(raw.split())
        if not keyword:
            continue
        if len(keyword) > MAX_KEYWORD_LENGTH:
            raise ValidationError(f"“{keyword[:20]}…” is longer than {MAX_KEYWORD_LENGTH} characters.")
        if not _KEYWORD_CHARS.fullmatch(keyword) or not normal_keyword(keyword):
            raise ValidationError(
                f"“{keyword}”: a keyword is letters, digits, spaces, “-” and “'” only (matched as whole words)."
            )
        if keyword.lower() not in (k.lower() for k in kept):
            kept.append(keyword)
    if len(kept) > MAX_KEYWORDS:
        raise ValidationError(f"At most {MAX_KEYWORDS} keywords a rule.")
    return kept


def clean_capabilities(value) -> list[str]:
    """The capabilities a rule asks for: a list drawn from ``CAPABILITIES``, each once, in that order."""
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError(f"Give a list drawn from {', '.join(CAPABILITIES)}.")
    unknown = [item for item in value if item not in CAPABILITIES]
    if unknown:
        raise ValidationError(f"Unknown capability “{unknown[0]}”: choose from {', '.join(CAPABILITIES)}.")
    return [name for name in CAPABILITIES if name in value]


def first_keyword(words: str, keywords: tuple[str, ...], vocabulary: frozenset[str] | None = None) -> str:
    """The first of ``keywords`` (normalised) found as whole words in ``words`` (from ``words_of``), or "".

    With the text's ``vocabulary`` (``read_all``), a one-word keyword is a set look-up and a phrase is looked for in
    the text only when each of its words is in it: scanning a 100,000-character prompt for each keyword of every
    rule cost about 25 µs a keyword, some 10 ms of the event loop for 20 rules of 20 keywords."""
    for keyword in keywords:
        if vocabulary is not None:
            parts = keyword.split(" ")
            if not all(part in vocabulary for part in parts):
                continue
            if len(parts) == 1:
                return keyword
        if f" {keyword} " in words:
            return keyword
    return ""


def asked_capabilities(payload) -> frozenset[str]:
    """What a chat or messages request needs of its model: ``tools`` (tools or functions offered), ``vision`` (an
    image part in its messages or system prompt), ``json`` (a JSON ``response_format``)."""
    if not isinstance(payload, dict):
        return frozenset()
    asked = set()
    if payload.get("tools") or payload.get("functions"):
        asked.add("tools")
    response_format = payload.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if isinstance(kind, str) and kind in JSON_FORMATS:
        asked.add("json")
    if _has_image(payload.get("messages")) or _has_image(payload.get("system")):
        asked.add("vision")
    return frozenset(asked)


def _has_image(node) -> bool:
    """Whether an image part is anywhere in ``node`` (a tool result's content too); iterative, so any depth."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if isinstance(kind, str) and kind in IMAGE_PARTS:
                return True
            stack.extend(value for value in node.values() if isinstance(value, (dict, list)))
        elif isinstance(node, list):
            stack.extend(item for item in node if isinstance(item, (dict, list)))
    return False
