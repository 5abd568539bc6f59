"""PromptWall records to Promptetheus runs: the second target's whole mapping, pure and I/O-free.

Promptetheus (``docs/promptetheus.md``) traces agent runs: a trace per run,
then the run's steps as ordered events. Spans are mapped once, by the
PromptWall mapping (the trace ledger and the agent-run grouping of
:mod:`promptwall_otel.mapping.runs`); this module only reshapes its records:

- a **run record** (``request_id`` ``run-…`` with ``spans[]``: an agent or
  workflow run) becomes one trace whose events are the run's prompt as a
  ``user_message``, then one event per stage in start order (``llm_call``,
  ``tool_call``, ``retrieval``, ``guardrail_check``, ``goal_check`` for an
  evaluation, ``agent_step`` for nested agents, workflows, tasks, plans and
  memory operations), then an ``error`` if the run failed;
- any other record (a call outside every run) becomes a one-step trace: its
  prompt as a ``user_message``, the call as an ``llm_call``;
- a call's evaluations (``gen_ai.evaluation.result``, in its ``policy_hits``)
  become ``goal_check`` events after its steps; an evaluation that arrived
  after its call left (a PromptWall ``eval-`` record) is appended to the
  call's trace, and a guardrail that blocked a request without a call is a
  trace with one ``guardrail_check``.

Invariants:

- Ids are deterministic, so a retry or a replay never doubles anything: the
  trace ``id`` is the record's ``request_id`` (for a run, derived from the
  OTel trace and the run's span), and each event's ``idempotency_key`` is
  ``{trace id}:{span id or role}:{type}``.
- ``seq`` follows the order in which the steps started (the run's prompt
  first, its error last).
- Content travels only as the PromptWall record carries it (the same
  ``capture_content``, caps and redact hook); every ``llm_call`` also names
  its PromptWall record in ``prompt_ref``, so the two backends join.
- Tokens are counted once per call: a stage whose call was billed in another
  record (``billed_in``) carries no token counts.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional

from . import config
from .record import format_ns
from .stats import ExportStats
from .transport.encoding import encode

__all__ = ["Settings", "run_encoder", "run_of"]

logger = logging.getLogger("promptwall_otel")

TARGET = "promptetheus"
ENV_URL = "PROMPTETHEUS_API_URL"
DEFAULT_URL = "http://127.0.0.1:4318"  # the seed's default (the OTLP/HTTP port: set the URL when both run)
ENV_KEY = "PROMPTETHEUS_API_KEY"
ENV_PROJECT = "PROMPTETHEUS_PROJECT_ID"
PROJECT_ATTRIBUTE = "promptetheus.project_id"
"""A resource attribute naming the project, when ``project_id`` is not configured."""

_TYPES = {
    "llm": "llm_call", "embedding": "llm_call", "tool": "tool_call", "retrieval": "retrieval",
    "guardrail": "guardrail_check", "evaluation": "goal_check",
}  # fmt: skip
_GOAL_CHARS = 4096
LATE_SEQ = 1_000_000
"""``seq`` of the first evaluation appended to a trace after its call left."""


class Settings(NamedTuple):
    """Where runs go: arguments win over ``PROMPTETHEUS_API_URL``, ``PROMPTETHEUS_API_KEY``, ``PROMPTETHEUS_PROJECT_ID``."""

    url: str
    api_key: Optional[str]
    project_id: Optional[str]

    @classmethod
    def resolve(cls, url: Optional[str] = None, api_key: Optional[str] = None,
                project_id: Optional[str] = None) -> "Settings":  # fmt: skip
        return cls(url or config.env_str(ENV_URL) or DEFAULT_URL, api_key or config.env_str(ENV_KEY),
                   project_id or config.env_str(ENV_PROJECT))  # fmt: skip

    def __repr__(self) -> str:  # the key never reaches a repr
        return f"Settings(url={self.url!r}, api_key={'<set>' if self.api_key else '<missing>'}, project_id={self.project_id!r})"


def run_encoder(stats: ExportStats, project_id: Optional[str]) -> Callable[[Dict[str, Any]], Optional[bytes]]:
    """A PromptWall record to its encoded run; a record it cannot reshape costs that run alone (counted, logged)."""

    def encode_run(record: Dict[str, Any]) -> Optional[bytes]:
        try:
            return encode(run_of(record, project_id))
        except Exception:
            stats.add("dropped")
            logger.exception("Promptetheus: record %s cannot be made a run; dropped", record.get("request_id"))
            return None

    return encode_run


def run_of(record: Mapping[str, Any], project_id: Optional[str] = None) -> Dict[str, Any]:
    """The Promptetheus run (``{"trace": {...}, "events": [...]}``) of one PromptWall record."""
    metadata = record.get("metadata") or {}
    gen_ai = metadata.get("gen_ai") or {}
    otel = metadata.get("otel") or {}
    resource = otel.get("resource") or {}
    trace_id = record["request_id"]
    trace: Dict[str, Any] = {
        "id": trace_id,
        "agent": gen_ai.get("agent_name") or resource.get("service.name") or "unknown_service",
    }
    project = project_id or resource.get(PROJECT_ATTRIBUTE)
    if project:
        trace["project_id"] = str(project)
    if record.get("prompt"):
        trace["user_goal"] = record["prompt"][:_GOAL_CHARS]

    events: List[Dict[str, Any]] = []

    def add(kind: str, key: str, timestamp: str, payload: Dict[str, Any]) -> None:
        events.append({
            "type": kind, "session_id": record.get("session_id") or trace_id, "timestamp": timestamp,
            "seq": len(events), "idempotency_key": f"{trace_id}:{key}:{kind}", "payload": payload,
        })  # fmt: skip

    started = record.get("started_at") or format_ns(0)
    user: Dict[str, Any] = {"content": record.get("prompt"), "content_ref": trace_id}
    for name in ("end_user_id", "user_id"):
        if record.get(name):
            user[name] = record[name]
    add("user_message", "user", started, user)

    operation = gen_ai.get("operation")
    if operation == "evaluation" and gen_ai.get("evaluation_of"):  # late: to the judged call's trace
        trace["id"] = trace_id = str(gen_ai["evaluation_of"])
        events.clear()
        for index, hit in enumerate(_evaluations(record)):
            add("goal_check", f"{record['request_id']}.{index}", started, hit)
            events[-1]["seq"] = LATE_SEQ + index  # after the call's own steps, whatever they numbered
        return {"trace": trace, "events": events}

    stages = record.get("spans")
    if operation == "guardrail":
        add("guardrail_check", "guardrail", started, {
            "status": record.get("status", "ok"), "decision": record.get("final_decision"),
            "risk_score": record.get("risk_score"), "policy_hits": record.get("policy_hits") or [],
            "guardrail_of": gen_ai.get("guardrail_of")})  # fmt: skip
    elif isinstance(stages, list) and trace_id.startswith("run-"):
        for stage in stages:
            meta = stage.get("metadata") or {}
            kind = meta.get("kind") or "step"
            add(_TYPES.get(kind, "agent_step"), str(meta.get("span_id") or len(events)), stage.get("started_at") or
                started, _stage_payload(stage, meta, kind))  # fmt: skip
    else:
        add("llm_call", str(otel.get("span_id") or "call"), started, _call_payload(record))
    for index, hit in enumerate(_evaluations(record)):
        add("goal_check", f"eval{index}", record.get("finished_at") or started, hit)
    if record.get("status") == "error":
        add("error", "run", record.get("finished_at") or started,
            {"error_code": record.get("error_code") or "error", "content_ref": trace_id})  # fmt: skip
    return {"trace": trace, "events": events}


_PASSED = frozenset({"pass", "passed", "true", "yes", "correct", "relevant", "ok", "good"})
_FAILED = frozenset({"fail", "failed", "false", "no", "incorrect", "irrelevant", "bad", "hallucinated"})


def _evaluations(record: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """``goal_check`` payloads for the record's evaluation results: ``passed`` from a label that says so
    (``None`` when only a score is given: the conventions leave its scale to the evaluator)."""
    out = []
    for hit in record.get("policy_hits") or ():
        if not isinstance(hit, dict) or hit.get("kind") != "evaluation":
            continue
        label = str(hit.get("label", "")).strip().lower()
        passed = True if label in _PASSED else False if label in _FAILED else None
        payload = {"name": hit.get("name"), "passed": passed, "mismatches": [] if passed is not False else
                   [hit.get("explanation") or hit.get("label")]}  # fmt: skip
        for name in ("score", "label", "explanation", "response_id"):
            if hit.get(name) is not None:
                payload[name] = hit[name]
        out.append(payload)
    return out


def _call_payload(record: Mapping[str, Any]) -> Dict[str, Any]:
    """An ``llm_call`` from a call's own record."""
    payload: Dict[str, Any] = {"model": record.get("model"), "prompt_ref": record["request_id"]}
    _copy(record, payload, ("provider", "latency_ms", "cost_usd", "status", "error_code"))
    payload["input_tokens"] = record.get("prompt_tokens", 0)
    payload["output_tokens"] = record.get("completion_tokens", 0)
    if record.get("answer"):
        payload["completion"] = record["answer"]
    return payload


