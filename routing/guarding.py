"""The guardrail stage of the hot path: what a client sends, before anything is reserved, and what comes back.

``guard_input`` runs the input guardrails that apply to the request's client (or cost center)
and agent on the text of its body (every string of a JSON body but its model, roles and
types), before admission, so a blocked request costs no quota and no budget; it answers the
body to send, redacted where a guardrail redacts. It leaves an ``OutputGuard`` on the
exchange when output guardrails apply: a complete answer is checked whole; a streamed one
is held back only as far as a match may still be in progress (``keys.guardrails.hold_from``),
so it still arrives as it is generated. Every decision goes into ``details.guardrails``.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
from typing import NamedTuple

import httpx
from django.conf import settings

from gateway_project import outbound
from gateway_project.errors import GatewayError
from gateway_project.snapshots import RefreshingTable
from keys.access import KeySnapshot
from keys.guardrails import (
    MAX_HOLD,
    MAX_MATCH,
    Detector,
    Finding,
    detector_for,
    hold_from,
    injection_score,
    redact,
)

log = logging.getLogger("gateway.guardrails")

SKIPPED_KEYS = frozenset({"model", "agent", "role", "type", "id", "object", "tool_call_id", "finish_reason",
                          "stop_reason"})  # fmt: skip
ANSWER_TEXT_KEYS = frozenset({"content", "text", "output", "arguments", "thinking", "partial_json", "refusal"})
MAX_HOOK_TEXT = 100_000  # characters of text a hook is sent
OFF_LOOP_CHARS = 32_768  # a request with more text than this is scanned in a thread (other requests go on meanwhile)
MAX_HOOK_ANSWER = 64 * 1024
SCAN_CONTEXT = 64  # characters of a stream's sent text read before what goes next (a match's start edge)


class Rule(NamedTuple):
    """A guardrail as the hot path runs it."""

    name: str
    stages: frozenset[str]
    detector: Detector
    injection: bool
    threshold: int
    action: str
    clients: frozenset[str]
    cost_centers: frozenset[str]
    agents: frozenset[str]
    hook_url: str
    hook_timeout: float
    hook_fail_open: bool

    def applies(self, key: KeySnapshot | None, agents: frozenset[str]) -> bool:
        """Whether it applies to the key's client and to one of ``agents`` (the agent asked for and its fallbacks)."""
        if self.agents and not self.agents & agents:
            return False
        if not self.clients and not self.cost_centers:
            return True
        return key is not None and (key.client_slug in self.clients or key.cost_center_slug in self.cost_centers)


def _load() -> tuple[Rule, ...]:
    from keys.models import Guardrail

    rules = []
    for row in Guardrail.objects.filter(is_active=True).order_by("position", "pk"):
        stages = {"input", "output"} if row.stage == "both" else {row.stage}
        matching = tuple(name for name in row.detectors if name != "injection")
        rules.append(Rule(
            row.name, frozenset(stages), detector_for(matching, tuple(row.national_ids)), "injection" in row.detectors,
            row.injection_threshold, row.action, frozenset(row.clients), frozenset(row.cost_centers),
            frozenset(row.agents), row.hook_url, row.hook_timeout_ms / 1000, row.hook_fail_open,
        ))  # fmt: skip
    return tuple(rules)


guardrail_table = RefreshingTable("guardrails", _load, interval=lambda: settings.GATEWAY["CONFIG_REFRESH_SECONDS"])


def blocked(rule: Rule, stage: str, what: str) -> GatewayError:
    """The refusal: 400 for a request, 403 for an answer; it names the guardrail and the detector, never the text."""
    if stage == "input":
        return GatewayError(400, "invalid_request_error", "guardrail_blocked",
                            f"The gateway's guardrail '{rule.name}' refused the request: {what}.")  # fmt: skip
    return GatewayError(403, "permission_error", "guardrail_blocked",
                        f"The gateway's guardrail '{rule.name}' withheld the answer: {what}.")  # fmt: skip


def _described(findings: list[Finding], score: int, hook: str) -> str:
    kinds = sorted({finding.kind for finding in findings})
    parts = [f"it found {', '.join(kinds)}"] if kinds else []
    if score:
        parts.append(f"a prompt-injection score of {score}")
    if hook:
        parts.append(f"its hook {hook}")
    return " and ".join(parts) or "it found nothing it may let through"


