"""``PromptWallSpanExporter``: GenAI spans in, PromptWall events out.

Maps each batch with the trace ledger (one event per LLM call), joins content
that arrived as log records and context captured at span start, encodes the
records and hands them to its :class:`~promptwall_otel.transport.SendingWorker`,
which owns every network and disk operation. Usable on its own under any span
processor (``export`` returns once the records are queued, never waiting on
the network); :class:`PromptWallSpanProcessor` adds what only a processor can
see (inheritance at span start, unsampled spans).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import config
from ._isolate import map_isolated
from ._stores import ContentStore, ContextStore, default_content, default_contexts
from .mapping import Classification, Inherited, MappingOptions, SpanClass, SpanView, build_event, classify
from .mapping import from_readable_span, is_genai_span
from .mapping.builder import _redacted as redacted
from .mapping.ledger import TraceLedger
from .mapping.runs import Run, RunAssembler, root_conversation, run_event
from .stats import ExportStats, register_metrics
from .transport import EventsClient, MemorySpool, RecordEncoder, SendingWorker, Spool
from .transport.encoding import DEFAULT_MAX_BATCH_BYTES
from .transport.worker import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BUFFER_BYTES

logger = logging.getLogger("promptwall_otel")

_SHUTDOWN_S = 5.0
_MEMORY_SPOOL_BYTES = 64 * 1024 * 1024  # with the spool off, what an outage may hold in memory


class PromptWallSpanExporter(SpanExporter):
    """Exports the GenAI spans of each batch to ``POST /v1/events``.

    Arguments win over environment variables (see the README's configuration
    table). ``export`` never raises and never waits on the network.
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
        max_attempts: Optional[int] = None,
        max_batch_bytes: Optional[int] = None,
        max_buffer_bytes: Optional[int] = None,
        mapping: Optional[MappingOptions] = None,
        contexts: Optional[ContextStore] = None,
        content: Optional[ContentStore] = None,
        meter_provider: Optional[object] = None,
        **mapping_overrides: Any,
    ) -> None:
        key = api_key or config.env_str(config.ENV_API_KEY)
        self.endpoint = config.events_endpoint(base_url, endpoint)
        if not self.endpoint.startswith(("http://", "https://")):
            logger.error("PromptWall endpoint %r has no http:// or https://: set %s (or %s) to a full URL; records "
                         "are kept in the spool until then", self.endpoint, config.ENV_BASE_URL, config.ENV_ENDPOINT)
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
        batch_bytes = max_batch_bytes or config.env_int(config.ENV_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_BYTES, minimum=1024)
        spool_on = spool if spool is not None else config.env_bool(config.ENV_SPOOL, True)
        store: Any
        if spool_on:
            directory = spool_dir or config.env_str(config.ENV_SPOOL_DIR) or config.default_spool_dir()
            limit = spool_max_bytes or config.env_int(config.ENV_SPOOL_MAX_BYTES, config.DEFAULT_SPOOL_MAX_BYTES, minimum=1)
            store = Spool(directory, limit, batch_bytes)
        else:
            store = MemorySpool(_MEMORY_SPOOL_BYTES, batch_bytes)
        self.mapping = mapping or config.mapping_options(**mapping_overrides)
        self.stats = ExportStats()
        # Records from the mapping are valid by construction; a redact hook can break them.
        self.encoder = RecordEncoder(self.stats, validate=self.mapping.redact is not None)
        self.worker = SendingWorker(
            client,
            store,
            self.stats,
            max_batch_bytes=batch_bytes,
            max_buffer_bytes=max_buffer_bytes or DEFAULT_MAX_BUFFER_BYTES,
            max_attempts=max_attempts or config.env_int(config.ENV_MAX_ATTEMPTS, DEFAULT_MAX_ATTEMPTS, minimum=1),
            api_key_env=config.ENV_API_KEY,
        )
        self.contexts = contexts if contexts is not None else default_contexts
        self.content = content if content is not None else default_content
        self._ledger = TraceLedger()
        self._runs = RunAssembler(self.mapping.max_run_seconds) if self.mapping.group_agent_runs else None
        self._shutdown = False
        register_metrics(self.stats, meter_provider)

    def __repr__(self) -> str:
        return f"PromptWallSpanExporter(endpoint={self.endpoint!r}, worker={self.worker!r})"

    def stats_snapshot(self) -> Dict[str, int]:
        """Counters: exported, duplicates, rejected, spooled, replayed, dead_lettered, dropped."""
        return self.stats.snapshot()

    def _map(self, spans: Sequence[ReadableSpan], emit: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
        views = [from_readable_span(span) for span in spans if is_genai_span(span)]
        if not views:
            return []
        if self._runs is None:
            return self._ledger.map_batch(views, self.mapping, logs_for=self.content.pop_for,
                                          inherited_for=self.contexts.pop_for, emit=emit)  # fmt: skip
        singles, runs = self._runs.add(views, self._run_of)
        out = self._map_singles(singles, emit)
        for run in runs:
            record = self._run_record(run)
            if record is not None:
                out.append(record)
        return out

    def _forget_contexts(self, views: Sequence[SpanView]) -> None:
        """Drop what the processor recorded for these spans: the ledger takes it only for calls and agents,
        and with grouping on every span of a run has an entry (its run), tools and retrievals included."""
        discard = self.contexts.discard
        for view in views:
            discard(view.span_id)

    def _map_singles(self, views: Sequence[SpanView], emit: Optional[Callable[[Dict[str, Any]], None]] = None) -> List[Dict[str, Any]]:
        if not views:
            return []
        try:
            return self._ledger.map_batch(views, self.mapping, logs_for=self.content.pop_for,
                                          inherited_for=self.contexts.pop_for, emit=emit)  # fmt: skip
        finally:
            self._forget_contexts(views)

    def _run_of(self, view: SpanView) -> Optional[int]:
        """The run the processor saw this span start in (``Inherited.run_span_id``), without consuming the entry."""
        entry = self.contexts.get(view.span_id)
        return entry.run_span_id if entry is not None else None

    def _run_record(self, run: Run) -> Optional[Dict[str, Any]]:
        """One event for a finished run: its calls mapped by the ledger exactly as without grouping, then summed."""
        root = run.root
        inherited = self.contexts.get(root.span_id) or Inherited()
        _, operation, dialect = classify(root)
        root_record = build_event(root, (), inherited, self.mapping,
                                  Classification(SpanClass.AGGREGATE, operation or "invoke_agent", dialect))  # fmt: skip
        copies: List[Dict[str, Any]] = []
        try:
            records = self._ledger.map_batch(run.views(), self.mapping, logs_for=self.content.pop_for,
                                             inherited_for=self.contexts.pop_for, copies=copies)  # fmt: skip
        finally:
            self._forget_contexts(run.views())
        event = run_event(run, root_record, records, self.mapping, copies, root_conversation(root, self.mapping))
        return redacted(event, self.mapping)

    def _held_runs(self, everything: bool) -> List[bytes]:
        """Encoded records for runs released early: open too long, or (``everything``) all, at shutdown."""
        if self._runs is None:
            return []
        views = self._runs.release_all() if everything else self._runs.expire()
        lines: List[bytes] = []
        if views:
            for record in self._map_singles(views):
                line = self.encoder(record)
                if line is not None:
                    lines.append(line)
        return lines

    def expire_runs(self) -> None:
        """Send the spans of runs open longer than ``max_run_seconds`` as ordinary events (never raises)."""
        try:
            lines = self._held_runs(everything=False)
            if lines:
                self.worker.offer(lines)
        except Exception:
            logger.exception("PromptWall: releasing expired agent runs failed")

    def encode_spans(self, spans: Sequence[ReadableSpan]) -> List[bytes]:
        """The events these spans map to, encoded, each record as soon as nothing can change it (no I/O).

        Few record dicts stay alive this way, so the garbage collections that
        the application pays for stay short. Never raises: if mapping the batch
        fails (a producer's input the mapping did not foresee), each trace is
        mapped alone, then each span of a trace that still fails, so one odd
        span costs its own record (counted as dropped, logged by ids), not the
        batch's. What a failed attempt already handed out is kept, and the
        ledger, which remembers those calls as sent, drops their copies: nothing
        is doubled.
        """
        lines: List[bytes] = []

        def dropped(span: ReadableSpan) -> None:
            self.stats.add("dropped")
            logger.error("PromptWall: span %016x of trace %032x (%r) cannot be mapped; dropped",
                         span.context.span_id, span.context.trace_id, span.name)  # fmt: skip

        map_isolated(spans, lambda span: span.context.trace_id, lambda group: self._encode(group, lines), dropped)
        return lines

    def _encode(self, spans: Sequence[ReadableSpan], lines: List[bytes]) -> None:
        encode = self.encoder

        def emit(record: Dict[str, Any]) -> None:
            line = encode(record)
            if line is not None:
                lines.append(line)

        for record in self._map(spans, emit):
            emit(record)

    def forget_traces(self, trace_ids: Sequence[int]) -> None:
        """These traces' roots ended (the processor saw it): the ledger need not remember them."""
        if trace_ids:
            self._ledger.forget(trace_ids)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            self.worker.offer(self.encode_spans(spans))
            if self._runs is not None:
                self.expire_runs()
            return SpanExportResult.SUCCESS
        except Exception:  # never into the SDK's worker, never into the app
            logger.exception("PromptWall export failed")
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what is queued and try the spool; True if nothing is left waiting."""
        return self.worker.flush(timeout_millis / 1000)

    def shutdown(self, timeout_s: float = _SHUTDOWN_S) -> None:
        """Send what is queued within ``timeout_s``; the rest (in flight included) goes to the spool."""
        if self._shutdown:
            return
        self._shutdown = True
        try:  # a run still open at exit: its spans go out as ordinary events rather than be lost
            lines = self._held_runs(everything=True)
            if lines:
                self.worker.offer(lines)
        except Exception:
            logger.exception("PromptWall: releasing open agent runs at shutdown failed")
        self.worker.close(timeout_s)

    def reinit_after_fork(self) -> None:
        """A forked child gets its own connection pool, sending thread and ledger."""
        self.worker.after_fork()
        self._ledger = TraceLedger()
        if self._runs is not None:
            self._runs = RunAssembler(self.mapping.max_run_seconds)
