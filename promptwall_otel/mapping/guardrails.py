"""Guardrail verdicts and evaluation results → a call's ``status``, ``final_decision``, ``risk_score``, ``policy_hits``.

Pure: reads a span view (or an event's attributes) and returns typed outcomes;
the trace ledger decides which call a verdict belongs to. The GenAI
conventions keep provider verdicts verbatim and refuse to normalise them, so
the normalisation table is ours (docs/mapping.md, "Guardrails and
evaluations", lists it with its sources). Invariants: a guardrail or evaluator
span is never billed (nothing here produces tokens or cost); a status only
changes on an *enforcement* a producer reports (a block, a rewrite, a re-ask,
a tripwire), never on a detection alone (a severity, a match, a score), which
only fills ``risk_score`` and ``policy_hits``; every provider value read is
kept verbatim in its policy hit's ``raw``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence

from .semconv import EVALUATION_EVENT
from .values import json_safe, number, text, truncate
from .view import SpanView

__all__ = ["Verdict", "verdict_of", "is_guardrail", "evaluation_hit", "evaluation_events", "tripwire_names", "combine",
           "provider_filter_hit", "BLOCKING_FINISH_REASONS", "EVALUATION_EVENT", "GUARDRAIL_MARKERS"]  # fmt: skip

# --- what producers emit -------------------------------------------------------------------------

OPERATION = "gen_ai.operation.name"
RUN_GUARDRAIL = "run_guardrail"  # semconv-genai gen-ai-security.md (draft): verdict and action
APPLY_GUARDRAIL = "apply_guardrail"  # semconv-genai gen-ai-guardrails.md (later draft): provider-native result
GUARDRAIL_OPERATIONS = frozenset({RUN_GUARDRAIL, APPLY_GUARDRAIL})
RESULT_EVENT = "gen_ai.guardrail.result"  # apply_guardrail: one per category / filter
FINDING_EVENT = "gen_ai.guardrail.security.finding"  # run_guardrail: one per finding

COMPONENT = "gen_ai.guardrail.component.name"
TARGET = "gen_ai.guardrail.target.type"
VERDICT = "gen_ai.guardrail.verdict.type"
ACTION = "gen_ai.guardrail.action.type"
MODIFIED = "gen_ai.guardrail.security.content.modified"
RISK_SCORE = "gen_ai.guardrail.security.risk.score"
SOURCE = "gen_ai.guardrail.source"
RESULT_TYPE = "gen_ai.guardrail.result.type"
RESULT_VALUE = "gen_ai.guardrail.result.value"
APPLY_RISK_SCORE = "gen_ai.guardrail.risk.score"

NEMO_STOP = "rail.stop"  # NeMo Guardrails' guardrails.rail spans (nemoguardrails/tracing)
NEMO_RAIL_TYPE = "rail.type"
VALIDATOR_ON_FAIL = "validator.on_fail"  # Guardrails AI validator spans (guardrails/telemetry/validator_tracing.py)
VALIDATOR_OUTCOME = "validator.validate.output.outcome"
TRACELOOP_STATUS = "gen_ai.guardrail.status"  # Traceloop SDK guardrails: PASSED / FAILED / ERROR
TRACELOOP_NAME = "gen_ai.guardrail.name"
WRAPPING_GUARDRAIL = "guardrail.run"  # Traceloop: the guardrail span encloses the call it guards
OPENINFERENCE_KIND = "openinference.span.kind"

# Keys that make a span "look closer" for the mapping's first test (builder.GENAI_MARKERS).
GUARDRAIL_MARKERS = frozenset({NEMO_STOP, VALIDATOR_ON_FAIL, TRACELOOP_STATUS})

# Raw attributes kept verbatim in a policy hit, per dialect (content attributes never: they may hold user text).
_RAW_KEYS = (
    COMPONENT, TARGET, "gen_ai.guardrail.target.subtype", "gen_ai.guardrail.target.id", VERDICT, ACTION,
    "gen_ai.guardrail.verdict.reason", "gen_ai.guardrail.verdict.code", MODIFIED, RISK_SCORE,
    "gen_ai.guardrail.security.risk.category", "gen_ai.guardrail.security.policy.id",
    "gen_ai.guardrail.security.policy.rule.id", "gen_ai.guardrail.security.external_finding_id",
    SOURCE, RESULT_TYPE, RESULT_VALUE, "gen_ai.guardrail.result.reason", "gen_ai.guardrail.policy.id",
    "gen_ai.guardrail.policy.version", "gen_ai.guardrail.policy.rule.id", "gen_ai.guardrail.risk.category",
    APPLY_RISK_SCORE, "gen_ai.provider.name", "error.type",
    NEMO_RAIL_TYPE, "rail.name", NEMO_STOP, "rail.decisions", "guardrails.rail.reason",
    "validator.name", VALIDATOR_ON_FAIL, VALIDATOR_OUTCOME, "validator.validate.output.error_message",
    TRACELOOP_NAME, TRACELOOP_STATUS, "gen_ai.guardrail.failed_guard_count", "gen_ai.guardrail.error.type",
    "tripwire_triggered",
)  # fmt: skip
_POLICY_KEYS = ("gen_ai.guardrail.security.policy.id", "gen_ai.guardrail.policy.id")
_RULE_KEYS = ("gen_ai.guardrail.security.policy.rule.id", "gen_ai.guardrail.policy.rule.id")
_CATEGORY_KEYS = ("gen_ai.guardrail.security.risk.category", "gen_ai.guardrail.risk.category")
_REASON_KEYS = ("gen_ai.guardrail.verdict.reason", "gen_ai.guardrail.result.reason", "guardrails.rail.reason",
                "validator.validate.output.error_message")  # fmt: skip

# Finish reasons with which a provider reports that its own filter stopped the answer
# (docs/mapping.md lists each one's source).
BLOCKING_FINISH_REASONS = frozenset({
    "content_filter",  # OpenAI, Azure OpenAI, the GenAI conventions' finish reason
    "guardrail_intervened",  # Amazon Bedrock Converse stopReason when a guardrail intervened
    "refusal",  # Anthropic stop_reason when its safety classifiers stop a reply
    "safety", "blocklist", "prohibited_content", "spii", "image_safety",  # Gemini FinishReason, lower-cased
})  # fmt: skip

# --- the normalisation table ---------------------------------------------------------------------

# decision -> (PromptWall status, severity); the most severe decision of a call becomes final_decision.
_DECISIONS: Dict[str, tuple] = {
    "block": ("blocked", 6),
    "modify": ("rewritten", 5),
    "reask": ("regenerated", 4),
    "escalate": (None, 3),
    "flag": (None, 2),
    "allow": (None, 1),
}
# run_guardrail verdict / action values (draft enums) -> decision; the action (what the caller enforced) wins.
_VERDICTS = {"deny": "block", "block": "block", "modify": "modify", "escalate": "escalate", "warn": "flag",
             "audit": "flag", "allow": "allow"}  # fmt: skip
# Guardrails AI on_fail, for a failed validation: exception/refrain stop the value, fix/filter change it,
# reask asks the model again, noop only records the failure.
_ON_FAIL = {"exception": "block", "refrain": "block", "fix": "modify", "filter": "modify", "fix_reask": "reask",
            "reask": "reask", "noop": "flag", "custom": "flag"}  # fmt: skip
# apply_guardrail: provider-native (result.type, result.value) pairs known to be an enforcement.
_RESULTS = {
    ("action", "guardrail_intervened"): "block",  # Bedrock ApplyGuardrail (an ANONYMIZED-only result: modify)
    ("action", "blocked"): "block",
    ("action", "anonymized"): "modify",
    ("action", "none"): "allow",
    ("tripwire_triggered", "true"): "block",  # OpenAI Agents guardrails: a tripwire halts the run
    ("tripwire_triggered", "false"): "allow",
    ("filter_match_state", "match_found"): "flag",  # Google Model Armor reports a match; the caller enforces
    ("filter_match_state", "no_match_found"): "allow",
}  # fmt: skip
# Scales of provider-native scores that are not 0..1 (the conventions ask instrumentations to document theirs).
_SCALES = {"azure.ai.content_safety": 7.0}  # Azure AI Content Safety severities 0..7

_TRIPWIRE = re.compile(r"Guardrail tripwire triggered: \{'guardrail': '([^']*)'\}")


class Verdict(NamedTuple):
    """One guardrail's outcome, normalised, with what the producer said kept verbatim in ``hit``."""

    decision: str  # a key of _DECISIONS
    target: Optional[str]  # "input", "output" or None (unknown)
    risk: Optional[float]  # 0..1, or None when the producer's scale is unknown
    hit: Dict[str, Any]  # one policy_hits entry

    @property
    def status(self) -> Optional[str]:
        return _DECISIONS[self.decision][0]

    @property
    def blocks(self) -> bool:
        return self.decision == "block"


