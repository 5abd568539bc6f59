"""OpenTelemetry GenAI semantic conventions, every version from 1.26 to the newest.

Attribute names per version are in ``docs/research/semconv-check.md``; older
spellings are listed after newer ones so the newest wins when both are set.
Content comes in three eras: span events (1.26-1.27), per-message events
emitted as log records or span events (1.28-1.36), and the
``gen_ai.input.messages``/``gen_ai.output.messages`` attributes (1.37+), on the
span or on a ``gen_ai.client.inference.operation.details`` event.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Mapping, Optional, Tuple

from .messages import Message, message, messages_from, system_instructions
from .values import parse_json, text

OPERATION = "gen_ai.operation.name"
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
RESPONSE_MODEL = ("gen_ai.response.model",)
REQUEST_MODEL = ("gen_ai.request.model",)
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
TOTAL_TOKENS = ("gen_ai.usage.total_tokens",)  # not semconv; OpenLLMetry >= 0.55 writes it
CACHE_READ = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens")
CACHE_WRITE = (
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
)
REASONING = ("gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens")
# Per-modality counts (semantic-conventions-genai, after 1.41): parts of input_tokens / output_tokens,
# kept in metadata; they make the counts only when a producer sends no total.
INPUT_MODALITIES = {
    "text_input_tokens": ("gen_ai.usage.text.input_tokens",),
    "image_input_tokens": ("gen_ai.usage.image.input_tokens",),
    "audio_input_tokens": ("gen_ai.usage.audio.input_tokens", "llm.token_count.prompt_details.audio"),
    "video_input_tokens": ("gen_ai.usage.video.input_tokens",),
}
OUTPUT_MODALITIES = {
    "text_output_tokens": ("gen_ai.usage.text.output_tokens",),
    "audio_output_tokens": ("gen_ai.usage.audio.output_tokens", "llm.token_count.completion_details.audio"),
}
COST = ("gen_ai.usage.cost",)
CONVERSATION = ("gen_ai.conversation.id",)
RESPONSE_ID = ("gen_ai.response.id",)
FINISH_REASONS = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"
USER = ("gen_ai.user",)
AGENT_NAME = ("gen_ai.agent.name",)
TTFT_SECONDS = "gen_ai.response.time_to_first_chunk"

REQUEST_PARAMS = {
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.top_p": "top_p",
    "gen_ai.request.top_k": "top_k",
    "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.request.seed": "seed",
    "gen_ai.request.frequency_penalty": "frequency_penalty",
    "gen_ai.request.presence_penalty": "presence_penalty",
    "gen_ai.request.stop_sequences": "stop_sequences",
    "gen_ai.request.choice.count": "choice_count",
    "gen_ai.request.stream": "stream",
    "gen_ai.output.type": "output_type",
}

# gen_ai.operation.name values. "completion"/"generate"/"embedding" are not
# semconv but are seen in the wild; accepting them costs nothing.
INFERENCE_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "completion", "generate"})
EMBEDDING_OPERATIONS = frozenset({"embeddings", "embedding"})
AGGREGATE_OPERATIONS = frozenset({"invoke_agent", "invoke_workflow", "agent_step"})
CONTEXT_OPERATIONS = frozenset(
    {"create_agent", "execute_tool", "retrieval", "run_guardrail", "apply_guardrail", "plan",
     # memory operations (any operation naming "memory" is one): context, never billed
     "create_memory", "search_memory", "update_memory", "upsert_memory", "delete_memory",
     "create_memory_store", "delete_memory_store",
     "execute_task", "llm_request", "vector_db_retrieve"}  # last three: OpenLLMetry's own values
)  # fmt: skip

INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
DETAILS_EVENT = "gen_ai.client.inference.operation.details"

_INPUT_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
CONTENT_EVENTS = frozenset({*_INPUT_EVENTS, CHOICE_EVENT, DETAILS_EVENT})
EVALUATION_EVENT = "gen_ai.evaluation.result"  # judges a call: joins its record like content (guardrails.py)
JOINED_LOG_EVENTS = CONTENT_EVENTS | {EVALUATION_EVENT}
"""Log records kept for the span they name, until its record is built."""
"""Names of log records/span events that carry content for a span."""

Conversation = Tuple[List[Message], List[Message]]


def from_message_attributes(attrs: Mapping[str, Any]) -> Conversation:
    """1.37+: structured or JSON-string message attributes (span or details event)."""
    inputs: List[Message] = []
    get = attrs.get  # any mapping (a span's, an event's, a log record's): bound once for its three reads
    instructions = get(SYSTEM_INSTRUCTIONS)
    if instructions is not None:
        inputs += system_instructions(instructions)
    inputs += messages_from(get(INPUT_MESSAGES), "user")
    return inputs, messages_from(get(OUTPUT_MESSAGES), "assistant")


def _event_body(name: str, body: Any, attributes: Mapping[str, Any]) -> Any:
    """The payload of a message event, wherever this producer put it.

    The spec puts it in the log body; span-event producers put it in
    attributes, whole (``gen_ai.event.content`` as JSON) or field by field.
    """
    if body is not None:
        if isinstance(body, (str, bytes)):  # JSON that does not parse is kept as text
            parsed = parse_json(body)
            return parsed if parsed is not None else text(body)
        return body
    packed = attributes.get("gen_ai.event.content")
    if packed is not None:
        return parse_json(packed)
    return {key: parse_json(value) if key in ("message", "tool_calls") else value
            for key, value in attributes.items() if not key.startswith("gen_ai.")}  # fmt: skip


def from_message_events(events: Iterable[Tuple[str, Any, Mapping[str, Any]]]) -> Conversation:
    """1.28-1.36 per-message events and 1.37 details events, in emission order.

    ``events`` yields (name, body, attributes) from log records or span events.
    """
    inputs: List[Message] = []
    outputs: List[Message] = []
    for name, body, attributes in events:
        if name == DETAILS_EVENT:
            more_in, more_out = from_message_attributes(attributes)
            inputs += more_in
            outputs += more_out
            continue
        role = _INPUT_EVENTS.get(name)
        if role is None and name != CHOICE_EVENT:
            continue
        payload = _event_body(name, body, attributes)
        if not isinstance(payload, Mapping):
            payload = {"content": payload} if payload is not None else {}
        parsed = messages_from([payload], role or "assistant")
        if name == CHOICE_EVENT:
            outputs += parsed
        else:
            inputs += [m for m in parsed if "content" in m or "tool_calls" in m] or [message(role or "user")]
    return inputs, outputs


def from_content_events(events: Iterable[Tuple[str, Mapping[str, Any]]]) -> Conversation:
    """1.26-1.27 ``gen_ai.content.prompt``/``.completion`` span events (JSON in an attribute)."""
    inputs: List[Message] = []
    outputs: List[Message] = []
    for name, attributes in events:
        if name == "gen_ai.content.prompt":
            inputs += messages_from(attributes.get("gen_ai.prompt"), "user")
        elif name == "gen_ai.content.completion":
            outputs += messages_from(attributes.get("gen_ai.completion"), "assistant")
    return inputs, outputs


def finish_reasons(attrs: Mapping[str, Any]) -> Optional[List[str]]:
    raw = attrs.get(FINISH_REASONS)
    if raw is None:
        return None
    values = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else [raw]
    return [v if type(v) is str else str(v) for v in values]
