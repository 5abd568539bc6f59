"""Span (plus its content logs and inherited context) → PromptWall event. Pure: no I/O.

``classify`` says what a span is; ``build_event`` fills the record from the
ordered lookups that the dialect modules declare. Field by field, with the
source attributes in priority order, this is ``docs/mapping.md``.
"""

from __future__ import annotations

import copy
import enum
import hashlib
import logging
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from ..record import STATUSES, format_ns
from . import guardrails, logfire, openinference, openllmetry, semconv, vercel
from .messages import Message, answer_of, prompt_of
from .options import MappingOptions
from .values import KeyPlan, Lookup, count, first, json_safe, number, repair, strings, text, truncate
from .view import EventView, LogView, SpanView

logger = logging.getLogger("promptwall_otel")

try:  # CPython's own SHA-256: for a key of a few dozen bytes, a third cheaper than OpenSSL's (context setup and copy)
    from _sha256 import sha256 as _sha256  # Python <= 3.11
except ImportError:  # pragma: no cover - the module's name on 3.12+, else hashlib's
    try:
        from _sha2 import sha256 as _sha256  # type: ignore[no-redef]
    except ImportError:
        _sha256 = hashlib.sha256

__all__ = ["SpanClass", "Classification", "classify", "build_event", "is_genai", "is_genai_span", "Inherited",
           "request_id_for"]


class SpanClass(enum.Enum):
    NONE = "none"  # no GenAI signal: produces nothing
    CONTEXT = "context"  # tool, retriever, task...: lends ids, never billed
    AGGREGATE = "aggregate"  # agent / workflow / chain: may carry the sum of its children's usage
    INFERENCE = "inference"  # one model call: the billable event


class Classification(NamedTuple):
    span_class: SpanClass
    operation: Optional[str]
    dialect: str


_NOT_GENAI = Classification(SpanClass.NONE, None, "")
# The members under module-level names for the per-span code: on Python 3.11 each ``SpanClass.X`` goes
# through ``EnumType.__getattr__``'s slot, hundreds of instructions, several times per span.
INFERENCE, AGGREGATE, CONTEXT = SpanClass.INFERENCE, SpanClass.AGGREGATE, SpanClass.CONTEXT

# Any of these keys means "look closer". Checked first, so an HTTP or DB span
# costs one set intersection.
GENAI_MARKERS = frozenset({
    semconv.OPERATION, "gen_ai.system", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
    "gen_ai.agent.name", "gen_ai.tool.name", "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
    openinference.SPAN_KIND, "llm.model_name", openllmetry.REQUEST_TYPE, openllmetry.SPAN_KIND,
    vercel.OPERATION_ID, "ai.model.id", logfire.ALL_MESSAGES, logfire.REQUEST_DATA, "agent_name",
    *guardrails.GUARDRAIL_MARKERS,  # guardrail spans without GenAI keys (NeMo rails, Guardrails AI validators)
})  # fmt: skip

assert {openinference.SPAN_KIND, semconv.OPERATION} <= GENAI_MARKERS  # classify relies on it

_MODEL_KEYS = semconv.RESPONSE_MODEL + openinference.MODEL + vercel.MODEL + semconv.REQUEST_MODEL \
    + openinference.REQUEST_MODEL + vercel.REQUEST_MODEL + logfire.MODEL  # fmt: skip
_REQUEST_MODEL_KEYS = semconv.REQUEST_MODEL + openinference.REQUEST_MODEL + vercel.REQUEST_MODEL
_PROVIDER_KEYS = semconv.PROVIDER + openinference.PROVIDER + vercel.PROVIDER
_INPUT_KEYS = semconv.INPUT_TOKENS + openinference.INPUT_TOKENS + vercel.INPUT_TOKENS
_OUTPUT_KEYS = semconv.OUTPUT_TOKENS + openinference.OUTPUT_TOKENS + vercel.OUTPUT_TOKENS
_TOTAL_KEYS = semconv.TOTAL_TOKENS + openllmetry.TOTAL_TOKENS + openinference.TOTAL_TOKENS + vercel.TOTAL_TOKENS
_CACHE_READ_KEYS = semconv.CACHE_READ + openinference.CACHE_READ + vercel.CACHE_READ
_CACHE_WRITE_KEYS = semconv.CACHE_WRITE + openinference.CACHE_WRITE
_REASONING_KEYS = semconv.REASONING + openllmetry.REASONING + openinference.REASONING + vercel.REASONING
_COST_KEYS = semconv.COST + openinference.COST
RESPONSE_ID_KEYS = semconv.RESPONSE_ID + vercel.RESPONSE_ID
MODEL_KEYS, REQUEST_MODEL_KEYS = _MODEL_KEYS, _REQUEST_MODEL_KEYS  # for the ledger's pairing of one call's spans

METADATA_PREFIX = "promptwall.metadata."
# Sessions the application names itself (a context manager, association properties, telemetry
# metadata), and conversation ids that agent frameworks often generate per run: an application's
# session, on the span, an ancestor or in baggage, beats a conversation id (docs/mapping.md, session_id).
_SESSION_KEYS = ("promptwall.session_id",) + openinference.SESSION + openllmetry.SESSION + vercel.SESSION \
    + ("langfuse.session.id",)  # fmt: skip
_CONVERSATION_KEYS = semconv.CONVERSATION + ("gcp.vertex.agent.session_id",)
_USER_KEYS = ("promptwall.user_id",) + openinference.USER + ("enduser.id",) + openllmetry.USER_ID + vercel.USER \
    + ("langfuse.user.id",) + semconv.USER + openllmetry.USER + ("enduser.pseudo.id",)  # fmt: skip

