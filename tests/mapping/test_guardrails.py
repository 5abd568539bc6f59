"""Guardrail verdicts and evaluation results onto the call they judge (issue 11, "Guardrails and evaluations").

Span attribute sets follow the producers' own definitions, cited per case: the
GenAI conventions' drafts (semantic-conventions-genai docs/gen-ai/gen-ai-security.md,
``run_guardrail``; docs/gen-ai/gen-ai-guardrails.md, ``apply_guardrail`` and its
examples), NeMo Guardrails' tracing constants (``guardrails.rail`` spans,
``rail.type``/``rail.name``/``rail.stop``/``guardrails.rail.reason``), Guardrails AI's
validator spans (guardrails/telemetry/validator_tracing.py: ``validator.on_fail``,
``validator.validate.output.<ValidationResult field>``), the Traceloop SDK's
guardrail spans (``gen_ai.guardrail.status`` PASSED/FAILED/ERROR); and recorded
runs of the OpenAI Agents SDK with an input guardrail under OpenInference
(tests/fixtures/captures). Live: the processor and exporter to the real backend.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import httpx
import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider

from promptwall_otel import PromptWallLogProcessor, PromptWallSpanProcessor
from promptwall_otel.backend import LocalBackend
from promptwall_otel.mapping import EventView, LogView, MappingOptions, SpanView
from promptwall_otel.mapping.ledger import TraceLedger
from promptwall_otel.record import validate_event
from tests.conftest import API_KEY
from tests.mapping.captures import load

TRACE = 0xABC
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}  # fmt: skip


def span(span_id: int, parent: Optional[int], attrs: Dict[str, Any], start: int, end: int, name: str = "",
         events: List[EventView] = (), status: str = "UNSET", message: Optional[str] = None) -> SpanView:  # type: ignore[assignment]  # fmt: skip
    return SpanView(name or f"s{span_id}", TRACE, span_id, start * 1_000_000, end * 1_000_000, attrs,
                    parent_span_id=parent, events=list(events), status_code=status, status_message=message)  # fmt: skip


def mapped(*views: SpanView, logs: Optional[Dict[int, List[LogView]]] = None) -> List[Dict[str, Any]]:
    records = TraceLedger().map_batch(list(views), MappingOptions(), logs_for=lambda v: (logs or {}).get(v.span_id, []))
    assert all(validate_event(record) == [] for record in records), [validate_event(r) for r in records]
    return records


def billed(records: List[Dict[str, Any]]) -> int:
    return sum(record.get("total_tokens", 0) for record in records)


def only(records: List[Dict[str, Any]]) -> Dict[str, Any]:
    assert len(records) == 1, records
    return records[0]


# --- the GenAI conventions' drafts ------------------------------------------------------------------

RUN_DENY = {"gen_ai.operation.name": "run_guardrail", "gen_ai.guardrail.component.name": "Custom PII Filter",
            "gen_ai.guardrail.target.type": "output", "gen_ai.guardrail.verdict.type": "deny",
            "gen_ai.guardrail.verdict.reason": "PII detected in output", "gen_ai.guardrail.verdict.code": "AACS-PII",
            "gen_ai.guardrail.security.policy.id": "policy_pii_v2",
            "gen_ai.guardrail.security.policy.rule.id": "rule-pii-email",
            "gen_ai.guardrail.security.risk.category": "sensitive_info_disclosure",
            "gen_ai.guardrail.security.risk.score": 0.85}  # fmt: skip


def test_run_guardrail_child_of_its_call_blocks_it_and_keeps_the_verdict_verbatim() -> None:
    record = only(mapped(span(2, 1, RUN_DENY, 150, 180), span(1, None, CHAT, 100, 200)))
    assert (record["status"], record["final_decision"], record["risk_score"]) == ("blocked", "block", 0.85)
    assert record["total_tokens"] == 15, "the call's bill, nothing for the guardrail"
    (hit,) = record["policy_hits"]
    assert hit["policy_id"] == "policy_pii_v2" and hit["rule_id"] == "rule-pii-email"
    assert hit["category"] == "sensitive_info_disclosure" and hit["reason"] == "PII detected in output"
    assert hit["raw"]["gen_ai.guardrail.verdict.type"] == "deny" and hit["raw"]["gen_ai.guardrail.verdict.code"] == "AACS-PII"


@pytest.mark.parametrize("attrs, status, decision", [
    ({"gen_ai.guardrail.verdict.type": "warn", "gen_ai.guardrail.action.type": "block"}, "blocked", "block"),
    ({"gen_ai.guardrail.verdict.type": "deny", "gen_ai.guardrail.action.type": "allow"}, "ok", "allow"),
    ({"gen_ai.guardrail.verdict.type": "modify", "gen_ai.guardrail.security.content.modified": True}, "rewritten", "modify"),
    ({"gen_ai.guardrail.verdict.type": "modify", "gen_ai.guardrail.security.content.modified": False}, "ok", "flag"),
    ({"gen_ai.guardrail.verdict.type": "escalate"}, "ok", "escalate"),
    ({"gen_ai.guardrail.verdict.type": "warn"}, "ok", "flag"),
])  # fmt: skip
def test_the_enforced_action_wins_over_the_verdict(attrs: Dict[str, Any], status: str, decision: str) -> None:
    guard = {"gen_ai.operation.name": "run_guardrail", "gen_ai.guardrail.target.type": "input", **attrs}
    record = only(mapped(span(2, 1, guard, 110, 120), span(1, None, CHAT, 100, 200)))
    assert (record["status"], record["final_decision"]) == (status, decision)


def result_event(**attrs: Any) -> EventView:
    return EventView("gen_ai.guardrail.result", 0, attrs)


def apply_span(value: str, *events: EventView, **extra: Any) -> Dict[str, Any]:
    return {"gen_ai.operation.name": "apply_guardrail", "gen_ai.provider.name": "aws.bedrock",
            "gen_ai.guardrail.component.name": "Amazon Bedrock Guardrails", "gen_ai.guardrail.policy.id": "gr-abc123",
            "gen_ai.guardrail.policy.version": "1", "gen_ai.guardrail.source": "OUTPUT",
            "gen_ai.guardrail.result.type": "action", "gen_ai.guardrail.result.value": value, **extra}  # fmt: skip


@pytest.mark.parametrize("assessments, status", [
    (["BLOCKED"], "blocked"),
    (["ANONYMIZED", "ANONYMIZED"], "rewritten"),  # Bedrock intervened only to mask PII
    ([], "blocked"),
])  # fmt: skip
def test_bedrock_apply_guardrail(assessments: List[str], status: str) -> None:
    events = [result_event(**{"gen_ai.guardrail.result.type": "action", "gen_ai.guardrail.result.value": a,
                              "gen_ai.guardrail.risk.category": "EMAIL"}) for a in assessments]  # fmt: skip
    guard = span(2, None, apply_span("GUARDRAIL_INTERVENED"), 210, 230, events=events)
    record = only(mapped(span(1, None, CHAT, 100, 200), guard))
    assert record["status"] == status and record["metadata"]["otel"]["span_id"] == f"{1:016x}"
    assert record["policy_hits"][0]["raw"]["gen_ai.guardrail.result.value"] == "GUARDRAIL_INTERVENED"
    assert [hit["category"] for hit in record["policy_hits"][1:]] == ["EMAIL"] * len(assessments)


def test_azure_severities_are_risk_not_a_verdict() -> None:
    """Azure AI Content Safety reports severities (0..7) and no verdict: status stays, risk is read."""
    events = [result_event(**{"gen_ai.guardrail.component.name": "Azure AI Content Safety",
                              "gen_ai.provider.name": "azure.ai.content_safety",
                              "gen_ai.guardrail.result.type": "severity", "gen_ai.guardrail.result.value": str(score),
                              "gen_ai.guardrail.risk.category": category, "gen_ai.guardrail.risk.score": float(score)})
              for category, score in (("Hate", 0), ("Violence", 6))]  # fmt: skip
    guard = span(2, 1, {"gen_ai.operation.name": "apply_guardrail", "gen_ai.provider.name": "azure.ai.content_safety"},
                 110, 120, events=events)  # fmt: skip
    record = only(mapped(guard, span(1, None, CHAT, 100, 200)))
    assert record["status"] == "ok" and record["final_decision"] == "flag"
    assert record["risk_score"] == pytest.approx(6 / 7)
    assert [(h["category"], h["raw"]["gen_ai.guardrail.risk.score"]) for h in record["policy_hits"]] == [("Hate", 0.0), ("Violence", 6.0)]


def test_a_finding_event_is_a_policy_hit() -> None:
    finding = EventView("gen_ai.guardrail.security.finding", 0, {
        "gen_ai.guardrail.security.policy.id": "org-compliance-001", "gen_ai.guardrail.target.type": "input",
        "gen_ai.guardrail.security.risk.category": "prompt_injection", "gen_ai.guardrail.security.risk.score": 0.95})
    guard = span(2, 1, {**RUN_DENY, "gen_ai.guardrail.security.risk.score": 0.4}, 110, 120, events=[finding])
    record = only(mapped(guard, span(1, None, CHAT, 100, 200)))
    assert record["risk_score"] == 0.95, "the highest normalised score"
    assert [h["category"] for h in record["policy_hits"]] == ["sensitive_info_disclosure", "prompt_injection"]


# --- guardrail libraries ------------------------------------------------------------------------------


def nemo_rail(span_id: int, rail_type: str, stop: bool, start: int, end: int) -> SpanView:
    attrs = {"rail.type": rail_type, "rail.name": f"self check {rail_type}", "rail.stop": stop}
    if stop:
        attrs["guardrails.rail.reason"] = "policy violation"
    return span(span_id, 99, attrs, start, end, name="guardrails.rail")


NEMO_LLM = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 1}  # fmt: skip


def test_nemo_input_rail_that_stops_the_request_is_a_blocked_record_without_tokens() -> None:
    """The rail's own self-check call is billed (a real model call), never marked blocked; the request
    it stopped has no call of its own, so it is recorded as a blocked request with no tokens."""
    self_check = span(3, 50, NEMO_LLM, 12, 18, name="chat gpt-4o-mini")  # under the rail's action span
    records = mapped(self_check, nemo_rail(2, "input", True, 10, 20))
    call, blocked = records
    assert (call["status"], call["total_tokens"]) == ("ok", 41) and "policy_hits" not in call
    assert blocked["status"] == "blocked" and blocked["request_id"].startswith("guard-")
    assert "total_tokens" not in blocked and "cost_usd" not in blocked
    assert blocked["policy_hits"][0]["raw"] == {"rail.type": "input", "rail.name": "self check input", "rail.stop": True,
                                                "guardrails.rail.reason": "policy violation"}
    assert billed(records) == 41


def test_nemo_output_rail_stop_blocks_the_main_call_not_its_self_check() -> None:
    main = span(4, 60, {**NEMO_LLM, "gen_ai.usage.input_tokens": 20}, 30, 60, name="chat main")
    self_check = span(5, 70, NEMO_LLM, 72, 78, name="chat self check")
    passed_input = nemo_rail(2, "input", False, 10, 20)
    records = mapped(passed_input, main, self_check, nemo_rail(6, "output", True, 70, 80))
    by_name = {r["metadata"]["otel"]["span_name"]: r for r in records}
    assert set(by_name) == {"chat main", "chat self check"}
    assert by_name["chat main"]["status"] == "blocked"
    assert [h["decision"] for h in by_name["chat main"]["policy_hits"]] == ["allow", "block"]
    assert "policy_hits" not in by_name["chat self check"]
    assert billed(records) == 21 + 41


@pytest.mark.parametrize("on_fail, outcome, status, decision", [
    ("reask", "fail", "regenerated", "reask"),
    ("fix", "fail", "rewritten", "modify"),
    ("filter", "fail", "rewritten", "modify"),
    ("exception", "fail", "blocked", "block"),
    ("refrain", "fail", "blocked", "block"),
    ("noop", "fail", "ok", "flag"),
    ("exception", "pass", "ok", "allow"),
])  # fmt: skip
def test_guardrails_ai_validators(on_fail: str, outcome: str, status: str, decision: str) -> None:
    validator = {"openinference.span.kind": "GUARDRAIL", "type": "guardrails/guard/step/validator",
                 "validator.name": "detect_pii", "validator.on_fail": on_fail, "validator.validate.output.outcome": outcome}
    record = only(mapped(span(1, None, CHAT, 100, 200), span(2, None, validator, 210, 220, name="detect_pii.validate")))
    assert (record["status"], record["final_decision"]) == (status, decision)
    assert record["policy_hits"][0]["raw"]["validator.on_fail"] == on_fail


@pytest.mark.parametrize("guard_status, raised, status, decision", [
    ("FAILED", False, "ok", "flag"),  # on_failure logged or returned a fallback: the spans cannot tell which
    ("FAILED", True, "blocked", "block"),  # on_failure raised out of the guardrail span
    ("PASSED", False, "ok", "allow"),
])  # fmt: skip
def test_traceloop_guardrail_wraps_the_call_it_guards(guard_status: str, raised: bool, status: str, decision: str) -> None:
    """Traceloop SDK (traceloop/sdk/guardrail/guardrail.py): ``{name}.guardrail`` (operation guardrail.run)
    runs the guarded function inside it, then one ``{guard}.guard`` span (operation guard) per guard."""
    wrapper = {"gen_ai.operation.name": "guardrail.run", "gen_ai.guardrail.name": "email", "gen_ai.guardrail.status":
               guard_status, "gen_ai.guardrail.duration": 12.5, "gen_ai.guardrail.guard_count": 1}  # fmt: skip
    guard = {"gen_ai.operation.name": "guard", "gen_ai.guardrail.name": "toxicity_detector",
             "gen_ai.guardrail.status": guard_status, "gen_ai.guardrail.input": '{"text": "..."}'}  # fmt: skip
    views = [span(3, 1, CHAT, 10, 40, name="openai.chat"), span(2, 1, guard, 45, 55, name="toxicity_detector.guard"),
             span(1, None, wrapper, 0, 60, name="email.guardrail", status="ERROR" if raised else "UNSET")]  # fmt: skip
    record = only(mapped(*views))
    assert (record["status"], record["final_decision"], record["total_tokens"]) == (status, decision, 15)
    assert [hit["name"] for hit in record["policy_hits"]] == ["toxicity_detector"] + (["email"] if raised else [])
    assert "gen_ai.guardrail.input" not in record["policy_hits"][0]["raw"], "guard inputs are content: never copied"


def test_agents_sdk_input_guardrail_pass_and_tripwire() -> None:
    """Recorded: an agent with an input guardrail, under OpenInference's Agents and OpenAI instrumentations."""
    views, _ = load("openai-agents__openinference+openinference__guardrail_pass")
    record = only(mapped(*views))
    assert (record["status"], record["final_decision"], record["total_tokens"]) == ("ok", "allow", 12)
    assert record["policy_hits"] == [{"kind": "guardrail", "source": "openinference", "decision": "allow", "name": "no_homework"}]
    views, _ = load("openai-agents__openinference+openinference__guardrail_tripped")
    blocked = only(mapped(*views))  # the run stopped before any model call
    assert (blocked["status"], blocked["final_decision"]) == ("blocked", "block") and "total_tokens" not in blocked
    assert blocked["policy_hits"][0]["raw"] == {"tripwire_triggered": True}


