"""``PromptWallSpanProcessor``: only GenAI spans leave, and never on the app's thread.

The application thread does two cheap things: at span start it records what
the span inherits (session, user, use case, team, metadata from its parent
span and from baggage, and, with ``group_agent_runs``, the agent or workflow
run it is in), and at span end it drops non-GenAI spans after one set test
or appends the GenAI span to a queue bounded by bytes. Mapping and
encoding happen on one background thread, which hands the encoded records to
the exporter's sending worker (network, spool, replay) and never waits on the
network, so a burst or an outage never backs the queue up behind a request.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

from opentelemetry import baggage, trace
from opentelemetry.context import Context
from opentelemetry.context import get_current as _current_context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from . import config
from ._ratelimit import RateLimitedLogger
from ._stores import oldest_keys
from .exporter import PromptWallSpanExporter
from .mapping import Inherited
from .mapping.builder import GENAI_MARKERS
from .mapping.builder import INHERITED_KEY_SET, INHERITED_KEYS
from .mapping.runs import starts_run

logger = logging.getLogger("promptwall_otel")

_SHUTDOWN_FLUSH_S = 5.0
_MIN_QUEUE_SPANS = 2048  # the stock SDK's default: the byte budget never allows fewer
_MAX_QUEUE_SPANS = 1_000_000
_ASSUMED_SPAN_BYTES = 4096  # until the first batch has been measured

# The application thread's own copies. Whatever both threads touch (a shared set, function,
# or the attribute keys the export thread iterates while mapping) moves a cache line between
# cores on every use: in place that tripled on_end's cost for GenAI spans.
_MARKERS = frozenset(list(GENAI_MARKERS))
try:  # the context key baggage lives under: one dict lookup instead of baggage.get_all's proxy
    from opentelemetry.baggage import _BAGGAGE_KEY
except ImportError:  # pragma: no cover - a future API without it: look it up the public way
    _BAGGAGE_KEY = next(k for k, v in baggage.set_baggage("k", "v", Context()).items() if isinstance(v, dict))
_OPERATION = "gen_ai.operation.name"


def _parent_of(span: Any) -> Any:
    """``span.parent`` without the property call (a function object the export thread uses too)."""
    try:
        return span._parent
    except AttributeError:
        return span.parent


def _live_attributes(span: Any) -> Any:
    """A parent span's attributes as they are now (those set after its start included); None if it has none."""
    try:
        return span._attributes._dict
    except AttributeError:  # not an SDK span: a remote parent, or another implementation
        return span.attributes if span.is_recording() and hasattr(span, "attributes") else None


def _is_genai(span: Any) -> bool:
    """``is_genai_span`` for the application thread: membership first, since iterating a GenAI span's
    keys takes references to key objects the export thread is using too."""
    try:
        attributes = span._attributes._dict
    except AttributeError:
        attributes = span.attributes
    if not attributes:
        return False
    return _OPERATION in attributes or not _MARKERS.isdisjoint(attributes)
_MAX_OPEN_TRACES = 65_536


def _inherited_from(attributes: Any, base: Optional[Inherited], with_metadata: bool = False) -> Optional[Inherited]:
    """``base`` overlaid with what ``attributes`` (a parent span's, or baggage) say; None if nothing.

    Span attributes are checked with one set test so that ordinary spans cost
    almost nothing; ``promptwall.metadata.*`` is read from baggage only, since
    finding a prefix means looking at every key.
    """
    if not attributes:
        return base
    found: Dict[str, Any] = {}
    if not INHERITED_KEY_SET.isdisjoint(attributes.keys()):
        for key, field in INHERITED_KEYS.items():
            value = attributes.get(key)
            if value is not None and value != "" and field not in found:
                found[field] = str(value)
    if with_metadata:
        metadata = {k[len(_METADATA_PREFIX):]: v for k, v in attributes.items() if k.startswith(_METADATA_PREFIX)}
        if metadata:
            found["metadata"] = {**(base.metadata if base else {}), **metadata}
    if not found:
        return base
    return base._replace(**found) if base else Inherited(**found)


