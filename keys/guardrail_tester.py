"""The guardrail tester of the console and the API: what each active guardrail would make of a text."""

from __future__ import annotations

from keys.guardrails import detector_for, injection_score, redact
from keys.models import Guardrail


def try_guardrails(text: str, stage: str) -> list[dict]:
    """Per active guardrail of ``stage``, in order: what it finds (kinds and counts, never the text), the
    injection score, what it would do, and the text as it would pass on redaction. Hooks are not called."""
    results = []
    for rail in Guardrail.objects.filter(is_active=True).order_by("position", "pk"):
        if rail.stage not in (stage, Guardrail.BOTH):
            continue
        detector = detector_for(tuple(name for name in rail.detectors if name != "injection"), tuple(rail.national_ids))
        findings = detector.scan(text) if detector else []
        score, cues = injection_score(text) if "injection" in rail.detectors else (0, [])
        found: dict[str, int] = {}
        for finding in findings:
            found[finding.kind] = found.get(finding.kind, 0) + 1
        triggered = bool(findings) or (score >= rail.injection_threshold and "injection" in rail.detectors)
        outcome = "passes"
        if triggered:
            outcome = {"block": "blocks", "redact": "redacts", "flag": "flags"}[rail.action]
            if rail.action == "redact" and not findings:
                outcome = "blocks"  # an injection score has nothing to redact
        results.append({
            "guardrail": rail.name, "action": rail.action, "found": found, "injection_score": score,
            "injection_cues": cues, "outcome": outcome, "hook": bool(rail.hook_url),
            "redacted": redact(text, findings) if rail.action == "redact" and findings else None,
        })  # fmt: skip
    return results
