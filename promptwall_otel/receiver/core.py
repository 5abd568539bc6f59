"""What the receiver does with decoded spans and logs: wait briefly, map, forward per tenant.

Spans end before their parents and content log records travel separately,
so each GenAI span waits a bounded time (``correlation_wait_s``) for its
content logs and for the ancestors it inherits session and user from; then it
is mapped with the same code as the in-process exporter and handed to the
sender of its tenant (the PromptWall key it came with). Everything held here
is a short-lived, bounded cache: replicas share nothing, the deterministic
``request_id`` makes a record that two replicas send stored once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from .._ratelimit import RateLimitedLogger
from ..mapping import Inherited, LogView, MappingOptions, SpanClass, SpanView, classify
from ..mapping.builder import INHERITED_KEY_SET, INHERITED_KEYS
from ..mapping.ledger import TraceLedger
from ..mapping.semconv import CHOICE_EVENT, CONTENT_EVENTS, DETAILS_EVENT, INPUT_MESSAGES, OUTPUT_MESSAGES
from ..stats import ExportStats
from ..transport import Delivery, EventsClient, Spool

logger = logging.getLogger("promptwall_otel.receiver")

_LAST_CONTENT_EVENTS = frozenset({CHOICE_EVENT, DETAILS_EVENT})


class Overloaded(Exception):
    """The receiver cannot take more now; the caller should retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Pending:
    __slots__ = ("view", "tenant", "deadline", "complete")

    def __init__(self, view: SpanView, tenant: str, deadline: float, complete: bool) -> None:
        self.view = view
        self.tenant = tenant
        self.deadline = deadline
        self.complete = complete  # content on the span, or its last content log arrived


class _Sender:
    """One tenant's records: a bounded queue and a thread that delivers them (retries, spool, replay)."""

    def __init__(self, delivery: Delivery, max_records: int) -> None:
        self.delivery = delivery
        self.max_records = max_records
        self._queue: Deque[bytes] = deque()  # encoded records: a fraction of the memory of their dicts
        self._wake = threading.Event()
        self._stop = False
        self._spool_checked_at = float("-inf")
        self._spool_was_full = False
        self._thread = threading.Thread(target=self._run, name="promptwall-receiver-send", daemon=True)
        self._thread.start()

    def spool_full(self) -> bool:
        """The downstream spool is (nearly) at its cap; its size is read at most once a second."""
        now = time.monotonic()
        if now - self._spool_checked_at > 1.0:
            spool = self.delivery.spool
            self._spool_was_full = spool is not None and spool.size() >= 0.9 * spool.max_bytes
            self._spool_checked_at = now
        return self._spool_was_full

    def offer(self, records: List[Dict[str, Any]]) -> bool:
        if len(self._queue) + len(records) > self.max_records:
            return False
        self._queue.extend(self.delivery.encode_records(records))
        self._wake.set()
        return True

    def _run(self) -> None:
        self.delivery.replay(time.monotonic() + 10)
        while not self._stop or self._queue:
            self._wake.wait(1.0)
            self._wake.clear()
            batch: List[bytes] = []
            while self._queue and len(batch) < 2000:
                batch.append(self._queue.popleft())
            if batch:
                self.delivery.deliver(batch)
            if not self._stop:
                self.delivery.replay(time.monotonic() + 5)

    def close(self, timeout_s: float) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout_s)
        self.delivery.stop_event.set()
        self._thread.join(1.0)
        if self._thread.is_alive():
            self.delivery.keep_inflight()
        leftover = list(self._queue)
        self._queue.clear()
        if leftover:
            self.delivery.deliver(leftover)  # stop_event set: straight to the spool
        self.delivery.client.close()


