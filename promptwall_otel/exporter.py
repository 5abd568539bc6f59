"""``PromptWallSpanExporter``: GenAI spans in, PromptWall events out.

Maps each batch with the trace ledger (one event per LLM call), joins content
that arrived as log records and context captured at span start, encodes the
records and hands them to its :class:`~promptwall_otel.transport.SendingWorker`,
which owns every network and disk operation. Usable on its own under any span
processor (``export`` returns once the records are queued, never waiting on
the network); :class:`PromptWallSpanProcessor` adds what only a processor can
see (inheritance at span start, unsampled spans, the run a span started in).
With ``group_agent_runs``, the spans of an agent run wait in a bounded
:class:`~promptwall_otel.mapping.runs.RunAssembler` until the run ends, and
leave as one record (docs/mapping.md, "Agent runs").
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import config, promptetheus
from ._isolate import map_isolated
from ._stores import ContentStore, ContextStore, default_content, default_contexts
from .mapping import Classification, Inherited, MappingOptions, SpanClass, SpanView, build_event, classify
from .mapping import from_readable_span, is_genai_span
from .mapping.builder import _redacted as redacted
from .mapping.ledger import TraceLedger
from .mapping.runs import Run, RunAssembler, root_conversation, run_event
from .stats import ExportStats, register_metrics
from .transport import EventsClient, MemorySpool, RecordEncoder, SendingWorker, Spool
from .transport.encoding import DEFAULT_MAX_BATCH_BYTES, encode
from .transport.http import compression_for
from .transport.promptetheus import PromptetheusClient
from .transport.worker import DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BUFFER_BYTES

logger = logging.getLogger("promptwall_otel")

_SHUTDOWN_S = 5.0
_MEMORY_SPOOL_BYTES = 64 * 1024 * 1024  # with the spool off, what an outage may hold in memory

Encoded = List[List[bytes]]
"""What one batch of spans became: each outlet's encoded lines, in the order of ``outlets``."""