def is_guardrail(attrs: Mapping[str, Any]) -> bool:
    """A span that reports a guardrail's run (cheap: a few key lookups)."""
    if attrs.get(OPERATION) in GUARDRAIL_OPERATIONS:
        return True
    kind = attrs.get(OPENINFERENCE_KIND)
    if kind is not None and str(kind).upper() == "GUARDRAIL":
        return True
    return NEMO_STOP in attrs or VALIDATOR_ON_FAIL in attrs or TRACELOOP_STATUS in attrs


def tripwire_names(views: Iterable[SpanView]) -> Dict[int, List[str]]:
    """trace_id -> names of guardrails whose tripwire halted the run: OpenInference's OpenAI Agents
    instrumentation leaves the guardrail span OK and sets the halted turn's span to ERROR with the
    SDK's message ``Guardrail tripwire triggered: {'guardrail': '<name>'}``."""
    found: Dict[int, List[str]] = {}
    for view in views:
        if view.status_code == "ERROR" and view.status_message and "tripwire" in view.status_message:
            match = _TRIPWIRE.search(view.status_message)
            if match:
                found.setdefault(view.trace_id, []).append(match.group(1))
    return found


def _lower(value: Any) -> Optional[str]:
    found = text(value)
    return found.strip().lower() if found else None


