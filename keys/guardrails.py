"""Guardrail detectors: personal data, secrets and prompt injection in text, found, checked and redacted.

Each detector is a bounded regular expression, with a code check where the kind has one
(Luhn for card numbers, ISO 7064 mod 97 for IBANs, each national ID's own check), so a
random run of digits is not a card. ``Detector.scan`` finds the matches in a text;
``redact`` puts a placeholder (``[EMAIL]``) in their place; ``injection_score`` adds up the
weights of the prompt-injection cues a text holds (0 to 100). ``hold_from`` says where the
end of a streamed text may still be the start of a match, so a stream is held back only
that far. Matching runs on RE2 (linear time, one pass for every detector of a guardrail).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import re2

MAX_SCAN_CHARS = 1_000_000  # the injection score reads no further (detectors read all of a text, in parts)
SCAN_PART_CHARS = 1_000_000  # a longer text is scanned in parts of this many characters ...
PART_OVERLAP = 8_192  # ... each running on this far into the next, past the longest match
MAX_RETRIES = 1_000  # refused candidates searched again one character on, per text (each costs a few searches)


# --- code checks ----------------------------------------------------------------------------------------------------


def luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = ord(char) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: the country and check digits moved to the end, letters as numbers, the whole mod 97 is 1."""
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1
    except ValueError:
        return False


def iban_length(text: str) -> int:
    """The length of the longest IBAN ``text`` starts with (0: none): a candidate written in groups may run on into
    the next number ("DE89 3704 0044 0532 0130 00 4111 ..."), so shorter ends are tried too."""
    for end in range(len(text), 14, -1):
        if text[end - 1] != " " and iban_valid(text[:end]):
            return end
    return 0


def es_dni_valid(text: str) -> bool:
    compact = text.replace("-", "")
    return "TRWAGMYFPDXBNJZSQVHLCKE"[int(compact[:8]) % 23] == compact[8].upper()


def nl_bsn_valid(text: str) -> bool:
    """The Dutch citizen service number's eleven test."""
    total = sum(int(d) * (9 - i) for i, d in enumerate(text[:8])) - int(text[8])
    return total % 11 == 0 and text != "000000000"


def card_length(text: str) -> int:
    """The length of the longest card number (13-19 digits, Luhn) ``text`` starts with (0: none): a candidate written
    in groups may run on into the next number ("4111 1111 1111 1111 4111 ...")."""
    ends = [i + 1 for i, char in enumerate(text) if char.isdigit()]
    digits = _digits(text)
    for count in range(min(19, len(ends)), 12, -1):
        if luhn(digits[:count]):
            return ends[count - 1]
    return 0


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


# --- detectors ------------------------------------------------------------------------------------------------------


class Finding(NamedTuple):
    detector: str  # email, phone, card, iban, national_id, secret
    kind: str  # the detector's own kind: us_ssn, aws_access_key ...
    start: int
    end: int


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


# What may not touch a match on either side, so that a match is a whole token and not a piece of a longer one.
EDGES: dict[str, Callable[[str], bool]] = {
    "alnum": str.isalnum,
    "word": _word,
    "word_dash": lambda c: _word(c) or c == "-",
    "word_plus": lambda c: _word(c) or c == "+",
    "digit_dash": lambda c: c.isdigit() or c == "-",
    "none": lambda c: False,
}


class Pattern(NamedTuple):
    kind: str
    expression: str  # RE2 syntax: linear time, no lookarounds (``edge`` and ``check`` do their work)
    edge: str = "word"
    check: Callable[[str], bool] | None = None
    trim: Callable[[str], int] | None = None  # the length of the valid match at the candidate's start (0: none)


def _us_ssn(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_NINO_PREFIXES = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})

PLACEHOLDERS = {
    "email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]", "national_id": "[NATIONAL_ID]",
    "secret": "[SECRET]",
}  # fmt: skip

