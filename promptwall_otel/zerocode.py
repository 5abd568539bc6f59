"""Entry points for ``opentelemetry-instrument``: zero code, same records as ``configure()``.

``OTEL_TRACES_EXPORTER=promptwall`` and ``OTEL_LOGS_EXPORTER=promptwall`` make
the SDK's auto-configuration instantiate the two classes below;
``OTEL_TRACES_EXPORTER=promptetheus`` (alone or beside ``promptwall``) sends
agent runs to Promptetheus. Whichever names the variable lists, one processor
is installed, with those targets, so no span is mapped twice. Each installs
the real pipeline into the provider the SDK just created (a
``PromptWallSpanProcessor``, a ``PromptWallLogProcessor``; both share the
process-wide stores) and is itself an inert exporter: the SDK wraps exporters
in its batch processors, which would see only sampled spans and would join
content only after a delay.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, List, Optional, Sequence

from opentelemetry import trace
from opentelemetry._logs import get_logger_provider
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import config
from ._stores import default_content, default_contexts
from .doctor import announce
from .exporter import PromptWallSpanExporter
from .logs import PromptWallLogProcessor
from .processor import PromptWallSpanProcessor

logger = logging.getLogger("promptwall_otel")
_lock = threading.Lock()
_installed: dict = {}


class ZeroCodeSpanExporter(SpanExporter):
    """``opentelemetry_traces_exporter`` entry points ``promptwall`` and ``promptetheus``."""

    def __init__(self, **_: Any) -> None:
        provider = trace.get_tracer_provider()
        self.processor: Optional[PromptWallSpanProcessor] = None
        with _lock:
            if "traces" in _installed:
                return
            if not isinstance(provider, TracerProvider):
                logger.error("promptwall traces exporter: no SDK TracerProvider to attach to; nothing is exported")
                return
            exporter = PromptWallSpanExporter(contexts=default_contexts, content=default_content, targets=_targets())
            self.processor = _installed["traces"] = PromptWallSpanProcessor(exporter)
            provider.add_span_processor(self.processor)
            announce(self.processor)

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS  # the installed processor does the work

    def shutdown(self) -> None:
        pass  # the provider shuts the installed processor down itself


def _targets() -> Optional[List[str]]:
    """Our targets among ``OTEL_TRACES_EXPORTER``'s names (None: as ``PROMPTWALL_TARGETS`` says)."""
    names = [name.strip().lower() for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    chosen = [name for name in names if name in config.TARGETS]
    return chosen or None


class ZeroCodeLogExporter(LogRecordExporter):
    """``opentelemetry_logs_exporter`` entry point ``promptwall``."""

    def __init__(self, **_: Any) -> None:
        provider = get_logger_provider()
        with _lock:
            if "logs" in _installed:
                return
            if not isinstance(provider, LoggerProvider):
                logger.error("promptwall logs exporter: no SDK LoggerProvider to attach to; content in logs is not joined")
                return
            _installed["logs"] = PromptWallLogProcessor(default_content)
            provider.add_log_record_processor(_installed["logs"])

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


try:  # the SDK's own auto-configuration, as opentelemetry-distro registers it
    from opentelemetry.sdk._configuration import _OTelSDKConfigurator
except ImportError:  # pragma: no cover - very old SDKs
    _OTelSDKConfigurator = object  # type: ignore[misc,assignment]


class PromptWallConfigurator(_OTelSDKConfigurator):  # type: ignore[misc,valid-type]
    """``opentelemetry_configurator`` entry point: lets ``opentelemetry-instrument`` set up the SDK
    without ``opentelemetry-distro``. It adds nothing to the SDK's configurator, so whichever of
    the two is picked when both are installed, the result is the same."""
