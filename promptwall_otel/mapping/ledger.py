"""Trace-level billing rules: one event per LLM call, aggregates never on top of their calls.

Per-span mapping cannot see that an agent span sums its children's usage, or
that two instrumentations wrapped the same client call. This ledger remembers,
per trace and within bounds, which inference spans were billed, and applies
the rules of ``docs/mapping.md`` ("Billing rules"). It does no I/O; it is the
only piece of the mapping that keeps state, and that state is a bounded cache:
at most 20,000 traces, and the last 20,000 to 40,000 calls sent (~440 bytes
each for calls keyed by a response id: 17 MiB at the bound, docs/memory.md).

Invariants: a batch never yields two records with one ``request_id`` (records
sharing one are merged, the fullest leading); a ``request_id`` already handed
out in an earlier batch is never handed out again (the backend keeps the first
it stored, so a later copy could only be skipped there).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import guardrails, openinference
from .builder import AGGREGATE, CONTEXT, INFERENCE, MODEL_KEYS, REQUEST_MODEL_KEYS, RESPONSE_ID_KEYS, Classification, \
    Inherited, build_event, classify  # fmt: skip
from .builder import DEDUPE_WINDOW_NS, evaluation_record, guardrail_record, response_keyed_id
from .options import MappingOptions
from .recent import RecentMap, pack, unpack
from .values import first, text
from .view import LogView, SpanView

LogsFor = Callable[[SpanView], Sequence[LogView]]
InheritedFor = Callable[[SpanView], Inherited]

_TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cost_usd")
_SENT_IDS = 20_000  # at least this many recent calls remembered across batches (a copy comes seconds later at most)
_LATE_WINDOWS = 30  # a late evaluation naming a response id finds calls that started up to 5 minutes before it
_Call = Tuple[str, Optional[str], Optional[str], str]  # what a later record about a call names: its request_id,
# session, user and integration

logger = logging.getLogger("promptwall_otel")


_MAX_PENDING_VERDICTS = 64  # per trace: input guardrails that ran before their call's span ended


class _Trace:
    __slots__ = ("calls", "aggregate_request_id", "touched", "pending")

    def __init__(self) -> None:
        self.touched = time.monotonic()
        # span_id -> (request_id, parent_span_id, had_tokens) of inference spans already mapped
        self.calls: Dict[int, Tuple[str, Optional[int], bool]] = {}
        self.aggregate_request_id: Optional[str] = None
        # verdicts of guardrails on a call that has not ended yet (an input rail before its call)
        self.pending: List[guardrails.Verdict] = []


def _has_tokens(event: Dict[str, Any]) -> bool:
    # Spelled out rather than any(<generator>): called for every record, where the generator cost ~1 µs.
    # ``event`` is annotated as the dict it is: compiled, these are the dict's own lookups.
    return bool(event.get("prompt_tokens") or event.get("completion_tokens") or event.get("total_tokens"))


_NO_METADATA: Dict[str, Any] = {}


def merge_duplicate(primary: Dict[str, Any], other: Dict[str, Any]) -> Dict[str, Any]:
    """Two records of one call: ``primary``'s values win, ``other`` fills what it lacks."""
    for key, value in other.items():
        if key == "metadata":
            continue
        primary.setdefault(key, value)
    meta = primary.setdefault("metadata", {})
    other_meta = other.get("metadata", {})
    for key, value in other_meta.items():
        if key == "gen_ai":
            for gen_key, gen_value in value.items():
                if gen_key == "content_captured":
                    meta["gen_ai"]["content_captured"] = meta["gen_ai"].get("content_captured") or gen_value
                else:
                    meta["gen_ai"].setdefault(gen_key, gen_value)
        elif key != "otel":
            meta.setdefault(key, value)
    duplicates = meta["otel"].setdefault("duplicate_spans", [])
    duplicates.append(other_meta.get("otel", {}).get("span_id"))
    return primary


