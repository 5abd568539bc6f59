"""Log lines that cannot flood: an outage logs once per interval, with a count of the rest."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, Tuple


class RateLimitedLogger:
    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval_s
        self._lock = threading.Lock()
        self._last: Dict[str, Tuple[float, int]] = {}

    def log(self, level: int, key: str, message: str, *args: Any, exc_info: bool = False) -> None:
        """Log unless ``key`` was logged less than the interval ago; then say how many were held back."""
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (float("-inf"), 0))
            if now - last < self._interval:
                self._last[key] = (last, suppressed + 1)
                return
            self._last[key] = (now, 0)
        if suppressed:
            message += f" ({suppressed} similar messages suppressed)"
        self._logger.log(level, message, *args, exc_info=exc_info)