_USER_PREFIXES = (METADATA_PREFIX, openllmetry.ASSOCIATION_PREFIX, vercel.METADATA_PREFIX)
_NOT_USER_KEYS = frozenset(openllmetry.SESSION + openllmetry.USER_ID + vercel.SESSION + vercel.USER)

FIELDS = Lookup({
    "provider": _PROVIDER_KEYS,
    "ai_sdk_provider": vercel.PROVIDER,
    "model": _MODEL_KEYS,
    "request_model": _REQUEST_MODEL_KEYS,
    "input": _INPUT_KEYS,
    "output": _OUTPUT_KEYS,
    "total": _TOTAL_KEYS,
    "cache_read": _CACHE_READ_KEYS,
    "cache_write": _CACHE_WRITE_KEYS,
    "reasoning": _REASONING_KEYS,
    "cost": _COST_KEYS,
    **semconv.INPUT_MODALITIES,
    **semconv.OUTPUT_MODALITIES,
    "any_modality": tuple(key for keys in (*semconv.INPUT_MODALITIES.values(), *semconv.OUTPUT_MODALITIES.values())
                          for key in keys),  # present when any is: one test per span, not eight  # fmt: skip
    "response_id": RESPONSE_ID_KEYS,
    "finish_reasons": vercel.FINISH_REASON + ("llm.finish_reason",),
    "ttft_seconds": (semconv.TTFT_SECONDS,),
    "ttft_ms": vercel.TTFT_MS,
    "agent": semconv.AGENT_NAME + openinference.AGENT_NAME + logfire.AGENT_NAME,
    "workflow": ("gen_ai.workflow.name",) + openllmetry.WORKFLOW_NAME + vercel.FUNCTION_ID,
    "session": _SESSION_KEYS,
    "conversation": _CONVERSATION_KEYS,
    "user": _USER_KEYS,
    "use_case": ("promptwall.use_case",),
    "team_id": ("promptwall.team_id",),
    "integration_id": ("promptwall.integration_id",),
    "final_decision": ("promptwall.final_decision",),
    "status": ("promptwall.status",),
    "risk_score": ("promptwall.risk_score",),
}, names=semconv.REQUEST_PARAMS, prefixes=_USER_PREFIXES, exclude=_NOT_USER_KEYS)  # fmt: skip
"""Every single-valued field's sources (docs/mapping.md lists the same orders), the request
parameters by name, and the prefixes of user metadata (``promptwall.metadata.*``, OpenLLMetry
association properties, AI SDK telemetry metadata)."""

# Attributes (on an ancestor span, or baggage entries) whose values descendants inherit, in priority order.
INHERITED_KEYS = {
    **{key: "session_id" for key in _SESSION_KEYS},
    **{key: "conversation_id" for key in _CONVERSATION_KEYS},
    **{key: "user_id" for key in _USER_KEYS},
    "promptwall.use_case": "use_case",
    "promptwall.team_id": "team_id",
}
INHERITED_KEY_SET = frozenset(INHERITED_KEYS)

# Lowercased provider values of every dialect → PromptWall's provider names.
_PROVIDERS = {
    "az.ai.openai": "azure", "azure.ai.openai": "azure", "az.ai.inference": "azure", "azure.ai.inference": "azure",
    "azure_openai": "azure", "azure": "azure",
    "gcp.gen_ai": "google", "gcp.vertex_ai": "google", "gcp.gemini": "google", "vertex_ai": "google",
    "vertexai": "google", "gemini": "google", "google": "google", "gcp.vertex.agent": "google",
    "google.generative-ai": "google", "google.vertex": "google",
    "aws.bedrock": "bedrock", "aws": "bedrock", "amazon-bedrock": "bedrock",
    "mistral_ai": "mistral", "mistralai": "mistral", "x_ai": "xai", "ibm.watsonx.ai": "ibm", "moonshot_ai": "moonshot",
}  # fmt: skip

_RECORD_TOKEN_FIELDS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})
_MODALITY_FIELDS = (*semconv.INPUT_MODALITIES, *semconv.OUTPUT_MODALITIES)
_RESPONSE_ID_MIN_CHARS = 16
DEDUPE_WINDOW_NS = 10_000_000_000


class Inherited(NamedTuple):
    """What a span inherits from its ancestors or baggage (captured in-process at span start)."""

    session_id: Optional[str] = None  # a session the application named
    user_id: Optional[str] = None
    use_case: Optional[str] = None
    team_id: Optional[str] = None
    metadata: Mapping[str, Any] = {}
    conversation_id: Optional[str] = None  # a framework's conversation id: a session only without one above
    run_span_id: Optional[int] = None  # the outermost agent/workflow run the span is in (group_agent_runs only)


def is_genai(attributes: Mapping[str, Any]) -> bool:
    """Cheap first test, for the application thread: False means certainly not GenAI."""
    return not GENAI_MARKERS.isdisjoint(attributes.keys()) if attributes else False


def is_genai_span(span: Any) -> bool:
    """``is_genai(attributes_of(span))`` in one call, for the export thread's filter (the application
    thread has its own copy in ``processor``, so the two threads share no objects)."""
    attributes = getattr(getattr(span, "_attributes", None), "_dict", None)
    if type(attributes) is not dict:
        attributes = span.attributes
    return not GENAI_MARKERS.isdisjoint(attributes) if attributes else False