PATTERNS: dict[str, list[Pattern]] = {
    "email": [
        Pattern(
            "email", r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}", "none"
        )
    ],
    "phone": [
        Pattern("phone", r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}", "word_plus", lambda t: 8 <= len(_digits(t)) <= 15),
        Pattern("phone", r"\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}", "word_plus"),
    ],
    "card": [Pattern("card", r"\d(?:[ -]?\d){12,18}", "digit_dash", trim=card_length)],
    "iban": [Pattern("iban", r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", "alnum", trim=iban_length)],
    "secret": [
        Pattern("aws_access_key", r"(?:AKIA|ASIA)[A-Z0-9]{16}", "alnum"),
        Pattern("github_token", r"gh[pousr]_[A-Za-z0-9]{36,255}", "word"),
        Pattern("github_token", r"github_pat_[A-Za-z0-9_]{22,255}", "word"),
        Pattern("openai_key", r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,200}", "word_dash"),
        Pattern("slack_token", r"xox[abprs]-[A-Za-z0-9-]{10,200}", "word_dash"),
        Pattern("google_api_key", r"AIza[0-9A-Za-z_-]{35}", "word_dash"),
        Pattern("private_key", r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----", "none"),
        Pattern("jwt", r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", "word_dash"),
        Pattern("gateway_key", r"agk_[A-Za-z0-9_-]{20,100}", "word_dash"),
    ],
}
NATIONAL_IDS: dict[str, Pattern] = {
    "us_ssn": Pattern("us_ssn", r"\d{3}-\d{2}-\d{4}", "digit_dash", _us_ssn),
    "uk_nino": Pattern(
        "uk_nino",
        r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]",
        "alnum",
        lambda t: t[:2] not in _NINO_PREFIXES,
    ),
    "es_dni": Pattern("es_dni", r"\d{8}-?[A-Za-z]", "alnum", es_dni_valid),
    "nl_bsn": Pattern("nl_bsn", r"\d{9}", "digit_dash", nl_bsn_valid),
}
DETECTORS = (*PATTERNS, "national_id", "injection")  # injection is scored, not matched: see injection_score
NATIONAL_ID_CHOICES = tuple(NATIONAL_IDS)
MAX_MATCH = 2048  # longer than any detector's match but a JWT's (whose length has no bound; most are far shorter)
MAX_HOLD = 4096  # characters of a streamed answer held back at most (a longer match in progress is not waited for)
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 64 << 20  # every pattern at once: the default 8 MB is too little for their DFA
_RE2_OPTIONS.log_errors = False


class Detector:
    """The matching detectors of a guardrail, compiled once into one RE2 pattern: one linear pass over the text."""

    def __init__(self, detectors: Iterable[str], national_ids: Iterable[str] = NATIONAL_ID_CHOICES):
        chosen = []
        for name in detectors:
            if name == "national_id":
                chosen += [("national_id", NATIONAL_IDS[kind]) for kind in national_ids if kind in NATIONAL_IDS]
            else:
                chosen += [(name, pattern) for pattern in PATTERNS.get(name, ())]
        self._entries = chosen
        # One capturing group an entry (their own groups do not capture): the match's lastindex names the entry.
        # Compiled on bytes and run on the text's UTF-8: the wrapper's str positions are converted from the start of
        # the text on every call, which made a scan of many candidates quadratic.
        expression = "|".join(f"({pattern.expression})" for _, pattern in chosen)
        self._pattern = re2.compile(expression.encode(), options=_RE2_OPTIONS) if chosen else None
        self._each = [re2.compile(pattern.expression.encode(), options=_RE2_OPTIONS) for _, pattern in chosen]

    def __bool__(self) -> bool:
        return self._pattern is not None

    def scan(self, text: str) -> list[Finding]:
        """The matches in ``text`` that are whole tokens and pass their code check, in order (linear in the text)."""
        if self._pattern is None or not text:
            return []
        if len(text) <= SCAN_PART_CHARS:
            return self._scan_part(text)
        found: list[Finding] = []  # a long text: in parts overlapping by more than any match is long
        for at in range(0, len(text), SCAN_PART_CHARS):
            last = at + SCAN_PART_CHARS >= len(text)
            for finding in self._scan_part(text[at : at + SCAN_PART_CHARS + PART_OVERLAP]):
                if (finding.start < SCAN_PART_CHARS or last) and (not found or at + finding.start >= found[-1].end):
                    found.append(finding._replace(start=at + finding.start, end=at + finding.end))
        return found

    def _scan_part(self, text: str) -> list[Finding]:
        text, where = folded(text)
        found = self._scan(text)
        if where is None:
            return found
        return [finding._replace(start=where[finding.start], end=where[finding.end - 1] + 1) for finding in found]

    def _scan(self, text: str) -> list[Finding]:
        data = text.encode("utf-8", "surrogatepass")
        found, at, retries = [], 0, 0
        while True:
            match = self._pattern.search(data, at)
            if match is None:
                break
            first = match.lastindex - 1  # (lastgroup costs a decoding of every group's name a match)
            start = match.start()
            finding = self._accepted(data, first, start, match.end())
            if finding is None and retries < MAX_RETRIES:
                # Refused: another detector may match here ("123-45-6789 4111" is a card candidate first), or a
                # match may start inside it ("...0130 00 4111 1111 ...").
                retries += 1
                finding = next(
                    (f for i, single in enumerate(self._each) if i != first
                     and (m := single.match(data, start)) is not None
                     and (f := self._accepted(data, i, start, m.end())) is not None),
                    None,
                )  # fmt: skip
                if finding is None:
                    at = start + 1
                    continue
            if finding is None:
                at = match.end()
                continue
            found.append(finding)
            at = finding.end
        return found if text.isascii() else _in_characters(data, found)

    def _accepted(self, data: bytes, index: int, start: int, end: int) -> Finding | None:
        """The finding of entry ``index`` over ``data[start:end]`` if it is a whole token and passes its check."""
        detector, pattern = self._entries[index]
        touches = EDGES[pattern.edge]
        if start and touches(_char_before(data, start)):  # first: the cheapest refusal (a long run of digits)
            return None
        value = data[start:end].decode("utf-8", "replace")  # the patterns match ASCII only: whole characters
        if pattern.trim is not None:
            end = start + pattern.trim(value)
            value = value[: end - start]
        if end <= start or (end < len(data) and touches(_char_at(data, end))):
            return None
        if pattern.check is not None and not pattern.check(value):
            return None
        return Finding(detector, pattern.kind, start, end)


# Format characters a reader does not see (zero-width spaces and joiners, the soft hyphen, direction marks): one
# between the digits of a card number must not hide it.
_INVISIBLE = re.compile("[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def folded(text: str) -> tuple[str, Sequence[int] | None]:
    """``text`` as the detectors read it: compatibility forms folded (NFKC: full-width digits and letters, ligatures,
    mathematical letters) and invisible format characters dropped; with, when it differs, each of its characters'
    position in ``text`` (and a last entry past the end), so a finding maps back onto the text as written."""
    if text.isascii() or (unicodedata.is_normalized("NFKC", text) and not _INVISIBLE.search(text)):
        return text, None
    out: list[str] = []
    where = array("l")
    for at, char in enumerate(text):
        if char.isascii():
            out.append(char)
            where.append(at)
            continue
        if _INVISIBLE.match(char):
            continue
        pieces = unicodedata.normalize("NFKC", char)
        if len(pieces) > 3:  # a long ligature (U+FDFA is 18 letters): no detector reads it, and it swells the text
            pieces = char
        for piece in pieces:
            out.append(piece)
            where.append(at)
    where.append(len(text))
    return "".join(out), where


def _char_before(data: bytes, at: int) -> str:
    """The character ending at byte ``at`` (a UTF-8 sequence is at most 4 bytes)."""
    return data[max(0, at - 4) : at].decode("utf-8", "replace")[-1:]


def _char_at(data: bytes, at: int) -> str:
    return data[at : at + 4].decode("utf-8", "replace")[:1]


def _in_characters(data: bytes, found: list[Finding]) -> list[Finding]:
    """``found`` with byte offsets turned into character offsets, in one pass over the text."""
    out, byte_at, char_at = [], 0, 0
    for finding in found:
        char_at += len(data[byte_at : finding.start].decode("utf-8", "surrogatepass"))
        length = len(data[finding.start : finding.end].decode("utf-8", "surrogatepass"))
        out.append(finding._replace(start=char_at, end=char_at + length))
        byte_at, char_at = finding.end, char_at + length
    return out


def hold_from(text: str) -> int:
    """Where the end of a streamed ``text`` may still be the start of a match that more text would complete: the
    trailing token (letters, digits and ``@._%+-()/=:``), and before it the groups of digits and capitals that
    numbers, IBANs and IDs are written in with single spaces. What comes before may be sent; at most ``MAX_HOLD``
    characters are held."""
    end = len(text)
    floor = max(0, end - MAX_HOLD)
    at = end
    if at - 1 > floor and _space(text[at - 1]) and _grouped(text[at - 2]):  # a space between groups: more may come
        at -= 1
    while at > floor and _in_token(text[at - 1]):
        at -= 1
    while at - 1 > floor and _space(text[at - 1]) and at < end and _grouped(text[at]):
        before = at - 1
        while before > floor and _grouped(text[before - 1]):  # the group before the space
            before -= 1
        if before == at - 1:
            break
        grouped = before
        while before > floor and _in_token(text[before - 1]):  # the whole token it ends ("@4111")
            before -= 1
        at = before
        if before != grouped:  # a longer token: a match may start inside it, but none runs on before it
            break
    return at


def _in_token(char: str) -> bool:
    return char.isalnum() or char in "@._%+-()/=:" or (not char.isascii() and _token_like(char))


def _space(char: str) -> bool:
    return char == " " or (not char.isascii() and unicodedata.normalize("NFKC", char) == " ")


@functools.lru_cache(maxsize=1024)
def _token_like(char: str) -> bool:
    """An invisible character, or one that folds into a token's (a full-width at sign or digit): a match may run
    through it."""
    return bool(_INVISIBLE.match(char)) or any(
        piece.isalnum() or piece in "@._%+-()/=:" for piece in unicodedata.normalize("NFKC", char)
    )


def _grouped(char: str) -> bool:
    return char.isdigit() or char.isupper() or char in "+-()" or (not char.isascii() and _token_like(char))


@functools.lru_cache(maxsize=256)
def detector_for(detectors: tuple[str, ...], national_ids: tuple[str, ...]) -> Detector:
    """The compiled detector of a guardrail's choice (guardrails choosing alike share it)."""
    return Detector(detectors, national_ids)


def redact(text: str, findings: list[Finding]) -> str:
    """``text`` with each finding replaced by its placeholder (findings in order, not overlapping)."""
    if not findings:
        return text
    parts, at = [], 0
    for finding in findings:
        if finding.start < at:
            continue
        parts += [text[at : finding.start], PLACEHOLDERS[finding.detector]]
        at = finding.end
    parts.append(text[at:])
    return "".join(parts)


# --- prompt injection -----------------------------------------------------------------------------------------------

# (weight, cue): a text's score is the sum of the weights of the cues it holds, at most 100.
INJECTION_CUES: list[tuple[int, str, str]] = [
    (45, "ignore_instructions", r"\b(?:ignore|disregard|forget|override)\b.{0,30}\b(?:previous|prior|above|earlier|all|"
                                r"your|the)\b.{0,20}\b(?:instructions?|prompts?|rules|directions|guidelines)\b"),
    (35, "reveal_prompt", r"\b(?:reveal|print|show|repeat|output|leak|tell me)\b.{0,40}\b(?:system|hidden|initial|"
                          r"original)\s+(?:prompt|instructions?|message)\b"),
    (30, "role_override", r"\byou are (?:now|no longer)\b|\bfrom now on,? you\b|\bnew (?:instructions|rules)\s*:"),
    (30, "jailbreak", r"\b(?:jailbreak|DAN mode|do anything now|developer mode|god mode)\b"),
    (30, "chat_markup", r"<\|im_start\|>|<\|system\|>|\[/?INST\]|<<SYS>>|^\s*#{2,}\s*(?:system|instructions?)\b"),
    (20, "pretend", r"\b(?:pretend|act as if|roleplay as|imagine you are)\b.{0,40}\b(?:no|without)\b.{0,20}"
                    r"\b(?:rules|restrictions|limits|filters)\b"),
    (15, "exfiltrate", r"\b(?:send|post|upload|exfiltrate)\b.{0,40}"
                       r"\b(?:https?://|to (?:this|my) (?:url|server|webhook))"),
    (10, "encoded_blob", r"[A-Za-z0-9+/]{200,}={0,2}"),
]  # fmt: skip
_CUES = [(weight, name, re2.compile(f"(?ism){expr}", options=_RE2_OPTIONS)) for weight, name, expr in INJECTION_CUES]
# Words one of which a cue's match must hold (lower case): a text holding none is not searched for that cue.
_ANCHORS = {
    "ignore_instructions": ("ignore", "disregard", "forget", "override"),
    "reveal_prompt": ("prompt", "instruction", "message"),
    "role_override": ("you are", "from now on", "new instructions", "new rules"),
    "jailbreak": ("jailbreak", "dan mode", "do anything now", "developer mode", "god mode"),
    "chat_markup": ("<|", "[inst]", "[/inst]", "<<sys>>", "##"),
    "pretend": ("pretend", "act as if", "roleplay as", "imagine you are"),
    "exfiltrate": ("http", " url", "server", "webhook"),
    "encoded_blob": None,  # no word: searched whenever the text is long enough to hold one
}
_ANCHOR_PATTERN = re2.compile(
    "(?i)" + "|".join(re2.escape(word) for words in _ANCHORS.values() if words for word in words), options=_RE2_OPTIONS
)


def injection_score(text: str) -> tuple[int, list[str]]:
    """The prompt-injection score of ``text`` (0 to 100) and the cues that made it."""
    if not text:
        return 0, []
    text = folded(text[:MAX_SCAN_CHARS])[0]
    if not text.isascii():  # a lone surrogate (JSON may carry one) cannot go to RE2: it is no character
        text = text.encode("utf-8", "replace").decode("utf-8")
    present = {match.group().lower() for match in _ANCHOR_PATTERN.finditer(text)}  # one pass for every cue's words
    hits = [
        (weight, name) for weight, name, pattern in _CUES
        if (present.intersection(_ANCHORS[name]) if _ANCHORS[name] else len(text) >= 200) and pattern.search(text)
    ]  # fmt: skip
    return min(100, sum(weight for weight, _ in hits)), [name for _, name in hits]
