"""Getting records to ``/v1/events``: batching, retries, spooling, replay.

Runs on the exporter's background thread only. Every record ends in exactly
one of: delivered (accepted or a known duplicate), rejected as invalid by the
backend (logged and counted), or in the spool. A record is dropped only when
the spool is off or full, and that is counted too.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

from .._ratelimit import RateLimitedLogger
from ..record import MAX_BATCH, validate_event
from ..stats import ExportStats
from .http import Answer, EventsClient, Verdict
from .spool import Spool

logger = logging.getLogger("promptwall_otel")

DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 30.0
_PAUSE_AFTER_AUTH_FAILURE_S = 60.0


try:  # 5-10x faster than json for our records (benchmarks/README.md); optional so exotic platforms still work
    import orjson

    def encode(record: Dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(record)
        except TypeError:  # lone surrogates or odd types a redact hook added: the stdlib path repairs them
            return _encode_stdlib(record)

except ImportError:  # pragma: no cover

    def encode(record: Dict[str, Any]) -> bytes:
        return _encode_stdlib(record)


def _encode_stdlib(record: Dict[str, Any]) -> bytes:
    # "replace" guarantees valid UTF-8 whatever a hook added.
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8", "replace")


def batches(lines: Sequence[bytes], max_events: int = MAX_BATCH, max_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> List[List[bytes]]:
    """Split encoded records into requests of at most ``max_events`` and about ``max_bytes`` each.

    A single record larger than the budget travels alone rather than being lost.
    """
    out: List[List[bytes]] = []
    current: List[bytes] = []
    size = 0
    for line in lines:
        if current and (len(current) >= max_events or size + len(line) + 1 > max_bytes):
            out.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append(current)
    return out


def body_of(lines: Sequence[bytes]) -> bytes:
    return b'{"events":[' + b",".join(lines) + b"]}"


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, capped."""
    ceiling = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * (2 ** attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Delivery:
    """Send, retry within a deadline, spool what is left, replay the spool when the backend is back."""

    def __init__(
        self,
        client: EventsClient,
        spool: Optional[Spool],
        stats: ExportStats,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        retry_window_s: float = 10.0,
        api_key_env: str = "PROMPTWALL_API_KEY",
        validate: bool = True,
    ) -> None:
        self.client = client
        self.spool = spool
        self.stats = stats
        self.max_batch_bytes = max_batch_bytes
        self.retry_window_s = retry_window_s
        self.api_key_env = api_key_env
        # Records from the mapping are valid by construction; a redact hook can break them.
        self.validate = validate
        self.stop_event = threading.Event()
        self._unavailable_until = 0.0
        self._inflight: Optional[Sequence[bytes]] = None
        self._log = RateLimitedLogger(logger)

    def __repr__(self) -> str:
        return f"Delivery({self.client!r}, spool={self.spool!r})"

    # --- public --------------------------------------------------------------

    def encode_record(self, record: Dict[str, Any]) -> Optional[bytes]:
        """One record as a line of the request body; None (logged, counted) if a redact hook made it invalid."""
        if self.validate:
            errors = validate_event(record)
            if errors:
                self.stats.add("rejected")
                self._log.log(logging.WARNING, "invalid", "record %s not sent, invalid: %s",
                              record.get("request_id"), "; ".join(errors))  # fmt: skip
                return None
        return encode(record)

    def encode_records(self, records: Iterable[Dict[str, Any]]) -> List[bytes]:
        if not self.validate:
            return [encode(record) for record in records]
        return [line for line in map(self.encode_record, records) if line is not None]

    def deliver(self, lines: List[bytes], deadline: Optional[float] = None) -> bool:
        """Send records encoded with :meth:`encode_record` now (retrying until ``deadline``); False only if some
        had to be dropped."""
        if not lines:
            return True
        window_end = time.monotonic() + self.retry_window_s
        deadline = min(deadline, window_end) if deadline is not None else window_end
        if not self.client.has_key:
            self._log.log(logging.ERROR, "no-key", "no PromptWall API key: set %s; records are kept in the spool",
                          self.api_key_env)  # fmt: skip
            return self._keep(lines)
        if self.stop_event.is_set() or time.monotonic() < self._unavailable_until:
            # Shutting down, or a known outage: don't wait behind retries; the replay will probe.
            return self._keep(lines)
        ok = True
        for chunk in batches(lines, MAX_BATCH, self.max_batch_bytes):
            ok = self._send(chunk, deadline) and ok
        return ok

    def replay(self, deadline: float) -> None:
        """Send spooled batches, oldest first, until the spool is empty, the backend fails, or time is up."""
        if self.spool is None or not self.client.has_key:
            return
        while time.monotonic() < deadline and not self.stop_event.is_set():
            if time.monotonic() < self._unavailable_until:
                return
            claimed = self.spool.claim()
            if claimed is None:
                return
            path, lines = claimed
            answer = self._post(lines)
            if answer.verdict is Verdict.DELIVERED:
                self._account(answer, lines)
                self.stats.add("replayed", len(lines))
                self.spool.done(path)
            elif answer.verdict is Verdict.TOO_LARGE and len(lines) > 1:
                half = len(lines) // 2
                self.spool.put(lines[:half])
                self.spool.put(lines[half:])
                self.spool.done(path)
            else:
                self.spool.release(path)
                self._note_unavailable(answer)
                return

    def keep_inflight(self) -> None:
        """Spool the batch a stuck request holds (at exit); if the request lands after all, the copy is a known duplicate."""
        lines, self._inflight = self._inflight, None
        if lines:
            self._keep(list(lines))

    # --- internals -----------------------------------------------------------

    def _post(self, lines: Sequence[bytes]) -> Answer:
        return self.client.post(body_of(lines))

    def _send(self, lines: List[bytes], deadline: float) -> bool:
        attempt = 0
        while True:
            self._inflight = lines
            answer = self._post(lines)
            self._inflight = None
            verdict = answer.verdict
            if verdict is Verdict.DELIVERED:
                self._account(answer, lines)
                self._unavailable_until = 0.0
                return True
            if verdict is Verdict.TOO_LARGE:
                if len(lines) == 1:
                    self.stats.add("rejected")
                    self._log.log(logging.WARNING, "too-large", "a %d-byte record is too large for the backend; dropped",
                                  len(lines[0]))  # fmt: skip
                    return True
                half = len(lines) // 2
                return self._send(lines[:half], deadline) & self._send(lines[half:], deadline)
            if verdict is not Verdict.RETRY:
                self._note_unavailable(answer)
                return self._keep(lines)
            delay = answer.retry_after_s if answer.retry_after_s is not None else backoff_delay(attempt)
            if time.monotonic() + delay > deadline or self.stop_event.is_set():
                self._note_unavailable(answer, delay)
                return self._keep(lines)
            self.stats.add("retried", len(lines))
            self._log.log(logging.WARNING, "retry", "PromptWall %s; retrying %d records in %.1fs",
                          answer.detail, len(lines), delay)  # fmt: skip
            if self.stop_event.wait(delay):
                return self._keep(lines)
            attempt += 1

    def _account(self, answer: Answer, lines: Sequence[bytes]) -> None:
        body = answer.body or {}
        rejected = body.get("rejected") if isinstance(body.get("rejected"), list) else []
        if answer.status == 400 and not rejected:
            self.stats.add("rejected", len(lines))
            self._log.log(logging.ERROR, "bad-batch", "PromptWall rejected a batch of %d records: %s",
                          len(lines), str(body.get("error", "no reason given"))[:300])  # fmt: skip
            return
        if rejected:
            self.stats.add("rejected", len(rejected))
            shown = "; ".join(f"[{item.get('index')}] {item.get('request_id')}: {item.get('error')}"
                              for item in rejected[:5] if isinstance(item, dict))  # fmt: skip
            self._log.log(logging.WARNING, "rejected", "PromptWall rejected %d of %d records: %s",
                          len(rejected), len(lines), shown)  # fmt: skip
        accepted = body.get("accepted")
        skipped = body.get("skipped")
        if isinstance(accepted, int) and isinstance(skipped, int):
            self.stats.add("exported", accepted)
            self.stats.add("duplicates", skipped)
        else:  # a 200 without the documented body (a proxy?): count what was sent
            self.stats.add("exported", len(lines) - len(rejected))

    def _note_unavailable(self, answer: Answer, delay: float = 0.0) -> None:
        if answer.verdict is Verdict.UNAUTHORIZED:
            pause = _PAUSE_AFTER_AUTH_FAILURE_S
            self._log.log(logging.ERROR, "auth", "PromptWall refused the API key (%s): check %s; records are kept in the spool",
                          answer.detail, self.api_key_env)  # fmt: skip
        elif answer.verdict is Verdict.MISCONFIGURED:
            pause = _PAUSE_AFTER_AUTH_FAILURE_S
            self._log.log(logging.ERROR, "endpoint", "PromptWall endpoint %s answered %s; records are kept in the spool",
                          self.client.endpoint, answer.detail)  # fmt: skip
        else:
            pause = max(delay, _BACKOFF_BASE_S)
            self._log.log(logging.WARNING, "down", "PromptWall unavailable (%s); records are kept in the spool",
                          answer.detail)  # fmt: skip
        self._unavailable_until = time.monotonic() + min(pause, _PAUSE_AFTER_AUTH_FAILURE_S)

    def _keep(self, lines: List[bytes]) -> bool:
        if self.spool is None:
            self.stats.add("dropped", len(lines))
            self._log.log(logging.ERROR, "dropped", "spool is off: %d records dropped", len(lines))
            return False
        stored, dropped = self.spool.put(lines)
        self.stats.add("spooled", stored)
        self.stats.add("dropped", dropped)
        return dropped == 0
