"""``PromptWallSpanExporter``: GenAI spans in, PromptWall events out.

Maps each batch with the trace ledger (one event per LLM call), joins content
that arrived as log records and context captured at span start, and hands the
records to :class:`~promptwall_otel.transport.Delivery`. Usable on its own
under any span processor; :class:`PromptWallSpanProcessor` adds what only a
processor can see (inheritance at span start, unsampled spans).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import config
from ._stores import ContentStore, ContextStore, default_content, default_contexts
from .mapping import MappingOptions, from_readable_span, is_genai_span
from .mapping.ledger import TraceLedger
from .stats import ExportStats, register_metrics
from .transport import Delivery, EventsClient, Spool

logger = logging.getLogger("promptwall_otel")


class PromptWallSpanExporter(SpanExporter):
    """Exports the GenAI spans of each batch to ``POST /v1/events``.

    Arguments win over environment variables (see the README's configuration
    table). ``export`` never raises; it returns FAILURE only if records had
    to be dropped (spool off or full).
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        *,
        base_url: Optional[str] = None,
        endpoint: Optional[str] = None,
        headers: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        compression: Optional[str] = None,
        certificate_file: Optional[str] = None,
        spool: Optional[bool] = None,
        spool_dir: Optional[str] = None,
        spool_max_bytes: Optional[int] = None,
        retry_window: Optional[float] = None,
        max_batch_bytes: Optional[int] = None,
        mapping: Optional[MappingOptions] = None,
        contexts: Optional[ContextStore] = None,
        content: Optional[ContentStore] = None,
        meter_provider: Optional[object] = None,
        **mapping_overrides: Any,
    ) -> None:
        key = api_key or config.env_str(config.ENV_API_KEY)
        self.endpoint = config.events_endpoint(base_url, endpoint)
        extra_headers = dict(config.parse_headers(config.env_str(config.ENV_HEADERS) or ""))
        extra_headers.update(headers or {})
        client = EventsClient(
            self.endpoint,
            key,
            headers=extra_headers,
            timeout_s=timeout or config.env_float(config.ENV_TIMEOUT, 10.0),
            compression=config.compression(compression),
            certificate_file=certificate_file or config.env_str(config.ENV_CERTIFICATE),
        )
        spool_on = spool if spool is not None else config.env_bool(config.ENV_SPOOL, True)
        spool_store = None
        if spool_on:
            directory = spool_dir or config.env_str(config.ENV_SPOOL_DIR) or config.default_spool_dir(self.endpoint, key)
            limit = spool_max_bytes or config.env_int(config.ENV_SPOOL_MAX_BYTES, config.DEFAULT_SPOOL_MAX_BYTES, minimum=1)
            spool_store = Spool(directory, limit)
        self.mapping = mapping or config.mapping_options(**mapping_overrides)
        self.stats = ExportStats()
        self.delivery = Delivery(
            client,
            spool_store,
            self.stats,
            max_batch_bytes=max_batch_bytes or config.env_int(config.ENV_MAX_BATCH_BYTES, 4 * 1024 * 1024, minimum=1024),
            retry_window_s=retry_window or config.env_float(config.ENV_RETRY_WINDOW, 10.0),
            api_key_env=config.ENV_API_KEY,
            validate=self.mapping.redact is not None,
        )

        self.contexts = contexts if contexts is not None else default_contexts
        self.content = content if content is not None else default_content
        self._ledger = TraceLedger()
        self._shutdown = False
        register_metrics(self.stats, meter_provider)

    def __repr__(self) -> str:
        return f"PromptWallSpanExporter(endpoint={self.endpoint!r}, delivery={self.delivery!r})"

    def stats_snapshot(self) -> Dict[str, int]:
        """Counters: exported, duplicates, rejected, retried, spooled, replayed, dropped."""
        return self.stats.snapshot()

    def _map(self, spans: Sequence[ReadableSpan], emit: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
        views = [from_readable_span(span) for span in spans if is_genai_span(span)]
        if not views:
            return []
        return self._ledger.map_batch(views, self.mapping, logs_for=self.content.pop_for,
                                      inherited_for=self.contexts.pop_for, emit=emit)  # fmt: skip

    def encode_spans(self, spans: Sequence[ReadableSpan]) -> List[bytes]:
        """The events these spans map to, encoded, each record as soon as nothing can change it (no I/O).

        Few record dicts stay alive this way, so the garbage collections that
        the application pays for stay short.
        """
        lines: List[bytes] = []
        encode = self.delivery.encode_record

        def emit(record: Dict[str, Any]) -> None:
            line = encode(record)
            if line is not None:
                lines.append(line)

        for record in self._map(spans, emit):
            emit(record)
        return lines

    def forget_traces(self, trace_ids: Sequence[int]) -> None:
        """These traces' roots ended (the processor saw it): the ledger need not remember them."""
        if trace_ids:
            self._ledger.forget(trace_ids)

    def send(self, lines: List[bytes], deadline: Optional[float] = None) -> bool:
        """Post encoded records (retrying until ``deadline``), then replay the spool if that went well."""
        ok = self.delivery.deliver(lines, deadline)
        if ok:
            self.delivery.replay(deadline or time.monotonic() + self.delivery.retry_window_s)
        return ok

    def export(self, spans: Sequence[ReadableSpan], deadline: Optional[float] = None) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            return SpanExportResult.SUCCESS if self.send(self.encode_spans(spans), deadline) else SpanExportResult.FAILURE
        except Exception:  # never into the SDK's worker, never into the app
            logger.exception("PromptWall export failed")
            return SpanExportResult.FAILURE

    def replay_spool(self, timeout_s: float = 10.0) -> None:
        """Send what earlier runs left in the spool (the processor calls this at start, off the app thread)."""
        try:
            self.delivery.replay(time.monotonic() + timeout_s)
        except Exception:
            logger.exception("PromptWall spool replay failed")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is buffered here; processors buffer

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        self.delivery.stop_event.set()
        self.delivery.client.close()

    def reinit_after_fork(self) -> None:
        """A forked child gets its own connection pool and a fresh ledger."""
        self.delivery.client.after_fork()
        self.delivery.stop_event.clear()
        self._ledger = TraceLedger()
