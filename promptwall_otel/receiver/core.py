"""What the receiver does with decoded spans and logs: wait briefly, map, forward per tenant.

Spans end before their parents and content log records travel separately,
so each GenAI span waits a bounded time (``correlation_wait_s``) for its
content logs and for the ancestors it inherits session and user from; then it
is mapped with the same code as the in-process exporter and handed to the
sending worker of its tenant (the PromptWall key it came with): the same
worker, spool and dead letters as in-process. Everything held here is a
short-lived, bounded cache: replicas share nothing, the deterministic
``request_id`` makes a record that two replicas send stored once.

A request is answered as soon as its spans are held here (decoded, their
lineage noted): it never waits for mapping. One flusher thread, woken by each
intake, maps what is complete (the usual case: a call that is its own trace,
with its content on the span) and what fell due, in steps of whole traces of
about 16 spans, between which the request threads get the interpreter back
(compiled code would otherwise hold it for a whole tick). Waiting spans are
bounded (``max_pending_spans``), so an acknowledged span is in memory here,
in the sender's buffer or in the spool, as before: the same promise, with
requests answered in about a millisecond of their own work.

Backpressure comes before the answer: :meth:`ReceiverCore.admit` refuses a
request (503 / UNAVAILABLE, which collectors retry) while the tenant's buffer
is at its high-water mark or its spool nearly full, and, below those bounds, a
share of requests that grows with the tenant's forwarding backlog counted in
seconds of sending (from 1 s, all from 2 s): callers told to come back in a
second find a sender still busy, not one that sat idle. Both front ends call
it before decoding, so refused input costs nothing. When the spans waiting to
be mapped are at their bound, :meth:`ReceiverCore.accept_spans` makes the
request wait for room (up to a second, then 503): a receiver saturated by its
own CPU slows its callers down instead of refusing them. What was accepted is
mapped and reaches the backend or the spool.

Each tenant's spool folder is ``{spool_root}/{hash of key}`` and holds the key
(0600, like the records) so that a restarted receiver replays every tenant's
backlog at start, before that tenant sends again.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .._ratelimit import RateLimitedLogger
from ..mapping import Inherited, LogView, MappingOptions, SpanClass, SpanView, classify
from ..mapping.builder import INHERITED_KEY_SET, INHERITED_KEYS
from ..mapping.ledger import TraceLedger
from ..mapping.recent import RecentMap, pack, unpack
from ..mapping.semconv import CHOICE_EVENT, DETAILS_EVENT, EVALUATION_EVENT, INPUT_MESSAGES, JOINED_LOG_EVENTS, \
    OUTPUT_MESSAGES
from .. import config
from .._isolate import map_isolated
from ..stats import ExportStats
from ..promptetheus import ENV_KEY as ENV_PROMPTETHEUS_KEY
from ..promptetheus import TARGET as PROMPTETHEUS
from ..promptetheus import Settings, run_encoder
from ..transport import EventsClient, RecordEncoder, SendingWorker, Spool
from ..transport.http import compression_for
from ..transport.promptetheus import PromptetheusClient
from ..private_files import make_private_dir, write_private

logger = logging.getLogger("promptwall_otel.receiver")

_SEPARATOR = "\x1f"
_LAST_CONTENT_EVENTS = frozenset({CHOICE_EVENT, DETAILS_EVENT})
_KEY_FILE = "tenant.key"
_LINEAGE_SPANS = 50_000  # parent links remembered at least (at most twice that): ~3 s at 16,000 spans/s (the wait is 2 s)
_INHERITED_RANK = {attribute: rank for rank, attribute in enumerate(INHERITED_KEYS)}
_NOTHING_INHERITED = Inherited()
# per tenant, the spans released for mapping with their logs and what they inherit, in the order they ended
_Released = Dict[str, List[Tuple[SpanView, List[LogView], Inherited]]]
# traces released at once, each with its spans' inheritance where _complete worked it out
_Due = Dict[Tuple[str, int], Optional[List[Inherited]]]
_SEND_LINGER_S = 0.05  # requests bring ~100 spans; a request to the backend of 500 costs ~3 µs less per record
_FLUSH_TICK_S = 0.05  # the longest the flusher sleeps: traces fall due between intakes
# Complete spans a tenant may have waiting for the flusher: four requests of ~100, ~25 ms of mapping. Small on
# purpose: what waits is mapped while the request that decoded it is still in the CPU's caches (at 2,000, ~7 MB
# of views waited; 400 maps 7-12% more spans a second on the same CPU, benchmarks/README.md).
_MAPPABLE_SPANS = 400
_ROOM_WAIT_S = 1.0  # the longest a request waits for room among the spans waiting to be mapped, before 503
_MAP_STEP_SPANS = 16  # mapped between chances for other threads to run (see _forward); 32: p99 +2 ms, same CPU
_SPANS_PER_TICK = 500  # one request to the backend, ~1 MB of records with content: well under the high-water mark
# Admission by the forwarding backlog in seconds of sending (the tenant's buffer at its recent send rate).
# Callers refused with Retry-After: 1 pause a second or more, so refusing starts only once the backlog would
# keep the sender busy that long, and takes a growing share of requests from there rather than every
# caller at once (who would come back together, to a sender that sat idle meanwhile); from 2 s on, all.
_REFUSE_SOME_FROM_BACKLOG_S = 1.0
_REFUSE_ALL_FROM_BACKLOG_S = 2.0


def _pack_lineage(parent: int, found: Dict[str, str]) -> Union[str, bytes]:
    """A parent link with the span's own inherited fields, atomic: ``parent\x1ffield\x1fvalue...`` (a join,
    a fifth of :func:`pack`'s cost: one per span that carries a session, user or conversation), or, for
    a value that holds the separator itself, :func:`pack`."""
    parts = [str(parent)]
    for field, value in found.items():
        if _SEPARATOR in value:
            return pack((parent, tuple(found.items())))
        parts.append(field)
        parts.append(value)
    return _SEPARATOR.join(parts)


def _unpack_lineage(entry: Union[str, bytes]) -> Tuple[int, Sequence[Tuple[str, str]]]:
    if type(entry) is bytes:
        return unpack(entry)  # type: ignore[no-any-return]
    parts = entry.split(_SEPARATOR)  # type: ignore[arg-type]
    return int(parts[0]), tuple(zip(parts[1::2], parts[2::2]))


class Overloaded(Exception):
    """The receiver cannot take more now; the caller should retry after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class _Pending:
    __slots__ = ("view", "tenant", "complete")

    def __init__(self, view: SpanView, tenant: str, complete: bool) -> None:
        self.view = view
        self.tenant = tenant
        self.complete = complete  # content on the span, or its last content log arrived


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
        max_pending_spans: int = 20_000,
        max_buffer_bytes: int = 16 * 1024 * 1024,
        spool_max_bytes: int = config.DEFAULT_SPOOL_MAX_BYTES,
        max_tenants: int = 64,
        timeout_s: float = 10.0,
        compression: str = "auto",
        promptetheus: Optional[Settings] = None,
    ) -> None:
        self.endpoint = endpoint
        self._api_key = api_key
        self.pass_through = pass_through
        self.mapping = mapping or MappingOptions(mode="vendor")
        self.spool_root = spool_root or str(config.cache_dir() / "receiver")
        self.correlation_wait_s = correlation_wait_s
        self.max_pending_spans = max_pending_spans
        self.max_buffer_bytes = max_buffer_bytes
        self.spool_max_bytes = spool_max_bytes
        self.max_tenants = max_tenants
        self.timeout_s = timeout_s
        self.compression = compression_for(endpoint, compression)
        self.stats = ExportStats()
        self.counters: Dict[str, int] = {"spans_received": 0, "logs_received": 0, "spans_rejected": 0}
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when the flusher takes waiting spans
        # Spans waiting, by (tenant, span id); their traces, by (tenant, trace id), in arrival order; each
        # trace's deadline in the order they fall due; the traces that changed since the last look. The
        # flusher's work per tick is what arrived or fell due, not everything that waits.
        self._pending: Dict[Tuple[str, int], _Pending] = {}
        self._traces: Dict[Tuple[str, int], List[Tuple[str, int]]] = {}
        self._deadlines: Deque[Tuple[float, Tuple[str, int], List[Tuple[str, int]]]] = deque()
        self._changed: Set[Tuple[str, int]] = set()
        self._overdue: Dict[Tuple[str, int], List[Tuple[str, int]]] = {}  # fell due while their tenant was held back
        # traces opened since the flusher last looked, with their arrival: given a deadline only if they must
        # wait (most are complete and leave at once, and a queue entry per trace kept for the whole wait
        # would be thousands of objects promoted to the oldest generation, traversed by every full collection)
        self._untimed: Dict[Tuple[str, int], float] = {}
        self._mappable: Dict[str, int] = {}  # per tenant, waiting spans that are complete: the flusher's backlog
        self._content: "OrderedDict[Tuple[str, int], List[LogView]]" = OrderedDict()
        # tenant number << 192 | trace id << 64 | span id -> parent span id (0: a root), or, for a span with
        # inherited fields of its own, _pack_lineage(parent, fields): atomic keys and values, which the
        # garbage collector never walks (mapping/recent.py)
        self._lineage: RecentMap[int, Union[int, str, bytes]] = RecentMap(_LINEAGE_SPANS)
        self._tenant_numbers: Dict[str, int] = {}
        self._ledgers: Dict[str, TraceLedger] = {}
        self._sources_by_keys: Dict[Tuple[str, ...], Tuple[Tuple[str, str], ...]] = {}
        # tenant -> evaluation records about calls already forwarded: follow-up records at the next flush
        self._late_evaluations: Dict[str, List[LogView]] = {}
        self._workers: Dict[str, SendingWorker] = {}
        self._encoder = RecordEncoder(self.stats, validate=self.mapping.redact is not None)
        # Every tenant's calls also go, as one-step runs, to the one Promptetheus key the operator gave
        # (its folder has no tenant key, so the tenant replay below passes it by; its worker replays itself).
        self.runs_stats = ExportStats()
        self._runs: Optional[Tuple[SendingWorker, Any]] = None
        if promptetheus is not None:
            folder = Path(self.spool_root) / PROMPTETHEUS
            make_private_dir(folder)
            client = PromptetheusClient(promptetheus.url, promptetheus.api_key, timeout_s=timeout_s)
            self._runs = (SendingWorker(client, Spool(str(folder), spool_max_bytes), self.runs_stats,
                                        max_buffer_bytes=max_buffer_bytes, api_key_env=ENV_PROMPTETHEUS_KEY,
                                        name="promptetheus-receiver-send", linger_s=_SEND_LINGER_S),
                          run_encoder(self.runs_stats, promptetheus.project_id))  # fmt: skip
        self._log = RateLimitedLogger(logger)
        self._replay_spooled_tenants()
        self._closed = threading.Event()
        self._wake = threading.Event()
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

    def _worker(self, key: str) -> SendingWorker:
        worker = self._workers.get(key)
        if worker is None:
            folder = Path(self.spool_root) / hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]
            make_private_dir(folder)
            key_file = folder / _KEY_FILE
            if not key_file.exists():
                write_private(key_file, key.encode("utf-8", "surrogatepass"))
            client = EventsClient(self.endpoint, key, timeout_s=self.timeout_s, compression=self.compression)
            worker = self._workers[key] = SendingWorker(
                client, Spool(str(folder), self.spool_max_bytes), self.stats,
                max_buffer_bytes=self.max_buffer_bytes, name="promptwall-receiver-send", linger_s=_SEND_LINGER_S,
            )  # fmt: skip
        return worker

    def _replay_spooled_tenants(self) -> None:
        """Start a worker for every tenant whose spool holds records: they replay without new traffic."""
        try:
            folders = sorted(Path(self.spool_root).iterdir())
        except FileNotFoundError:
            return
        for folder in folders:
            key_file = folder / _KEY_FILE
            if len(self._workers) >= self.max_tenants or not key_file.is_file():
                continue
            if Spool(str(folder), self.spool_max_bytes).pending() == 0:
                continue
            try:
                key = key_file.read_bytes().decode("utf-8", "surrogatepass")
            except (OSError, UnicodeDecodeError):
                continue
            with self._lock:
                self._worker(key)

    # --- intake ------------------------------------------------------------------

    @property
    def _high_water_bytes(self) -> int:
        """A tenant's forwarding buffer past this is full for admission and mapping: the quarter above it takes
        what requests already admitted still add (beyond the buffer's bound records spill to the spool)."""
        return self.max_buffer_bytes * 3 // 4

    def admit(self, tenant: str) -> None:
        """Raise :class:`Overloaded` if what this tenant sends now could not be forwarded in good time; cheap,
        called by the front ends before decoding. Past :meth:`check_bounds`, it refuses a share of requests
        that grows with the tenant's forwarding backlog (none under 1 s of sending, all from 2 s)."""
        self.check_bounds(tenant)
        worker = self._workers.get(tenant)
        backlog = worker.backlog_s() if worker is not None else 0.0
        if backlog > _REFUSE_SOME_FROM_BACKLOG_S:
            share = (backlog - _REFUSE_SOME_FROM_BACKLOG_S) / (_REFUSE_ALL_FROM_BACKLOG_S - _REFUSE_SOME_FROM_BACKLOG_S)
            if random.random() < share:  # a share of 1 or more refuses every request
                raise Overloaded(f"forwarding is {backlog:.1f}s behind", retry_after_s=1)

    def check_bounds(self, tenant: str) -> None:
        """Raise :class:`Overloaded` if this tenant's forwarding buffer or spool is at its bound (the spans
        waiting to be mapped are bounded in :meth:`accept_spans`, which waits for room)."""
        worker = self._workers.get(tenant)
        if worker is None:
            if len(self._workers) >= self.max_tenants:
                # Each key gets a thread and a spool: random keys must not exhaust either.
                raise Overloaded(f"more than {self.max_tenants} distinct PromptWall keys", retry_after_s=60)
        elif worker.pressure(self._high_water_bytes):
            # Refuse rather than accept into memory (or spill to disk) what the backend cannot take as
            # fast; the collector retries. During an outage the worker spools at once, so this holds only
            # when the spool is nearly full too.
            raise Overloaded("the forwarding buffer is above its high-water mark, or the spool is full",
                             retry_after_s=1)

    def accept_spans(self, views: Sequence[SpanView], tenant: str) -> None:
        """Take spans: remember their lineage, keep the GenAI calls among them for the flusher to map.

        Nothing is mapped here: the request is answered as soon as its spans are held (bounded by
        ``max_pending_spans``), and the flusher, woken at once, maps them in short steps. Raises
        :class:`Overloaded` if the buffers are full (the front ends call :meth:`admit` first).
        """
        self.check_bounds(tenant)
        with self._lock:
            self._wait_for_room(tenant)
            now = time.monotonic()
            changed = self._changed
            self.counters["spans_received"] += len(views)
            if tenant not in self._workers:
                self._worker(tenant)
            for view in views:
                self._remember_lineage(tenant, view)
                trace_key = (tenant, view.trace_id)
                members = self._traces.get(trace_key)
                if members is not None:
                    changed.add(trace_key)  # perhaps an ancestor its waiting spans inherit from
                span_class = classify(view).span_class
                if span_class not in (SpanClass.INFERENCE, SpanClass.AGGREGATE):
                    continue
                attrs = view.attributes
                complete = INPUT_MESSAGES in attrs or OUTPUT_MESSAGES in attrs or span_class is SpanClass.AGGREGATE
                key = (tenant, view.span_id)
                logs = self._content.get(key)
                if logs and any(log.event_name in _LAST_CONTENT_EVENTS for log in logs):
                    complete = True
                if key in self._pending:
                    continue  # the same span sent twice (a collector's retry): it waits once
                self._pending[key] = _Pending(view, tenant, complete)
                if complete:
                    self._mappable[tenant] = self._mappable.get(tenant, 0) + 1
                if members is None:
                    members = self._traces[trace_key] = []
                    # The flusher releases it if it is complete, else gives it a deadline from its arrival.
                    self._untimed[trace_key] = now
                    changed.add(trace_key)
                members.append(key)
            self._wake.set()

    def _full(self, tenant: str) -> bool:
        return len(self._pending) >= self.max_pending_spans or self._mappable.get(tenant, 0) >= _MAPPABLE_SPANS

    def _wait_for_room(self, tenant: str) -> None:
        """While the spans waiting are at their bound, or this tenant's spans ready to be mapped are (intake
        ahead of the flusher), wait (lock held, released meanwhile) for the flusher to take some, up to
        ``_ROOM_WAIT_S``; then :class:`Overloaded`. A receiver saturated by its own CPU so slows its callers
        down, as a full queue would, rather than refusing them at once or holding more than it maps soon."""
        if not self._full(tenant):
            return
        deadline = time.monotonic() + _ROOM_WAIT_S
        while self._full(tenant):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Overloaded(f"{len(self._pending)} spans waiting to be mapped", retry_after_s=1)
            self._room.wait(remaining)

    def accept_logs(self, logs: Sequence[LogView], tenant: str) -> None:
        """Keep content logs for their spans; wake the flusher for the traces they complete."""
        self.check_bounds(tenant)
        with self._lock:
            self.counters["logs_received"] += len(logs)
            for log in logs:
                if log.event_name not in JOINED_LOG_EVENTS:
                    continue
                if log.event_name == EVALUATION_EVENT and self._evaluates_a_forwarded_call(tenant, log):
                    late = self._late_evaluations.setdefault(tenant, [])
                    if len(late) < self.max_pending_spans:
                        late.append(log)
                    continue
                if not log.span_id:
                    continue  # an evaluation naming a response id the receiver has not forwarded: not joined
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
                    if not pending.complete:
                        pending.complete = True
                        self._mappable[tenant] = self._mappable.get(tenant, 0) + 1
                    self._changed.add((tenant, pending.view.trace_id))
            self._wake.set()

    def _evaluates_a_forwarded_call(self, tenant: str, log: LogView) -> bool:
        if (tenant, log.span_id) in self._pending:
            return False  # its call waits here: the evaluation joins it
        ledger = self._ledgers.get(tenant)
        if ledger is None:
            return False
        return (bool(log.span_id) and ledger.call_sent(log.span_id)) \
            or ledger.call_sent(str(log.attributes.get("gen_ai.response.id") or ""))  # fmt: skip

    def _lineage_base(self, tenant: str, trace_id: int) -> int:
        number = self._tenant_numbers.get(tenant)
        if number is None:
            number = self._tenant_numbers[tenant] = len(self._tenant_numbers)
        return (number << 192) | (trace_id << 64)  # span id: bits 0-63, trace id: 64-191, tenant above

    def _remember_lineage(self, tenant: str, view: SpanView) -> None:
        parent = view.parent_span_id or 0
        entry: Union[int, str, bytes] = parent
        attrs = view.attributes
        sources = self._inherited_sources(attrs) if attrs else ()
        if sources:
            found: Dict[str, str] = {}
            for attribute, field in sources:
                value = attrs[attribute]
                if value not in (None, "") and field not in found:
                    found[field] = str(value)
            if found:
                entry = _pack_lineage(parent, found)
        self._lineage[self._lineage_base(tenant, view.trace_id) | view.span_id] = entry

    def _inherited_sources(self, attrs: Mapping[str, Any]) -> Tuple[Tuple[str, str], ...]:
        """(attribute, inherited field) for the inherited keys among ``attrs``, in priority order (lock held).

        Worked out once per set of attribute keys: spans of one instrumentation share theirs, and
        a span's lineage is recorded before anything else is done with it.
        """
        keys = tuple(attrs)
        sources = self._sources_by_keys.get(keys)
        if sources is None:
            present = sorted(INHERITED_KEY_SET.intersection(keys), key=_INHERITED_RANK.__getitem__)
            sources = tuple((attribute, INHERITED_KEYS[attribute]) for attribute in present)
            if len(self._sources_by_keys) >= 256:  # key sets that vary per span (indexed messages, user keys)
                self._sources_by_keys.clear()
            self._sources_by_keys[keys] = sources
        return sources

    def _inherited(self, tenant: str, view: SpanView) -> Tuple[Inherited, bool]:
        """What the span inherits from the ancestors seen so far; and whether the chain reaches its root."""
        parent = view.parent_span_id
        if parent is None:
            return _NOTHING_INHERITED, True
        lineage, base = self._lineage, self._lineage_base(tenant, view.trace_id)
        merged: Dict[str, Any] = {}
        depth = 0
        while parent and depth < 64:
            entry = lineage.get(base | parent)
            if entry is None:
                return Inherited(**merged), False
            if type(entry) is int:
                parent = entry
            else:
                parent, own = _unpack_lineage(entry)
                for field, value in own:  # nearest ancestor first: it wins
                    if field not in merged:
                        merged[field] = value
            depth += 1
        return Inherited(**merged), True

    # --- mapping and forwarding ----------------------------------------------

    def _ready(self, now: float, held: "frozenset[str]" = frozenset(), budget: int = 1 << 62) -> _Released:
        """Pending spans to map now, a whole trace at a time (none of the ``held`` tenants'), about
        ``budget`` spans at most: one tick never maps more than the forwarding buffer should take at once.

        A trace is released when its first span has waited its full time, or
        when every pending span of it has its content and its ancestors. Never
        releasing part of a trace keeps spans in the order they ended, which the
        ledger's billing rules rely on (children end before their parents).
        """
        with self._lock:
            # ordered, and a membership test that does not scan; a complete trace's inheritance, as _complete found it
            due: _Due = {}
            spans = 0
            for key in [key for key in self._overdue if key[0] not in held]:
                if spans >= budget:
                    break
                spans += len(self._overdue.pop(key))
                due[key] = None
            deadlines = self._deadlines
            while deadlines and deadlines[0][0] <= now and spans < budget:
                _, trace_key, members = deadlines.popleft()
                if self._traces.get(trace_key) is not members:
                    continue  # released early; the trace id may have waiting spans again under a new entry
                if trace_key[0] in held:
                    self._overdue[trace_key] = members
                else:
                    due[trace_key] = None
                    spans += len(members)
            for trace_key in list(self._changed):
                if spans >= budget:
                    break
                if trace_key[0] in held:
                    continue
                self._changed.discard(trace_key)
                members = self._traces.get(trace_key)
                if members is None or trace_key in self._overdue or trace_key in due:
                    continue
                inherited = self._complete(members)
                if inherited is not None:
                    due[trace_key] = inherited
                    spans += len(members)
                    continue
                arrived = self._untimed.pop(trace_key, None)
                if arrived is not None:  # it waits: from its arrival, at most the correlation wait
                    deadline = arrived + self.correlation_wait_s
                    if deadline <= now:
                        self._overdue[trace_key] = members
                    else:  # kept in order: one that arrived a tick earlier waits that much longer, no more
                        deadlines.append((max(deadline, deadlines[-1][0]) if deadlines else deadline, trace_key,
                                          members))  # fmt: skip
            return self._take(due)

    def _complete(self, members: List[Tuple[str, int]]) -> Optional[List[Inherited]]:
        """What each waiting span of the trace inherits, if every one has its content and its ancestors up to
        the root; else None (lock held)."""
        pending = self._pending
        for key in members:
            if not pending[key].complete:
                return None
        found: List[Inherited] = []
        for key in members:
            waiting = pending[key]
            inherited, rooted = self._inherited(waiting.tenant, waiting.view)
            if not rooted:
                return None
            found.append(inherited)
        return found

    def _take(self, due: _Due) -> _Released:
        """Remove the ``due`` traces' spans from the waiting set, with their logs and inheritance (lock held):
        as :meth:`_complete` found it for complete traces, else as far as the ancestors seen reach."""
        ready: _Released = {}
        if due:
            self._room.notify_all()
        for trace_key, found in due.items():
            self._untimed.pop(trace_key, None)
            for index, key in enumerate(self._traces.pop(trace_key, ())):
                pending = self._pending.pop(key)
                if pending.complete:
                    self._mappable[pending.tenant] -= 1
                inherited = found[index] if found is not None else self._inherited(pending.tenant, pending.view)[0]
                ready.setdefault(pending.tenant, []).append((pending.view, self._content.pop(key, []), inherited))
        return ready

    def _release_all(self) -> _Released:
        with self._lock:
            self._deadlines.clear()
            self._overdue.clear()
            self._changed.clear()
            self._untimed.clear()
            for trace_key in self._traces:
                self._deadlines.append((0.0, trace_key, self._traces[trace_key]))
        return self._ready(float("inf"))

    def _flush_loop(self) -> None:
        busy = False
        while not self._closed.is_set():
            if not busy:
                self._wake.wait(_FLUSH_TICK_S)  # woken by every intake; the tick finds traces that fell due
            self._wake.clear()  # before the work: an intake meanwhile wakes the next round at once
            try:
                busy = self.flush(force=False)
            except Exception:  # the loop must go on: what waits would otherwise never be forwarded
                busy = False
                self._log.log(logging.ERROR, "flush", "receiver: forwarding failed", exc_info=True)

    def flush(self, force: bool = True) -> bool:
        """Map what is ready (everything, when ``force``) and hand it to the senders.

        A tenant whose forwarding buffer is above its high-water mark is held
        back: its spans wait (and new ones get 503 once the waiting set is at
        its bound) rather than be mapped into memory or onto disk faster than
        the backend takes them.
        """
        if force:
            ready = self._release_all()
        else:
            high_water = self._high_water_bytes
            held = frozenset(tenant for tenant, worker in list(self._workers.items()) if worker.pressure(high_water))
            ready = self._ready(time.monotonic(), held, _SPANS_PER_TICK)
        with self._lock:
            late, self._late_evaluations = self._late_evaluations, {}
        for tenant, found in late.items():  # never billed: one follow-up record per evaluated call
            follow_ups = self._ledgers[tenant].late_evaluations(found, self.mapping)
            if follow_ups:
                with self._lock:
                    worker = self._worker(tenant)
                worker.offer(self._encoder.many(follow_ups))
                self._offer_runs(follow_ups)
        self._forward(ready)
        return sum(len(items) for items in ready.values()) >= _SPANS_PER_TICK

    def _forward(self, ready: _Released) -> None:
        """Map released spans, tenant by tenant, and hand the records to the tenants' senders.

        In steps of about ``_MAP_STEP_SPANS`` spans, whole traces each (the ledger sees a trace's spans
        together, in the order they ended: children before parents). Compiled code never lets another
        thread take the interpreter, however long it runs; ``map_isolated``, interpreted, does: a request
        waits about a step (~1 ms) for it, not for the whole tick's mapping.
        """
        for tenant, items in ready.items():
            ledger = self._ledgers.get(tenant) or self._ledgers.setdefault(tenant, TraceLedger())
            with self._lock:
                worker = self._worker(tenant)
            start = 0
            while start < len(items):  # items come a trace at a time (_take)
                stop = min(start + _MAP_STEP_SPANS, len(items))
                trace_id = items[stop - 1][0].trace_id
                while stop < len(items) and items[stop][0].trace_id == trace_id:
                    stop += 1
                self._map_step(items[start:stop], ledger, worker)
                start = stop

    def _map_step(self, items: List[Tuple[SpanView, List[LogView], Inherited]], ledger: TraceLedger,
                  worker: SendingWorker) -> None:  # fmt: skip
        items.sort(key=lambda item: item[0].end_ns)
        views = [view for view, _, _ in items]
        logs = {view.span_id: found for view, found, _ in items}
        inherited = {view.span_id: value for view, _, value in items}
        records: List[Dict[str, Any]] = []

        def run(group: Sequence[SpanView]) -> None:
            records.extend(ledger.map_batch(group, self.mapping, logs_for=lambda v: logs.get(v.span_id, []),
                                            inherited_for=lambda v: inherited.get(v.span_id, _NOTHING_INHERITED)))

        def dropped(view: SpanView) -> None:
            self.stats.add("dropped")
            self._log.log(logging.ERROR, "map", "receiver: span %016x of trace %032x cannot be mapped; dropped",
                          view.span_id, view.trace_id)  # fmt: skip

        map_isolated(views, lambda view: view.trace_id, run, dropped)
        if records:
            try:
                lines = self._encoder.many(records)
            except Exception:  # acknowledged spans: never lost unseen, counted with those that cannot be mapped
                self.stats.add("dropped", len(records))
                self._log.log(logging.ERROR, "encode", "receiver: %d records cannot be encoded; dropped",
                              len(records), exc_info=True)  # fmt: skip
                return
            worker.offer(lines)
            self._offer_runs(records)

    def _offer_runs(self, records: Sequence[Dict[str, Any]]) -> None:
        if self._runs is not None:
            worker, encode_run = self._runs
            worker.offer([line for line in map(encode_run, records) if line is not None])

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            counters = dict(self.counters)
            counters["spans_waiting"] = len(self._pending)
            workers = list(self._workers.values())
        counters["forwarding_buffer_bytes"] = sum(worker.buffered_bytes for worker in workers)
        counters["forwarding_backlog_ms"] = int(1000 * max((worker.backlog_s() for worker in workers), default=0.0))
        counters.update({f"records_{name}": value for name, value in self.stats.snapshot().items()})
        if self._runs is not None:
            counters.update({f"promptetheus_{name}": value for name, value in self.runs_stats.snapshot().items()})
        return counters

    def close(self, timeout_s: float = 5.0) -> None:
        """Map everything still waiting, then give each sender ``timeout_s`` to deliver (the rest is spooled)."""
        self._closed.set()
        self._wake.set()
        self._flusher.join(1.0)
        self.flush(force=True)
        for worker in list(self._workers.values()) + ([self._runs[0]] if self._runs is not None else []):
            worker.close(timeout_s)