# --- provider interventions, explicit values -----------------------------------------------------------


@pytest.mark.parametrize("reason", ["content_filter", "guardrail_intervened", "refusal", "safety"])
def test_a_providers_filter_in_the_finish_reason_blocks(reason: str) -> None:
    record = only(mapped(span(1, None, {**CHAT, "gen_ai.response.finish_reasons": [reason]}, 0, 10)))
    assert (record["status"], record["final_decision"]) == ("blocked", "block")
    assert record["policy_hits"] == [{"kind": "provider_filter", "source": "finish_reason", "decision": "block",
                                      "status": "blocked", "raw": {"finish_reasons": [reason]}}]  # fmt: skip


def test_what_the_application_set_wins() -> None:
    call = {**CHAT, "promptwall.status": "ok", "promptwall.final_decision": "pass", "promptwall.risk_score": 0.1}
    record = only(mapped(span(2, 1, RUN_DENY, 110, 120), span(1, None, call, 100, 200)))
    assert (record["status"], record["final_decision"], record["risk_score"]) == ("ok", "pass", 0.1)
    assert record["policy_hits"][0]["decision"] == "block", "the verdict is still recorded"


# --- across batches ------------------------------------------------------------------------------------


def test_an_input_guardrail_in_an_earlier_batch_reaches_its_call() -> None:
    ledger = TraceLedger()
    root = span(9, None, {"gen_ai.operation.name": "invoke_agent"}, 0, 300)
    guard = span(2, 9, {**RUN_DENY, "gen_ai.guardrail.target.type": "input", "gen_ai.guardrail.verdict.type": "warn"}, 10, 20)
    assert ledger.map_batch([guard], MappingOptions()) == []
    (record,) = ledger.map_batch([span(1, 9, CHAT, 30, 60)], MappingOptions())
    assert record["final_decision"] == "flag" and record["policy_hits"][0]["reason"] == "PII detected in output"
    assert ledger.map_batch([root], MappingOptions()) == []