def _target(attrs: Mapping[str, Any]) -> Optional[str]:
    for key in (TARGET, NEMO_RAIL_TYPE, SOURCE):
        value = _lower(attrs.get(key))
        if value:
            if "input" in value or value in ("user_prompt", "prompt"):
                return "input"
            if "output" in value or value in ("model_response", "response"):
                return "output"
    return None


def _score(value: Any, provider: Optional[str]) -> Optional[float]:
    found = number(value)
    if found is None or found < 0:
        return None
    scale = _SCALES.get(provider or "")
    if scale:
        return min(1.0, found / scale)
    return found if found <= 1.0 else None  # an unknown scale: kept verbatim in the hit only


def _first_text(attrs: Mapping[str, Any], keys: Sequence[str]) -> Optional[str]:
    for key in keys:
        value = text(attrs.get(key))
        if value:
            return truncate(value, 1024)
    return None


def _hit(kind: str, source: str, name: Optional[str], decision: str, target: Optional[str],
         attrs: Mapping[str, Any], score: Optional[float]) -> Dict[str, Any]:  # fmt: skip
    hit: Dict[str, Any] = {"kind": kind, "source": source, "decision": decision}
    if name:
        hit["name"] = name
    status = _DECISIONS[decision][0]
    if status:
        hit["status"] = status
    if target:
        hit["target"] = target
    for field, keys in (("policy_id", _POLICY_KEYS), ("rule_id", _RULE_KEYS), ("category", _CATEGORY_KEYS),
                        ("reason", _REASON_KEYS)):  # fmt: skip
        value = _first_text(attrs, keys)
        if value:
            hit[field] = value
    if score is not None:
        hit["risk_score"] = score
    raw = {key: json_safe(attrs[key]) for key in _RAW_KEYS if key in attrs}
    if raw:
        hit["raw"] = raw
    return hit


def _event_hits(view: SpanView, provider: Optional[str]) -> List[Verdict]:
    """apply_guardrail result events and run_guardrail findings on the guardrail span."""
    out = []
    for event in view.events:
        if event.name not in (RESULT_EVENT, FINDING_EVENT):
            continue
        attrs = event.attributes
        decision = _result_decision(attrs) or "flag"
        risk = _score(attrs.get(APPLY_RISK_SCORE, attrs.get(RISK_SCORE)),
                      _lower(attrs.get("gen_ai.provider.name")) or provider)  # fmt: skip
        if risk is None and _lower(attrs.get(RESULT_TYPE)) == "severity":
            risk = _score(attrs.get(RESULT_VALUE), _lower(attrs.get("gen_ai.provider.name")) or provider)
        target = _target(attrs)
        out.append(Verdict(decision, target, risk,
                           _hit("guardrail", "semconv", text(attrs.get(COMPONENT)), decision, target, attrs, risk)))
    return out


