"""Sampling must not lose bills: GenAI spans stay recorded in unsampled traces.

``GenAIRecordingSampler`` wraps any sampler. When it drops a span that looks
like an LLM call (judged from the attributes given at span creation), the
span is still *recorded* but not *sampled*: the stock ``BatchSpanProcessor``
and every other exporter ignore it, while ``PromptWallSpanProcessor`` takes
recorded GenAI spans whether sampled or not.
"""

from __future__ import annotations

from typing import Optional, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from .mapping import is_genai
from .mapping.builder import INHERITED_KEY_SET

# Span names the GenAI conventions give (``{operation} {model or name}``): opentelemetry-util-genai
# starts its spans with the name alone and sets the attributes when the call ends, so at sampling
# time the name is all there is to tell an LLM call, an agent run or a tool from an HTTP span.
_GENAI_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings", "invoke_agent",
                               "invoke_workflow", "execute_tool", "create_agent"})  # fmt: skip


class GenAIRecordingSampler(Sampler):
    """Delegates to ``root``; turns its DROP into RECORD_ONLY for GenAI spans.

    Spans created with a session or user attribute (``gen_ai.conversation.id``,
    ``user.id``, ``promptwall.*``...) are kept recorded too, so the LLM calls
    beneath them can inherit those ids; so are spans started bare under a
    GenAI span name (``chat gpt-4o``, ``invoke_agent``, ``execute_tool x``: what
    opentelemetry-util-genai starts before it knows the attributes).
    """

    def __init__(self, root: Sampler) -> None:
        self.root = root

    def should_sample(
        self,
        parent_context: Optional[Context],
        trace_id: int,
        name: str,
        kind: Optional[SpanKind] = None,
        attributes: Attributes = None,
        links: Optional[Sequence[Link]] = None,
        trace_state: Optional[TraceState] = None,
    ) -> SamplingResult:
        result = self.root.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is not Decision.DROP:
            return result
        if attributes and (is_genai(attributes) or not INHERITED_KEY_SET.isdisjoint(attributes.keys())):
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        if name.partition(" ")[0] in _GENAI_OPERATIONS:
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"GenAIRecordingSampler{{{self.root.get_description()}}}"


def _ratio(argument: Optional[str]) -> float:
    try:
        value = float(argument) if argument not in (None, "") else 1.0
    except ValueError:
        value = 1.0
    return min(1.0, max(0.0, value))


def traceidratio(argument: Optional[str] = None) -> Sampler:
    """``OTEL_TRACES_SAMPLER=promptwall_traceidratio`` with ``OTEL_TRACES_SAMPLER_ARG=<ratio>``."""
    return GenAIRecordingSampler(TraceIdRatioBased(_ratio(argument)))


def parentbased_traceidratio(argument: Optional[str] = None) -> Sampler:
    """``OTEL_TRACES_SAMPLER=promptwall_parentbased_traceidratio`` with ``OTEL_TRACES_SAMPLER_ARG=<ratio>``."""
    return GenAIRecordingSampler(ParentBased(TraceIdRatioBased(_ratio(argument))))