def _fullness(event: Dict[str, Any]) -> Tuple[bool, bool, int]:
    """How much a record of a call holds: usage first, then content, then how many fields it fills."""
    metadata: Dict[str, Any] = event.get("metadata", _NO_METADATA)
    return (bool(event.get("prompt_tokens") or event.get("completion_tokens") or event.get("total_tokens")),
            "prompt" in event or "answer" in event, len(event) + len(metadata.get("gen_ai", ())))  # fmt: skip


def _merge_same_request_ids(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Records of one batch that share a ``request_id`` (one call seen by two instrumentations in two
    traces, keyed by its response id) as one record: the fullest leads, the others fill what it lacks."""
    seen: Dict[str, int] = {}
    out: List[Dict[str, Any]] = []
    for record in records:
        index = seen.get(record["request_id"])
        if index is None:
            seen[record["request_id"]] = len(out)
            out.append(record)
            continue
        kept = out[index]
        primary, other = (record, kept) if _fullness(record) > _fullness(kept) else (kept, record)
        out[index] = merge_duplicate(dict(primary), other)
    return out


def _candidate_id(view: SpanView) -> Any:
    """The response id a span's record may be keyed by, read cheaply; ``...`` when only mapping can
    tell (OpenInference keeps it inside ``output.value``)."""
    attrs: Dict[str, Any] = view.attributes  # a dict (SpanView's invariant)
    for key in RESPONSE_ID_KEYS:
        value = attrs.get(key)
        if value is not None:
            return value if type(value) is str else ...
    return ... if "output.value" in attrs else None


def _request_model(view: SpanView) -> Optional[str]:
    """The model a call asked for, as both instrumentations of one call name it (a framework span may
    carry the response model, or only its invocation parameters)."""
    attrs = view.attributes
    found = first(attrs, REQUEST_MODEL_KEYS)
    if found is None and openinference.INVOCATION_PARAMETERS in attrs:
        params = openinference.invocation_parameters(attrs)
        found = params.get("model") or params.get("model_name")
    if found is None:
        found = first(attrs, MODEL_KEYS)
    found = text(found)
    return found.lower() if found else None


def paired_across_traces(calls: Sequence[SpanView]) -> Dict[int, int]:
    """Calls seen by a framework integration and by a client instrumentation in two traces, with no
    response id to tell (a streamed call some frameworks do not key, a failed call): span id -> the
    other span's id, both ways.

    A client call happens inside its framework call, so the framework's span encloses the client's in
    time. Pairs are taken only when that is unambiguous: two spans of different traces and different
    instrumentation scopes, from one resource (process), for the same requested model, with the same
    outcome (both failed or neither), the one enclosing the other, and neither enclosing nor enclosed
    by any other such span in the batch. Two concurrent calls to one model that overlap so make no
    pair (docs/mapping.md, "Billing rules").
    """
    if len(calls) < 2 or len({view.scope_name for view in calls}) < 2 or len({view.trace_id for view in calls}) < 2:
        return {}
    groups: Dict[Tuple[Any, ...], List[SpanView]] = {}
    resources: Dict[int, Tuple[Tuple[str, str], ...]] = {}  # in-process every span shares one resource object
    for view in calls:
        model = _request_model(view)
        if model is None:
            continue
        resource = resources.get(id(view.resource))
        if resource is None:
            resource = resources[id(view.resource)] = tuple(sorted((str(k), str(v)) for k, v in view.resource.items()))
        groups.setdefault((model, view.status_code == "ERROR", resource), []).append(view)
    pairs: Dict[int, int] = {}
    for group in groups.values():
        if len(group) < 2 or len({view.scope_name for view in group}) < 2:
            continue
        group.sort(key=lambda view: (view.start_ns, -view.end_ns))  # an encloser before what it encloses
        enclosers: Dict[int, List[int]] = {}
        enclosed: Dict[int, List[int]] = {}
        for index, outer in enumerate(group):
            # Started no earlier than outer (sorted), and before it ended: the few spans it may enclose.
            for inner in group[index + 1:]:
                if inner.start_ns > outer.end_ns:
                    break
                if (outer.trace_id != inner.trace_id and outer.scope_name != inner.scope_name
                        and inner.end_ns <= outer.end_ns):  # fmt: skip
                    enclosers.setdefault(inner.span_id, []).append(outer.span_id)
                    enclosed.setdefault(outer.span_id, []).append(inner.span_id)
        for inner_id, outers in enclosers.items():
            if len(outers) != 1:
                continue
            outer_id = outers[0]
            if enclosed[outer_id] == [inner_id] and inner_id not in enclosed and outer_id not in enclosers:
                pairs[inner_id] = outer_id
                pairs[outer_id] = inner_id
    return pairs


def _same_call_records(records: Dict[int, Dict[str, Any]], pairs: Dict[int, int]) -> None:
    """Give each pair from ``paired_across_traces`` one ``request_id`` (the response-keyed one if either
    has it) so the merge by ``request_id`` folds them; records that contradict the pairing (different
    response ids, different prompts) keep their own."""
    for span_id, other_id in pairs.items():
        if span_id > other_id or span_id not in records or other_id not in records:
            continue
        a, b = records[span_id], records[other_id]
        if a["request_id"] == b["request_id"]:
            continue
        if a["request_id"].startswith("gen-") and b["request_id"].startswith("gen-"):
            continue  # two provider ids: two calls
        if "prompt" in a and "prompt" in b and a["prompt"] != b["prompt"]:
            continue
        shared = b["request_id"] if b["request_id"].startswith("gen-") else a["request_id"]
        a["request_id"] = b["request_id"] = shared


def _records_by_span(records: List[Dict[str, Any]]) -> Dict[int, Dict[str, Any]]:
    """span id -> the record of this batch that carries that span (its own, or folded into it)."""
    by_span: Dict[int, Dict[str, Any]] = {}
    for record in records:
        otel = record["metadata"].get("otel")
        if otel:
            for span_hex in [otel["span_id"], *otel.get("duplicate_spans", ())]:
                if span_hex:
                    by_span[int(span_hex, 16)] = record
    return by_span


def _guarded_call(guard: SpanView, target: Optional[str], calls: List[SpanView], guards: List[SpanView],
                  by_span: Dict[int, Dict[str, Any]]) -> Optional[Dict[str, Any]]:  # fmt: skip
    """The record of the call a guardrail span guarded, among this batch's calls of its trace."""

    def inside(call: SpanView, g: SpanView) -> bool:
        return g.trace_id == call.trace_id and g.start_ns <= call.start_ns and call.end_ns <= g.end_ns

    wrappers = {g.span_id: g for g in guards if g.attributes.get(guardrails.OPERATION) == guardrails.WRAPPING_GUARDRAIL}
    wrapper = wrappers.get(guard.span_id) or wrappers.get(guard.parent_span_id)  # type: ignore[arg-type]
    if wrapper is not None:  # it guards the call it encloses (the last, if it retried)
        enclosed = max((call for call in calls if inside(call, wrapper)), key=lambda call: call.end_ns, default=None)
        return by_span[enclosed.span_id] if enclosed is not None else None
    # A guardrail's own model call (a self-check) runs inside it: never the call it guards.
    candidates = [call for call in calls if call.trace_id == guard.trace_id
                  and not any(inside(call, g) for g in guards if g.span_id not in wrappers)]  # fmt: skip
    if target != "output":
        after = next((call for call in candidates if call.start_ns >= guard.start_ns), None)
        if after is not None:
            return by_span[after.span_id]
    before = max((call for call in candidates if call.end_ns <= guard.end_ns), key=lambda call: call.end_ns, default=None)
    return by_span[before.span_id] if before is not None else None


def _primary_first(a: Dict[str, Any], b: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Which record of a duplicate pair leads: the one with usage, then the one keyed by response id."""

    def rank(event: Dict[str, Any]) -> Tuple[bool, bool]:
        return _has_tokens(event), event["request_id"].startswith("gen-")

    return (b, a) if rank(b) > rank(a) else (a, b)


class TraceLedger:
    """Bounded memory of recent traces; thread-safe. One per exporter or receiver replica."""

    def __init__(self, max_traces: int = 20_000, max_calls_per_trace: int = 512, ttl_s: float = 120.0) -> None:
        self._traces: "OrderedDict[int, _Trace]" = OrderedDict()
        self._max_traces = max_traces
        self._ttl_s = ttl_s
        self._max_calls = max_calls_per_trace
        self._lock = threading.Lock()
        # response-keyed request_id -> (fullness of the record handed out, the call), for copies in later
        # batches, and for late evaluations that name the call's response id
        # (packed: the maps hold only atomic values, which the garbage collector never walks)
        self._sent: RecentMap[str, bytes] = RecentMap(_SENT_IDS)
        # span id (16 hex digits) of a call handed out -> (fullness, the call) as in _sent, the same bytes,
        # for late evaluations that name its span. One insert per record: this runs for every record.
        self._calls_sent: RecentMap[str, bytes] = RecentMap(_SENT_IDS)

    def _trace(self, trace_id: int) -> _Trace:
        traces = self._traces
        trace = traces.get(trace_id)
        if trace is None:
            trace = traces[trace_id] = _Trace()
            if len(traces) > self._max_traces:
                traces.popitem(last=False)
            # Least recently touched first: drop what has not been seen for a while (a trace's
            # spans end within seconds of each other; holding more only burdens the app's GC).
            expired = trace.touched - self._ttl_s
            while traces:
                oldest = next(iter(traces.values()))
                if oldest.touched >= expired:
                    break
                traces.popitem(last=False)
        else:
            trace.touched = time.monotonic()
            traces.move_to_end(trace_id)
        return trace

    def map_batch(
        self,
        views: Sequence[SpanView],
        options: MappingOptions,
        logs_for: Optional[LogsFor] = None,
        inherited_for: Optional[InheritedFor] = None,
        emit: Optional[Callable[[Dict[str, Any]], None]] = None,
        copies: Optional[List[Dict[str, Any]]] = None,
    ) -> List[Dict[str, Any]]:
        """Records for a batch of finished spans, in the order they ended.

        With ``emit``, every record that no other span of the batch could merge
        into (no parent or child of its span is an LLM call in this batch: most
        records) goes to ``emit`` as soon as it is built, and only the rest are
        returned. A caller that encodes what it is given keeps few record dicts
        alive, which keeps the application's garbage collections short.

        With ``copies``, records of calls whose copy an earlier batch already
        handed out (and billed) are appended there instead of being dropped
        silently: a run's event shows them as steps, billed elsewhere.
        """
        classified: List[Tuple[SpanView, Classification]] = []
        guards: List[SpanView] = []
        evaluators: List[SpanView] = []
        for view in views:
            classification = classify(view)
            if classification.span_class in (INFERENCE, AGGREGATE):
                classified.append((view, classification))
            elif classification.span_class is CONTEXT:
                if guardrails.is_guardrail(view.attributes):
                    guards.append(view)
                elif view.events and view.parent_span_id and guardrails.evaluation_events(view):
                    evaluators.append(view)  # an evaluator's span under the call it judges
        if not classified and not guards and not evaluators:
            return []
        # Calls of a trace with a guardrail or evaluator in this batch wait for it (never emitted early).
        guarded = {view.trace_id for view in guards} | {view.trace_id for view in evaluators}
        if emit is not None:
            calls = [view for view, classification in classified if classification.span_class is INFERENCE]
            call_ids = {view.span_id for view in calls}
            call_parents = {view.parent_span_id for view in calls}
            # A response-keyed record is emitted early only if no other call of the batch can share its
            # key: its response id is unique here, and no span hides one where only mapping finds it.
            # Each call's candidate read once (by id(view): the views live through the batch).
            candidate_ids = {id(view): _candidate_id(view) for view in calls}
            candidates = Counter(candidate_ids.values())
            shared_ids = ... in candidates
        else:
            shared_ids, candidates, candidate_ids = True, Counter(), {}
        spans_per_trace = Counter(view.trace_id for view, _ in classified)
        pairs = paired_across_traces([view for view, c in classified if c.span_class is INFERENCE])
        paired_records: Dict[int, Dict[str, Any]] = {}
        out: List[Dict[str, Any]] = []
        # span_id -> record emitted in this batch, so a duplicate arriving later can merge into it
        in_batch: Dict[int, Dict[str, Any]] = {}
        with self._lock:
            for view, classification in classified:
                inherited = inherited_for(view) if inherited_for else Inherited()
                if classification.span_class is AGGREGATE:
                    event = self._aggregate(view, classification, inherited, options)
                    if event is not None and emit is not None:
                        emit(event)  # never merged with anything
                    elif event is not None:
                        out.append(event)
                    continue
                logs = logs_for(view) if logs_for else ()
                event = build_event(view, logs, inherited, options, classification)
                if event is None:
                    continue
                request_id: str = event["request_id"]  # annotated: compiled, str's own startswith
                keyed = request_id.startswith("gen-")
                if keyed and event["request_id"] in self._sent:
                    self._late_copy(event)
                    if copies is not None:
                        copies.append(event)
                    continue  # the call was handed out in an earlier batch: the backend keeps that one
                unique = not shared_ids and candidates[candidate_ids[id(view)]] == 1
                early = emit is not None and (not keyed or unique) and view.span_id not in pairs \
                    and view.trace_id not in guarded  # fmt: skip
                trace_state = self._traces.get(view.trace_id)
                if trace_state is not None and trace_state.pending:
                    guardrails.combine(event, trace_state.pending)  # its input guardrail ended in an earlier batch
                    trace_state.pending = []
                if view.span_id in pairs:
                    paired_records[view.span_id] = event
                if view.parent_span_id is None and spans_per_trace[view.trace_id] == 1 and view.trace_id not in self._traces:
                    # A call that is a whole trace by itself (the usual outside a request): nothing to merge
                    # with, and nothing to remember once its root (itself) has ended.
                    if early:
                        self._sending(event)
                        emit(event)  # type: ignore[misc]
                    else:
                        out.append(event)
                    continue
                trace = self._trace(view.trace_id)
                if trace.aggregate_request_id is not None and _has_tokens(event):
                    # Its agent was billed from its aggregate already (it ended after it): keep the call, not its bill.
                    usage = event["metadata"]["gen_ai"].setdefault("usage", {})
                    for name in _TOKEN_FIELDS:
                        if name in event:
                            usage[name] = event.pop(name)
                    event["metadata"]["gen_ai"]["billed_in"] = trace.aggregate_request_id
                twin = self._twin(trace, view)
                if twin is not None:
                    twin_id, twin_event = twin, in_batch.get(twin)
                    if twin_event is None:
                        if trace.calls[twin_id][2] or not _has_tokens(event):
                            continue  # its twin left in an earlier batch and carried the bill
                        out.append(event)  # the twin had no usage: this record carries the bill
                        in_batch[view.span_id] = event
                        self._remember(trace, view, event)
                        continue
                    primary, other = _primary_first(twin_event, event)
                    merged = merge_duplicate(dict(primary), other)
                    index = out.index(twin_event)
                    out[index] = merged
                    in_batch[twin_id] = in_batch[view.span_id] = merged
                    self._remember(trace, view, merged)
                    self._remember_id(trace, twin_id, merged)
                    continue
                self._remember(trace, view, event)
                if early and view.parent_span_id not in call_ids and view.span_id not in call_parents:
                    self._sending(event)
                    emit(event)  # type: ignore[misc]  # nothing later in this batch can be its twin
                    continue
                out.append(event)
                in_batch[view.span_id] = event
            # A trace whose root has ended is complete: forget it (unless its aggregate was billed,
            # which a late call must still see). Most LLM calls are their own trace's root, so
            # the ledger stays small, and so does the garbage collector's work in the app.
            for view, _ in classified:
                if view.parent_span_id is None:
                    trace = self._traces.get(view.trace_id)
                    if trace is not None and trace.aggregate_request_id is None:
                        del self._traces[view.trace_id]
            if paired_records:
                _same_call_records(paired_records, pairs)
            out = _merge_same_request_ids(out)
            if guards:
                self._apply_guardrails(guards, views, out, options, inherited_for)
            if evaluators:
                self._apply_evaluator_spans(evaluators, out, options)
            for event in out:
                self._sending(event)
        return out

    def _apply_evaluator_spans(self, evaluators: List[SpanView], out: List[Dict[str, Any]],
                               options: MappingOptions) -> None:  # fmt: skip
        """Evaluation events on an evaluator's span join the call that is its parent: its record in this
        batch, else a follow-up record if that call left earlier; an evaluator under no call is dropped."""
        by_span = _records_by_span(out)
        for view in evaluators:
            events = guardrails.evaluation_events(view)
            record = by_span.get(view.parent_span_id)  # type: ignore[arg-type]
            if record is not None:
                hits = [guardrails.evaluation_hit(event.attributes) for event in events]
                guardrails.combine(record, (), [hit for hit in hits if hit])
                continue
            packed = self._calls_sent.get(f"{view.parent_span_id:016x}")
            if packed is not None:
                out.append(evaluation_record(unpack(packed)[1], events, options))

    def _apply_guardrails(self, guards: List[SpanView], views: Sequence[SpanView], out: List[Dict[str, Any]],
                          options: MappingOptions, inherited_for: Optional[InheritedFor]) -> None:  # fmt: skip
        """Each guardrail's verdicts go onto the call it guarded (docs/mapping.md, "Guardrails and
        evaluations"): the call that is its parent; else, in its trace, for an input (or unknown)
        guardrail the first call starting after it started, for an output one the last call that ended
        before it ended; calls inside a guardrail's own interval are its own model calls, never guarded
        by it. A verdict whose call is not in this batch: waits on the trace for a later call (input),
        becomes a follow-up record naming the call that already left (output), or, if it blocked and
        no call exists, a record of the blocked request. None of these records carries tokens."""
        by_span = _records_by_span(out)
        calls = sorted((view for view in views if view.span_id in by_span), key=lambda view: view.start_ns)
        tripped = guardrails.tripwire_names(views)
        for guard in sorted(guards, key=lambda view: view.end_ns):
            inherited = inherited_for(guard) if inherited_for else Inherited()  # taken for every guard: never left behind
            verdicts = guardrails.verdict_of(guard, tripped.get(guard.trace_id, ()))
            if not verdicts:
                continue
            target = next((verdict.target for verdict in verdicts if verdict.target), None)
            record = by_span.get(guard.parent_span_id) if guard.parent_span_id else None
            if record is None:
                record = _guarded_call(guard, target, calls, guards, by_span)
            if record is not None:
                guardrails.combine(record, verdicts)
                continue
            trace = self._traces.get(guard.trace_id)
            left = next(reversed(trace.calls.values()))[0] if trace is not None and trace.calls else None
            if target != "input" and left is not None:
                if any(verdict.decision != "allow" or verdict.risk for verdict in verdicts):  # a pass adds nothing
                    out.append(guardrail_record(guard, verdicts, options, inherited, follows=left))
            elif any(verdict.blocks for verdict in verdicts):
                out.append(guardrail_record(guard, verdicts, options, inherited))
            elif target != "output":
                trace = self._trace(guard.trace_id)
                if len(trace.pending) < _MAX_PENDING_VERDICTS:
                    trace.pending.extend(verdicts)

    def _late_copy(self, event: Dict[str, Any]) -> None:
        """A copy of a call whose record an earlier batch handed out is dropped; if it held more than
        that record (content or usage it lacked), the loss is logged."""
        if _fullness(event) > unpack(self._sent.get(event["request_id"]))[0]:  # type: ignore[arg-type]
            logger.info("call %s: a fuller copy came in a later batch than its first record; the backend keeps "
                        "the first", event["request_id"])  # fmt: skip

    def _sending(self, event: Dict[str, Any]) -> None:
        request_id: str = event["request_id"]  # annotated: compiled, str's own startswith
        call = (request_id, event.get("session_id"), event.get("user_id"), event["integration_id"])
        packed = pack((_fullness(event), call))  # one packing for both maps: it is most of this step's cost
        if request_id.startswith("gen-"):
            self._sent[request_id] = packed
        otel = event["metadata"].get("otel")
        if otel is None:
            return  # a follow-up record about a call, not a call
        calls = self._calls_sent
        calls[otel["span_id"]] = packed
        if "duplicate_spans" in otel:  # the other instrumentation's span of the call: an evaluation may name it
            for span_hex in otel["duplicate_spans"]:
                if span_hex:
                    calls[span_hex] = packed

    def _call(self, span_id: int, response_id: Optional[str], at_ns: int) -> Optional[_Call]:
        """The call handed out with this span id, else the response-keyed call with this response id
        that started in the 5 minutes before ``at_ns``."""
        packed = self._calls_sent.get(f"{span_id:016x}") if span_id else None
        if packed is not None:
            return unpack(packed)[1]  # type: ignore[no-any-return]
        if response_id:
            window = at_ns // DEDUPE_WINDOW_NS
            for start in range(window, window - _LATE_WINDOWS - 1, -1):
                found = self._sent.get(response_keyed_id(response_id, start))
                if found is not None:
                    return unpack(found)[1]  # type: ignore[no-any-return]
        return None

    def call_sent(self, key: Union[int, str]) -> bool:
        """Whether the call with this span id (int) or response id was handed out in the last 5 minutes
        (a later record may name it)."""
        if type(key) is int:
            return self._call(key, None, 0) is not None
        return self._call(0, str(key), time.time_ns()) is not None

    def late_evaluations(self, logs: Sequence[LogView], options: MappingOptions) -> List[Dict[str, Any]]:
        """Evaluation log records that arrived after their call's record left: one follow-up record per
        call, never billed (docs/mapping.md, "Guardrails and evaluations")."""
        per_call: Dict[str, Tuple[_Call, List[LogView]]] = {}
        with self._lock:
            for log in logs:
                call = self._call(log.span_id, text(log.attributes.get("gen_ai.response.id")), log.time_ns or time.time_ns())
                if call is not None:
                    per_call.setdefault(call[0], (call, []))[1].append(log)
        return [evaluation_record(call, found, options) for call, found in per_call.values()]

    def forget(self, trace_ids: Sequence[int]) -> None:
        """Drop traces whose root has ended, unless a billed aggregate must still be seen by a late call."""
        with self._lock:
            for trace_id in trace_ids:
                trace = self._traces.get(trace_id)
                if trace is not None and trace.aggregate_request_id is None:
                    del self._traces[trace_id]

    def __len__(self) -> int:
        return len(self._traces)

    def _twin(self, trace: _Trace, view: SpanView) -> Optional[int]:
        """An already-mapped inference span that is this span's parent or child: the same call."""
        if view.parent_span_id is not None and view.parent_span_id in trace.calls:
            return view.parent_span_id
        for span_id, (_, parent, _) in trace.calls.items():
            if parent == view.span_id:
                return span_id
        return None

    def _remember(self, trace: _Trace, view: SpanView, event: Dict[str, Any]) -> None:
        if len(trace.calls) < self._max_calls:
            trace.calls[view.span_id] = (event["request_id"], view.parent_span_id, _has_tokens(event))

    def _remember_id(self, trace: _Trace, span_id: int, event: Dict[str, Any]) -> None:
        _, parent, _ = trace.calls.get(span_id, ("", None, False))
        trace.calls[span_id] = (event["request_id"], parent, _has_tokens(event))

    def _aggregate(
        self, view: SpanView, classification: Classification, inherited: Inherited, options: MappingOptions
    ) -> Optional[Dict[str, Any]]:
        """An agent/workflow span is billed only if it carries usage and no call of its trace was billed."""
        trace = self._trace(view.trace_id)
        if any(had_tokens for _, _, had_tokens in trace.calls.values()) or trace.aggregate_request_id:
            return None
        event = build_event(view, (), inherited, options, classification)
        if event is None or not _has_tokens(event):
            return None
        trace.aggregate_request_id = event["request_id"]
        return event