def classify(view: SpanView) -> Classification:
    """What kind of GenAI span this is, decided by the first dialect that says so explicitly."""
    attrs: Dict[str, Any] = view.attributes  # a dict (SpanView's invariant): compiled, its own operations
    # Both explicit kinds are GenAI markers: tested before the marker scan, which the usual call would repeat.
    kind = attrs.get(openinference.SPAN_KIND)
    if kind is not None:
        kind = str(kind).upper()
        if kind in openinference.INFERENCE_KINDS:
            return Classification(INFERENCE, "chat", "openinference")
        if kind in openinference.EMBEDDING_KINDS:
            return Classification(INFERENCE, "embeddings", "openinference")
        if kind in openinference.AGGREGATE_KINDS:
            return Classification(AGGREGATE, kind.lower(), "openinference")
        return Classification(CONTEXT, kind.lower(), "openinference")
    operation = attrs.get(semconv.OPERATION)
    if operation is not None:
        dialect = "logfire" if logfire.is_agent_run(attrs) else "semconv"
        key = (operation if type(operation) is str else str(operation), dialect)
        known: Dict[Tuple[str, str], Classification] = _by_operation  # annotated: compiled, the dict's own get
        found = known.get(key)
        if found is None:
            found = _by_operation[key] = _operation_class(*key)
            if len(_by_operation) > 256:  # operation names are the producers' words: few, but not a closed set
                _by_operation.clear()
        return found
    if not is_genai(attrs):
        return _NOT_GENAI
    request_type = attrs.get(openllmetry.REQUEST_TYPE)
    if request_type is not None:
        request_type = str(request_type)
        if request_type in openllmetry.INFERENCE_REQUEST_TYPES:
            return Classification(INFERENCE, "chat" if request_type == "chat" else "text_completion", "openllmetry")
        if request_type in openllmetry.EMBEDDING_REQUEST_TYPES:
            return Classification(INFERENCE, "embeddings", "openllmetry")
        return Classification(CONTEXT, request_type, "openllmetry")
    traceloop_kind = attrs.get(openllmetry.SPAN_KIND)
    if traceloop_kind is not None:
        span_class = AGGREGATE if traceloop_kind in openllmetry.AGGREGATE_KINDS else CONTEXT
        return Classification(span_class, str(traceloop_kind), "openllmetry")
    ai_operation = attrs.get(vercel.OPERATION_ID)
    if ai_operation is not None:
        ai_operation = str(ai_operation)
        if ai_operation in vercel.INFERENCE_OPERATIONS:
            return Classification(INFERENCE, "chat", "vercel")
        if ai_operation in vercel.EMBEDDING_OPERATIONS:
            return Classification(INFERENCE, "embeddings", "vercel")
        if ai_operation in vercel.AGGREGATE_OPERATIONS:
            return Classification(AGGREGATE, ai_operation, "vercel")
        return Classification(CONTEXT, ai_operation, "vercel")
    if logfire.is_agent_run(attrs):
        return Classification(AGGREGATE, "invoke_agent", "logfire")
    if first(attrs, _MODEL_KEYS) is not None and not guardrails.is_guardrail(attrs):
        # 1.26 spans, Logfire's instrument_openai, ADK call_llm: a model and no explicit kind (a guardrail
        # span that names the model it checked with is still a guardrail: never billed).
        dialect = "logfire" if logfire.REQUEST_DATA in attrs else "semconv"
        return Classification(INFERENCE, "chat", dialect)
    return Classification(CONTEXT, None, "semconv")


def _operation_class(operation: str, dialect: str) -> Classification:
    if operation in semconv.INFERENCE_OPERATIONS or operation in semconv.EMBEDDING_OPERATIONS:
        return Classification(INFERENCE, operation, dialect)
    if operation in semconv.AGGREGATE_OPERATIONS:
        return Classification(AGGREGATE, operation, dialect)
    return Classification(CONTEXT, operation, dialect)


_by_operation: Dict[Tuple[str, str], Classification] = {}
"""(``gen_ai.operation.name``, dialect) → its classification, built once (a NamedTuple's constructor is
Python code)."""


def normalize_provider(raw: Optional[str]) -> Optional[str]:
    if not raw:
        return None
    known: Dict[str, str] = _normalized  # annotated: compiled, the dict's own get
    found = known.get(raw)
    if found is None:
        lowered = raw.strip().lower()
        found = _PROVIDERS.get(lowered, lowered)
        if len(_normalized) >= 256:  # producers' spellings: few, but not a closed set
            _normalized.clear()
        _normalized[raw] = found
    return found


_normalized: Dict[str, str] = {}
"""Provider values as spans spell them → PromptWall's names, worked out once per spelling."""


def _response_id(attrs: Dict[str, Any], found_fields: Dict[str, Any], dialect: str) -> Optional[str]:
    found = text(found_fields.get("response_id"))
    if found is None and dialect == "openinference":
        found = openinference.response_id(attrs)
    return found


