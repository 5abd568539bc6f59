"""What travels beside a span in-process: inherited context and content from log records.

Both are written on the application thread (span start, log emit) and read
on the export thread, so both are plain dicts with atomic single operations
and a hard size cap: entries for spans that are never exported cannot pile up.
The caps count spans, not bytes: a full context store takes 5 MiB when its
spans share one baggage, 34 MiB if each has its own session, user and a
metadata key (docs/memory.md).
"""

from __future__ import annotations

import threading
import time
from itertools import islice
from typing import Any, Callable, Dict, List, Optional, Union

from .mapping import Inherited, LogView, SpanView
from .mapping.semconv import EVALUATION_EVENT
from .mapping.values import text

DEFAULT_MAX_SPANS = 65_536
_NOTHING_INHERITED = Inherited()


def oldest_keys(items: Dict[Any, Any], bound: int) -> List[Any]:
    """The keys to drop before one more goes into ``items`` (insertion-ordered) held at ``bound``.

    The oldest 1/64th at once: a dict's iterator starts at the front and steps over
    every slot deleted there since its last resize, so dropping one key per insertion
    made each insertion into a full 65,536-span store cost 20-40 µs; in batches the
    scan is paid once per 1,024 insertions (0.24 µs an insertion).
    """
    if len(items) < bound:
        return []
    try:
        return list(islice(items, max(1, bound >> 6)))
    except RuntimeError:  # changed by the other thread mid-scan: drop next time
        return []


class ContextStore:
    """span_id → what the span inherited from its ancestors and baggage at start."""

    def __init__(self, max_spans: int = DEFAULT_MAX_SPANS) -> None:
        self._items: Dict[int, Inherited] = {}
        self._max = max_spans

    @property
    def entries(self) -> Dict[int, Inherited]:
        """The live dict (read-only use), for a hot path that only asks whether it is empty."""
        return self._items

    def put(self, span_id: int, inherited: Inherited) -> None:
        items = self._items
        if len(items) >= self._max:
            for key in oldest_keys(items, self._max):
                items.pop(key, None)  # the export thread may have taken it meanwhile
        items[span_id] = inherited

    def get(self, span_id: int) -> Optional[Inherited]:
        return self._items.get(span_id)

    def discard(self, span_id: int) -> None:
        self._items.pop(span_id, None)

    def pop_for(self, view: SpanView) -> Inherited:
        return self._items.pop(view.span_id, None) or _NOTHING_INHERITED

    def __len__(self) -> int:
        return len(self._items)


_RESPONSE_WAIT_S = 600.0  # an evaluation naming only a response id waits this long for its call
MAX_CONTENT_SPANS = 4096
"""Content records carry prompts and answers: keep few spans' worth (orphans go first)."""


class ContentStore:
    """span_id → GenAI content log records emitted for that span, in emission order.

    Evaluation records (``gen_ai.evaluation.result``) are kept the same way,
    by the evaluated span's id, or by ``gen_ai.response.id`` when they name no
    span; ``take_evaluations`` hands out those whose call's record already left.
    """

    def __init__(self, max_spans: int = MAX_CONTENT_SPANS) -> None:
        self._items: Dict[int, List[LogView]] = {}
        self._max = max_spans
        self._lock = threading.Lock()
        self._evaluated: Dict[int, None] = {}  # span ids in _items holding evaluation records
        self._by_response: Dict[str, List[LogView]] = {}  # evaluations naming a response id, not a span
        self._response_since: Dict[str, float] = {}  # when the first of those arrived (monotonic)

    @property
    def evaluations_waiting(self) -> bool:
        return bool(self._evaluated or self._by_response)

    def add(self, log: LogView) -> None:
        with self._lock:
            if log.event_name == EVALUATION_EVENT:
                if not log.span_id:
                    response_id = text(log.attributes.get("gen_ai.response.id"))
                    if response_id:  # nothing else to join it by
                        if response_id not in self._by_response:
                            for oldest in oldest_keys(self._by_response, self._max):
                                self._drop_response(oldest)
                            self._response_since[response_id] = time.monotonic()
                        self._by_response.setdefault(response_id, []).append(log)
                    return
                for oldest in oldest_keys(self._evaluated, self._max):
                    del self._evaluated[oldest]
                self._evaluated[log.span_id] = None
            logs = self._items.get(log.span_id)
            if logs is None:
                for oldest in oldest_keys(self._items, self._max):
                    del self._items[oldest]
                logs = self._items[log.span_id] = []
            if len(logs) < 256:
                logs.append(log)

    def pop_for(self, view: SpanView) -> List[LogView]:
        if not self._items and not self._by_response:  # no content logs at all (the usual without a log side)
            return []
        with self._lock:
            logs = self._items.pop(view.span_id, None) or []
            if self._evaluated:
                self._evaluated.pop(view.span_id, None)
            if self._by_response:
                response_id = view.attributes.get("gen_ai.response.id")
                joined = self._by_response.get(response_id) if type(response_id) is str else None
                if joined:
                    self._drop_response(response_id)  # type: ignore[arg-type]
                    logs = logs + joined
            return logs

    def take_evaluations(self, sent: Callable[[Union[int, str]], bool]) -> List[LogView]:
        """Evaluation records about calls whose record already left (``sent`` says which, by span id or
        response id), taken out of the store; the rest wait for their span."""
        with self._lock:
            found: List[LogView] = []
            for span_id in [span_id for span_id in self._evaluated if sent(span_id)]:
                del self._evaluated[span_id]
                logs = self._items.pop(span_id, None) or []
                found.extend(log for log in logs if log.event_name == EVALUATION_EVENT)
                rest = [log for log in logs if log.event_name != EVALUATION_EVENT]
                if rest:
                    self._items[span_id] = rest
            expired = time.monotonic() - _RESPONSE_WAIT_S
            for response_id in list(self._by_response):
                if self._response_since[response_id] < expired:
                    self._drop_response(response_id)  # its call never showed here (another process's)
                elif sent(response_id):
                    found.extend(self._by_response[response_id])
                    self._drop_response(response_id)
            return found

    def _drop_response(self, response_id: str) -> None:
        del self._by_response[response_id]
        del self._response_since[response_id]

    def __len__(self) -> int:
        return len(self._items)


# The zero-code entry points are instantiated separately by the SDK (one for
# traces, one for logs); these process-wide defaults are how they meet.
default_contexts = ContextStore()
default_content = ContentStore()