def test_an_output_guardrail_after_its_call_left_is_a_follow_up_record() -> None:
    ledger = TraceLedger()
    (call,) = ledger.map_batch([span(1, 9, CHAT, 30, 60)], MappingOptions())
    (follow_up,) = ledger.map_batch([span(2, 9, RUN_DENY, 70, 80)], MappingOptions())
    assert validate_event(follow_up) == []
    assert follow_up["metadata"]["gen_ai"]["guardrail_of"] == call["request_id"]
    assert follow_up["status"] == "blocked" and "total_tokens" not in follow_up
    again = TraceLedger()
    again.map_batch([span(1, 9, CHAT, 30, 60)], MappingOptions())
    assert again.map_batch([span(2, 9, RUN_DENY, 70, 80)], MappingOptions())[0]["request_id"] == follow_up["request_id"]


# --- evaluations ---------------------------------------------------------------------------------------

EVAL = {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.25,
        "gen_ai.evaluation.score.label": "not_relevant", "gen_ai.evaluation.explanation": "Off topic."}  # fmt: skip


def test_evaluation_events_on_the_span_and_as_logs_join_the_call() -> None:
    log = LogView(TRACE, 1, "gen_ai.evaluation.result", None, {"gen_ai.evaluation.name": "groundedness",
                                                               "gen_ai.evaluation.score.label": "pass"})  # fmt: skip
    record = only(mapped(span(1, None, CHAT, 0, 10, events=[EventView("gen_ai.evaluation.result", 0, EVAL)]),
                         logs={1: [log]}))  # fmt: skip
    assert record["status"] == "ok" and "final_decision" not in record, "an evaluation never changes the outcome"
    assert record["policy_hits"] == [
        {"kind": "evaluation", "name": "relevance", "score": 0.25, "label": "not_relevant", "explanation": "Off topic."},
        {"kind": "evaluation", "name": "groundedness", "label": "pass"},
    ]
    assert record["total_tokens"] == 15


