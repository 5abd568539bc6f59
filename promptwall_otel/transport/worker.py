"""The one sending worker: a bounded buffer, one thread, the spool, dead letters.

The in-process pipeline and the receiver both hand encoded records to a
:class:`SendingWorker` (``offer``) and never wait on the network. The worker's
thread sends request-sized batches (500 records, the byte budget) and decides
each batch's fate from the answer:

- **stored or refused as invalid** (200/207/400 per record): counted, gone;
- **too large** (413, or a 400 for the batch as a whole): split in halves
  until each part passes or one record is refused alone;
- **backend down** (no answer, 5xx, 429, a wrong key or URL): the batch goes
  to the spool and the backend is marked down with bounded, jittered backoff;
  while it is down, new batches go straight to the spool instead of waiting;
  when the backoff ends the oldest spooled batch is tried, with or without new
  traffic (``force_flush`` and ``shutdown`` try it at once);
- **this batch fails while the backend answers** (a probe right after the
  failure is answered): the batch is split until the culprit is alone. The
  probe re-sends one record the backend already stored (it is skipped as a
  duplicate, so nothing is stored or billed twice), which proves the write
  path works; before anything was delivered, an empty batch (refused with
  400) only proves the backend is up, which is enough to split but not to
  blame a record. A record whose failures the stored-record probe proved its
  own ``max_attempts`` times, spaced out, moves to the dead letters (logged
  by ``request_id``, counted ``dead_lettered``). It never blocks the other
  batches and never makes live traffic look like an outage; a backend whose
  writes fail for everyone never dead-letters anything.

Live batches and spooled ones go through the same ``_attempt``; when both are
waiting the worker alternates, so a backlog drains while live traffic flows.
Every record ends exactly one way, each counted: exported or a duplicate,
rejected, dead-lettered, or dropped (spool full or off at exit). Memory: the
buffer holds at most ``max_buffer_bytes`` of encoded records; past that the
oldest go to the spool on the offering thread (a background thread, never the
application's). Besides it, one request's worth is in flight (or being read
back from the spool), and nothing of it is kept once its answer is in; while
the backend is down the buffer is spilled at once, so an outage costs disk,
not memory (docs/memory.md).
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple, Union

from .._ratelimit import RateLimitedLogger
from ..record import MAX_BATCH
from ..stats import ExportStats
from .encoding import DEFAULT_MAX_BATCH_BYTES
from .http import Answer, Destination, Verdict
from .spool import Claim, MemorySpool, Spool

logger = logging.getLogger("promptwall_otel")

Store = Union[Spool, MemorySpool]

DEFAULT_MAX_BUFFER_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_ATTEMPTS = 5
_BACKOFF_BASE_S = 0.5
_BACKOFF_CAP_S = 10.0
_PAUSE_AFTER_REFUSAL_S = 60.0  # a wrong key or URL is not fixed by retrying sooner
_RESCAN_S = 30.0  # look for batches other processes left in a shared spool folder
_WAITING_STATUSES = frozenset({429, 503})  # the backend says "later": an outage, not a bad batch


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, capped."""
    ceiling = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * (2 ** attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class SendingWorker:
    """Delivers encoded records to one endpoint with one key. Thread-safe; never raises into callers."""

    def __init__(
        self,
        client: Destination,
        store: Store,
        stats: ExportStats,
        *,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        api_key_env: str = "PROMPTWALL_API_KEY",
        name: str = "promptwall-send",
        linger_s: float = 0.0,
    ) -> None:
        self.client = client
        # A batch smaller than a request's worth waits up to this long for more records: each request
        # costs ~1 ms of CPU whatever its size (the receiver, which offers 100 records at a time, sets
        # it). 0 sends at once; flush() and close() never wait for it.
        self.linger_s = linger_s
        self.store = store
        self.stats = stats
        self.max_batch_bytes = max_batch_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.max_attempts = max_attempts
        self.api_key_env = api_key_env
        self.name = name
        self.target = client.target  # who the records go to, in log lines
        self._log = RateLimitedLogger(logger)
        self._start()

    def _start(self) -> None:
        self._cond = threading.Condition()
        self._buffer: Deque[bytes] = collections.deque()
        self._buffer_bytes = 0
        self._send_rate = 0.0  # bytes per second the backend took in recent requests (moving average), 0: none yet
        self._busy = False
        self._closed = False
        self._inflight: Optional[List[bytes]] = None
        self._down_until = 0.0
        self._failures = 0  # consecutive "down" answers: the backoff exponent
        self._store_has_work = True  # unknown at start: earlier runs may have left batches
        self._store_checked_at = time.monotonic()
        self._prefer_store = False
        self._retry_at: Dict[str, float] = {}  # suspect batches (by spool name) and when to try them again
        self._suspects_only = False
        self._attempts: Dict[str, Tuple[int, int]] = {}  # suspect -> (failures proven its own, tries)
        self._canary: Optional[bytes] = None  # a record the backend stored: re-sending it is a harmless probe
        self._pressure_at = float("-inf")
        self._pressure = False
        self._buffered_since = 0.0  # when the buffer last went from empty to not
        self._flushing = 0  # flush() calls in progress: no lingering meanwhile
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SendingWorker({self.client!r}, store={self.store!r})"

    # --- callers ---------------------------------------------------------------

    def offer(self, lines: Sequence[bytes]) -> None:
        """Queue encoded records; past the buffer's bound the oldest go to the spool here."""
        if not lines:
            return
        spill: List[bytes] = []
        with self._cond:
            if not self._buffer:
                self._buffered_since = time.monotonic()
            self._buffer.extend(lines)
            self._buffer_bytes += sum(len(line) + 1 for line in lines)
            if self._buffer_bytes > self.max_buffer_bytes:
                target = self.max_buffer_bytes * 3 // 4
                while self._buffer and self._buffer_bytes > target:
                    line = self._buffer.popleft()
                    self._buffer_bytes -= len(line) + 1
                    spill.append(line)
                self._store_has_work = True
            self._cond.notify_all()
        if spill:
            self._keep(spill)

    @property
    def buffered_bytes(self) -> int:
        return self._buffer_bytes

    def backlog_s(self) -> float:
        """About how long sending what is buffered takes, at the rate recent requests were taken (0 before the
        first): how long the sender stays busy if nothing more comes."""
        rate = self._send_rate
        return self._buffer_bytes / rate if rate else 0.0

    def pressure(self, high_water_bytes: Optional[int] = None) -> bool:
        """True when more input would wait behind ``high_water_bytes`` (default: the buffer's bound) of
        unsent records, or would only go to a spool that is nearly full."""
        if self._buffer_bytes >= (high_water_bytes or self.max_buffer_bytes):
            return True
        now = time.monotonic()
        if now - self._pressure_at > 1.0:  # the spool's size costs a scan: at most once a second
            self._pressure = self.store.size() >= 0.9 * self.store.max_bytes
            self._pressure_at = now
        return self._pressure

    def flush(self, timeout_s: float) -> bool:
        """Send what is buffered and try the spool now, backoff or not; True if nothing is left anywhere.

        Returns once the worker has nothing it could do right now (all sent,
        or the backend refused again and the rest is in the spool), or at the
        timeout.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._flushing += 1
            try:
                self._down_until = min(self._down_until, time.monotonic())
                self._store_has_work = True
                self._suspects_only = False
                self._retry_at.clear()
                self._cond.notify_all()
                while not self._closed:
                    if not self._busy and self._next_kind(time.monotonic()) is None:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cond.wait(min(remaining, 0.1))
                return not self._buffer and not self._store_has_work
            finally:
                self._flushing -= 1

    def close(self, timeout_s: float) -> None:
        """Flush within ``timeout_s``; then whatever is buffered or in flight goes to the spool."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(0.5)
        with self._cond:
            leftover = list(self._buffer)
            self._buffer.clear()
            self._buffer_bytes = 0
            inflight, self._inflight = self._inflight, None
        if inflight:  # a request still hanging: keep its batch; if it lands after all, the copy is a duplicate
            leftover = inflight + leftover
        if leftover:
            self._keep(leftover)
        if isinstance(self.store, MemorySpool):
            lost = self.store.pending()
            if lost:
                self.stats.add("dropped", lost)
                logger.error(self.target + " unreachable at exit and the spool is off: %d records dropped", lost)
        self.client.close()

    def after_fork(self) -> None:
        """In a forked child: a new pool, a new thread, an empty buffer (the parent sends its own)."""
        self.client.after_fork()
        self._start()

    # --- the thread ------------------------------------------------------------------

    def _run(self) -> None:
        self._announce_backlog()
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    kind = self._next_kind(now)
                    if kind is not None:
                        break
                    self._cond.wait(self._idle_wait(now))
                self._busy = True
                lines: List[bytes] = []
                if kind in ("live", "spill"):
                    lines = self._take(everything=kind == "spill")
                    self._inflight = lines if kind == "live" else None
                self._prefer_store = kind == "live"
            try:
                if kind == "spill":
                    self._keep(lines)
                elif kind == "live":
                    self._attempt(lines, None)
                else:
                    self._replay_one()
            except Exception:  # never kill the thread: the next batch must still go
                self._log.log(logging.ERROR, "send", self.target + " send failed", exc_info=True)
            finally:
                with self._cond:
                    self._busy = False
                    self._inflight = None
                    self._cond.notify_all()

    def _next_kind(self, now: float) -> Optional[str]:
        """What the thread should do now (caller holds the lock): live, spill, store, or nothing."""
        down = now < self._down_until or not self.client.has_key
        if self._buffer:
            if down:
                return "spill"
            if not (self._prefer_store and self._store_due(now)) and not self._lingering(now):
                return "live"
        if not down and self._store_due(now):
            return "store"
        return None

    def _lingering(self, now: float) -> bool:
        """A partial batch that may still wait for more records (caller holds the lock)."""
        return bool(self.linger_s) and not self._flushing and len(self._buffer) < MAX_BATCH \
            and self._buffer_bytes < self.max_batch_bytes and now < self._buffered_since + self.linger_s  # fmt: skip

    def _store_due(self, now: float) -> bool:
        if not self._store_has_work and now - self._store_checked_at > _RESCAN_S:
            self._store_has_work, self._store_checked_at = True, now
        if not self._store_has_work:
            return False
        if self._suspects_only:  # the last look found only suspects waiting out their spacing
            return min(self._retry_at.values(), default=now) <= now
        return True

    def _idle_wait(self, now: float) -> Optional[float]:
        waits = [_RESCAN_S]
        if self._buffer and self.linger_s:
            waits.append(self._buffered_since + self.linger_s - now)
        if self._store_has_work or self._buffer:
            if now < self._down_until:
                waits.append(self._down_until - now)
            if self._retry_at:
                waits.append(min(self._retry_at.values()) - now)
        return max(0.01, min(waits))

    def _take(self, everything: bool) -> List[bytes]:
        """One request's worth of the buffer (all of it when spilling); caller holds the lock."""
        taken: List[bytes] = []
        size = 0
        buffer = self._buffer
        while buffer:
            line = buffer[0]
            if not everything and taken and (len(taken) >= MAX_BATCH or size + len(line) + 1 > self.max_batch_bytes):
                break
            buffer.popleft()
            taken.append(line)
            size += len(line) + 1
        self._buffer_bytes -= size
        return taken

    def _replay_one(self) -> None:
        now = time.monotonic()
        waiting = frozenset(name for name, at in self._retry_at.items() if at > now)
        claim = self.store.claim(exclude=waiting)
        with self._cond:
            if claim is None:
                self._suspects_only = bool(waiting)
                if not waiting:
                    self._store_has_work = False
                    self._store_checked_at = now
                return
            self._suspects_only = False
        self._retry_at.pop(claim.name, None)
        self._attempt(claim.lines, claim)

    # --- one request and what follows from its answer -------------------------------------

    def _attempt(self, lines: List[bytes], claim: Optional[Claim]) -> None:
        if self._closed:
            self._keep_back(lines, claim)
            return
        started = time.monotonic()
        answer = self.client.send(lines)
        verdict = answer.verdict
        if verdict is Verdict.DELIVERED and answer.status == 400 and not _rejected_items(answer) and len(lines) > 1:
            verdict = Verdict.TOO_LARGE  # refused as a whole (too many, too big): the halves may pass
        if verdict is Verdict.DELIVERED:
            self._note_rate(lines, time.monotonic() - started)
            if answer.status == 200:
                self._canary = min(lines, key=len)
            self._account(answer, lines)
            if claim is not None:
                self.stats.add("replayed", len(lines))
                self._attempts.pop(claim.name, None)
                self.store.done(claim)
            self._backend_up()
        elif verdict is Verdict.TOO_LARGE:
            self._backend_up()
            if len(lines) == 1:
                self.stats.add("rejected")
                self._log.log(logging.WARNING, "too-large", self.target + " refused record %s alone (%s, %d bytes); dropped",
                              _request_id(lines[0]), answer.detail, len(lines[0]))  # fmt: skip
                if claim is not None:
                    self.store.done(claim)
                return
            self._split(lines, claim)
        else:
            # No answer, or a 5xx that is not "later": this batch's fault, or the backend's? Ask.
            proof = self._probe() if verdict is Verdict.RETRY and answer.status not in _WAITING_STATUSES \
                and answer.retry_after_s is None else None  # fmt: skip
            if proof is None:
                self._keep_back(lines, claim)
                self._backend_down(answer)
            else:
                self._suspect(lines, claim, answer, proven=proof)

    def _note_rate(self, lines: Sequence[bytes], seconds: float) -> None:
        """Fold one delivered request into the send rate (a moving average that follows a change in a few)."""
        if seconds <= 0:
            return
        rate = sum(len(line) + 1 for line in lines) / seconds
        self._send_rate = rate if not self._send_rate else 0.7 * self._send_rate + 0.3 * rate

    def _split(self, lines: List[bytes], claim: Optional[Claim]) -> None:
        half = len(lines) // 2
        if claim is not None:
            self.store.split(claim, [lines[:half], lines[half:]])
            with self._cond:
                self._store_has_work, self._suspects_only = True, False
        else:
            self._attempt(lines[:half], None)
            self._attempt(lines[half:], None)

    def _probe(self) -> Optional[bool]:
        """Is the backend up (None: no), and does a real write work (True) or is that unknown (False)?"""
        canary = self._canary
        probe = self.client.send([canary]) if canary is not None else self.client.answers()
        if probe.verdict not in (Verdict.DELIVERED, Verdict.TOO_LARGE):
            return None
        return canary is not None and probe.status == 200

    def _suspect(self, lines: List[bytes], claim: Optional[Claim], answer: Answer, proven: bool) -> None:
        """This batch failed while the backend answers: narrow it down to the record at fault."""
        if claim is None:  # live: it continues from the spool, where attempts are counted by name
            self._keep(lines)
            return
        if len(lines) > 1:
            self._split(lines, claim)
            return
        attempts, tries = self._attempts.get(claim.name, (0, 0))
        attempts += proven
        if attempts < self.max_attempts:
            self._attempts[claim.name] = (attempts, tries + 1)
            self._retry_at[claim.name] = time.monotonic() + backoff_delay(tries)
            self.store.release(claim)
            return
        self._attempts.pop(claim.name, None)
        self.store.dead_letter(claim)
        self.stats.add("dead_lettered")
        where = getattr(self.store, "dead_directory", None)
        logger.error(self.target + ": record %s failed %d times (%s) while the backend answered other requests; "
                     "dead-lettered%s", _request_id(lines[0]), attempts, answer.detail,
                     f" to {where}" if where else " (spool off: dropped)")  # fmt: skip

    def _keep_back(self, lines: List[bytes], claim: Optional[Claim]) -> None:
        if claim is not None:
            self.store.release(claim)
        else:
            self._keep(lines)

    def _keep(self, lines: List[bytes]) -> None:
        """Into the spool; what its cap cannot hold is dropped, counted and logged by the spool."""
        stored, dropped = self.store.put(lines)
        self.stats.add("spooled", stored)
        self.stats.add("dropped", dropped)
        if stored:
            with self._cond:
                self._store_has_work, self._suspects_only = True, False
        if not self.client.has_key:
            self._log.log(logging.ERROR, "no-key", "no " + self.target + " API key: set %s; %d records kept in %r until then",
                          self.api_key_env, stored, self.store)  # fmt: skip

    def _backend_up(self) -> None:
        if self._failures:
            logger.warning(self.target + " at %s answers again; sending what the spool holds", self.client.endpoint)
        self._failures = 0
        self._down_until = 0.0

    def _backend_down(self, answer: Answer) -> None:
        if answer.verdict in (Verdict.UNAUTHORIZED, Verdict.MISCONFIGURED):
            pause = _PAUSE_AFTER_REFUSAL_S
            what = "refused the API key (check %s)" % self.api_key_env if answer.verdict is Verdict.UNAUTHORIZED \
                else "is not a %s endpoint" % self.client.endpoint_kind  # fmt: skip
            self._log.log(logging.ERROR, "refused", self.target + " at %s %s: %s; records are kept in the spool",
                          self.client.endpoint, what, answer.detail)  # fmt: skip
        else:
            pause = answer.retry_after_s if answer.retry_after_s is not None else backoff_delay(self._failures)
            pause = min(pause, _PAUSE_AFTER_REFUSAL_S)
            self._log.log(logging.WARNING, "down", self.target + " unavailable (%s); records are kept in the spool, "
                          "next try in %.1fs", answer.detail, pause)  # fmt: skip
        self._failures += 1
        with self._cond:
            self._down_until = time.monotonic() + pause

    def _account(self, answer: Answer, lines: Sequence[bytes]) -> None:
        body = answer.body or {}
        rejected = _rejected_items(answer)
        if answer.status == 400 and not rejected:  # one record refused as a whole
            self.stats.add("rejected", len(lines))
            self._log.log(logging.ERROR, "bad-batch", self.target + " rejected record %s: %s", _request_id(lines[0]),
                          str(body.get("error", "no reason given"))[:300])  # fmt: skip
            return
        if rejected:
            self.stats.add("rejected", len(rejected))
            shown = "; ".join(f"[{item.get('index')}] {item.get('request_id')}: {item.get('error')}"
                              for item in rejected[:5] if isinstance(item, dict))  # fmt: skip
            self._log.log(logging.WARNING, "rejected", self.target + " rejected %d of %d records: %s",
                          len(rejected), len(lines), shown)  # fmt: skip
        accepted = body.get("accepted")
        skipped = body.get("skipped")
        if isinstance(accepted, int) and isinstance(skipped, int):
            self.stats.add("exported", accepted)
            self.stats.add("duplicates", skipped)
        else:  # a 200 without the documented body (a proxy?): count what was sent
            self.stats.add("exported", len(lines) - len(rejected))

    def _announce_backlog(self) -> None:
        try:
            waiting = self.store.pending()
        except OSError:
            return
        if waiting:
            logger.warning(self.target + ": %d records from earlier runs wait in %r; sending them to %s with the current key",
                           waiting, self.store, self.client.endpoint)  # fmt: skip


def _rejected_items(answer: Answer) -> List[Any]:
    body = answer.body or {}
    rejected = body.get("rejected")
    return rejected if isinstance(rejected, list) else []


def _request_id(line: bytes) -> str:
    """A record's ``request_id`` for a log line, without decoding (or logging) its content."""
    start = line.find(b'"request_id":"')
    if start < 0:
        return "(unknown)"
    start += len(b'"request_id":"')
    end = line.find(b'"', start)
    return line[start:end if end > 0 else start + 64][:64].decode("utf-8", "replace")
