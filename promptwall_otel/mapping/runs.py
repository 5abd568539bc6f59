"""Agent and workflow runs as one multi-step record (opt-in: ``group_agent_runs``).

Three parts, each usable alone (a second export target reuses the first two):

- **What a span is in a run** (pure): :func:`starts_run` tells, from a span's
  name and start attributes, that it opens a run; :func:`step_kind` and
  :func:`step_name` say which stage a finished span is (``llm``, ``tool``,
  ``retrieval``, ``guardrail``, ...), or that it is only structure.
- **Holding a run's spans until it ends** (:class:`RunAssembler`): bounded,
  in-memory, no I/O. Spans arrive children first; a span that belongs to a
  run waits until the run's root span ends, then the run comes out whole
  (:class:`Run`, its steps in start order). Spans outside any run pass
  straight through.
- **The PromptWall record of a run** (:func:`run_event`, pure): one event
  whose ``spans[]`` are the run's steps.

Invariants:

- Billing does not depend on grouping. The calls of a run are mapped by the
  trace ledger exactly as they would be one by one; the run's event carries
  the sum of those records' tokens and cost (a call whose copy was already
  billed elsewhere counts zero), and ``spans[]`` repeat each call's usage for
  display only: PromptWall bills the event's own counts.
- Nothing is lost: a run that outlives ``max_run_seconds`` or holds more than
  ``max_run_spans`` spans is released as ordinary events (what a run would
  have been without grouping), and so are its spans that end later.
- Memory is bounded: at most ``max_held_spans`` spans wait in all; past that
  the oldest run is released as above.
- Only the outermost run is a run: a nested agent or workflow is a step of it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..record import STATUSES, format_ns
from . import guardrails, openinference, openllmetry, semconv, vercel
from .builder import Classification, SpanClass, classify
from .builder import _conversation as conversation_of
from .messages import answer_of, prompt_of
from .options import DEFAULT_MAX_RUN_SECONDS, MappingOptions
from .values import text, truncate
from .view import SpanView

__all__ = ["Released", "Run", "RunAssembler", "RunOf", "Step", "root_conversation", "run_event", "run_membership",
           "run_request_id", "starts_run", "step_kind", "step_name"]

# Span names that open a run even when the producer sets its attributes only at the end
# (opentelemetry-util-genai starts ``invoke_agent`` / ``invoke_workflow {name}`` spans bare):
# the operation alone, or followed by a space and a name, as the conventions name spans.
_RUN_OPERATION_NAMES = frozenset({"invoke_agent", "invoke_workflow"})
_RUN_NAMES = ("invoke_agent", "invoke_workflow")
_RUN_KEYS = frozenset({semconv.OPERATION, openinference.SPAN_KIND, openllmetry.SPAN_KIND, vercel.OPERATION_ID})
_RUN_OPERATIONS = frozenset({"invoke_agent", "invoke_workflow"})
_RUN_KINDS = frozenset({"AGENT", "CHAIN"})  # OpenInference: only the outermost is a run
_NESTED_STRUCTURE = frozenset({"chain", "prompt", "unknown", "agent_step", "create_agent"} | vercel.AGGREGATE_OPERATIONS)

# Operation (as ``classify`` spells it, per dialect) → stage kind. Anything else is structure, not a step.
_STEP_KINDS = {
    "execute_tool": "tool", "tool": "tool", "ai.toolCall": "tool",
    "retrieval": "retrieval", "retriever": "retrieval", "reranker": "retrieval", "vector_db_retrieve": "retrieval",
    "run_guardrail": "guardrail", "apply_guardrail": "guardrail", "guardrail": "guardrail",
    "evaluator": "evaluation", "evaluation": "evaluation",
    "invoke_agent": "agent", "agent": "agent", "invoke_workflow": "workflow", "workflow": "workflow",
    "plan": "plan", "task": "task", "execute_task": "task",
}  # fmt: skip

_NAME_KEYS = {
    "llm": semconv.RESPONSE_MODEL + openinference.MODEL + vercel.MODEL + semconv.REQUEST_MODEL + vercel.REQUEST_MODEL,
    "embedding": semconv.RESPONSE_MODEL + openinference.MODEL + semconv.REQUEST_MODEL + vercel.REQUEST_MODEL,
    "tool": ("gen_ai.tool.name", "tool.name", "ai.toolCall.name", "traceloop.entity.name"),
    "agent": semconv.AGENT_NAME + openinference.AGENT_NAME + ("traceloop.entity.name",),
    "workflow": ("gen_ai.workflow.name",) + openllmetry.WORKFLOW_NAME + ("traceloop.entity.name",),
    "task": ("traceloop.entity.name",),
    "guardrail": ("gen_ai.guardrail.component.name", "gen_ai.guardrail.name", "rail.name", "validator.name"),
    "retrieval": ("gen_ai.data_source.id",),
}  # fmt: skip

DEFAULT_MAX_RUN_SPANS = 2000
DEFAULT_MAX_HELD_SPANS = 20_000
_SUMMARY_CHARS = 512
_STAGE_NAME_CHARS = 64
_EXPIRED_RUNS = 10_000  # runs released early, remembered so their late spans and root pass through
_STATUS_RANK = {"blocked": 3, "rewritten": 2, "regenerated": 1}


def starts_run(name: str, attributes: Optional[Mapping[str, Any]]) -> bool:
    """Whether a span opens a run, judged at its start (cheap: a few lookups, for the application thread)."""
    if name.startswith(_RUN_NAMES) and name.partition(" ")[0] in _RUN_OPERATION_NAMES:
        return True
    if not attributes or _RUN_KEYS.isdisjoint(attributes):  # most spans: one test
        return False
    operation = attributes.get(semconv.OPERATION)
    if operation is not None:
        return operation in _RUN_OPERATIONS
    kind = attributes.get(openinference.SPAN_KIND)
    if kind is not None:
        return str(kind).upper() in _RUN_KINDS
    if attributes.get(openllmetry.SPAN_KIND) in openllmetry.AGGREGATE_KINDS:
        return True
    return attributes.get(vercel.OPERATION_ID) in vercel.AGGREGATE_OPERATIONS


def step_kind(classification: Classification) -> Optional[str]:
    """The stage a span is inside a run, or None for structure (chains, prompts, outer AI SDK spans)."""
    span_class, operation, _ = classification
    if span_class is SpanClass.INFERENCE:
        return "embedding" if operation in semconv.EMBEDDING_OPERATIONS else "llm"
    if span_class is SpanClass.NONE or operation is None or operation in _NESTED_STRUCTURE:
        return None
    kind = _STEP_KINDS.get(operation)
    if kind is None and "memory" in operation:  # the memory operations of the newest conventions
        return "memory"
    return kind


def step_name(view: SpanView, kind: str) -> str:
    """``kind:what`` (a model, tool, agent, ...), at most 64 characters."""
    attrs = view.attributes
    what = None
    for key in _NAME_KEYS.get(kind, ()):
        what = text(attrs.get(key))
        if what:
            break
    if not what and kind not in ("llm", "embedding"):
        what = text(view.name)
    return (f"{kind}:{what}" if what else kind)[:_STAGE_NAME_CHARS]


def run_membership(views: Sequence[SpanView]) -> Dict[int, int]:
    """span id -> the outermost run it is in (a root maps to itself), over the spans of whole traces.

    The grouping for a caller that sees every span of a trace at once (a
    recorded trace, a receiver that waited for the trace): each span's
    ancestors are followed through ``parent_span_id`` among ``views``. A span
    whose parent is not among them stops there (what is above it is unknown).
    """
    by_id = {view.span_id: view for view in views}
    found: Dict[int, int] = {}
    for view in views:
        outermost = None
        current: Optional[SpanView] = view
        depth = 0
        while current is not None and depth < 256:
            if starts_run(current.name, current.attributes):
                outermost = current.span_id
            parent = current.parent_span_id
            current = by_id.get(parent) if parent is not None else None
            depth += 1
        if outermost is not None:
            found[view.span_id] = outermost
    return found


class Step(NamedTuple):
    view: SpanView
    kind: str
    name: str


class Run(NamedTuple):
    """A finished run: its root span and every span of it that was held (in the order they ended)."""

    root: SpanView
    members: List[SpanView]

    def steps(self) -> List[Step]:
        """The run's stages in the order they started (nested agents and workflows are stages too)."""
        found: List[Tuple[int, int, Step]] = []
        for index, view in enumerate(self.members):
            kind = step_kind(classify(view))
            if kind is None and guardrails.is_guardrail(view.attributes):
                kind = "guardrail"  # NeMo rails, Guardrails AI validators, Traceloop guards: no GenAI operation
            if kind is not None:
                found.append((view.start_ns, index, Step(view, kind, step_name(view, kind))))
        found.sort(key=lambda item: (item[0], item[1]))
        return [step for _, _, step in found]

    def views(self) -> List[SpanView]:
        """Members then root: the order they ended, which the trace ledger expects."""
        return [*self.members, self.root]