class ReceiverCore:
    """Thread-safe. ``accept_spans`` / ``accept_logs`` are called by the HTTP and gRPC front ends."""

    def __init__(
        self,
        endpoint: str,
        api_key: Optional[str] = None,
        *,
        pass_through: bool = True,
        mapping: Optional[MappingOptions] = None,
        spool_root: Optional[str] = None,
        correlation_wait_s: float = 2.0,
        max_pending_spans: int = 50_000,
        max_queued_records: int = 50_000,
        max_tenants: int = 64,
        timeout_s: float = 10.0,
        retry_window_s: float = 10.0,
        compression: str = "gzip",
    ) -> None:
        self.endpoint = endpoint
        self._api_key = api_key
        self.pass_through = pass_through
        self.mapping = mapping or MappingOptions(mode="vendor")
        self.spool_root = spool_root
        self.correlation_wait_s = correlation_wait_s
        self.max_pending_spans = max_pending_spans
        self.max_queued_records = max_queued_records
        self.max_tenants = max_tenants
        self.timeout_s = timeout_s
        self.retry_window_s = retry_window_s
        self.compression = compression
        self.stats = ExportStats()
        self.counters: Dict[str, int] = {"spans_received": 0, "logs_received": 0, "spans_rejected": 0}
        self._lock = threading.Lock()
        self._pending: "OrderedDict[Tuple[str, int], _Pending]" = OrderedDict()
        self._content: "OrderedDict[Tuple[str, int], List[LogView]]" = OrderedDict()
        # (tenant, trace_id) -> {span_id: (parent_span_id, inherited from its own attributes)}
        self._lineage: "OrderedDict[Tuple[str, int], Dict[int, Tuple[Optional[int], Optional[Inherited]]]]" = OrderedDict()
        self._ledgers: Dict[str, TraceLedger] = {}
        self._senders: Dict[str, _Sender] = {}
        self._log = RateLimitedLogger(logger)
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="promptwall-receiver", daemon=True)
        self._flusher.start()

    def __repr__(self) -> str:
        return f"ReceiverCore(endpoint={self.endpoint!r}, api_key={'<set>' if self._api_key else '<none>'})"

    # --- tenants ---------------------------------------------------------------

    def tenant_key(self, caller_key: Optional[str]) -> Optional[str]:
        """Whose PromptWall key forwards these events: the caller's (pass-through) or the receiver's own."""
        if self.pass_through and caller_key:
            return caller_key
        return self._api_key

    def _sender(self, key: str) -> _Sender:
        sender = self._senders.get(key)
        if sender is None:
            from ..config import default_spool_dir

            client = EventsClient(self.endpoint, key, timeout_s=self.timeout_s, compression=self.compression)
            spool_dir = default_spool_dir(self.endpoint, key)
            if self.spool_root:
                spool_dir = f"{self.spool_root.rstrip('/')}/{spool_dir.rsplit('/', 1)[-1]}"
            delivery = Delivery(client, Spool(spool_dir, 64 * 1024 * 1024), self.stats, retry_window_s=self.retry_window_s,
                                validate=self.mapping.redact is not None)  # fmt: skip
            sender = self._senders[key] = _Sender(delivery, self.max_queued_records)
        return sender

    # --- intake ------------------------------------------------------------------

    def accept_spans(self, views: Sequence[SpanView], tenant: str) -> None:
        """Queue GenAI spans for mapping; raises :class:`Overloaded` if the buffers are full."""
        now = time.monotonic()
        with self._lock:
            self.counters["spans_received"] += len(views)
            if len(self._pending) >= self.max_pending_spans:
                raise Overloaded(f"{len(self._pending)} spans waiting to be mapped")
            sender = self._senders.get(tenant)
            if sender is None and len(self._senders) >= self.max_tenants:
                # Each key gets a thread and a spool: random keys must not exhaust either.
                raise Overloaded(f"more than {self.max_tenants} distinct PromptWall keys", retry_after_s=60)
            if sender is not None and (len(sender._queue) >= self.max_queued_records or sender.spool_full()):
                raise Overloaded("forwarding queue or spool full")
            for view in views:
                self._remember_lineage(tenant, view)
                span_class = classify(view).span_class
                if span_class not in (SpanClass.INFERENCE, SpanClass.AGGREGATE):
                    continue
                attrs = view.attributes
                complete = INPUT_MESSAGES in attrs or OUTPUT_MESSAGES in attrs or span_class is SpanClass.AGGREGATE
                key = (tenant, view.span_id)
                logs = self._content.get(key)
                if logs and any(log.event_name in _LAST_CONTENT_EVENTS for log in logs):
                    complete = True
                self._pending[key] = _Pending(view, tenant, now + self.correlation_wait_s, complete)

    def accept_logs(self, logs: Sequence[LogView], tenant: str) -> None:
        with self._lock:
            self.counters["logs_received"] += len(logs)
            for log in logs:
                if log.event_name not in CONTENT_EVENTS:
                    continue
                key = (tenant, log.span_id)
                bucket = self._content.get(key)
                if bucket is None:
                    if len(self._content) >= self.max_pending_spans:
                        self._content.popitem(last=False)
                    bucket = self._content[key] = []
                if len(bucket) < 256:
                    bucket.append(log)
                pending = self._pending.get(key)
                if pending is not None and log.event_name in _LAST_CONTENT_EVENTS:
                    pending.complete = True

    def _remember_lineage(self, tenant: str, view: SpanView) -> None:
        key = (tenant, view.trace_id)
        spans = self._lineage.get(key)
        if spans is None:
            if len(self._lineage) >= 20_000:
                self._lineage.popitem(last=False)
            spans = self._lineage[key] = {}
        own = None
        attrs = view.attributes
        if attrs and not INHERITED_KEY_SET.isdisjoint(attrs.keys()):
            found: Dict[str, str] = {}
            for attribute, field in INHERITED_KEYS.items():
                value = attrs.get(attribute)
                if value not in (None, "") and field not in found:
                    found[field] = str(value)
            own = Inherited(**found)
        if len(spans) < 4096:
            spans[view.span_id] = (view.parent_span_id, own)

    def _inherited(self, tenant: str, view: SpanView) -> Tuple[Inherited, bool]:
        """What the span inherits from the ancestors seen so far; and whether the chain reaches its root."""
        spans = self._lineage.get((tenant, view.trace_id), {})
        merged: Dict[str, Any] = {}
        parent = view.parent_span_id
        depth = 0
        while parent is not None and depth < 64:
            entry = spans.get(parent)
            if entry is None:
                return Inherited(**merged), False
            parent, own = entry
            if own is not None:
                for field, value in own._asdict().items():
                    if value and field not in merged:
                        merged[field] = value
            depth += 1
        return Inherited(**merged), True

    # --- mapping and forwarding ----------------------------------------------

    def _ready(self, now: float) -> Dict[str, List[Tuple[SpanView, List[LogView], Inherited]]]:
        """Pending spans to map now, a whole trace at a time.

        A trace is released when one of its spans has waited its full time, or
        when every pending span of it has its content and its ancestors. Never
        releasing part of a trace keeps spans in the order they ended, which the
        ledger's billing rules rely on (children end before their parents).
        """
        ready: Dict[str, List[Tuple[SpanView, List[LogView], Inherited]]] = {}
        with self._lock:
            traces: Dict[Tuple[str, int], List[Tuple[Tuple[str, int], _Pending]]] = {}
            for key, pending in self._pending.items():
                traces.setdefault((pending.tenant, pending.view.trace_id), []).append((key, pending))
            for members in traces.values():
                if all(now < pending.deadline for _, pending in members):
                    if not all(pending.complete for _, pending in members):
                        continue
                    lineage = [self._inherited(pending.tenant, pending.view) for _, pending in members]
                    if not all(rooted for _, rooted in lineage):
                        continue  # content is here; give the ancestors the rest of the wait
                for key, pending in members:
                    del self._pending[key]
                    inherited, _ = self._inherited(pending.tenant, pending.view)
                    ready.setdefault(pending.tenant, []).append((pending.view, self._content.pop(key, []), inherited))
        return ready

    def _flush_loop(self) -> None:
        while not self._closed.wait(0.05):
            self.flush(force=False)

    def flush(self, force: bool = True) -> None:
        """Map what is ready (everything, when ``force``) and hand it to the senders."""
        ready = self._ready(float("inf") if force else time.monotonic())
        for tenant, items in ready.items():
            # Spans in the order they ended: children before parents, as the ledger expects.
            items.sort(key=lambda item: item[0].end_ns)
            views = [view for view, _, _ in items]
            logs = {view.span_id: found for view, found, _ in items}
            inherited = {view.span_id: value for view, _, value in items}
            ledger = self._ledgers.setdefault(tenant, TraceLedger())
            try:
                records = ledger.map_batch(views, self.mapping, logs_for=lambda v: logs.get(v.span_id, []),
                                           inherited_for=lambda v: inherited.get(v.span_id, Inherited()))  # fmt: skip
            except Exception:
                self._log.log(logging.ERROR, "map", "receiver: mapping a batch failed", exc_info=True)
                continue
            if records and not self._sender(tenant).offer(records):
                self.stats.add("dropped", len(records))
                self._log.log(logging.ERROR, "full", "receiver: forwarding queue full, %d records dropped", len(records))

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            counters = dict(self.counters)
            counters["spans_waiting"] = len(self._pending)
        counters.update({f"records_{name}": value for name, value in self.stats.snapshot().items()})
        return counters

    def close(self, timeout_s: float = 5.0) -> None:
        """Map everything still waiting, then give each sender ``timeout_s`` to deliver (the rest is spooled)."""
        self._closed.set()
        self._flusher.join(1.0)
        self.flush(force=True)
        for sender in list(self._senders.values()):
            sender.close(timeout_s)