# --- live: processor and exporter to the real backend --------------------------------------------------


def test_live_guardrails_and_evaluations_reach_the_backend_and_bill_only_the_calls(backend: LocalBackend,
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    """A call guarded by a run_guardrail span and judged twice (a span event and an SDK log record), a
    call with neither, and a NeMo input rail that stopped a request before any call."""
    provider = TracerProvider()
    provider.add_span_processor(PromptWallSpanProcessor(api_key=API_KEY, base_url=backend.url, spool_dir=str(tmp_path)))
    logs = LoggerProvider()
    logs.add_log_record_processor(PromptWallLogProcessor())
    tracer, evaluator = provider.get_tracer("app"), logs.get_logger("evaluator")
    run = uuid.uuid4().hex
    token = context.attach(baggage.set_baggage("promptwall.metadata.run", run))
    try:
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={**CHAT, "gen_ai.response.id": f"chatcmpl-{run}"}) as call:
            with tracer.start_as_current_span("run_guardrail Custom PII Filter", attributes=RUN_DENY):
                pass
            call.add_event("gen_ai.evaluation.result", EVAL)
            evaluator.emit(event_name="gen_ai.evaluation.result", attributes={"gen_ai.evaluation.name": "toxicity",
                                                                              "gen_ai.evaluation.score.value": 0.0})
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={**CHAT, "gen_ai.response.id": f"chatcmpl-2-{run}"}):
            pass
        with tracer.start_as_current_span("guardrails.request"):
            with tracer.start_as_current_span("guardrails.rail", attributes={"rail.type": "input", "rail.name": "jailbreak",
                                                                              "rail.stop": True}):  # fmt: skip
                pass
    finally:
        context.detach(token)
    provider.shutdown()
    response = httpx.get(backend.url + "/api/console/requests", params={"metadata.run": run, "limit": 100},
                         headers={"X-API-Key": API_KEY})  # fmt: skip
    stored = response.json()["requests"]
    by_status = sorted((r["status"], r.get("total_tokens") or 0, len(r.get("policy_hits") or [])) for r in stored)
    assert by_status == [("blocked", 0, 1), ("blocked", 15, 3), ("ok", 15, 0)], by_status
    guarded = next(r for r in stored if r.get("total_tokens") and r["status"] == "blocked")
    assert sorted(h["kind"] for h in guarded["policy_hits"]) == ["evaluation", "evaluation", "guardrail"]
    assert guarded["risk_score"] == 0.85 and guarded["final_decision"] == "block"
    assert sum(r.get("total_tokens") or 0 for r in stored) == 30, "guardrails are never billed"


