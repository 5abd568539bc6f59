"""``configure()``: one call that wires PromptWall into an OpenTelemetry setup."""

from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

from opentelemetry import trace
from opentelemetry._logs import get_logger_provider, set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider

from ._stores import ContentStore, ContextStore
from .doctor import announce
from .exporter import PromptWallSpanExporter
from .logs import PromptWallLogProcessor
from .processor import PromptWallSpanProcessor

logger = logging.getLogger("promptwall_otel")


def _sdk_tracer_provider(given: Optional[TracerProvider]) -> TracerProvider:
    if given is not None:
        return given
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider()
    trace.set_tracer_provider(provider)
    return provider


def _sdk_logger_provider(given: Optional[LoggerProvider], resource: Any) -> LoggerProvider:
    if given is not None:
        return given
    current = get_logger_provider()
    if isinstance(current, LoggerProvider):
        return current
    provider = LoggerProvider(resource=resource)
    set_logger_provider(provider)
    return provider


def configure(
    tracer_provider: Optional[TracerProvider] = None,
    logger_provider: Optional[LoggerProvider] = None,
    **options: Any,
) -> PromptWallSpanProcessor:
    """Send the GenAI spans of ``tracer_provider`` (default: the global one) to PromptWall.

    Adds a :class:`PromptWallSpanProcessor` to the tracer provider and a
    :class:`PromptWallLogProcessor` to the logger provider (the global one,
    created if there is none) so content emitted as log records joins its
    span's record. ``options`` go to :class:`PromptWallSpanExporter` (and the
    processor's batching arguments). Returns the processor: call
    ``force_flush()`` or read ``stats()`` on it.
    """
    tracer = _sdk_tracer_provider(tracer_provider)
    logs = _sdk_logger_provider(logger_provider, tracer.resource)
    processor, log_processor = build_pipeline(**options)
    tracer.add_span_processor(processor)
    logs.add_log_record_processor(log_processor)
    announce(processor)
    return processor


_BATCH_ARGS = (
    "max_queue_size", "max_queue_bytes", "schedule_delay_millis", "max_export_batch_size", "export_timeout_millis",
)


def build_pipeline(
    contexts: Optional[ContextStore] = None, content: Optional[ContentStore] = None, **options: Any
) -> Tuple[PromptWallSpanProcessor, PromptWallLogProcessor]:
    """A span processor and a log processor that share their stores."""
    batch = {name: options.pop(name) for name in _BATCH_ARGS if name in options}
    contexts = contexts if contexts is not None else ContextStore()
    content = content if content is not None else ContentStore()
    exporter = PromptWallSpanExporter(contexts=contexts, content=content, **options)
    return PromptWallSpanProcessor(exporter, **batch), PromptWallLogProcessor(content)
