"""Vercel AI SDK spans (instrumentation scope ``ai``).

The billable call is the inner ``ai.*.doGenerate``/``doStream``/``doEmbed``
span; the outer ``ai.generateText`` etc. sums the usage of its steps and must
not be billed as well. Usage is ``promptTokens``/``completionTokens`` in older
releases and ``inputTokens``/``outputTokens`` in newer ones: both are read.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Tuple

from .messages import Message, messages_from

OPERATION_ID = "ai.operationId"
MODEL = ("ai.response.model",)
REQUEST_MODEL = ("ai.model.id",)
PROVIDER = ("ai.model.provider",)
INPUT_TOKENS = ("ai.usage.inputTokens", "ai.usage.promptTokens")
OUTPUT_TOKENS = ("ai.usage.outputTokens", "ai.usage.completionTokens")
TOTAL_TOKENS = ("ai.usage.totalTokens", "ai.usage.tokens")
CACHE_READ = ("ai.usage.cachedInputTokens", "ai.usage.inputTokenDetails.cacheReadTokens")
REASONING = ("ai.usage.reasoningTokens",)
RESPONSE_ID = ("ai.response.id",)
FINISH_REASON = ("ai.response.finishReason", "ai.finishReason")
METADATA_PREFIX = "ai.telemetry.metadata."
SESSION = (METADATA_PREFIX + "sessionId",)
USER = (METADATA_PREFIX + "userId",)
FUNCTION_ID = ("ai.telemetry.functionId",)
TTFT_MS = ("ai.response.msToFirstChunk", "ai.stream.msToFirstChunk")

INFERENCE_OPERATIONS = frozenset({
    "ai.generateText.doGenerate", "ai.streamText.doStream",
    "ai.generateObject.doGenerate", "ai.streamObject.doStream",
})  # fmt: skip
EMBEDDING_OPERATIONS = frozenset({"ai.embed.doEmbed", "ai.embedMany.doEmbed"})
AGGREGATE_OPERATIONS = frozenset({
    "ai.generateText", "ai.streamText", "ai.generateObject", "ai.streamObject", "ai.embed", "ai.embedMany",
})  # fmt: skip
CONTEXT_OPERATIONS = frozenset({"ai.toolCall"})


def messages(attrs: Mapping[str, Any]) -> Tuple[List[Message], List[Message]]:
    prompt = attrs.get("ai.prompt.messages") or attrs.get("ai.prompt")
    inputs = messages_from(prompt, "user") if prompt is not None else []
    outputs: List[Message] = []
    answer = attrs.get("ai.response.text") or attrs.get("ai.result.text")
    calls = attrs.get("ai.response.toolCalls") or attrs.get("ai.result.toolCalls")
    structured = attrs.get("ai.response.object") or attrs.get("ai.result.object")
    if answer is not None or calls is not None or structured is not None:
        outputs = messages_from({"role": "assistant", "content": answer or structured or "", "tool_calls": calls})
    return inputs, outputs


def provider(raw: str) -> str:
    """``openai.chat`` / ``openai.responses`` → ``openai``; ``google.vertex`` → ``google``."""
    return raw.split(".", 1)[0]