def test_evaluations_after_their_call_left_are_one_follow_up_record_per_call() -> None:
    ledger = TraceLedger()
    call_attrs = {**CHAT, "session.id": "s-1", "user.id": "u-1", "gen_ai.response.id": "chatcmpl-evaluated-0001"}
    now_ms = time.time_ns() // 1_000_000  # a response id names calls of the last 5 minutes
    (call,) = ledger.map_batch([span(1, None, call_attrs, now_ms - 60_000, now_ms - 59_000)], MappingOptions())
    by_span = LogView(TRACE, 1, "gen_ai.evaluation.result", None, EVAL, time_ns=20_000_000)
    by_response = LogView(0, 0, "gen_ai.evaluation.result", None, {"gen_ai.evaluation.name": "groundedness",
                                                                   "gen_ai.evaluation.score.label": "fail",
                                                                   "gen_ai.response.id": "chatcmpl-evaluated-0001"})  # fmt: skip
    unknown = LogView(TRACE, 77, "gen_ai.evaluation.result", None, EVAL)
    assert ledger.call_sent(1) and ledger.call_sent("chatcmpl-evaluated-0001") and not ledger.call_sent(77)
    (follow_up,) = ledger.late_evaluations([by_span, by_response, unknown], MappingOptions())
    assert validate_event(follow_up) == []
    assert follow_up["metadata"]["gen_ai"] == {"operation": "evaluation", "evaluation_of": call["request_id"],
                                               "content_captured": False}  # fmt: skip
    assert (follow_up["session_id"], follow_up["user_id"]) == ("s-1", "u-1")
    assert [h["name"] for h in follow_up["policy_hits"]] == ["relevance", "groundedness"]
    assert "total_tokens" not in follow_up and follow_up["status"] == "ok"
    replayed = ledger.late_evaluations([by_span, by_response], MappingOptions())[0]
    assert replayed["request_id"] == follow_up["request_id"], "the same evaluations, the same key"


