"""What ``serve`` says as events arrive: one summary line every few seconds, never per request.

Counts per App and model are gathered on the request path (a dict update
under a lock) and printed by a daemon thread at most every ``interval_s``, so
a burst costs no more log lines than a trickle and the request path never
waits on the terminal. App names are the backend's labels, never keys.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Counter, Dict, Iterable, Optional, Tuple

logger = logging.getLogger("promptwall_otel.backend")


class Arrivals:
    def __init__(self, interval_s: float = 2.0) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._counts: Dict[str, Counter[str]] = {}
        self._total = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def note(self, app: str, accepted: int, models: Iterable[Optional[str]]) -> None:
        if accepted <= 0:
            return
        with self._lock:
            counts = self._counts.setdefault(app, collections.Counter())
            for model in models:
                counts[model or "(no model)"] += 1
            self._total += accepted
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="promptwall-arrivals", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            line = self.take()
            if line:
                logger.info("%s", line)

    def take(self) -> Optional[str]:
        """The summary of what arrived since the last one; None if nothing did."""
        with self._lock:
            counts, self._counts = self._counts, {}
            total, self._total = self._total, 0
        if not total:
            return None
        parts = []
        for app, models in sorted(counts.items()):
            shown: Tuple[str, ...] = tuple(f"{model} {n}" for model, n in models.most_common(3))
            more = len(models) - len(shown)
            if not shown:
                parts.append(f"App {app}")
                continue
            parts.append(f"App {app}: " + ", ".join(shown) + (f", +{more} models" if more > 0 else ""))
        return f"stored {total} events ({'; '.join(parts)})"

    def close(self) -> None:
        self._stop.set()
