"""What travels beside a span in-process: inherited context and content from log records.

Both are written on the application thread (span start, log emit) and read
on the export thread, so both are plain dicts with atomic single operations
and a hard size cap: entries for spans that are never exported cannot pile up.
"""

from __future__ import annotations

import threading
from typing import Dict, List, Optional

from .mapping import Inherited, LogView, SpanView

DEFAULT_MAX_SPANS = 65_536
_NOTHING_INHERITED = Inherited()


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
            try:  # drop the oldest entry: dicts keep insertion order
                del items[next(iter(items))]
            except (StopIteration, KeyError, RuntimeError):
                pass
        items[span_id] = inherited

    def get(self, span_id: int) -> Optional[Inherited]:
        return self._items.get(span_id)

    def discard(self, span_id: int) -> None:
        self._items.pop(span_id, None)

    def pop_for(self, view: SpanView) -> Inherited:
        return self._items.pop(view.span_id, None) or _NOTHING_INHERITED

    def __len__(self) -> int:
        return len(self._items)


MAX_CONTENT_SPANS = 4096
"""Content records carry prompts and answers: keep few spans' worth (orphans go first)."""


class ContentStore:
    """span_id → GenAI content log records emitted for that span, in emission order."""

    def __init__(self, max_spans: int = MAX_CONTENT_SPANS) -> None:
        self._items: Dict[int, List[LogView]] = {}
        self._max = max_spans
        self._lock = threading.Lock()

    def add(self, log: LogView) -> None:
        with self._lock:
            logs = self._items.get(log.span_id)
            if logs is None:
                if len(self._items) >= self._max:
                    del self._items[next(iter(self._items))]
                logs = self._items[log.span_id] = []
            if len(logs) < 256:
                logs.append(log)

    def pop_for(self, view: SpanView) -> List[LogView]:
        if not self._items:  # no content logs at all (the usual without a log side): skip the lock
            return []
        with self._lock:
            return self._items.pop(view.span_id, None) or []

    def __len__(self) -> int:
        return len(self._items)


# The zero-code entry points are instantiated separately by the SDK (one for
# traces, one for logs); these process-wide defaults are how they meet.
default_contexts = ContextStore()
default_content = ContentStore()