_METADATA_PREFIX = "promptwall.metadata."


def _overlay(base: Inherited, nearer: Optional[Inherited]) -> Inherited:
    """``base`` with every field ``nearer`` sets replacing it (metadata merged)."""
    if nearer is None:
        return base
    fields = {name: value for name, value in nearer._asdict().items() if value and name != "metadata"}
    metadata = {**base.metadata, **nearer.metadata}
    return base._replace(**fields, metadata=metadata)


class PromptWallSpanProcessor(SpanProcessor):
    """Batches recorded GenAI spans (sampled or not) to a :class:`PromptWallSpanExporter`.

    ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE``,
    ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` and ``OTEL_BSP_EXPORT_TIMEOUT`` are
    honoured as by the SDK's ``BatchSpanProcessor``.
    """

    def __init__(
        self,
        exporter: Optional[PromptWallSpanExporter] = None,
        *,
        max_queue_size: Optional[int] = None,
        max_queue_bytes: Optional[int] = None,
        schedule_delay_millis: Optional[float] = None,
        max_export_batch_size: Optional[int] = None,
        export_timeout_millis: Optional[float] = None,
        **exporter_options: Any,
    ) -> None:
        self.exporter = exporter or PromptWallSpanExporter(**exporter_options)
        # A span count only when asked for one (argument or OTEL_BSP_MAX_QUEUE_SIZE); by default the queue
        # is bounded by bytes: a dropped GenAI span is a lost bill, and their sizes vary a hundredfold.
        self.max_queue_size = max_queue_size or config.env_int(config.ENV_BSP_MAX_QUEUE_SIZE, 0, minimum=1) or None
        self.max_queue_bytes = max_queue_bytes or config.env_int(config.ENV_MAX_QUEUE_BYTES, config.DEFAULT_MAX_QUEUE_BYTES,
                                                                 minimum=1024)  # fmt: skip
        self.schedule_delay_s = (schedule_delay_millis or config.env_float(config.ENV_BSP_SCHEDULE_DELAY, 5000)) / 1000
        self.max_export_batch_size = max_export_batch_size or config.env_int(config.ENV_BSP_MAX_EXPORT_BATCH_SIZE, 512,
                                                                             minimum=1)  # fmt: skip
        if self.max_queue_size:
            self.max_export_batch_size = min(self.max_export_batch_size, self.max_queue_size)
        self.export_timeout_s = (export_timeout_millis or config.env_float(config.ENV_BSP_EXPORT_TIMEOUT, 30000)) / 1000
        self._queue_limit = self._limit_for(_ASSUMED_SPAN_BYTES)
        self._contexts = self.exporter.contexts
        self._inherited = self._contexts.entries  # the dict itself: its truth test costs no Python call
        self._last_baggage: Tuple[Any, Optional[Inherited]] = (None, None)  # (baggage dict, what it lends)
        self._group_runs = self.exporter.assembles_runs
        self._log = RateLimitedLogger(logger)
        self._start_worker()
        weak_reinit = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (weak_reinit() or (lambda: None))())
        weak_shutdown = weakref.WeakMethod(self.shutdown)
        atexit.register(lambda: (weak_shutdown() or (lambda: None))())

    def _limit_for(self, span_bytes: float) -> int:
        """How many spans the queue may hold when a span encodes to ``span_bytes`` on average."""
        if self.max_queue_size:
            return self.max_queue_size
        return int(min(_MAX_QUEUE_SPANS, max(_MIN_QUEUE_SPANS, self.max_queue_bytes // max(span_bytes, 256.0))))

    def _start_worker(self) -> None:
        # Finished GenAI spans, and (as ints) ids of traces whose non-GenAI root ended after them.
        self._queue: Deque[Union[ReadableSpan, int]] = collections.deque()
        self._open_traces: Dict[int, None] = {}  # traces with queued LLM calls whose root has not ended
        self._wake = threading.Event()
        self._flush_requests: List[Tuple[threading.Event, float]] = []
        self._stopping = False
        self._worker = threading.Thread(target=self._run, name="promptwall-map", daemon=True)
        self._worker.start()

    def _after_fork(self) -> None:
        # The child inherits the parent's queue (the parent exports those) but not its threads.
        self.exporter.reinit_after_fork()
        self._start_worker()

    # --- application thread --------------------------------------------------

    def on_start(self, span: Span, parent_context: Optional[Context] = None) -> None:
        """Record what this span inherits: its ancestors' ids (from their live attributes) and baggage.

        Baggage is read for every span, not only those that look like GenAI at
        start: instrumentations built on opentelemetry-util-genai start their
        span bare and set ``gen_ai.*`` when the call ends, and by then the
        baggage around the call is gone. That read is one context lookup; the
        baggage dict is immutable and shared by every span under it, so what it
        says is worked out once per dict, and a span gets an entry only when
        the baggage names a session, user, use case, team or metadata.
        """
        try:
            base = None
            ctx = parent_context if parent_context is not None else _current_context()
            parent_span_context = _parent_of(span)
            if parent_span_context is not None:  # roots (most server spans) have no ancestors to read
                if self._inherited:
                    base = self._inherited.get(parent_span_context.span_id)
                attributes = _live_attributes(trace.get_current_span(ctx))
                if attributes and not INHERITED_KEY_SET.isdisjoint(attributes):
                    base = _inherited_from(attributes, base)
            bag = ctx.get(_BAGGAGE_KEY)
            if bag:
                last = self._last_baggage  # one tuple, replaced whole: safe across app threads
                if last[0] is not bag:
                    last = self._last_baggage = (bag, _inherited_from(bag, None, with_metadata=True))
                if last[1] is not None:  # the span's own ancestors' attributes win over baggage
                    base = _overlay(last[1], base)
            if self._group_runs and (base is None or base.run_span_id is None):
                base = self._run_membership(span, base)
            if base is not None:
                self._contexts.put(span.context.span_id, base)
        except Exception:  # never into the app
            self._log.log(logging.ERROR, "on_start", "PromptWall on_start failed", exc_info=True)

    @staticmethod
    def _run_membership(span: Span, base: Optional[Inherited]) -> Optional[Inherited]:
        """``base`` naming the run this span opens, if it opens one (it is in no run: the caller checked).
        Only the outermost run is a run; what starts inside it is one of its steps, by inheritance."""
        if not starts_run(span.name, _live_attributes(span)):
            return base
        run_id = span.context.span_id
        return base._replace(run_span_id=run_id) if base is not None else Inherited(run_span_id=run_id)

    def _ends_run(self, span: ReadableSpan) -> bool:
        """This span opened a run (grouping on) though it ended without GenAI attributes: it must still go
        to the exporter, which closes the run with it instead of holding its spans until the time bound."""
        entry = self._inherited.get(span.context.span_id)
        return entry is not None and entry.run_span_id == span.context.span_id

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if not _is_genai(span) and not (self._group_runs and self._ends_run(span)):
                if self._inherited:  # usually empty: nothing inherited anywhere
                    self._contexts.discard(span.context.span_id)
                if self._open_traces:
                    parent = _parent_of(span)
                    if parent is None or parent.is_remote:  # the local root of its trace
                        self._root_ended(span.context.trace_id)
                return
            queue = self._queue
            if len(queue) >= self._queue_limit:
                self.exporter.stats.add("dropped")
                self._log.log(logging.ERROR, "queue-full", "PromptWall queue full (%d spans, about %d bytes): GenAI "
                              "span dropped; raise PROMPTWALL_MAX_QUEUE_BYTES", self._queue_limit,
                              self.max_queue_bytes)  # fmt: skip
                return
            queue.append(span)
            parent = _parent_of(span)
            open_traces = self._open_traces
            if parent is not None and not parent.is_remote:  # the trace's root is another span of ours
                if len(open_traces) >= _MAX_OPEN_TRACES:  # roots that never end
                    for oldest in oldest_keys(open_traces, _MAX_OPEN_TRACES):
                        open_traces.pop(oldest, None)
                open_traces[span.context.trace_id] = None
            elif open_traces:  # a GenAI local root: the ledger forgets its trace by itself
                open_traces.pop(span.context.trace_id, None)
            if len(queue) >= self.max_export_batch_size and not self._wake.is_set():
                self._wake.set()  # Event.set takes a lock: only when it changes something
        except Exception:
            self._log.log(logging.ERROR, "on_end", "PromptWall on_end failed", exc_info=True)

    def _root_ended(self, trace_id: int) -> None:
        """A trace with LLM calls beneath a non-GenAI root (a request span) is complete.

        The trace id goes through the queue behind the trace's spans, so the
        worker tells the ledger to forget the trace only after mapping them;
        otherwise the ledger would keep it until it has been idle for minutes.
        """
        if self._open_traces.pop(trace_id, 0) is None:
            self._queue.append(trace_id)

    # --- worker ---------------------------------------------------------------

    def _take(self) -> Tuple[List[ReadableSpan], List[int]]:
        """Up to a batch of spans, and the traces whose root ended among them."""
        batch: List[ReadableSpan] = []
        ended: List[int] = []
        queue = self._queue
        while queue and len(batch) < self.max_export_batch_size:
            item = queue.popleft()
            if type(item) is int:
                ended.append(item)
            else:
                batch.append(item)
        return batch, ended

    def _run(self) -> None:
        while True:
            self._wake.wait(self.schedule_delay_s)
            self._wake.clear()
            self._drain()
            self.exporter.send_late_evaluations()  # evaluations of calls already sent, each tick
            if self._group_runs:
                self.exporter.expire_runs()
            requests = self._pop_flush_requests()
            if requests:  # flushed means sent (or, with the backend down, safely spooled), not only queued
                deadline = max(at for _, at in requests)
                self.exporter.flush_workers(max(0.0, deadline - time.monotonic()))
            for request, _ in requests:
                request.set()
            if self._stopping and not self._queue:
                return

    def _drain(self) -> None:
        span_bytes = total_spans = 0
        while self._queue:
            batch, ended = self._take()
            try:
                encoded = self.exporter.encode_spans(batch)
                self.exporter.forget_traces(ended)
            except Exception:
                self._log.log(logging.ERROR, "export", "PromptWall mapping failed", exc_info=True)
                continue
            self.exporter.offer(encoded)
            span_bytes += sum(len(line) for lines in encoded for line in lines)
            total_spans += len(batch)
        if total_spans:
            self._queue_limit = self._limit_for(span_bytes / total_spans)

    def _pop_flush_requests(self) -> List[Tuple[threading.Event, float]]:
        requests, self._flush_requests = self._flush_requests, []
        return requests

    # --- lifecycle ------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Map everything queued now, send it and try the spool; True if done within the timeout."""
        if not self._worker.is_alive():
            return not self._queue and self.exporter.force_flush(timeout_millis)
        done = threading.Event()
        self._flush_requests.append((done, time.monotonic() + timeout_millis / 1000))
        self._wake.set()
        return done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Map what is queued, send it within a bounded time (``OTEL_BSP_EXPORT_TIMEOUT``, at most 5 s);
        what is left, the request in flight included, goes to the spool."""
        if self._stopping:
            return
        budget = min(self.export_timeout_s, _SHUTDOWN_FLUSH_S)
        deadline = time.monotonic() + budget
        self._stopping = True
        self._wake.set()
        self._worker.join(budget)
        if self._worker.is_alive():
            lost = sum(1 for item in self._queue if type(item) is not int)
            if lost:  # mapping is stuck (a redact hook that never returns?): nothing else can map safely
                self.exporter.stats.add("dropped", lost)
                logger.error("PromptWall: mapping did not finish at exit; %d GenAI spans dropped", lost)
        self.exporter.shutdown(max(0.5, deadline - time.monotonic()))

    def stats(self) -> Dict[str, int]:
        return self.exporter.stats_snapshot()