class Outlet(NamedTuple):
    """One export target: how a record becomes its line, and the worker that sends those lines."""

    name: str  # "promptwall" or "promptetheus"
    encode: Callable[[Dict[str, Any]], Optional[bytes]]
    worker: SendingWorker
    stats: ExportStats


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
        targets: Optional[Sequence[str]] = None,
        promptetheus_url: Optional[str] = None,
        promptetheus_api_key: Optional[str] = None,
        promptetheus_project_id: Optional[str] = None,
        **mapping_overrides: Any,
    ) -> None:
        self.targets = config.targets(targets)
        batch_bytes = max_batch_bytes or config.env_int(config.ENV_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_BYTES, minimum=1024)
        spool_on = spool if spool is not None else config.env_bool(config.ENV_SPOOL, True)
        directory = spool_dir or config.env_str(config.ENV_SPOOL_DIR) or config.default_spool_dir()

        def store_in(folder: str) -> Any:
            if not spool_on:
                return MemorySpool(_MEMORY_SPOOL_BYTES, batch_bytes)
            limit = spool_max_bytes or config.env_int(config.ENV_SPOOL_MAX_BYTES, config.DEFAULT_SPOOL_MAX_BYTES, minimum=1)
            return Spool(folder, limit, batch_bytes)

        def worker_for(client: Any, folder: str, stats: ExportStats, api_key_env: str) -> SendingWorker:
            return SendingWorker(
                client,
                store_in(folder),
                stats,
                max_batch_bytes=batch_bytes,
                max_buffer_bytes=max_buffer_bytes or DEFAULT_MAX_BUFFER_BYTES,
                max_attempts=max_attempts or config.env_int(config.ENV_MAX_ATTEMPTS, DEFAULT_MAX_ATTEMPTS, minimum=1),
                api_key_env=api_key_env,
                name=f"{client.target.lower()}-send",
            )

        self.mapping = mapping or config.mapping_options(**mapping_overrides)
        self.stats = ExportStats()
        # Records from the mapping are valid by construction; a redact hook can break them.
        self.encoder = RecordEncoder(self.stats, validate=self.mapping.redact is not None)
        self.outlets: List[Outlet] = []
        self.endpoint = config.events_endpoint(base_url, endpoint)
        self.worker: Optional[SendingWorker] = None
        if config.TARGET_PROMPTWALL in self.targets:
            if not self.endpoint.startswith(("http://", "https://")):
                logger.error("PromptWall endpoint %r has no http:// or https://: set %s (or %s) to a full URL; records "
                             "are kept in the spool until then", self.endpoint, config.ENV_BASE_URL, config.ENV_ENDPOINT)
            extra_headers = dict(config.parse_headers(config.env_str(config.ENV_HEADERS) or ""))
            extra_headers.update(headers or {})
            client = EventsClient(
                self.endpoint,
                api_key or config.env_str(config.ENV_API_KEY),
                headers=extra_headers,
                timeout_s=timeout or config.env_float(config.ENV_TIMEOUT, 10.0),
                compression=compression_for(self.endpoint, config.compression(compression)),
                certificate_file=certificate_file or config.env_str(config.ENV_CERTIFICATE),
            )
            self.worker = worker_for(client, directory, self.stats, config.ENV_API_KEY)
            # Without validation the encoder is ``encode`` itself: called straight, one Python call fewer per record.
            line = self.encoder if self.encoder.validate else encode
            self.outlets.append(Outlet(config.TARGET_PROMPTWALL, line, self.worker, self.stats))
        if promptetheus.TARGET in self.targets:
            settings = promptetheus.Settings.resolve(promptetheus_url, promptetheus_api_key, promptetheus_project_id)
            client = PromptetheusClient(settings.url, settings.api_key,
                                        timeout_s=timeout or config.env_float(config.ENV_TIMEOUT, 10.0))  # fmt: skip
            stats = ExportStats()
            # Its own folder inside the spool folder: a run is not a /v1/events record.
            worker = worker_for(client, str(Path(directory) / promptetheus.TARGET), stats, promptetheus.ENV_KEY)
            self.outlets.append(Outlet(promptetheus.TARGET, promptetheus.run_encoder(stats, settings.project_id),
                                       worker, stats))  # fmt: skip
        self.contexts = contexts if contexts is not None else default_contexts
        self.content = content if content is not None else default_content
        self._ledger = TraceLedger()
        # Promptetheus traces runs, so its outlet needs them assembled whether or not PromptWall groups them.
        self.assembles_runs = self.mapping.group_agent_runs or promptetheus.TARGET in self.targets
        self._runs = RunAssembler(self.mapping.max_run_seconds) if self.assembles_runs else None
        self._shutdown = False
        register_metrics(self.stats, meter_provider)

    def __repr__(self) -> str:
        return f"PromptWallSpanExporter({', '.join(repr(outlet.worker) for outlet in self.outlets)})"

    def stats_snapshot(self) -> Dict[str, int]:
        """Counters: exported, duplicates, rejected, spooled, replayed, dead_lettered, dropped (PromptWall's);
        with the Promptetheus target on, its counters too, as ``promptetheus.exported`` and so on."""
        counts = self.stats.snapshot()
        for outlet in self.outlets:
            if outlet.stats is not self.stats:
                counts.update({f"{outlet.name}.{name}": value for name, value in outlet.stats.snapshot().items()})
        return counts

    def _map(self, spans: Sequence[ReadableSpan], emit: Callable[..., None]) -> List[Tuple[Dict[str, Any], Optional[str]]]:
        """Records for these spans, each with the one outlet it is for (None: every outlet); some go to ``emit``
        early. With grouping off, a run is its calls for PromptWall and one run record for Promptetheus."""
        if self._runs is None:
            views = [from_readable_span(span) for span in spans if is_genai_span(span)]
        else:  # a span that opened a run goes to the assembler even if it never became GenAI
            views = [from_readable_span(span) for span in spans if is_genai_span(span) or self._opened_run(span)]
        if not views:
            return []
        if self._runs is None:
            return [(record, None) for record in self._ledger.map_batch(
                views, self.mapping, logs_for=self.content.pop_for, inherited_for=self.contexts.pop_for, emit=emit)]
        singles, runs = self._runs.add(views, self._run_of)
        out: List[Tuple[Dict[str, Any], Optional[str]]] = [(record, None) for record in self._map_singles(singles, emit)]
        for run in runs:
            event, calls = self._run_record(run)
            if self.mapping.group_agent_runs:
                if event is not None:
                    out.append((event, None))
                continue
            out.extend((call, config.TARGET_PROMPTWALL) for call in calls)
            if event is not None:
                out.append((event, promptetheus.TARGET))
        return out

    def _forget_contexts(self, views: Sequence[SpanView]) -> None:
        """Drop what the processor recorded for these spans: the ledger takes it only for calls and agents,
        and with grouping on every span of a run has an entry (its run), tools and retrievals included."""
        discard = self.contexts.discard
        for view in views:
            discard(view.span_id)

    def _map_singles(self, views: Sequence[SpanView], emit: Optional[Callable[..., None]] = None) -> List[Dict[str, Any]]:
        if not views:
            return []
        try:
            return self._ledger.map_batch(views, self.mapping, logs_for=self.content.pop_for,
                                          inherited_for=self.contexts.pop_for, emit=emit)  # fmt: skip
        finally:
            self._forget_contexts(views)

    def _opened_run(self, span: ReadableSpan) -> bool:
        entry = self.contexts.get(span.context.span_id)
        return entry is not None and entry.run_span_id == span.context.span_id

    def _run_of(self, view: SpanView) -> Optional[int]:
        """The run the processor saw this span start in (``Inherited.run_span_id``), without consuming the entry."""
        entry = self.contexts.get(view.span_id)
        return entry.run_span_id if entry is not None else None

    def _run_record(self, run: Run) -> Tuple[Optional[Dict[str, Any]], List[Dict[str, Any]]]:
        """One event for a finished run (None if a redact hook dropped it), and its calls' own records: the
        calls are mapped by the ledger exactly as without grouping; the event sums them."""
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
        return redacted(event, self.mapping), records

    def _held_runs(self, everything: bool) -> Encoded:
        """Encoded records for runs released early: open too long, or (``everything``) all, at shutdown."""
        encoded: Encoded = [[] for _ in self.outlets]
        if self._runs is not None:
            views = self._runs.release_all() if everything else self._runs.expire()
            if views:
                emit = self._emitter(encoded)
                for record in self._map_singles(views):
                    emit(record)
        return encoded

    def expire_runs(self) -> None:
        """Send the spans of runs open longer than ``max_run_seconds`` as ordinary events (never raises)."""
        try:
            self.offer(self._held_runs(everything=False))
        except Exception:
            logger.exception("PromptWall: releasing expired agent runs failed")

    def encode_spans(self, spans: Sequence[ReadableSpan]) -> Encoded:
        """The records these spans map to, encoded for each outlet, each as soon as nothing can change it (no I/O).

        Few record dicts stay alive this way, so the garbage collections that
        the application pays for stay short. Never raises: if mapping the batch
        fails (a producer's input the mapping did not foresee), each trace is
        mapped alone, then each span of a trace that still fails, so one odd
        span costs its own record (counted as dropped, logged by ids), not the
        batch's. What a failed attempt already handed out is kept, and the
        ledger, which remembers those calls as sent, drops their copies: nothing
        is doubled.
        """
        encoded: Encoded = [[] for _ in self.outlets]

        def dropped(span: ReadableSpan) -> None:
            self.stats.add("dropped")
            logger.error("PromptWall: span %016x of trace %032x (%r) cannot be mapped; dropped",
                         span.context.span_id, span.context.trace_id, span.name)  # fmt: skip

        map_isolated(spans, lambda span: span.context.trace_id, lambda group: self._encode(group, encoded), dropped)
        return encoded

    def _emitter(self, encoded: Encoded) -> Callable[..., None]:
        """``emit(record, only=None)``: encode a record for every outlet (or only the one named) into ``encoded``."""
        pairs = list(zip(self.outlets, encoded))

        def emit(record: Dict[str, Any], only: Optional[str] = None) -> None:
            for outlet, lines in pairs:
                if only is None or only == outlet.name:
                    line = outlet.encode(record)
                    if line is not None:
                        lines.append(line)

        return emit

    def _encode(self, spans: Sequence[ReadableSpan], encoded: Encoded) -> None:
        emit = self._emitter(encoded)
        for record, only in self._map(spans, emit):
            emit(record, only)

    def offer(self, encoded: Encoded) -> None:
        """Hand each outlet's lines to its worker (never waits on the network)."""
        for outlet, lines in zip(self.outlets, encoded):
            outlet.worker.offer(lines)

    def flush_workers(self, timeout_s: float) -> bool:
        """Send what every worker holds and try the spools, within ``timeout_s`` in all."""
        deadline = time.monotonic() + timeout_s
        done = True
        for outlet in self.outlets:
            done = outlet.worker.flush(max(0.0, deadline - time.monotonic())) and done
        return done

    def send_late_evaluations(self) -> None:
        """Evaluation log records that arrived after their call's record left go out as one follow-up
        record per call (docs/mapping.md, "Guardrails and evaluations"). One truth test when none wait."""
        if not self.content.evaluations_waiting:
            return
        try:
            logs = self.content.take_evaluations(self._ledger.call_sent)
            records = self._ledger.late_evaluations(logs, self.mapping) if logs else []
            if records:
                encoded: Encoded = [[] for _ in self.outlets]
                emit = self._emitter(encoded)
                for record in records:
                    emit(record)
                self.offer(encoded)
        except Exception:  # never into the SDK's worker, never into the app
            logger.exception("PromptWall could not send late evaluations")

    def forget_traces(self, trace_ids: Sequence[int]) -> None:
        """These traces' roots ended (the processor saw it): the ledger need not remember them."""
        if trace_ids:
            self._ledger.forget(trace_ids)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        try:
            self.offer(self.encode_spans(spans))
            self.send_late_evaluations()
            if self._runs is not None:
                self.expire_runs()
            return SpanExportResult.SUCCESS
        except Exception:  # never into the SDK's worker, never into the app
            logger.exception("PromptWall export failed")
            return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what is queued and try the spool; True if nothing is left waiting."""
        return self.flush_workers(timeout_millis / 1000)

    def shutdown(self, timeout_s: float = _SHUTDOWN_S) -> None:
        """Send what is queued within ``timeout_s``; the rest (in flight included) goes to the spool."""
        if self._shutdown:
            return
        self._shutdown = True
        try:  # a run still open at exit: its spans go out as ordinary events rather than be lost
            self.offer(self._held_runs(everything=True))
        except Exception:
            logger.exception("PromptWall: releasing open agent runs at shutdown failed")
        deadline = time.monotonic() + timeout_s
        for index, outlet in enumerate(self.outlets):  # each its share of what is left
            outlet.worker.close(max(0.5, (deadline - time.monotonic()) / (len(self.outlets) - index)))

    def reinit_after_fork(self) -> None:
        """A forked child gets its own connection pool, sending thread and ledger."""
        for outlet in self.outlets:
            outlet.worker.after_fork()
        self._ledger = TraceLedger()
        if self._runs is not None:
            self._runs = RunAssembler(self.mapping.max_run_seconds)
