"""OpenInference (Arize Phoenix) spans.

The kind is explicit (``openinference.span.kind``); ``llm.model_name`` is the
response model; the request model and parameters live only in the
``llm.invocation_parameters`` JSON; the response id only in ``output.value``
(a framework's LLM span nests it deeper: see ``response_id``).
``output.value`` may hold a whole provider response (a chat completion, or a
Responses-API object, alone or in a one-element list): ``messages`` reads it
through ``messages.messages_from``, which knows those shapes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

from .messages import Message, ToolCall, arguments_text, content_text, message, messages_from
from .values import indexed_rows, parse_json, text

SPAN_KIND = "openinference.span.kind"
MODEL = ("llm.response.model_name", "llm.model_name", "embedding.model_name")
REQUEST_MODEL = ("llm.request.model_name",)
PROVIDER = ("llm.provider", "llm.system")
INPUT_TOKENS = ("llm.token_count.prompt",)
OUTPUT_TOKENS = ("llm.token_count.completion",)
TOTAL_TOKENS = ("llm.token_count.total",)
CACHE_READ = ("llm.token_count.prompt_details.cache_read",)
CACHE_WRITE = ("llm.token_count.prompt_details.cache_write",)
REASONING = ("llm.token_count.completion_details.reasoning",)
COST = ("llm.cost.total",)
SESSION = ("session.id",)
USER = ("user.id",)
METADATA = "metadata"
TAGS = "tag.tags"
AGENT_NAME = ("agent.name",)
INVOCATION_PARAMETERS = "llm.invocation_parameters"

INFERENCE_KINDS = frozenset({"LLM"})
EMBEDDING_KINDS = frozenset({"EMBEDDING"})
AGGREGATE_KINDS = frozenset({"AGENT", "CHAIN"})
CONTEXT_KINDS = frozenset({"TOOL", "RETRIEVER", "RERANKER", "GUARDRAIL", "EVALUATOR", "PROMPT", "UNKNOWN"})

_INPUT = "llm.input_messages."
_OUTPUT = "llm.output_messages."


def has_indexed_content(attrs: Mapping[str, Any]) -> bool:
    return any(f"{prefix}0.message.{field}" in attrs for prefix in (_INPUT, _OUTPUT) for field in ("role", "content"))


def _indexed(attrs: Mapping[str, Any], prefix: str, default_role: str) -> List[Message]:
    messages = []
    for row in indexed_rows(attrs, prefix, ".message."):
        parts = []
        j = 0
        while f"contents.{j}.message_content.type" in row or f"contents.{j}.message_content.text" in row:
            parts.append(text(row.get(f"contents.{j}.message_content.text")) or "")
            j += 1
        calls: List[ToolCall] = []
        j = 0
        while f"tool_calls.{j}.tool_call.function.name" in row:
            calls.append((text(row[f"tool_calls.{j}.tool_call.function.name"]) or "",
                          arguments_text(row.get(f"tool_calls.{j}.tool_call.function.arguments"))))  # fmt: skip
            j += 1
        body = content_text(row.get("content")) or "\n".join(filter(None, parts))
        messages.append(message(text(row.get("role")) or default_role, body, calls))
    return messages


def messages(attrs: Mapping[str, Any]) -> Tuple[List[Message], List[Message]]:
    """Indexed messages, else the raw request/response in ``input.value``/``output.value``."""
    inputs = _indexed(attrs, _INPUT, "user")
    outputs = _indexed(attrs, _OUTPUT, "assistant")
    if not inputs and attrs.get("input.value") is not None:
        inputs = messages_from(attrs["input.value"], "user")
    if not outputs and attrs.get("output.value") is not None:
        outputs = messages_from(attrs["output.value"], "assistant")
    return inputs, outputs


def _output_json(attrs: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """``output.value`` as an object; a list holding one object (the OpenAI Agents SDK wraps its
    generation's Responses-API object so) counts as that object."""
    if "json" not in str(attrs.get("output.mime_type", "")):
        return None
    parsed = parse_json(attrs.get("output.value"))
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    return parsed if isinstance(parsed, Mapping) else None


# The OpenAI Agents SDK's placeholder for the Responses object it builds from a chat completion.
_AGENTS_PLACEHOLDER_ID = "__fake_id__"


def response_id(attrs: Mapping[str, Any]) -> Optional[str]:
    """The provider's response id, which OpenInference keeps only inside ``output.value``.

    A client instrumentation dumps the provider's response, whose ``id`` is the
    one. A framework's LLM span dumps the framework's own result, with the
    provider's id nested where the framework put it (docs/mapping.md,
    "request_id"): LangChain's ``LLMResult`` in ``llm_output.id``, else in a
    generation's ``message.response_metadata.id`` or ``generation_info.id``;
    the OpenAI Agents SDK's Responses object, built from a chat completion, has
    the placeholder id and the real one in ``output[*].provider_data.response_id``.
    """
    output = _output_json(attrs)
    if not output:
        return None
    own = text(output.get("id"))
    if own and own != _AGENTS_PLACEHOLDER_ID:
        return own
    return _nested_response_id(output) or own


def _nested_response_id(output: Mapping[str, Any]) -> Optional[str]:
    llm_output = output.get("llm_output")
    if isinstance(llm_output, Mapping) and text(llm_output.get("id")):
        return text(llm_output["id"])
    generations = output.get("generations")
    if isinstance(generations, list):  # LangChain: one list of generations per prompt
        for batch in generations:
            for generation in batch if isinstance(batch, list) else ():
                found = _generation_response_id(generation)
                if found:
                    return found
    items = output.get("output")
    if isinstance(items, list):  # the Agents SDK: every output item names the completion it came from
        for item in items:
            provider_data = item.get("provider_data") if isinstance(item, Mapping) else None
            if isinstance(provider_data, Mapping) and text(provider_data.get("response_id")):
                return text(provider_data["response_id"])
    return None


def _generation_response_id(generation: Any) -> Optional[str]:
    if not isinstance(generation, Mapping):
        return None
    info = generation.get("generation_info")
    if isinstance(info, Mapping) and text(info.get("id")):
        return text(info["id"])
    message = generation.get("message")
    if isinstance(message, Mapping):
        # Serialised with LangChain's dumpd ({"lc": 1, "kwargs": {...}}) or as the plain message.
        fields = message.get("kwargs") if isinstance(message.get("kwargs"), Mapping) else message
        metadata = fields.get("response_metadata")
        if isinstance(metadata, Mapping) and text(metadata.get("id")):
            return text(metadata["id"])
    return None


def invocation_parameters(attrs: Mapping[str, Any]) -> Dict[str, Any]:
    parsed = parse_json(attrs.get(INVOCATION_PARAMETERS))
    return dict(parsed) if isinstance(parsed, Mapping) else {}


def user_metadata(attrs: Mapping[str, Any]) -> Dict[str, Any]:
    parsed = parse_json(attrs.get(METADATA))
    return dict(parsed) if isinstance(parsed, Mapping) else {}