class _Held:
    __slots__ = ("since", "views")

    def __init__(self, now: float) -> None:
        self.since = now
        self.views: List[SpanView] = []


RunOf = Callable[[SpanView], Optional[int]]
"""The span id of the run a span belongs to (its own id for a run's root), or None outside any run."""


class Released(NamedTuple):
    singles: List[SpanView]
    """Spans to map as ordinary events, in the order they ended."""
    runs: List[Run]
    """Runs whose root ended."""


class RunAssembler:
    """Holds the spans of open runs until their root ends; bounded; thread-safe. No I/O.

    ``add`` takes finished spans with a ``run_of`` that names each one's run
    (in-process, from what the span processor saw at span start).
    """

    def __init__(self, max_run_seconds: float = DEFAULT_MAX_RUN_SECONDS, max_run_spans: int = DEFAULT_MAX_RUN_SPANS,
                 max_held_spans: int = DEFAULT_MAX_HELD_SPANS) -> None:  # fmt: skip
        self.max_run_seconds = max_run_seconds
        self.max_run_spans = max_run_spans
        self.max_held_spans = max_held_spans
        self._open: "OrderedDict[int, _Held]" = OrderedDict()  # run root span id -> what waits, oldest first
        self._held = 0
        # Runs released before their root ended -> whether they had LLM calls (then the root's own
        # usage, an aggregate of those calls, must not be billed on top).
        self._expired: "OrderedDict[int, bool]" = OrderedDict()
        self._lock = threading.Lock()
        self.released_early = 0
        """How many runs were sent as ordinary events (too old, too large, or memory full)."""

    def __len__(self) -> int:
        return self._held

    def add(self, views: Sequence[SpanView], run_of: RunOf, now: Optional[float] = None) -> Released:
        now = time.monotonic() if now is None else now
        singles: List[SpanView] = []
        runs: List[Run] = []
        with self._lock:
            for view in views:
                run_id = run_of(view)
                if run_id is None:
                    if view.span_id not in self._open and view.span_id not in self._expired:
                        singles.append(view)
                        continue
                    run_id = view.span_id  # a root whose own record of its run was lost (a full store)
                if run_id in self._expired:
                    if view.span_id == run_id and self._expired.pop(run_id):
                        continue  # the late root of a run whose calls went out alone: its usage is theirs
                    singles.append(view)
                    continue
                held = self._open.get(run_id)
                if view.span_id == run_id:  # the root: the run is complete
                    if held is None:
                        singles.append(view)  # nothing beneath it was seen: an ordinary aggregate
                    else:
                        del self._open[run_id]
                        self._held -= len(held.views)
                        runs.append(Run(view, held.views))
                    continue
                if held is None:
                    held = self._open[run_id] = _Held(now)
                held.views.append(view)
                self._held += 1
                if len(held.views) > self.max_run_spans:
                    singles.extend(self._release(run_id))
                while self._held > self.max_held_spans and self._open:
                    singles.extend(self._release(next(iter(self._open))))
            singles.extend(self._expire(now))
        return Released(singles, runs)

    def expire(self, now: Optional[float] = None) -> List[SpanView]:
        """The spans of runs open longer than ``max_run_seconds``, to send as ordinary events."""
        with self._lock:
            return self._expire(time.monotonic() if now is None else now)

    def release_all(self) -> List[SpanView]:
        """Everything held (at shutdown: sent as ordinary events rather than lost)."""
        with self._lock:
            out: List[SpanView] = []
            while self._open:
                out.extend(self._release(next(iter(self._open))))
            return out

    def _expire(self, now: float) -> List[SpanView]:
        out: List[SpanView] = []
        deadline = now - self.max_run_seconds
        while self._open:
            run_id, held = next(iter(self._open.items()))
            if held.since > deadline:
                break
            out.extend(self._release(run_id))
        return out

    def _release(self, run_id: int) -> List[SpanView]:
        held = self._open.pop(run_id)
        self._held -= len(held.views)
        # Worked out here, on the rare early release, rather than for every span held.
        self._expired[run_id] = any(classify(view).span_class is SpanClass.INFERENCE for view in held.views)
        if len(self._expired) > _EXPIRED_RUNS:
            self._expired.popitem(last=False)
        self.released_early += 1
        return held.views