def add_up(entry: dict, findings: list[Finding], score: int) -> None:
    """Add a decision's findings (by kind) and injection score (the highest kept) to an audit entry that stands for
    many (a stream's releases, a session's frames)."""
    if findings:
        found = entry.setdefault("found", {})
        for kind, count in _counts(findings).items():
            found[kind] = found.get(kind, 0) + count
    if score:
        entry["injection_score"] = max(score, entry.get("injection_score", 0))


def _counts(findings: list[Finding]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for finding in findings:
        counted[finding.kind] = counted.get(finding.kind, 0) + 1
    return counted


# --- text in JSON -------------------------------------------------------------------------------------------------


class Reading(NamedTuple):
    """Which strings of a JSON value a guardrail reads: those under one of ``keys`` (None: under any key but
    ``skip``), and every string anywhere beneath one of ``trees``; object keys too where ``object_keys`` says so
    (beneath a tree, always)."""

    keys: frozenset[str] | None
    skip: frozenset[str] = frozenset()
    trees: frozenset[str] = frozenset()
    object_keys: bool = False


# A request: every string, object keys and identifiers included (a card number can be sent as an "id").
REQUEST = Reading(None, object_keys=True)
# What the injection score reads of a request: its prose, not its roles, types and identifiers.
REQUEST_PROSE = Reading(None, SKIPPED_KEYS)
# An answer: its text, and whatever a tool call's input holds (Anthropic's ``tool_use.input`` is an object).
ANSWER = Reading(ANSWER_TEXT_KEYS, trees=frozenset({"input", "arguments", "parameters"}))
# An agent's own answer through pass-through: every string, object keys included.
ANY = Reading(None, object_keys=True)


def _strings(node, reading: Reading) -> list[str]:
    """The strings of a JSON value ``reading`` names, in document order."""
    found, stack = [], [(node, "", False)]
    while stack:
        value, name, inside = stack.pop()
        if isinstance(value, str):
            if inside or _named(name, reading):
                found.append(value)
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                key = str(key)
                stack.append((item, key, inside or key in reading.trees))
                if inside or reading.object_keys:
                    stack.append((key, "", True))
        elif isinstance(value, list):
            stack.extend((item, name, inside) for item in reversed(value))
    return found


def _rewritten(node, change, reading: Reading, key: str = "", inside: bool = False):
    """``node`` with ``change`` applied to the strings ``_strings`` names (object keys kept apart: two keys
    redacted alike keep both their values)."""
    if isinstance(node, str):
        return change(node) if inside or _named(key, reading) else node
    if isinstance(node, dict):
        out: dict = {}
        for name, value in node.items():
            name = str(name)
            below = inside or name in reading.trees
            new_name = change(name) if inside or reading.object_keys else name
            while new_name != name and (new_name in out or new_name in node):  # never over another member
                new_name += "'"
            out[new_name] = _rewritten(value, change, reading, name, below)
        return out
    if isinstance(node, list):
        return [_rewritten(item, change, reading, key, inside) for item in node]
    return node


MAX_DEPTH = 100  # levels of JSON nesting guardrails read; a deeper value is refused, not let through unread


class TooDeep(ValueError):
    """A JSON value nested deeper than ``MAX_DEPTH``."""


def read_json(data: bytes | str):
    """JSON as guardrails read it, or None when it is none: invalid UTF-8 replaced (a lenient reader downstream
    reads it so, escapes and all), a key sent twice kept twice (renamed; a reader may take either value). Raises
    ``TooDeep``."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    try:
        node = json.loads(text, object_pairs_hook=_members)
    except RecursionError:
        raise TooDeep from None
    except ValueError:
        return None
    check_depth(node)
    return node


def _members(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        while key in out:
            key += "'"
        out[key] = value
    return out


def check_depth(node) -> None:
    """Raise ``TooDeep`` for a value nested deeper than ``MAX_DEPTH`` (walked without recursion)."""
    stack = [(node, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise TooDeep
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))


def _named(name: str, reading: Reading) -> bool:
    return name not in reading.skip and (reading.keys is None or name in reading.keys)


def without_logprobs(node):
    """``node`` with every ``logprobs`` emptied: its tokens spell out the text a guardrail redacted."""
    if isinstance(node, dict):
        return {key: None if key == "logprobs" else without_logprobs(value) for key, value in node.items()}
    if isinstance(node, list):
        return [without_logprobs(item) for item in node]
    return node


def logprob_tokens(node) -> list[str]:
    """The text the ``logprobs`` tokens of an answer spell, one string a list of them (a secret spans tokens)."""
    spelt, stack = [], [node]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "logprobs" and isinstance(item, dict | list):
                    lists = [v for v in item.values() if isinstance(v, list)] if isinstance(item, dict) else [item]
                    for entries in lists:
                        tokens = [e.get("token") for e in entries if isinstance(e, dict)]
                        spelt.append("".join(t for t in tokens if isinstance(t, str)))
                else:
                    stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)
    return [text for text in spelt if text]


# --- the hook -----------------------------------------------------------------------------------------------------


async def ask_hook(rule: Rule, stage: str, text: str, request_id: str) -> str:
    """The hook's verdict: "" (let through), "refused it", or, when it failed, "failed" (open) or "failed (closed)".
    It is POSTed ``{"guardrail", "stage", "text", "request_id"}`` and answers ``{"allow": true|false}``."""
    body = json.dumps({"guardrail": rule.name, "stage": stage, "text": text[:MAX_HOOK_TEXT],
                       "request_id": request_id}).encode()  # fmt: skip
    try:
        async with asyncio.timeout(rule.hook_timeout):  # the whole call: a hook answering slowly is cut off too
            answer = await outbound.arequest(
                "POST", rule.hook_url, outbound.hook_allow_list(), timeout=rule.hook_timeout,
                max_bytes=MAX_HOOK_ANSWER, what="The guardrail hook", content=body,
                headers={"content-type": "application/json"},
            )  # fmt: skip
        verdict = json.loads(answer)
        if not isinstance(verdict, dict) or not isinstance(verdict.get("allow"), bool):
            raise ValueError("the hook answered no allow: true|false")
    except (outbound.Refused, outbound.TooLarge, httpx.HTTPError, OSError, ValueError) as error:
        log.warning("guardrail %s: its hook failed: %s", rule.name, error)
        return "failed" if rule.hook_fail_open else "failed (closed)"
    return "" if verdict["allow"] else "refused it"


# --- input --------------------------------------------------------------------------------------------------------


async def guard_input(ex, key: KeySnapshot | None, agent: str, payload=None):
    """Run the input guardrails on the request (its parsed JSON ``payload``, or its body); raise 400
    ``guardrail_blocked`` on a block; return the payload (or body, when no payload is given) to send, redacted
    where a guardrail redacts. Sets ``ex.output_guard`` when output guardrails apply."""
    rules = await guardrail_table.get()
    if not rules:
        return payload if payload is not None else ex.body
    involved = _agents_involved(agent)
    applying = [rule for rule in rules if rule.applies(key, involved)]
    outputs = [rule for rule in applying if "output" in rule.stages]
    if outputs:
        ex.output_guard = OutputGuard(ex, outputs)
    inputs = [rule for rule in applying if "input" in rule.stages]
    if not inputs:
        return payload if payload is not None else ex.body
    raw_json = None
    try:
        if payload is None and "json" in ex.header(b"content-type").lower():
            raw_json = payload = read_json(ex.body)  # its escapes ("\\u0040") undone, its keys read too
        elif payload is not None:
            check_depth(payload)
    except TooDeep:
        raise GatewayError(400, "invalid_request_error", "invalid_request",
                           f"The body is nested deeper than {MAX_DEPTH} levels, which the gateway's guardrails do "
                           "not read.") from None  # fmt: skip
    body_text = None
    if payload is None:
        try:
            body_text = ex.body.decode("utf-8")
        except UnicodeDecodeError:
            body_text = ex.body.decode("utf-8", "replace")
    for rule in inputs:
        texts = _strings(payload, REQUEST) if payload is not None else [body_text]
        needs_prose = payload is not None and (rule.injection or rule.hook_url)
        prose = _strings(payload, REQUEST_PROSE) if needs_prose else texts
        if sum(map(len, texts)) > OFF_LOOP_CHARS:  # a large body is scanned beside the event loop, not on it
            findings, score = await asyncio.to_thread(_findings, rule, texts, prose)
        else:
            findings, score = _findings(rule, texts, prose)
        hook = await ask_hook(rule, "input", "\n".join(prose), ex.request_id) if rule.hook_url else ""
        hook_blocks = hook in ("refused it", "failed (closed)")
        if not findings and not score and not hook_blocks:
            if hook:
                _note(ex, rule, "input", "flag", [], 0, hook)
            continue
        if findings and isinstance(ex.input_text, str):  # the audit preview keeps no more than the upstream sees
            ex.input_text = _redactor(rule.detector)(ex.input_text)
        if rule.action == "block" or (score and rule.action == "redact") or (hook_blocks and rule.action == "redact"):
            _note(ex, rule, "input", "block", findings, score, hook)
            raise blocked(rule, "input", _described(findings, score, hook if hook_blocks else ""))
        if rule.action == "redact" and findings:
            change = _redactor(rule.detector)
            if payload is not None:
                payload = _rewritten(payload, change, REQUEST)
            else:
                body_text = change(body_text)
        _note(ex, rule, "input", rule.action, findings, score, hook)
    if raw_json is not None:  # a pass-through body: re-encoded only where a guardrail changed it
        return ex.body if payload is raw_json else json.dumps(payload).encode()
    if payload is not None:
        return payload
    return body_text.encode("utf-8") if body_text != ex.body.decode("utf-8", "replace") else ex.body


async def watch_output(ex, key: KeySnapshot | None, agent: str) -> None:
    """Set ``ex.output_guard`` for an exchange whose input was checked elsewhere (a job's, run after its request)."""
    rules = await guardrail_table.get()
    involved = _agents_involved(agent)
    outputs = [rule for rule in rules if "output" in rule.stages and rule.applies(key, involved)]
    ex.output_guard = OutputGuard(ex, outputs) if outputs else None


def check_kept_output(ex) -> None:
    """Check an answer kept for later (a job's ``output``) as the same answer would be checked when sent: redacted
    in place, or 403 ``guardrail_blocked``."""
    if ex.output_guard is None or not isinstance(ex.output_text, str):
        return
    body = json.dumps({"output": ex.output_text}).encode()
    ex.output_text = json.loads(ex.output_guard.whole(body, [(b"content-type", b"application/json")]))["output"]


def _agents_involved(agent: str) -> frozenset[str]:
    """The agent asked for and its fallbacks: a guardrail of any of them applies (the answer may come from each)."""
    from routing.table import routing_table

    table = routing_table.last()
    route = table.agents.get(agent) if table is not None else None
    return frozenset((agent, *(route.fallbacks if route is not None else ())))


def _findings(rule: Rule, texts: list[str], prose: list[str]) -> tuple[list[Finding], int]:
    """What ``rule`` finds in ``texts``, and the injection score of ``prose`` when it reaches the rule's threshold
    (else 0)."""
    findings = [found for text in texts for found in rule.detector.scan(text)] if rule.detector else []
    score = injection_score("\n".join(prose))[0] if rule.injection else 0
    return findings, score if score >= rule.threshold else 0


def _redactor(detector: Detector):
    return lambda text: redact(text, detector.scan(text))


def _note(ex, rule: Rule, stage: str, action: str, findings: list[Finding], score: int, hook: str) -> None:
    entry: dict = {"guardrail": rule.name, "stage": stage, "action": action}
    if findings:
        entry["found"] = _counts(findings)
    if score:
        entry["injection_score"] = score
    if hook:
        entry["hook"] = hook
    ex.details.setdefault("guardrails", []).append(entry)


# --- output -------------------------------------------------------------------------------------------------------


class OutputGuard:
    """The output guardrails of one exchange: a complete answer checked whole (``whole``), a streamed one as it
    goes (``started``, then ``feed``)."""

    def __init__(self, ex, rules: list[Rule]):
        self.ex = ex
        self.rules = rules
        self.mode = ""  # "sse", "text" or "" (not watched) once the answer starts
        self._buffer = bytearray()
        self._carry = b""  # a CR that may be half of a CRLF
        self._at_start = True  # no byte of the stream read yet (it may begin with a byte-order mark)
        self._held: list[_Event] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._text_held = ""
        self._noted: dict[str, dict] = {}
        self._sent_tail = ""  # the end of what was sent: the context a match starting next is judged in
        self.ended = False

    # complete answers
    def whole(self, body: bytes, headers, reading: Reading = ANSWER) -> bytes:
        """``body`` as the client may see it; raises 403 ``guardrail_blocked`` on a block. A JSON answer is read as
        JSON (its escapes undone, so ``\\u0040`` hides nothing); ``reading`` names its strings."""
        kind = media_kind(_header(headers, b"content-type"))
        if kind == "binary":
            return body
        if kind == "json":
            try:
                node = read_json(body)  # None: not JSON after all (or JSON lines): read as text below
            except TooDeep:
                raise GatewayError(502, "upstream_error", "upstream_unreadable",
                                   f"The answer is nested deeper than {MAX_DEPTH} levels, which the gateway's output "
                                   "guardrails do not read; it was withheld.") from None  # fmt: skip
            if node is not None:
                spelt = logprob_tokens(node)
                changed = self._judge(_strings(node, reading), node, reading, spelt)
                if changed is node:
                    return body
                return json.dumps(without_logprobs(changed) if spelt else changed).encode()
        text = body.decode("utf-8", "replace")
        judged = self._judge([text], None, reading)
        return judged.encode() if judged is not text else body

    def quoted(self, error: GatewayError) -> GatewayError:
        """``error``, an upstream's refusal quoting what it said, with the quote checked as its answer would be:
        redacted, or, where a guardrail blocks, replaced by the guardrail's own note (the status stays)."""
        try:
            message = self._judge([error.message], None, ANY)
        except GatewayError as withheld:
            message = withheld.message
        if message is error.message:
            return error
        return GatewayError(error.status, error.type, error.code, message, error.headers)

    def _judge(self, texts: list[str], node, reading: Reading, spelt: list[str] = ()):
        """Run the rules on ``texts`` (the answer's strings) and ``spelt`` (what its logprobs tokens spell): raise
        on a block, note flags, redact ``node`` (or the one text) where a rule redacts."""
        result = node if node is not None else texts[0]
        text = "\n".join([*texts, *spelt])
        for rule in self.rules:
            findings = rule.detector.scan(text) if rule.detector else []
            if self._outcome(rule, text, findings) == "redact":
                change = _redactor(rule.detector)
                result = _rewritten(result, change, reading) if node is not None else change(result)
                text = change(text)
        return result

    def _outcome(self, rule: Rule, text: str, findings: list[Finding], context: str = "") -> str:
        """What ``rule`` does with ``text`` and its ``findings`` ("" for nothing), counted; raises on a block (a
        redacting rule blocks an injection score: there is nothing to redact). The injection score reads the text
        with what was sent before it (``context``): a stream's cues come a few words an event."""
        score = injection_score(context + text)[0] if rule.injection else 0
        score = score if score >= rule.threshold else 0
        if not findings and not score:
            return ""
        if findings and isinstance(self.ex.output_text, str):  # the audit preview keeps no more than the client sees
            self.ex.output_text = _redactor(rule.detector)(self.ex.output_text)
        if rule.action == "block" or (rule.action == "redact" and not findings):
            self._count(rule, "block", findings, score)
            raise blocked(rule, "output", _described(findings, score, ""))
        self._count(rule, rule.action, findings, score)
        return rule.action

    def _count(self, rule: Rule, action: str, findings: list[Finding], score: int) -> None:
        """One entry per guardrail and action in ``details.guardrails``, its counts adding up over a stream."""
        entry = self._noted.get(f"{rule.name}/{action}")
        if entry is None:
            entry = self._noted[f"{rule.name}/{action}"] = {"guardrail": rule.name, "stage": "output",
                                                            "action": action}  # fmt: skip
            self.ex.details.setdefault("guardrails", []).append(entry)
        add_up(entry, findings, score)

    # streams
    def started(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The answer's headers: watched as events or as text, its length dropped (redaction changes it)."""
        if self.mode:
            return headers
        kind = media_kind(_header(headers, b"content-type"))
        self.mode = "text" if kind == "json" else kind
        if kind == "binary":
            return headers
        return [(name, value) for name, value in headers if name.lower() != b"content-length"]

    def feed(self, data: bytes, final: bool) -> bytes:
        """What of the answer so far may go to the client now; raises 403 ``guardrail_blocked`` after handing the
        client an error event when a rule blocks a stream."""
        if self.mode == "sse":
            return self._feed_events(data, final)
        if self.mode == "text":
            return self._feed_text(data, final)
        return data

    def _feed_text(self, data: bytes, final: bool) -> bytes:
        self._text_held += self._decoder.decode(data, final)
        cut = len(self._text_held) if final else _release_point(self._text_held)
        cut = self._safe_cut(self._text_held, cut) if cut and not final else cut
        ready, self._text_held = self._text_held[:cut], self._text_held[cut:]
        if not ready:
            return b""
        event = _Event(b"", [], None)
        event.strings = [ready]
        try:
            self._judge_events([event], self._text_held)
        except GatewayError as error:
            self.ended = True
            self.ex.error_type = error.code
            raise StreamBlocked(error, b"") from None
        return event.strings[0].encode()

    def _safe_cut(self, text: str, cut: int) -> int:
        """``cut`` moved back before any match that it would split (read around the cut only: no match is longer
        than ``MAX_MATCH``)."""
        low = max(0, cut - MAX_MATCH)
        around = text[low : cut + MAX_MATCH]
        for rule in self.rules:
            for finding in rule.detector.scan(around) if rule.detector else ():
                if finding.start < cut - low < finding.end:
                    cut = low + finding.start
        return cut

    def _feed_events(self, data: bytes, final: bool) -> bytes:
        events = [_Event.parse(raw) for raw in self._split_events(data, final)]
        self._held.extend(events)
        text = "".join(event.text for event in self._held)
        cut = len(text) if final else _release_point(text)
        while True:  # whole events only, and never part of a match: the cut moves back until both hold
            ready, used = [], 0
            for event in self._held:
                if used + len(event.text) > cut:
                    break
                ready.append(event)
                used += len(event.text)
            safe = used if final or not used else self._safe_cut(text, used)
            if safe == used:
                break
            cut = safe
        if not ready:
            return b""
        del self._held[: len(ready)]
        try:
            self._judge_events(ready, "".join(event.text for event in self._held))
        except GatewayError as error:
            self.ended = True
            self.ex.error_type = error.code
            raise StreamBlocked(error, _error_event(error, self.ex)) from None
        return b"".join(event.encoded() for event in ready)

    def _split_events(self, data: bytes, final: bool) -> list[bytes]:
        """The complete events so far, line ends made LF (CRLF and CR are as good, and ``\\n\\r\\n`` ends an
        event too), the stream's leading byte-order mark dropped (a browser drops it); the rest kept for later.
        Each byte is searched once (an event arriving in many pieces costs no more than one)."""
        data = self._carry + data
        self._carry = b""
        if not final and data.endswith(b"\r"):  # the first half of a CRLF, perhaps
            data, self._carry = data[:-1], b"\r"
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._at_start:
            data = bytes(self._buffer) + data
            self._buffer.clear()
            if len(data) < 3 and b"\xef\xbb\xbf".startswith(data) and not final:
                self._buffer += data  # too little yet to tell
                return []
            data = data.removeprefix(b"\xef\xbb\xbf")
            self._at_start = False
        searched = max(0, len(self._buffer) - 1)
        self._buffer += data  # a bytearray: appending does not copy what it holds
        events, taken = [], 0
        while (at := self._buffer.find(b"\n\n", max(searched, taken))) >= 0:
            events.append(bytes(self._buffer[taken : at + 2]))
            taken = at + 2
        del self._buffer[:taken]
        if final and self._buffer:
            events.append(bytes(self._buffer))
            self._buffer.clear()
        return events

    def _judge_events(self, events: list[_Event], after: str) -> None:
        """Run the rules on the events going out now, with the text held back after them (``after``) and the end of
        what was sent before them as context, so a match is judged as in the whole answer; redact the events."""
        segments = [(event, i) for event in events for i in range(len(event.strings))]
        before = self._sent_tail
        context, after = before[-SCAN_CONTEXT:], after[:MAX_MATCH]  # what a match's edges and reach may need
        original = "".join(event.strings[i] for event, i in segments)
        for rule in self.rules:
            text = "".join(event.strings[i] for event, i in segments)
            scanned = context + text + after
            findings = [
                Finding(f.detector, f.kind, f.start - len(context), f.end - len(context))
                for f in (rule.detector.scan(scanned) if rule.detector else ())
                if f.start >= len(context) and f.end <= len(context) + len(text)
            ]  # fmt: skip
            if self._outcome(rule, text, findings, before) == "redact":
                _redact_segments(segments, findings)
        self._sent_tail = (self._sent_tail + original)[-MAX_HOLD:]  # as written: placeholders are no context


def _release_point(text: str) -> int:
    """How much of a streamed ``text`` may go now: all but what may still be the start of a match; when that is the
    whole window (a run of digit groups, one long token), all but its last ``MAX_MATCH`` characters at once, so a
    stream of such text is read in a few large pieces rather than a few characters an event (each read costs as
    much as the window)."""
    cut = hold_from(text)
    floor = len(text) - MAX_HOLD
    if floor > 0 and cut <= floor:
        return len(text) - MAX_MATCH  # what is kept covers any match in progress
    return cut


class StreamBlocked(Exception):
    """A rule blocked a stream: ``event`` tells the client, and the answer ends."""

    def __init__(self, error: GatewayError, event: bytes):
        super().__init__(error.message)
        self.error, self.event = error, event


def _redact_segments(segments, findings: list[Finding]) -> None:
    """Put each finding's placeholder where it starts and blank its rest, across the events' strings it spans."""
    from keys.guardrails import PLACEHOLDERS

    starts, at = [], 0
    for event, i in segments:
        starts.append(at)
        at += len(event.strings[i])
    originals = [event.strings[i] for event, i in segments]
    pieces = [list(text) for text in originals]
    for finding in findings:
        placed = False
        for n, (start, text) in enumerate(zip(starts, originals, strict=True)):
            lo, hi = max(finding.start, start), min(finding.end, start + len(text))
            if lo >= hi:
                continue
            chars = pieces[n]
            for k in range(lo - start, hi - start):
                chars[k] = ""
            if not placed:
                chars[lo - start] = PLACEHOLDERS[finding.detector]
                placed = True
    for (event, i), chars in zip(segments, pieces, strict=True):
        event.set(i, "".join(chars))


class _Event:
    """One server-sent event: its lines, and the strings a rule reads: those of its JSON data, or its data as text."""

    __slots__ = ("changed", "lines", "node", "raw", "strings")

    def __init__(self, raw: bytes, lines: list[bytes], node, text: str | None = None):
        self.raw, self.lines, self.node, self.changed = raw, lines, node, False
        if node is not None:
            self.strings = _strings(node, ANSWER)
        else:
            self.strings = [text] if text else []

    @classmethod
    def parse(cls, raw: bytes) -> _Event:
        lines = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        data = b"\n".join(line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:"))
        if not any(line.startswith(b"data:") for line in lines):
            return cls(raw, lines, None)
        if data.lstrip()[:1] in (b"{", b"["):
            try:
                node = read_json(data)
            except TooDeep:
                node = None  # read as the text it is
            if node is not None:
                return cls(raw, lines, node)
        text = data.decode("utf-8", "replace")
        return cls(raw, lines, None, None if text == "[DONE]" else text)  # plain text data is read as it is

    @property
    def text(self) -> str:
        return "".join(self.strings)

    def set(self, index: int, value: str) -> None:
        if self.strings[index] == value:
            return
        self.strings[index] = value
        self.changed = True

    def encoded(self) -> bytes:
        if not self.changed:
            return self.raw
        kept = [line for line in self.lines if not line.startswith(b"data:") and line]
        if self.node is None:  # plain text data, a line each
            data = [b"data: " + line.encode() for line in self.strings[0].split("\n")]
        else:
            values = iter(self.strings)
            node = without_logprobs(_rewritten(self.node, lambda _: next(values), ANSWER))
            data = [b"data: " + json.dumps(node).encode()]
        return b"\n".join([*kept, *data]) + b"\n\n"


def _error_event(error: GatewayError, ex) -> bytes:
    if ex.dialect == "anthropic":
        body = {"type": "error", "error": {"type": error.type, "message": error.message}}
        return b"event: error\ndata: " + json.dumps(body).encode() + b"\n\n"
    body = {"error": {"type": error.type, "code": error.code, "message": error.message, "request_id": ex.request_id}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def media_kind(content_type: bytes) -> str:
    """How guardrails read an answer of this content type: "sse", "json", "text", or "binary" (not read: images,
    audio, archives, ``application/octet-stream``; decoding them as text would corrupt them). No type: text."""
    content_type = content_type.split(b";")[0].strip().lower()
    if b"event-stream" in content_type:
        return "sse"
    if b"json" in content_type:
        return "json"
    if (
        not content_type
        or content_type.startswith(b"text/")
        or content_type.endswith((b"xml", b"javascript", b"yaml", b"urlencoded"))
    ):
        return "text"
    return "binary"


def _header(headers, name: bytes) -> bytes:
    for key, value in headers:
        if key.lower() == name:
            return value.lower()
    return b""