def request_id_for(view: SpanView, response_id: Optional[str], options: MappingOptions) -> str:
    """The deterministic idempotency key (see docs/mapping.md, "request_id").

    A call with a provider response id is keyed by that id and a 10-second
    window of its start, so two instrumentations of one call (even in two
    traces) give one key; anything else by its trace and span ids.
    """
    if options.dedupe_by_response_id and response_id and len(response_id) >= _RESPONSE_ID_MIN_CHARS:
        return response_keyed_id(response_id, view.start_ns // DEDUPE_WINDOW_NS)
    return "otel-%032x-%016x" % (view.trace_id, view.span_id)  # %-formatting: half the cost of format specs


def response_keyed_id(response_id: str, window: int) -> str:
    """The request_id of a call with this response id that started in this 10-second window."""
    return "gen-" + _sha256(f"{response_id}|{window}".encode("utf-8", "replace")).hexdigest()[:40]


def _conversation(view: SpanView, logs: Sequence[LogView], dialect: str) -> Tuple[List[Message], List[Message]]:
    """Input and output messages from the first source that has them, newest convention first."""
    attrs: Dict[str, Any] = view.attributes
    inputs: List[Message] = []
    outputs: List[Message] = []
    if semconv.INPUT_MESSAGES in attrs or semconv.OUTPUT_MESSAGES in attrs:
        inputs, outputs = semconv.from_message_attributes(attrs)
        if inputs and outputs:
            return inputs, outputs
    if logs:
        inputs, outputs = _taken(inputs, outputs, semconv.from_message_events(
            (log.event_name or "", log.body, log.attributes) for log in logs))  # fmt: skip
        if inputs and outputs:
            return inputs, outputs
    if view.events:
        events = [(e.name, None, e.attributes) for e in view.events if e.name in semconv.CONTENT_EVENTS]
        if events:
            inputs, outputs = _taken(inputs, outputs, semconv.from_message_events(events))
            if inputs and outputs:
                return inputs, outputs
        legacy = [(e.name, e.attributes) for e in view.events if e.name.startswith("gen_ai.content.")]
        if legacy:
            inputs, outputs = _taken(inputs, outputs, semconv.from_content_events(legacy))
            if inputs and outputs:
                return inputs, outputs
    if openllmetry.has_indexed_content(attrs):
        inputs, outputs = _taken(inputs, outputs, openllmetry.indexed_messages(attrs))
        if inputs and outputs:
            return inputs, outputs
    if dialect == "openinference" or "input.value" in attrs:
        inputs, outputs = _taken(inputs, outputs, openinference.messages(attrs))
        if inputs and outputs:
            return inputs, outputs
    if dialect == "vercel":
        inputs, outputs = _taken(inputs, outputs, vercel.messages(attrs))
        if inputs and outputs:
            return inputs, outputs
    if dialect == "logfire":
        inputs, outputs = _taken(inputs, outputs, logfire.messages(attrs))
    return inputs, outputs


def _taken(inputs: List[Message], outputs: List[Message],
           found: Tuple[List[Message], List[Message]]) -> Tuple[List[Message], List[Message]]:  # fmt: skip
    """Each side from the sources before, else from ``found`` (a later source fills only what is missing)."""
    return inputs or found[0], outputs or found[1]


class _ResourceFacts(NamedTuple):
    integration_id: str
    metadata: Dict[str, Any]
    otel: Dict[str, Any]
    # The resource's own values of the fields a span, its ancestors or the options may set first.
    session_id: Optional[str]
    user_id: Optional[str]
    use_case: Optional[str]
    team_id: Optional[str]


_resource_facts: Dict[int, Tuple[Mapping[str, Any], _ResourceFacts]] = {}


_last_facts: Tuple[Any, Any] = (None, None)
"""The resource seen last and its facts (one tuple, swapped whole): most processes have one resource."""


def _facts(resource: Mapping[str, Any], options: MappingOptions) -> _ResourceFacts:
    """What a resource contributes, computed once per resource (every span of a provider shares it)."""
    global _last_facts
    last = _last_facts
    if last[0] is resource:
        return last[1]
    cached = _resource_facts.get(id(resource))
    if cached is not None and cached[0] is resource:
        _last_facts = cached
        return cached[1]
    service = text(resource.get("service.name")) or "unknown_service"
    version = text(resource.get("service.version"))
    facts = _ResourceFacts(
        integration_id=(text(resource.get("promptwall.integration_id"))
                        or (f"otel:{service}@{version}" if version else f"otel:{service}"))[:256],  # fmt: skip
        metadata={k[len(METADATA_PREFIX):]: v for k, v in resource.items() if k.startswith(METADATA_PREFIX)},
        otel={key: json_safe(resource[key]) for key in _RESOURCE_KEYS if key in resource},
        session_id=text(resource.get("promptwall.session_id")),
        user_id=text(resource.get("promptwall.user_id")),
        use_case=text(resource.get("promptwall.use_case")),
        team_id=text(resource.get("promptwall.team_id")),
    )
    if len(_resource_facts) >= 256:
        _resource_facts.clear()
    _resource_facts[id(resource)] = _last_facts = (resource, facts)
    return facts


def _user_metadata(attrs: Dict[str, Any], plan: KeyPlan, inherited: Inherited, facts: _ResourceFacts) -> Dict[str, Any]:
    """Metadata the user chose: resource, inherited, then the span's own (nearest wins)."""
    if not facts.metadata and not inherited.metadata and not plan.prefixed and openinference.METADATA not in attrs:
        return {}  # the usual: none at all
    found: Dict[str, Any] = {**facts.metadata, **inherited.metadata}
    for key, name in plan.prefixed:
        found[name] = attrs[key]
    if openinference.METADATA in attrs:
        found.update(openinference.user_metadata(attrs))
    return found


def _dimension(own: Any, inherited: Optional[str], option: Optional[str], resource_value: Optional[str]) -> Optional[str]:
    """The span's own value, else inherited, else the configured default, else the resource's."""
    value = (own is not None and text(own)) or inherited or option or resource_value
    return value[:256] if value else None


def _request_params(attrs: Dict[str, Any], plan: KeyPlan, dialect: str) -> Dict[str, Any]:
    params = {}
    for key, name in plan.named:
        value = attrs[key]
        kind = type(value)
        params[name] = value if kind is int or (kind is str and value.isascii()) \
            or (kind is float and value - value == 0) else json_safe(value)  # x - x is 0 exactly when x is finite
    if dialect == "openinference":
        for name, value in openinference.invocation_parameters(attrs).items():
            if name not in ("model", "messages", "tools") and not isinstance(value, (dict, list)):
                params.setdefault(name, json_safe(value))
    return params


def _tokens(attrs: Dict[str, Any], found: Dict[str, Any], dialect: str, provider: Optional[str],
            warnings: List[str]) -> Dict[str, int]:  # fmt: skip
    """Token counts and their details, under record field names."""
    prompt = count(found.get("input"), "prompt_tokens", warnings)
    completion = count(found.get("output"), "completion_tokens", warnings)
    total = count(found["total"], "total_tokens", warnings) if "total" in found else None
    if prompt is None and completion is None and total is not None and attrs.get(vercel.OPERATION_ID) in vercel.EMBEDDING_OPERATIONS:
        prompt = total  # AI SDK embeddings: ai.usage.tokens is all input
    if prompt is None and completion is None and dialect == "logfire":
        usage = logfire.response_usage(attrs)
        if usage:
            prompt = count(usage.get("prompt_tokens", usage.get("input_tokens")), "prompt_tokens", warnings)
            completion = count(usage.get("completion_tokens", usage.get("output_tokens")), "completion_tokens", warnings)
    cache_read = count(found["cache_read"], "cache_read_tokens", warnings) or 0 if "cache_read" in found else 0
    cache_write = count(found["cache_write"], "cache_write_tokens", warnings) or 0 if "cache_write" in found else 0
    reasoning = count(found["reasoning"], "reasoning_tokens", warnings) or 0 if "reasoning" in found else 0
    if "any_modality" in found:
        prompt, completion, modalities = _modality_counts(found, prompt, completion, warnings)
    else:
        modalities = ()
    if reasoning and completion is not None and reasoning > completion:
        # The conventions count reasoning in the output; a producer that followed its provider's API
        # (Gemini's candidates exclude thoughts) sent it apart: it is billed as output all the same.
        warnings.append("completion_tokens: the output excluded reasoning tokens; added them")
        completion += reasoning
    out: Dict[str, int] = {}
    if provider == "anthropic" and prompt is not None and prompt < cache_read + cache_write:
        # Anthropic's own input_tokens excludes the cache; semconv >= 1.40 wants it included.
        warnings.append("prompt_tokens: Anthropic input excluded cached tokens; added them")
        prompt += cache_read + cache_write
    if prompt is not None:
        out["prompt_tokens"] = prompt
    if completion is not None:
        out["completion_tokens"] = completion
    if prompt is not None or completion is not None:
        out["total_tokens"] = (prompt or 0) + (completion or 0)
        if total is not None and total != out["total_tokens"]:
            out["reported_total_tokens"] = total
    elif total is not None:
        out["total_tokens"] = total
    if cache_read or cache_write or reasoning:
        for name, value in (("cache_read_tokens", cache_read), ("cache_write_tokens", cache_write),
                            ("reasoning_tokens", reasoning)):  # fmt: skip
            if value:
                out[name] = value
    if modalities:
        out.update((name, value) for name, value in modalities if value)
    return out


def _modality_counts(found: Mapping[str, Any], prompt: Optional[int], completion: Optional[int],
                     warnings: List[str]) -> Tuple[Optional[int], Optional[int], List[Tuple[str, int]]]:  # fmt: skip
    """Per-modality counts, and the totals they make when the span has none (they are parts of the totals)."""
    modalities = [(name, count(found[name], name, warnings) or 0) for name in _MODALITY_FIELDS if name in found]
    if prompt is None and any(name in semconv.INPUT_MODALITIES for name, _ in modalities):
        prompt = sum(value for name, value in modalities if name in semconv.INPUT_MODALITIES)
    if completion is None and any(name in semconv.OUTPUT_MODALITIES for name, _ in modalities):
        completion = sum(value for name, value in modalities if name in semconv.OUTPUT_MODALITIES)
    return prompt, completion, modalities


def _status(view: SpanView, attrs: Dict[str, Any], reasons: Optional[List[str]]) -> Tuple[str, Optional[Dict[str, Any]]]:
    error_type = text(attrs.get(semconv.ERROR_TYPE))
    if view.status_code == "ERROR" or error_type:
        # Some producers (OpenInference) only record the exception event.
        exception = next((e.attributes for e in view.events if e.name == "exception"), {})
        error = {"type": error_type or text(exception.get("exception.type")) or "error"}
        message = text(view.status_message) or text(exception.get("exception.message"))
        if message:
            error["message"] = truncate(message, 1024)
            if guardrails.refused_by_provider_filter(message):
                return "blocked", error  # the provider's filter refused the request (an error to the client)
        return "error", error
    if reasons and not guardrails.BLOCKING_FINISH_REASONS.isdisjoint(reasons):
        return "blocked", None  # the provider's own filter stopped the answer
    return "ok", None


def _messages_metadata(inputs: List[Message], outputs: List[Message], options: MappingOptions) -> Optional[Dict[str, Any]]:
    """The message list for metadata, or None if it would not fit ``max_messages_bytes``.

    The size is estimated from the texts (characters, plus a fixed overhead
    per message) rather than by encoding: encoding every record twice would
    cost more than the rest of the mapping.
    """
    budget = options.max_messages_bytes
    cap = options.max_content_bytes
    size = 0
    longest = 0
    message: Dict[str, Any]  # a Message: spelled out, as compiled code knows only the builtin name
    for message in inputs + outputs:
        body = message.get("content")
        size += 48
        if body:
            length = len(body)
            size += length if length < cap else cap
            if length > longest:
                longest = length
        if "tool_calls" in message:
            for call in message["tool_calls"]:  # a loop, not a generator: no closure per call (compiled)
                size += len(call["name"]) + len(call["arguments"]) + 32
        if "reasoning" in message or "tool_results" in message:  # texts too, capped like the content
            for extra in (message.get("reasoning", ""), *message.get("tool_results", ())):
                length = len(extra)
                size += (length if length < cap else cap) + 8
                if length > longest:
                    longest = length
        if size > budget:
            return None
    if longest * 4 > cap:  # rare: copy only then, the messages are shared with the rest of the record
        inputs = [_capped(m, cap) for m in inputs]
        outputs = [_capped(m, cap) for m in outputs]
    return {"input": inputs, "output": outputs}


def _capped(message: Message, cap: int) -> Message:
    """A copy of ``message`` with each of its texts cut to ``cap`` bytes."""
    copy = dict(message)
    for key in ("content", "reasoning"):
        if key in copy:
            copy[key] = truncate(copy[key], cap)
    if "tool_results" in copy:
        copy["tool_results"] = [truncate(result, cap) for result in copy["tool_results"]]
    return copy


def build_event(
    view: SpanView,
    logs: Sequence[LogView] = (),
    inherited: Inherited = Inherited(),
    options: MappingOptions = MappingOptions(),
    classification: Optional[Classification] = None,
) -> Optional[Dict[str, Any]]:
    """The PromptWall event for one span, or None if it is not billable on its own.

    Inference spans always map. Aggregate spans map only when the caller (the
    trace ledger, which knows whether inference children were seen) passes
    their classification explicitly; everything else returns None.
    """
    explicit = classification is not None
    classification = classification or classify(view)
    span_class, operation, dialect = classification
    if span_class is INFERENCE:
        usage_source = None
    elif span_class is AGGREGATE and explicit:
        usage_source = "aggregate"
    else:
        return None

    attrs: Dict[str, Any] = view.attributes
    facts = _facts(view.resource, options)
    plan = FIELDS.plan(attrs)
    found: Dict[str, Any] = FIELDS.resolve(attrs, plan)
    warnings: List[str] = []
    provider_raw = text(found.get("provider"))
    ai_sdk_provider = provider_raw is not None and "ai_sdk_provider" in found and provider_raw == text(found["ai_sdk_provider"])
    provider = normalize_provider(vercel.provider(provider_raw) if ai_sdk_provider and provider_raw else provider_raw)
    model = text(found.get("model"))
    request_model = text(found.get("request_model"))
    if model is None and dialect == "openinference":
        model = text(openinference.invocation_parameters(attrs).get("model"))
    response_id = _response_id(attrs, found, dialect)
    tokens: Dict[str, int] = _tokens(attrs, found, dialect, provider, warnings)
    reasons = semconv.finish_reasons(attrs) or strings(found.get("finish_reasons")) \
        or strings(openllmetry.finish_reason(attrs))  # fmt: skip
    # The output schema says tool_call; OpenAI, the 1.28 events and util-genai say tool_calls, the AI SDK tool-calls.
    if "tool_calls" in reasons or "tool-calls" in reasons:
        reasons = ["tool_call" if r in ("tool_calls", "tool-calls") else r for r in reasons]
    status, error = _status(view, attrs, reasons)
    integration_id = text(found.get("integration_id")) or options.integration_id

    event: Dict[str, Any] = {
        "request_id": request_id_for(view, response_id, options) if usage_source is None
        else "otel-%032x-%016x" % (view.trace_id, view.span_id),
        "mode": options.mode,
        "started_at": format_ns(view.start_ns),
        "finished_at": format_ns(view.end_ns),
        "latency_ms": max(0, (view.end_ns - view.start_ns) // 1_000_000),
        "status": status,
        "integration_id": integration_id[:256] if integration_id else facts.integration_id,
    }
    if provider:
        event["provider"] = provider[:256]
    if model:
        event["model"] = model[:256]
    counts = 0
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if name in tokens:
            event[name] = tokens[name]
            counts += 1
    if error:
        event["error_code"] = error["type"][:64]

    _fill_cost(event, found, tokens, model, request_model, options)

    conversation = text(found.get("conversation")) or inherited.conversation_id
    session = text(found.get("session")) or inherited.session_id or conversation \
        or facts.session_id  # fmt: skip
    user = text(found.get("user")) or inherited.user_id or facts.user_id
    if session:
        event["session_id"] = session[:256]
    if user:
        event["end_user_id"] = event["user_id"] = user[:256]
    use_case = _dimension(found.get("use_case"), inherited.use_case, options.use_case, facts.use_case)
    team = _dimension(found.get("team_id"), inherited.team_id, options.team_id, facts.team_id)
    if use_case:
        event["use_case"] = use_case
    if team:
        event["team_id"] = team
    set_by_application = []
    if "final_decision" in found:
        decision = text(found["final_decision"])
        if decision:
            event["final_decision"] = decision[:64]
            set_by_application.append("final_decision")
    if "status" in found and text(found["status"]) in STATUSES:
        event["status"] = text(found["status"])
        set_by_application.append("status")
    if "risk_score" in found:
        risk = number(found["risk_score"])
        if risk is not None:
            event["risk_score"] = min(1.0, max(0.0, risk))
            set_by_application.append("risk_score")

    gen_ai: Dict[str, Any] = {"operation": operation}
    if provider_raw and provider_raw != provider:
        gen_ai["provider_raw"] = provider_raw
    if request_model and request_model != model:
        gen_ai["request_model"] = request_model
    if response_id:
        gen_ai["response_id"] = response_id
    if conversation and conversation != session:  # outranked by the application's session: kept, not lost
        gen_ai["conversation_id"] = conversation[:256]
    if reasons:
        gen_ai["finish_reasons"] = reasons
    params = _request_params(attrs, plan, dialect)
    if params:
        gen_ai["request"] = params
    if len(tokens) > counts:  # cache, reasoning, or a reported total that differs from the counts
        gen_ai["usage"] = {k: v for k, v in tokens.items() if k not in _RECORD_TOKEN_FIELDS}
    if usage_source:
        gen_ai["usage_source"] = usage_source
    if "ttft_seconds" in found or "ttft_ms" in found:
        ttft = number(found.get("ttft_seconds"))
        ttft_ms = ttft * 1000 if ttft is not None else number(found.get("ttft_ms"))
        if ttft_ms is not None:
            gen_ai["ttft_ms"] = round(ttft_ms, 3)
    if "agent" in found:
        agent = text(found["agent"])
        if agent:
            gen_ai["agent_name"] = agent
    if "workflow" in found:
        workflow = text(found["workflow"])
        if workflow:
            gen_ai["workflow_name"] = workflow
    if error:
        gen_ai["error"] = error
    if set_by_application:  # guardrail verdicts and evaluations never override these (guardrails.combine)
        gen_ai["set_by_application"] = set_by_application
    provider_filter = guardrails.provider_filter_hit(reasons, error) if status == "blocked" else None
    if provider_filter and "status" not in set_by_application:
        event["policy_hits"] = [provider_filter]
        event.setdefault("final_decision", "block")
    evaluations = _evaluations(view, logs) if view.events or logs else None
    if evaluations:
        event.setdefault("policy_hits", []).extend(evaluations)

    if options.capture_content and span_class is INFERENCE:
        _fill_content(event, gen_ai, view, logs, dialect, options)
    else:
        gen_ai["content_captured"] = False
    if warnings:
        gen_ai["mapping_warnings"] = warnings
        logger.info("span %s mapped with repairs: %s", view.name, "; ".join(warnings))

    user_metadata = _user_metadata(attrs, plan, inherited, facts)
    metadata = {repair(str(k)): json_safe(v) for k, v in user_metadata.items()} if user_metadata else {}
    if openinference.TAGS in attrs:
        metadata.setdefault("tags", strings(attrs[openinference.TAGS]))
    metadata["gen_ai"] = gen_ai
    metadata["otel"] = _otel_metadata(view, dialect, facts)
    event["metadata"] = metadata
    return _redacted(event, options)


def guardrail_record(view: SpanView, verdicts: Sequence[guardrails.Verdict], options: MappingOptions,
                     inherited: Inherited = Inherited(), follows: Optional[str] = None) -> Dict[str, Any]:
    """The record of a guardrail whose call has no record to carry its verdict: a request it blocked
    before any call, or (``follows``: that call's request_id) a verdict on a call whose record
    already left. Never billed: no tokens, no cost, no content."""
    facts = _facts(view.resource, options)
    attrs = view.attributes
    key = f"{follows}|{view.trace_id:032x}|{view.span_id:016x}" if follows else f"{view.trace_id:032x}|{view.span_id:016x}"
    event: Dict[str, Any] = {
        "request_id": "guard-" + hashlib.sha256(key.encode()).hexdigest()[:40],
        "mode": options.mode,
        "started_at": format_ns(view.start_ns),
        "finished_at": format_ns(view.end_ns),
        "latency_ms": max(0, (view.end_ns - view.start_ns) // 1_000_000),
        "status": "ok",
        "integration_id": facts.integration_id,
    }
    session = text(first(attrs, _SESSION_KEYS)) or inherited.session_id or text(first(attrs, _CONVERSATION_KEYS)) \
        or inherited.conversation_id  # fmt: skip
    user = text(first(attrs, _USER_KEYS)) or inherited.user_id
    if session:
        event["session_id"] = session[:256]
    if user:
        event["end_user_id"] = event["user_id"] = user[:256]
    gen_ai: Dict[str, Any] = {"operation": "guardrail", "content_captured": False}
    if follows:
        gen_ai["guardrail_of"] = follows
    for field, key, own in (("use_case", "promptwall.use_case", inherited.use_case), ("team_id", "promptwall.team_id", inherited.team_id)):
        value = _dimension(attrs.get(key), own, getattr(options, field), getattr(facts, field))
        if value:
            event[field] = value
    user_metadata = {**facts.metadata, **inherited.metadata}
    metadata = {repair(str(k)): json_safe(v) for k, v in user_metadata.items()}
    metadata["gen_ai"] = gen_ai
    metadata["otel"] = _otel_metadata(view, "guardrail", facts)
    event["metadata"] = metadata
    guardrails.combine(event, verdicts)
    return event


def evaluation_record(call: Tuple[str, Optional[str], Optional[str], str], logs: Sequence[Union[LogView, EventView]],
                      options: MappingOptions) -> Dict[str, Any]:
    """A follow-up record for evaluations of a call whose record already left (``call``: its request_id,
    session, user and integration, as the ledger remembers them). Keyed by the call and the
    evaluations, so the same late evaluations replayed are stored once; never billed."""
    request_id, session, user, integration_id = call
    hits = [hit for hit in (guardrails.evaluation_hit(log.attributes) for log in logs) if hit]
    digest = hashlib.sha256(f"{request_id}|{sorted(map(str, hits))}".encode("utf-8", "replace")).hexdigest()[:40]
    when = max((log.time_ns for log in logs), default=0) or time.time_ns()
    event: Dict[str, Any] = {
        "request_id": "eval-" + digest,
        "mode": options.mode,
        "started_at": format_ns(when),
        "finished_at": format_ns(when),
        "latency_ms": 0,
        "status": "ok",
        "integration_id": integration_id,
        "policy_hits": hits,
        "metadata": {"gen_ai": {"operation": "evaluation", "evaluation_of": request_id, "content_captured": False}},
    }
    if session:
        event["session_id"] = session
    if user:
        event["end_user_id"] = event["user_id"] = user
    return event


def _evaluations(view: SpanView, logs: Sequence[LogView]) -> List[Dict[str, Any]]:
    """``gen_ai.evaluation.result`` events about this call: on its span, or log records joined by its
    span id (docs/mapping.md, "Evaluations")."""
    found = []
    for event in view.events:
        if event.name == guardrails.EVALUATION_EVENT:
            hit = guardrails.evaluation_hit(event.attributes)
            if hit:
                found.append(hit)
    for log in logs:
        if log.event_name == guardrails.EVALUATION_EVENT:
            hit = guardrails.evaluation_hit(log.attributes)
            if hit:
                found.append(hit)
    return found


def _fill_cost(event: Dict[str, Any], found: Dict[str, Any], tokens: Dict[str, int],
               model: Optional[str], request_model: Optional[str], options: MappingOptions) -> None:  # fmt: skip
    span_cost = number(found["cost"]) if "cost" in found else None
    if span_cost is not None and span_cost >= 0:
        event["cost_usd"] = span_cost
        event["_cost_source"] = "span"
        return
    if "prompt_tokens" not in tokens and "completion_tokens" not in tokens:
        return
    prices = options.prices
    for name in (model, request_model):
        if not name:
            continue
        cost = prices.cost(name, tokens.get("prompt_tokens", 0), tokens.get("completion_tokens", 0),
                           tokens.get("cache_read_tokens", 0), tokens.get("cache_write_tokens", 0))  # fmt: skip
        if cost is not None:
            event["cost_usd"] = cost
            event["_cost_source"] = prices.label
            return


def _fill_content(event: Dict[str, Any], gen_ai: Dict[str, Any], view: SpanView, logs: Sequence[LogView],
                  dialect: str, options: MappingOptions) -> None:  # fmt: skip
    inputs, outputs = _conversation(view, logs, dialect)
    calls: List[Dict[str, str]] = []
    message: Dict[str, Any]  # a Message: spelled out, as compiled code knows only the builtin name
    for message in outputs:
        if "tool_calls" in message:
            calls += message["tool_calls"]
    if calls:  # names and arguments are clean text already
        gen_ai["tool_calls"] = calls[:16]
    prompt = prompt_of(inputs)
    if prompt is None and not any("content" in message for message in outputs):
        # Producers with capture off still emit empty message events: roles are not content.
        gen_ai["content_captured"] = False
        return
    answer = answer_of(outputs)
    truncated = []
    for field, value in (("prompt", prompt), ("answer", answer)):
        if value is not None:
            clipped = truncate(value, options.max_content_bytes)
            if clipped is not value:
                truncated.append(field)
            event[field] = clipped
    gen_ai["content_captured"] = True
    messages = _messages_metadata(inputs, outputs, options)
    if messages is not None:
        gen_ai["messages"] = messages
    else:
        truncated.append("messages")
    if truncated:
        gen_ai["content_truncated"] = truncated


_scope_labels: Dict[Tuple[str, Optional[str]], str] = {}
"""Instrumentation scope → its label in ``metadata.otel.scope``: a handful per process, every span one of them."""


def _otel_metadata(view: SpanView, dialect: str, facts: _ResourceFacts) -> Dict[str, Any]:
    otel: Dict[str, Any] = {
        "trace_id": "%032x" % view.trace_id,  # %-formatting: half the cost of format specs, per record
        "span_id": "%016x" % view.span_id,
        "span_name": repair(view.name),
        "span_kind": view.kind,
        "dialect": dialect,
    }
    if view.parent_span_id:
        otel["parent_span_id"] = "%016x" % view.parent_span_id
    if view.scope_name:
        scope = (view.scope_name, view.scope_version)
        labels: Dict[Tuple[str, Optional[str]], str] = _scope_labels  # annotated: compiled, the dict's own get
        label = labels.get(scope)
        if label is None:
            label = repair(f"{view.scope_name}@{view.scope_version}" if view.scope_version else view.scope_name)
            if len(_scope_labels) >= 256:
                _scope_labels.clear()
            _scope_labels[scope] = label
        otel["scope"] = label
    if facts.otel:
        otel["resource"] = dict(facts.otel)
    return otel


_RESOURCE_KEYS = ("service.name", "service.version", "service.namespace", "deployment.environment",
                  "deployment.environment.name", "telemetry.sdk.language",
                  "promptetheus.project_id")  # the Promptetheus target's project, when not configured  # fmt: skip


def _redacted(event: Dict[str, Any], options: MappingOptions) -> Optional[Dict[str, Any]]:
    cost_source = event.pop("_cost_source", None)
    if cost_source:
        event["metadata"]["gen_ai"]["cost_source"] = cost_source
    if options.redact is None:
        return event
    # The content-free record, built before the hook can mutate the event.
    gen_ai = {k: v for k, v in event["metadata"]["gen_ai"].items() if k not in ("messages", "tool_calls", "content_truncated")}
    gen_ai["content_captured"] = False
    fallback = copy.deepcopy({**{k: v for k, v in event.items() if k not in ("prompt", "answer", "metadata")},
                              "metadata": {**event["metadata"], "gen_ai": gen_ai}})
    try:
        result = options.redact(event)
    except Exception:  # the hook is user code: fail closed on content, keep the bill
        logger.exception("redact hook failed; record sent without prompt, answer and messages")
        return fallback
    if result is None or isinstance(result, dict):
        return result
    logger.error("redact hook returned %s, not a record or None; record sent without content", type(result).__name__)
    return fallback