def run_request_id(root: SpanView) -> str:
    """``run-{trace}-{span}`` (53 characters): deterministic, so a retried or replayed run is stored once."""
    return f"run-{root.trace_id:032x}-{root.span_id:016x}"


def _call_records(records: Sequence[Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
    """span id -> the record that carries it (a merged record carries its duplicate spans too)."""
    by_span: Dict[int, Dict[str, Any]] = {}
    for record in records:
        otel = record.get("metadata", {}).get("otel", {})
        for span_hex in (otel.get("span_id"), *otel.get("duplicate_spans", ())):
            if span_hex:
                by_span[int(span_hex, 16)] = record
    return by_span


def _stage(step: Step, record: Optional[Dict[str, Any]], options: MappingOptions) -> Dict[str, Any]:
    view = step.view
    attrs = view.attributes
    failed = view.status_code == "ERROR" or bool(attrs.get(semconv.ERROR_TYPE))
    stage: Dict[str, Any] = {
        "stage_name": step.name,
        "status": "error" if failed else "ok",
        "started_at": format_ns(view.start_ns),
        "ended_at": format_ns(view.end_ns),
    }
    meta: Dict[str, Any] = {"kind": step.kind, "span_id": f"{view.span_id:016x}"}
    if view.parent_span_id:
        meta["parent_span_id"] = f"{view.parent_span_id:016x}"
    if failed:
        stage["error_code"] = (text(attrs.get(semconv.ERROR_TYPE)) or "error")[:64]
    if record is not None:
        meta["request_id"] = record["request_id"]
        for name in ("model", "provider"):
            if name in record:
                meta[name] = record[name]
        if record.get("status") in _STATUS_RANK:
            meta["status"] = record["status"]
        for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
            if record.get(name):  # as the SDK does: usage fields only when > 0
                stage[name] = record[name]
        billed_in = record.get("metadata", {}).get("gen_ai", {}).get("billed_in")
        if billed_in:
            meta["billed_in"] = billed_in
        duplicates = record["metadata"]["otel"].get("duplicate_spans")
        if duplicates:
            meta["duplicate_spans"] = duplicates
        answer = record.get("answer")
        if answer and options.capture_content:
            stage["summary"] = answer[:_SUMMARY_CHARS]
    if step.kind == "guardrail":
        verdicts = guardrails.verdict_of(view)
        if verdicts:  # the normalised decision (docs/mapping.md, "Guardrails and evaluations"), and its risk
            meta["decision"] = verdicts[0].decision
            if verdicts[0].risk is not None:
                meta["risk_score"] = verdicts[0].risk
    if step.kind == "tool":
        call_id = text(attrs.get("gen_ai.tool.call.id"))
        if call_id:
            meta["tool_call_id"] = call_id[:256]
        if options.capture_content:  # the conventions' opt-in tool content, or OpenInference's input/output
            arguments = text(attrs.get("gen_ai.tool.call.arguments") or attrs.get("input.value"))
            result = text(attrs.get("gen_ai.tool.call.result") or attrs.get("output.value"))
            if arguments:
                meta["arguments"] = arguments[:_SUMMARY_CHARS]
            if result:
                stage["summary"] = result[:_SUMMARY_CHARS]
    stage["metadata"] = meta
    return stage


def run_event(
    run: Run,
    root_record: Optional[Dict[str, Any]],
    call_records: Sequence[Dict[str, Any]],
    options: MappingOptions,
    billed_elsewhere: Sequence[Dict[str, Any]] = (),
    root_conversation: Optional[Tuple[Optional[str], Optional[str]]] = None,
) -> Dict[str, Any]:
    """The run as one event. Pure.

    ``root_record`` is the root span's own record (``build_event`` with its
    aggregate classification): dimensions and metadata come from it, its
    usage only through ``call_records``. ``call_records`` are what the trace
    ledger made of the run's spans (exactly what would be sent without
    grouping); ``billed_elsewhere`` are records of calls whose copy another
    record already billed (they show as steps, with ``billed_in``).
    ``root_conversation`` is the run's own (prompt, answer) when the root span
    carries them.
    """
    root = run.root
    event: Dict[str, Any] = dict(root_record) if root_record else {
        "request_id": "", "mode": options.mode, "status": "ok",
        "started_at": format_ns(root.start_ns), "finished_at": format_ns(root.end_ns),
        "latency_ms": max(0, (root.end_ns - root.start_ns) // 1_000_000),
    }  # fmt: skip
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd"):
        event.pop(name, None)
    event["request_id"] = run_request_id(root)
    metadata = dict(event.get("metadata") or {})
    gen_ai = dict(metadata.get("gen_ai") or {})
    for name in ("usage", "usage_source", "cost_source", "billed_in"):
        gen_ai.pop(name, None)

    # Billing: the sum of what the ledger made of the run's spans, exactly once. That includes the root's
    # own (aggregate) record when the ledger billed it (no call beneath had usage); it is not a call.
    totals, cost, usage = _summed(call_records)
    root_id = root_record["request_id"] if root_record else None
    calls = [r for r in call_records if r["request_id"] != root_id]
    event.update(totals)
    if cost is not None:
        event["cost_usd"] = round(cost, 10)
    if usage:
        gen_ai["usage"] = usage
    gen_ai["usage_source"] = "run"

    # What the run was: prompt, answer, model, status, from the root or else its calls.
    llm = [r for r in (*calls, *billed_elsewhere) if "model" in r]
    llm.sort(key=lambda r: r.get("started_at", ""))
    if llm:
        last = llm[-1]
        for name in ("model", "provider"):
            if name in last:
                event[name] = last[name]
            elif name in event:
                del event[name]
        models = sorted({r["model"] for r in llm})
        if len(models) > 1:
            gen_ai["models"] = models[:16]
    first_call = llm[0] if llm else None
    for name in ("session_id", "user_id", "end_user_id", "use_case", "team_id"):
        if name not in event and first_call is not None and name in first_call:
            event[name] = first_call[name]
    prompt, answer = root_conversation or (None, None)
    if options.capture_content:
        prompt = prompt or (first_call or {}).get("prompt")
        answer = answer or (llm[-1].get("answer") if llm else None)
        for name, value in (("prompt", prompt), ("answer", answer)):
            if value:
                event[name] = truncate(value, options.max_content_bytes)
        gen_ai["content_captured"] = "prompt" in event or "answer" in event
    if event.get("status") != "error":
        worst = max((r.get("status", "ok") for r in (*call_records, *billed_elsewhere)),
                    key=lambda s: _STATUS_RANK.get(s, 0), default="ok")  # fmt: skip
        if worst in _STATUS_RANK:
            event["status"] = worst
    risks = [r["risk_score"] for r in call_records if isinstance(r.get("risk_score"), (int, float))]
    if risks and "risk_score" not in event:
        event["risk_score"] = max(risks)
    hits = [hit for r in call_records for hit in (r.get("policy_hits") or ())]
    if hits:
        event["policy_hits"] = list(event.get("policy_hits") or ()) + hits[:64]
    decisions = [r["final_decision"] for r in call_records if r.get("final_decision")]
    if decisions and "final_decision" not in event:
        event["final_decision"] = decisions[-1]
    if event.get("status") not in STATUSES:
        event["status"] = "ok"

    stages, counts, steps = _stages(run, call_records, billed_elsewhere, options)
    event["spans"] = stages
    summary: Dict[str, Any] = {"steps": steps, "by_kind": counts, "call_records": len(calls)}
    if steps > len(stages):
        summary["steps_omitted"] = steps - len(stages)
    if billed_elsewhere:
        summary["billed_elsewhere"] = sorted({r["request_id"] for r in billed_elsewhere})[:64]
    gen_ai["run"] = summary
    metadata["gen_ai"] = gen_ai
    event["metadata"] = metadata
    return event


def _summed(records: Sequence[Dict[str, Any]]) -> Tuple[Dict[str, int], Optional[float], Dict[str, int]]:
    """The records' token counts, cost (None if none had one) and usage details, added up."""
    totals: Dict[str, int] = {}
    cost: Optional[float] = None
    usage: Dict[str, int] = {}
    for record in records:
        for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
            if name in record:
                totals[name] = totals.get(name, 0) + record[name]
        if "cost_usd" in record:
            cost = (cost or 0.0) + record["cost_usd"]
        for name, value in record.get("metadata", {}).get("gen_ai", {}).get("usage", {}).items():
            if name.endswith("_tokens") and name != "reported_total_tokens" and isinstance(value, int):
                usage[name] = usage.get(name, 0) + value
    return totals, cost, usage


def _stages(run: Run, call_records: Sequence[Dict[str, Any]], billed_elsewhere: Sequence[Dict[str, Any]],
            options: MappingOptions) -> Tuple[List[Dict[str, Any]], Dict[str, int], int]:  # fmt: skip
    """``spans[]`` (one stage per step, in start order, at most ``max_run_steps``), the steps per kind, and
    how many steps there were. A call seen by two instrumentations is one record, so one stage (its other
    spans are listed in it)."""
    by_span = _call_records([*call_records, *billed_elsewhere])
    elsewhere = {r["request_id"] for r in billed_elsewhere}
    stages: List[Dict[str, Any]] = []
    counts: Dict[str, int] = {}
    steps = 0
    for step in run.steps():
        record = by_span.get(step.view.span_id)
        if record is not None and record["metadata"]["otel"]["span_id"] != f"{step.view.span_id:016x}":
            continue  # another span of the same call
        steps += 1
        counts[step.kind] = counts.get(step.kind, 0) + 1
        if len(stages) < options.max_run_steps:
            stage = _stage(step, record, options)
            if record is not None and record["request_id"] in elsewhere:
                stage["metadata"]["billed_in"] = record["request_id"]  # its first copy left alone
            stages.append(stage)
    return stages, counts, steps


def root_conversation(view: SpanView, options: MappingOptions) -> Optional[Tuple[Optional[str], Optional[str]]]:
    """The run's own prompt and answer when its root span carries them (agent input and output)."""
    if not options.capture_content:
        return None
    inputs, outputs = conversation_of(view, (), classify(view).dialect)
    prompt, answer = prompt_of(inputs), answer_of(outputs)
    return (prompt, answer) if prompt or answer else None