def test_live_an_evaluation_after_its_call_was_sent(backend: LocalBackend, tmp_path: Path) -> None:
    provider = TracerProvider()
    processor = PromptWallSpanProcessor(api_key=API_KEY, base_url=backend.url, spool_dir=str(tmp_path))
    provider.add_span_processor(processor)
    logs = LoggerProvider()
    logs.add_log_record_processor(PromptWallLogProcessor())
    run = uuid.uuid4().hex
    token = context.attach(baggage.set_baggage("promptwall.metadata.run", run))
    try:
        with provider.get_tracer("app").start_as_current_span("chat", attributes={**CHAT, "session.id": run}) as call:
            evaluated = call.get_span_context()
        assert processor.force_flush()  # the call's record has left
        # An evaluator judging it later, naming the evaluated span (as the conventions ask)
        logs.get_logger("evaluator").emit(event_name="gen_ai.evaluation.result", attributes=EVAL,
                                          context=trace.set_span_in_context(trace.NonRecordingSpan(evaluated)))  # fmt: skip
    finally:
        context.detach(token)
    provider.shutdown()
    response = httpx.get(backend.url + "/api/console/requests", params={"session_id": run, "limit": 10},
                         headers={"X-API-Key": API_KEY})  # fmt: skip
    call_record, follow_up = sorted(response.json()["requests"], key=lambda r: r["request_id"].startswith("eval-"))
    assert follow_up["metadata"]["gen_ai"]["evaluation_of"] == call_record["request_id"]
    assert follow_up["policy_hits"][0]["label"] == "not_relevant" and "policy_hits" not in call_record
    assert call_record["total_tokens"] == 15 and not follow_up.get("total_tokens")