def _result_decision(attrs: Mapping[str, Any]) -> Optional[str]:
    verdict = _lower(attrs.get(ACTION)) or _lower(attrs.get(VERDICT))
    if verdict:
        return _VERDICTS.get(verdict, "flag")
    kind, value = _lower(attrs.get(RESULT_TYPE)), _lower(attrs.get(RESULT_VALUE))
    if kind and value is not None:
        return _RESULTS.get((kind, value), "flag")
    return None


def verdict_of(view: SpanView, tripped: Sequence[str] = ()) -> List[Verdict]:
    """The verdicts a guardrail span reports: one for the span, one per result or finding event.

    ``tripped`` names the guardrails whose tripwire the trace reports elsewhere (``tripwire_names``).
    """
    attrs = view.attributes
    provider = _lower(attrs.get("gen_ai.provider.name"))
    operation = attrs.get(OPERATION)
    target = _target(attrs)
    verdicts: List[Verdict] = []
    if operation == RUN_GUARDRAIL:
        decision = _result_decision(attrs) or "flag"
        if decision == "modify" and attrs.get(MODIFIED) is False:
            decision = "flag"  # asked to modify, left the content as it was
        risk = _score(attrs.get(RISK_SCORE), provider)
        verdicts.append(Verdict(decision, target, risk,
                                _hit("guardrail", "semconv", text(attrs.get(COMPONENT)) or view.name, decision,
                                     target, attrs, risk)))  # fmt: skip
        return verdicts + _event_hits(view, provider)
    if operation == APPLY_GUARDRAIL:
        events = _event_hits(view, provider)
        decision = _result_decision(attrs)
        if decision == "block" and events and all(e.decision in ("modify", "allow", "flag") for e in events) \
                and any(e.decision == "modify" for e in events):  # fmt: skip
            decision = "modify"  # Bedrock intervened only to mask (every assessment ANONYMIZED)
        if decision is not None:
            risk = _score(attrs.get(RESULT_VALUE), provider) if _lower(attrs.get(RESULT_TYPE)) == "severity" else None
            verdicts.append(Verdict(decision, target, risk,
                                    _hit("guardrail", "semconv", text(attrs.get(COMPONENT)) or view.name, decision,
                                         target, attrs, risk)))  # fmt: skip
        return verdicts + events
    if NEMO_STOP in attrs:
        decision = "block" if attrs.get(NEMO_STOP) is True or _lower(attrs.get(NEMO_STOP)) == "true" else "allow"
        name = text(attrs.get("rail.name")) or view.name
        return [Verdict(decision, target, None, _hit("guardrail", "nemo-guardrails", name, decision, target, attrs, None))]
    if VALIDATOR_ON_FAIL in attrs:
        outcome = _lower(attrs.get(VALIDATOR_OUTCOME))
        outcome = outcome.strip('"') if outcome else outcome
        if outcome == "fail":
            decision = _ON_FAIL.get(_lower(attrs.get(VALIDATOR_ON_FAIL)) or "noop", "flag")
        elif outcome == "pass":
            decision = "allow"
        else:
            return []  # the validator did not report an outcome: nothing to say
        name = text(attrs.get("validator.name")) or view.name
        return [Verdict(decision, target, None, _hit("guardrail", "guardrails-ai", name, decision, target, attrs, None))]
    if TRACELOOP_STATUS in attrs:
        # Traceloop SDK (traceloop/sdk/guardrail/guardrail.py): a `guardrail.run` span wraps the guarded
        # function and its `guard` spans; each guard reports PASSED/FAILED (FAILED with error.type: the guard
        # raised). The on_failure handler (log, return a value, raise) is not on the spans: a failed guard
        # is a flag; the wrapper raising (its span ERROR) is the enforcement, a block.
        status = _lower(attrs.get(TRACELOOP_STATUS))
        name = text(attrs.get(TRACELOOP_NAME)) or view.name
        if operation == WRAPPING_GUARDRAIL:
            if status != "failed" or view.status_code != "ERROR":
                return []  # its guards report their own verdicts
            decision = "block"
        elif status == "failed" and "gen_ai.guardrail.error.type" not in attrs:
            decision = "flag"
        elif status == "passed":
            decision = "allow"
        else:
            return []  # the guard itself failed, which says nothing about the content
        return [Verdict(decision, target, None, _hit("guardrail", "traceloop", name, decision, target, attrs, None))]
    # An OpenInference GUARDRAIL span: no verdict attribute; the OpenAI Agents SDK's tripwire is reported
    # on the halted turn (tripwire_names), an error status is the guardrail raising (a refusal).
    if view.name in tripped:
        decision = "block"
    elif view.status_code == "ERROR":
        decision = "block"
    else:
        decision = "allow"
    raw_attrs = {**attrs, "tripwire_triggered": view.name in tripped} if view.name in tripped else attrs
    return [Verdict(decision, target, None, _hit("guardrail", "openinference", view.name, decision, target, raw_attrs, None))]


