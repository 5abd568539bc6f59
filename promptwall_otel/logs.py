"""The log-record side: GenAI content emitted as log events joins its span's record.

The official OpenAI instrumentation (and semconv 1.28-1.36 producers) emit
prompts and answers as log records linked to the span by id, not on the span;
evaluators emit ``gen_ai.evaluation.result`` records about a call the same way.
``PromptWallLogProcessor`` keeps those records, in-process and by span id,
until the exporter builds the span's record; every other log record is
ignored after one name check.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from opentelemetry.sdk._logs import LogRecordProcessor

from ._stores import ContentStore, default_content
from .mapping import from_sdk_log
from .mapping.semconv import JOINED_LOG_EVENTS

logger = logging.getLogger("promptwall_otel")


def _event_name(record: Any) -> Optional[str]:
    log = getattr(record, "log_record", record)
    name = getattr(log, "event_name", None)
    if name is None:
        attributes = getattr(log, "attributes", None)
        name = attributes.get("event.name") if attributes else None
    return name


class PromptWallLogProcessor(LogRecordProcessor):
    """Collects GenAI content log records for the span exporter. Never blocks, never raises."""

    def __init__(self, content: Optional[ContentStore] = None) -> None:
        self.content = content if content is not None else default_content

    def on_emit(self, log_record: Any) -> None:
        try:
            if _event_name(log_record) not in JOINED_LOG_EVENTS:
                return
            view = from_sdk_log(log_record)
            if view is not None:
                self.content.add(view)
        except Exception:
            logger.debug("PromptWall could not read a log record", exc_info=True)

    def emit(self, log_record: Any) -> None:  # older SDKs call emit()
        self.on_emit(log_record)

    def enabled(self, *, event_name: Optional[str] = None, **_: Any) -> bool:
        return event_name is None or event_name in JOINED_LOG_EVENTS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