def test_receiver_an_evaluation_log_after_its_call_was_forwarded(tmp_path: Path) -> None:
    """Over OTLP: the call is forwarded, then an evaluator's log record naming only its response id
    arrives; the receiver sends one follow-up record naming the call."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    from promptwall_otel.receiver.app import Receiver
    from tests.receiver.test_receiver import chat_request, otlp_post, wait_for

    with LocalBackend(api_keys=[API_KEY]) as behind:
        with Receiver(behind.url, "127.0.0.1:0", None, correlation_wait_s=0.2, spool_root=str(tmp_path)) as receiver:
            assert otlp_post(receiver.http_url + "/v1/traces", chat_request("chatcmpl-evaluated-late-0001")).status_code == 200
            (call,) = wait_for(behind.url, 1)
            memory = InMemoryLogRecordExporter()
            logs = LoggerProvider()
            logs.add_log_record_processor(SimpleLogRecordProcessor(memory))
            logs.get_logger("evaluator").emit(event_name="gen_ai.evaluation.result", attributes={
                **EVAL, "gen_ai.response.id": "chatcmpl-evaluated-late-0001"})  # fmt: skip
            body = encode_logs(memory.get_finished_logs()).SerializeToString()
            assert otlp_post(receiver.http_url + "/v1/logs", body).status_code == 200
            stored = wait_for(behind.url, 2)
    follow_up = next(r for r in stored if r["request_id"].startswith("eval-"))
    assert follow_up["metadata"]["gen_ai"]["evaluation_of"] == call["request_id"]
    assert follow_up["policy_hits"][0]["name"] == "relevance" and not follow_up.get("total_tokens")


def test_an_evaluator_span_under_the_call_joins_it_and_after_it_left_follows_up() -> None:
    """An evaluator's own span (OpenInference EVALUATOR) child of the call, with the result as its event."""
    evaluator = span(2, 1, {"openinference.span.kind": "EVALUATOR"}, 20, 30, name="evaluate relevance",
                     events=[EventView("gen_ai.evaluation.result", 30_000_000, EVAL)])  # fmt: skip
    record = only(mapped(evaluator, span(1, None, CHAT, 0, 40)))
    assert record["policy_hits"][0]["name"] == "relevance" and record["status"] == "ok"
    ledger = TraceLedger()
    (call,) = ledger.map_batch([span(1, None, CHAT, 0, 10)], MappingOptions())
    (follow_up,) = ledger.map_batch([evaluator], MappingOptions())
    assert follow_up["metadata"]["gen_ai"]["evaluation_of"] == call["request_id"] and validate_event(follow_up) == []


def test_azure_content_filter_refusing_the_request_is_blocked_and_keeps_the_error() -> None:
    """Azure OpenAI answers a filtered prompt with 400 content_filter; the openai client's
    BadRequestError message (the span status OpenInference and openai-v2 record) quotes the body."""
    message = ("Error code: 400 - {'error': {'message': \"The response was filtered due to the prompt triggering "
               "Azure OpenAI's content management policy.\", 'type': None, 'param': 'prompt', 'code': "
               "'content_filter', 'status': 400, 'innererror': {'code': 'ResponsibleAIPolicyViolation'}}}")
    failed = span(1, None, {**CHAT, "error.type": "BadRequestError"}, 0, 10, status="ERROR", message=message)
    record = only(mapped(failed))
    assert (record["status"], record["error_code"], record["final_decision"]) == ("blocked", "BadRequestError", "block")
    assert record["policy_hits"][0]["source"] == "error"
    other = span(1, None, {**CHAT, "error.type": "BadRequestError"}, 0, 10, status="ERROR", message="Error code: 400 - bad model")
    assert only(mapped(other))["status"] == "error"


@pytest.mark.parametrize("attrs", [
    {"rail.type": "input", "rail.name": "self check input", "rail.stop": False, "gen_ai.request.model": "gpt-4o-mini",
     "gen_ai.usage.input_tokens": 40, "gen_ai.usage.output_tokens": 1},
    {"openinference.span.kind": "GUARDRAIL", "llm.model_name": "gpt-4o-mini", "llm.token_count.prompt": 40,
     "llm.token_count.completion": 1},
    {"openinference.span.kind": "EVALUATOR", "llm.model_name": "gpt-4o-mini", "llm.token_count.prompt": 40},
    {**RUN_DENY, "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 40},
    {"gen_ai.operation.name": "guard", "gen_ai.guardrail.name": "toxicity", "gen_ai.guardrail.status": "PASSED",
     "gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 40},
])  # fmt: skip
def test_a_guardrail_or_evaluator_span_carrying_usage_is_never_billed(attrs: Dict[str, Any]) -> None:
    records = mapped(span(1, None, CHAT, 0, 10), span(2, None, attrs, 20, 30, name="guard"))
    assert billed(records) == 15 and all(r["metadata"]["otel"]["span_name"] != "guard" for r in records)