def evaluation_events(view: SpanView) -> List[Any]:
    """The ``gen_ai.evaluation.result`` events on a span."""
    return [event for event in view.events if event.name == EVALUATION_EVENT]


def evaluation_hit(attrs: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """A ``gen_ai.evaluation.result`` event (span event or log record attributes) as a policy hit.

    Evaluations judge an answer after the fact: they never change ``status``.
    """
    name = text(attrs.get("gen_ai.evaluation.name"))
    if not name:
        return None
    hit: Dict[str, Any] = {"kind": "evaluation", "name": name}
    score = number(attrs.get("gen_ai.evaluation.score.value"))
    if score is not None:
        hit["score"] = score
    label = text(attrs.get("gen_ai.evaluation.score.label"))
    if label:
        hit["label"] = truncate(label, 256)
    explanation = text(attrs.get("gen_ai.evaluation.explanation"))
    if explanation:
        hit["explanation"] = truncate(explanation, 1024)
    error = text(attrs.get("error.type"))
    if error:
        hit["error"] = error
    response_id = text(attrs.get("gen_ai.response.id"))
    if response_id:
        hit["response_id"] = response_id
    return hit


def combine(event: Dict[str, Any], verdicts: Sequence[Verdict], evaluations: Sequence[Dict[str, Any]] = ()) -> None:
    """Fold verdicts and evaluations into a call's record. What the application set explicitly
    (``promptwall.status``, ``.final_decision``, ``.risk_score``: ``metadata.gen_ai.set_by_application``) wins."""
    if not verdicts and not evaluations:
        return
    hits = event.setdefault("policy_hits", [])
    explicit = event["metadata"]["gen_ai"].get("set_by_application", ())
    worst: Optional[Verdict] = None
    for verdict in verdicts:
        hits.append(verdict.hit)
        if worst is None or _DECISIONS[verdict.decision][1] > _DECISIONS[worst.decision][1]:
            worst = verdict
        if verdict.risk is not None and "risk_score" not in explicit:
            event["risk_score"] = max(event.get("risk_score", 0.0), verdict.risk)
    hits.extend(evaluations)
    if worst is None:
        return
    if "final_decision" not in explicit:
        current = event.get("final_decision")
        if current not in _DECISIONS or _DECISIONS[worst.decision][1] > _DECISIONS[current][1]:
            event["final_decision"] = worst.decision
    status = worst.status
    if status and "status" not in explicit and _STATUS_RANK.get(status, 0) > _STATUS_RANK.get(event.get("status"), 0):
        event["status"] = status


# ok and error give way to a guardrail's enforcement (a call a guardrail stopped often ends in an error).
_STATUS_RANK = {"ok": 0, "error": 1, "regenerated": 2, "rewritten": 3, "blocked": 4}


# Azure OpenAI refuses a request its content filter (or Prompt Shields) flags with HTTP 400, error code
# content_filter and inner code ResponsibleAIPolicyViolation; the openai client's exception message, which
# instrumentations record as the span's status, quotes that body.
_FILTER_REFUSALS = ("'code': 'content_filter'", '"code": "content_filter"', "ResponsibleAIPolicyViolation")


def refused_by_provider_filter(error_message: str) -> bool:
    """Whether a failed call's error is a provider's content filter refusing the request."""
    return any(marker in error_message for marker in _FILTER_REFUSALS)


def provider_filter_hit(reasons: Sequence[str], error: Optional[Mapping[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """The policy hit for a provider's own filter: a finish reason, or an error refusing the request."""
    if error is not None:
        return {"kind": "provider_filter", "source": "error", "decision": "block", "status": "blocked",
                "raw": {"error.type": error.get("type")}}  # fmt: skip
    blocking = [reason for reason in reasons if reason in BLOCKING_FINISH_REASONS]
    if not blocking:
        return None
    return {"kind": "provider_filter", "source": "finish_reason", "decision": "block", "status": "blocked",
            "raw": {"finish_reasons": list(reasons)}}  # fmt: skip

