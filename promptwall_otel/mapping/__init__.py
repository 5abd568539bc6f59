"""Span → PromptWall event mapping: pure, no I/O, one module per producer dialect."""

from .builder import Classification, Inherited, SpanClass, build_event, classify, is_genai, is_genai_span, request_id_for
from .options import MappingOptions, RedactHook
from .prices import PriceTable
from .view import EventView, LogView, SpanView, from_readable_span, from_sdk_log

__all__ = [
    "Classification",
    "EventView",
    "Inherited",
    "LogView",
    "MappingOptions",
    "PriceTable",
    "RedactHook",
    "SpanClass",
    "SpanView",
    "build_event",
    "classify",
    "from_readable_span",
    "from_sdk_log",
    "is_genai",
    "is_genai_span",
    "request_id_for",
]
