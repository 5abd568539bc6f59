"""One request in flight while the next batch is mapped.

Mapping is CPU work; a request is mostly waiting (the backend parses and
stores the batch, the network adds its round trip). Done one after the other,
the waiting caps throughput at one batch per (mapping + round trip) and makes
every flush wait for each round trip in turn. :class:`BackgroundSender` posts
a batch on its own thread while the caller maps the next one; at most one
batch is in flight and at most one more waits, so memory stays bounded.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, List, Optional, Tuple

from .._ratelimit import RateLimitedLogger

logger = logging.getLogger("promptwall_otel")

Send = Callable[[List[bytes], float], object]
"""Posts encoded records, retrying until the deadline (``monotonic()`` seconds); spools what is left."""


class BackgroundSender:
    """Runs ``send`` for one batch at a time on a daemon thread."""

    def __init__(self, send: Send, stop_event: threading.Event) -> None:
        self._send = send
        self._stop_event = stop_event
        self._changed = threading.Condition()
        self._job: Optional[Tuple[List[bytes], float]] = None
        self._busy = False
        self._log = RateLimitedLogger(logger)
        self._thread = threading.Thread(target=self._run, name="promptwall-send", daemon=True)
        self._thread.start()

    def submit(self, lines: List[bytes], deadline: float) -> None:
        """Hand ``lines`` over once the previous batch is done; returns without waiting for this one.

        If shutdown begins while the previous request is still in flight, the
        batch is sent (that is, spooled: the stop event is set) right here.
        """
        with self._changed:
            while self._busy and not self._stop_event.is_set():
                self._changed.wait(0.05)
            if not self._busy:
                self._job, self._busy = (lines, deadline), True
                self._changed.notify_all()
                return
        self._send_logged(lines, deadline)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once nothing is in flight (within ``timeout`` seconds, if given)."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._busy, timeout)

    @property
    def busy(self) -> bool:
        return self._busy

    def _run(self) -> None:
        while True:
            with self._changed:
                while self._job is None:
                    self._changed.wait()
                lines, deadline = self._job
                self._job = None
            try:
                self._send_logged(lines, deadline)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _send_logged(self, lines: List[bytes], deadline: float) -> None:
        try:
            self._send(lines, deadline)
        except Exception:  # never kill the thread: the next batch must still go
            self._log.log(logging.ERROR, "send", "PromptWall send failed", exc_info=True)