def _stage_payload(stage: Mapping[str, Any], meta: Mapping[str, Any], kind: str) -> Dict[str, Any]:
    """One step of a run from its ``spans[]`` stage (what PromptWall's multi-step form carries)."""
    payload: Dict[str, Any] = {"name": stage.get("stage_name"), "status": stage.get("status", "ok")}
    _copy(stage, payload, ("error_code", "ended_at"))
    latency = _latency_ms(stage.get("started_at"), stage.get("ended_at"))
    if latency is not None:
        payload["latency_ms"] = latency
    if kind in ("llm", "embedding"):
        payload["model"] = meta.get("model")
        _copy(meta, payload, ("provider",))
        if meta.get("request_id"):
            payload["prompt_ref"] = meta["request_id"]
        billed_elsewhere = bool(meta.get("billed_in"))
        payload["input_tokens"] = 0 if billed_elsewhere else stage.get("prompt_tokens", 0)
        payload["output_tokens"] = 0 if billed_elsewhere else stage.get("completion_tokens", 0)
        if billed_elsewhere:
            payload["billed_in"] = meta["billed_in"]
        elif stage.get("cost_usd"):
            payload["cost_usd"] = stage["cost_usd"]
        if stage.get("summary"):
            payload["completion"] = stage["summary"]
    elif kind == "tool":
        _copy(meta, payload, ("tool_call_id", "arguments"))
        if stage.get("summary"):
            payload["result"] = stage["summary"]
    elif kind == "guardrail":
        _copy(meta, payload, ("status",))
    elif kind == "evaluation":
        payload["passed"] = stage.get("status", "ok") == "ok"
        payload["mismatches"] = [stage["error_code"]] if stage.get("error_code") else []
    else:
        payload["kind"] = kind
    return payload


def _copy(source: Mapping[str, Any], target: Dict[str, Any], names: tuple) -> None:
    for name in names:
        if source.get(name) is not None:
            target[name] = source[name]


def _latency_ms(started: Any, ended: Any) -> Optional[int]:
    from .record import parse_timestamp

    start, end = parse_timestamp(started), parse_timestamp(ended)
    if start is None or end is None:
        return None
    return max(0, int((end - start).total_seconds() * 1000))
