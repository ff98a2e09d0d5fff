"""Guardrails on the text frames of a relayed WebSocket session: the input guardrails on what the client sends, the
output guardrails on what the agent sends.

The guardrails that apply are chosen once, when the session opens (``FrameGuard.for_session``: None when none
applies, so such a session's frames cost nothing more). Each text frame is checked on its own, as ``guard_input``
checks a body: every string and key of a JSON frame (redacted in place, so the frame
stays JSON), or the raw text. A block ends the session (``FrameBlocked``); hooks are not asked per frame, and
binary frames are not read. Decisions add up in one ``details.guardrails`` entry per guardrail, stage and action.
"""

from __future__ import annotations

import asyncio
import json
from typing import NamedTuple

from keys.access import KeySnapshot
from keys.guardrails import Finding
from routing.guarding import (
    OFF_LOOP_CHARS,
    REQUEST,
    REQUEST_PROSE,
    Rule,
    TooDeep,
    _described,
    _findings,
    _redactor,
    _rewritten,
    _strings,
    add_up,
    blocked,
    guardrail_table,
    read_json,
)

GUARDRAIL_BLOCKED = "guardrail_blocked"  # the close reason and the audit error type of a session a guardrail ended


class FrameBlocked(Exception):
    """A guardrail blocked a frame: ``notice`` is the JSON error the client is sent before the session closes."""

    def __init__(self, notice: str):
        super().__init__(notice)
        self.notice = notice


class Decision(NamedTuple):
    rule: Rule
    action: str  # block, redact or flag
    findings: list[Finding]
    score: int


class FrameGuard:
    """The guardrails of one session: ``inbound`` and ``outbound`` answer a text frame as it may pass, or raise
    ``FrameBlocked``; ``entries`` are the session's ``details.guardrails``."""

    def __init__(self, inputs: list[Rule], outputs: list[Rule], request_id: str = ""):
        self.inputs, self.outputs, self.request_id = inputs, outputs, request_id
        self.entries: list[dict] = []
        self._entry: dict[tuple[str, str, str], dict] = {}

    @classmethod
    async def for_session(cls, key: KeySnapshot | None, agent: str, request_id: str) -> FrameGuard | None:
        """The guard of a session of ``key`` with ``agent``, or None when no guardrail applies (the relay then
        checks nothing). A session never falls back, so only the agent's own guardrails and everyone's apply; a
        guardrail with nothing but a hook has nothing to do on frames."""
        agents = frozenset((agent,))
        applying = [rule for rule in await guardrail_table.get()
                    if (rule.detector or rule.injection) and rule.applies(key, agents)]  # fmt: skip
        inputs = [rule for rule in applying if "input" in rule.stages]
        outputs = [rule for rule in applying if "output" in rule.stages]
        return cls(inputs, outputs, request_id) if inputs or outputs else None

    async def inbound(self, text: str) -> str:
        """A client's frame as the agent may see it."""
        return await self._check(text, "input", self.inputs) if self.inputs else text

    async def outbound(self, text: str) -> str:
        """An agent's frame as the client may see it."""
        return await self._check(text, "output", self.outputs) if self.outputs else text

    async def _check(self, text: str, stage: str, rules: list[Rule]) -> str:
        if len(text) > OFF_LOOP_CHARS:  # a large frame is scanned beside the event loop, not on it
            passed, decisions = await asyncio.to_thread(judge, rules, text)
        else:
            passed, decisions = judge(rules, text)
        for decision in decisions:
            self._count(stage, decision)
        if decisions and decisions[-1].action == "block":
            rule, _, findings, score = decisions[-1]
            error = blocked(rule, stage, _described(findings, score, ""))
            raise FrameBlocked(error.body(self.request_id).decode())
        return passed

    def _count(self, stage: str, decision: Decision) -> None:
        """One entry per guardrail, stage and action, its counts adding up over the session's frames."""
        rule, action, findings, score = decision
        entry = self._entry.get((rule.name, stage, action))
        if entry is None:
            entry = self._entry[rule.name, stage, action] = {"guardrail": rule.name, "stage": stage, "action": action}
            self.entries.append(entry)
        entry["frames"] = entry.get("frames", 0) + 1
        add_up(entry, findings, score)

    def audit(self, ex) -> None:
        """Put the session's decisions in its audit record, and redact its previews (the first frame each way) as a
        request's are: a flagged frame went as it was, but its preview keeps no finding."""
        if self.entries:
            ex.details["guardrails"] = self.entries
        ex.input_text = _scrubbed(ex.input_text, self.inputs)
        ex.output_text = _scrubbed(ex.output_text, self.outputs)


def _scrubbed(preview: str, rules: list[Rule]) -> str:
    for rule in rules:
        if rule.detector:
            preview = _redactor(rule.detector)(preview)
    return preview


def judge(rules: list[Rule], text: str, as_json: bool = True) -> tuple[str, list[Decision]]:
    """``text`` as it may pass, and the decision of each rule that found something, in order; a block comes last
    (it ends the check). A JSON object or array is judged by its strings and redacted in place."""
    node = _json(text) if as_json else None
    decisions: list[Decision] = []
    redacted = False
    try:
        for rule in rules:
            texts = _strings(node, REQUEST) if node is not None else [text]
            prose = _strings(node, REQUEST_PROSE) if node is not None and rule.injection else texts
            findings, score = _findings(rule, texts, prose)
            if not findings and not score:
                continue
            if rule.action == "block" or (score and rule.action == "redact"):  # an injection has nothing to redact
                decisions.append(Decision(rule, "block", findings, score))
                break
            if rule.action == "redact":
                change = _redactor(rule.detector)
                if node is not None:
                    node = _rewritten(node, change, REQUEST)
                else:
                    text = change(text)
                redacted = True
            decisions.append(Decision(rule, rule.action, findings, score))
    except RecursionError:  # JSON nested deeper than the rewriting goes: judged as the text it is
        return judge(rules, text, as_json=False)
    if redacted and node is not None:
        return json.dumps(node, ensure_ascii=False), decisions
    return text, decisions


def _json(text: str):
    """The JSON object or array ``text`` holds, or None (a scalar or anything else is judged as text)."""
    if text[:64].lstrip()[:1] not in ("{", "["):  # (leading blanks past 64: judged as text)
        return None
    try:
        return read_json(text)
    except TooDeep:
        return None
