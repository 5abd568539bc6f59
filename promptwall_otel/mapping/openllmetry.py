"""OpenLLMetry (Traceloop): the legacy indexed form and the SDK's own attributes.

Releases up to 0.53 write ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*``,
``llm.request.type`` and ``llm.usage.total_tokens``; newer ones write the
semantic conventions (handled by :mod:`.semconv`). Every release marks
workflow/task/agent/tool spans with ``traceloop.span.kind`` and stamps
``traceloop.association.properties.*`` on every span of a context.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from .messages import Message, ToolCall, arguments_text, content_text, message
from .values import indexed_rows, text

REQUEST_TYPE = "llm.request.type"
SPAN_KIND = "traceloop.span.kind"
TOTAL_TOKENS = ("llm.usage.total_tokens",)
REASONING = ("llm.usage.reasoning_tokens",)
USER = ("llm.user",)
WORKFLOW_NAME = ("traceloop.workflow.name",)
ASSOCIATION_PREFIX = "traceloop.association.properties."
SESSION = (ASSOCIATION_PREFIX + "session_id",)
USER_ID = (ASSOCIATION_PREFIX + "user_id",)

INFERENCE_REQUEST_TYPES = frozenset({"chat", "completion"})
EMBEDDING_REQUEST_TYPES = frozenset({"embedding"})
AGGREGATE_KINDS = frozenset({"workflow", "agent"})
CONTEXT_KINDS = frozenset({"task", "tool", "unknown"})

_PROMPT = "gen_ai.prompt."
_COMPLETION = "gen_ai.completion."


def has_indexed_content(attrs: Mapping[str, Any]) -> bool:
    return any(f"{prefix}0.{field}" in attrs for prefix in (_PROMPT, _COMPLETION) for field in ("content", "role"))


def _indexed(attrs: Mapping[str, Any], prefix: str, default_role: str) -> List[Message]:
    messages = []
    for row in indexed_rows(attrs, prefix):
        calls: List[ToolCall] = []
        j = 0
        while f"tool_calls.{j}.name" in row:
            calls.append((text(row[f"tool_calls.{j}.name"]) or "", arguments_text(row.get(f"tool_calls.{j}.arguments"))))
            j += 1
        messages.append(
            message(text(row.get("role")) or default_role, content_text(row.get("content")), calls,
                    text(row.get("finish_reason")))  # fmt: skip
        )
    return messages


def indexed_messages(attrs: Mapping[str, Any]) -> Tuple[List[Message], List[Message]]:
    return _indexed(attrs, _PROMPT, "user"), _indexed(attrs, _COMPLETION, "assistant")


def finish_reason(attrs: Mapping[str, Any]) -> Optional[List[str]]:
    found = text(attrs.get("llm.response.finish_reason") or attrs.get("gen_ai.response.finish_reason"))
    if found:
        return [found]
    reasons: List[str] = []  # legacy: one per choice, gen_ai.completion.<i>.finish_reason
    i = 0
    while any(f"{_COMPLETION}{i}.{field}" in attrs for field in ("finish_reason", "role", "content")):
        reason = text(attrs.get(f"{_COMPLETION}{i}.finish_reason"))
        if reason:
            reasons.append(reason)
        i += 1
    return reasons or None
