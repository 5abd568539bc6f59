"""Where records wait while the backend cannot take them: on disk (:class:`Spool`) or in memory.

A spool holds request-sized batches: every file (or memory slot) is at most
one request's worth (500 records, the byte budget), so a replayed batch obeys
the same limits as a live one. Invariants of the disk spool:

- **Whole batches or nothing.** A file is written gzip-compressed under a
  temporary name and renamed; a killed process leaves a whole batch or none.
- **Private.** Folders are created 0700 and files 0600 (``O_EXCL``, so no
  window where another user can read prompts and answers).
- **Oldest first, one sender at a time.** Names sort by time; replaying a file
  claims it by renaming, so processes sharing a folder (gunicorn workers) never
  send one file twice at once. Claims of dead processes go back to the queue.
  ``request_id`` is deterministic, so a file sent twice after a crash is
  stored once anyway.
- **Bounded.** Past ``max_bytes`` the oldest batches are dropped; the count of
  records dropped is returned, so callers count and log it.
- **Counted without reading.** Each name carries its record count (``-nN``).
- **Dead letters** (records that failed while the backend was answering
  others) go to ``dead/`` beside the queue, out of the replay order; an
  operator lists, replays or purges them (``promptwall-otel spool``).
"""

from __future__ import annotations

import collections
import gzip
import itertools
import logging
import os
import re
import threading
import time
import zlib
from pathlib import Path
from typing import Deque, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from .._ratelimit import RateLimitedLogger
from ..private_files import make_private_dir, write_private
from ..record import MAX_BATCH
from .encoding import DEFAULT_MAX_BATCH_BYTES, batches

logger = logging.getLogger("promptwall_otel")

_GZ = ".jsonl.gz"
_PLAIN = ".jsonl"  # written by earlier versions; still read
_CLAIMED = ".claimed-"
_CORRUPT = ".corrupt"
_DEAD = "dead"
_STALE_CLAIM_S = 300.0
_RESCAN_S = 5.0
_COUNT = re.compile(r"-n(\d+)\.jsonl(?:\.gz)?$")
_GZIP_LEVEL = 3  # a few times smaller than level 1 costs little here: spooling runs on the sending thread


class Claim(NamedTuple):
    """A batch taken out of the queue for sending: ``done``, ``release`` or ``split`` it."""

    path: Path
    lines: List[bytes]

    @property
    def name(self) -> str:
        return self.path.name.split(_CLAIMED, 1)[0]


def _is_batch(name: str) -> bool:
    return (name.endswith(_GZ) or name.endswith(_PLAIN)) and not name.startswith(".")


def count_of(path: Path) -> int:
    """Records in a batch file: from its name (``-nN``), else by reading it (files of earlier versions)."""
    match = _COUNT.search(path.name)
    if match:
        return int(match.group(1))
    try:
        return len(_read_lines(path))
    except (OSError, ValueError):
        return 0


def _read_lines(path: Path) -> List[bytes]:
    data = path.read_bytes()
    if path.name.split(_CLAIMED, 1)[0].endswith(_GZ):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"not gzip: {exc}") from None
    lines = [line for line in data.split(b"\n") if line.strip()]
    for line in lines:
        if not (line.startswith(b"{") and line.rstrip().endswith(b"}")):
            raise ValueError("not a JSON object per line")
    return lines


class Spool:
    """A size-capped folder of pending batches, and its dead letters. Thread- and process-safe."""

    def __init__(self, directory: str, max_bytes: int, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> None:
        self.directory = Path(directory)
        self.dead_directory = self.directory / _DEAD
        self.max_bytes = max_bytes
        self.max_batch_bytes = max_batch_bytes
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        # Queued (unclaimed) files -> (bytes, records); rescanned now and then for other processes' files.
        self._index: Dict[str, Tuple[int, int]] = {}
        self._indexed_at = float("-inf")
        self._ready = False
        self._log = RateLimitedLogger(logger)
        self._dropped_total = 0

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, max_bytes={self.max_bytes})"

    # --- queue ---------------------------------------------------------------

    def put(self, lines: Sequence[bytes]) -> Tuple[int, int]:
        """Store encoded records in request-sized files; returns (stored, dropped to respect the cap).

        When the spool is full the oldest batches go first: the newest records
        are the ones a restarted backend is least likely to have.
        """
        stored = dropped = 0
        for part in batches(lines, MAX_BATCH, self.max_batch_bytes):
            name = f"{time.time_ns():020d}-{os.getpid():07d}-{next(self._sequence):06d}"
            s, d = self._write(name, part)
            stored, dropped = stored + s, dropped + d
        return stored, dropped

    def _write(self, stem: str, lines: Sequence[bytes]) -> Tuple[int, int]:
        data = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=_GZIP_LEVEL, mtime=0)
        name = f"{stem}-n{len(lines)}{_GZ}"
        with self._lock:
            self._ensure_dir()
            dropped = self._make_room(len(data))
            if len(data) > self.max_bytes:
                return 0, len(lines) + dropped
            write_private(self.directory / name, data)
            self._index[name] = (len(data), len(lines))
        return len(lines), dropped

    def _ensure_dir(self) -> None:
        if not self._ready:
            make_private_dir(self.directory)
            self._ready = True

    def _scan(self, force: bool = False) -> Dict[str, Tuple[int, int]]:
        """The queued files, oldest first (cached; rescanned every few seconds)."""
        now = time.monotonic()
        if force or now - self._indexed_at > _RESCAN_S:
            index: Dict[str, Tuple[int, int]] = {}
            try:
                entries = sorted(p for p in self.directory.iterdir() if _is_batch(p.name))
            except FileNotFoundError:
                entries = []
            for path in entries:
                known = self._index.get(path.name)
                if known is None:
                    try:
                        known = (path.stat().st_size, count_of(path))
                    except FileNotFoundError:
                        continue
                index[path.name] = known
            self._index, self._indexed_at = index, now
        return self._index

    def _make_room(self, incoming: int) -> int:
        index = self._scan()
        total = sum(size for size, _ in index.values())
        dropped = 0
        if total + incoming > self.max_bytes:
            for name in sorted(index):
                if total + incoming <= self.max_bytes:
                    break
                size, count = index.pop(name)
                try:
                    (self.directory / name).unlink()
                except FileNotFoundError:
                    continue
                total -= size
                dropped += count
        if dropped:  # once a minute with the figures, however often it happens
            self._dropped_total += dropped
            self._log.log(logging.ERROR, "full", "spool %s is full (%d bytes): dropped the %d oldest records "
                          "(%d since start)", self.directory, self.max_bytes, dropped, self._dropped_total)  # fmt: skip
        return dropped

    def size(self) -> int:
        with self._lock:
            return sum(size for size, _ in self._scan().values())

    def pending(self) -> int:
        """Records waiting (unclaimed)."""
        with self._lock:
            return sum(count for _, count in self._scan().values())

    def claim(self, exclude: "frozenset[str]" = frozenset()) -> Optional[Claim]:
        """The oldest batch not in ``exclude``, renamed so no other process takes it; None when empty.

        A file that cannot be read is set aside as ``.corrupt`` with a warning
        and the next one is tried.
        """
        with self._lock:
            self._release_stale_claims()
            for name in sorted(self._scan()):
                if name in exclude:
                    continue
                path = self.directory / name
                claimed = path.with_name(f"{name}{_CLAIMED}{os.getpid()}")
                self._index.pop(name, None)
                try:
                    os.replace(path, claimed)
                except FileNotFoundError:
                    continue  # another process claimed it first
                try:
                    return Claim(claimed, _read_lines(claimed))
                except (OSError, ValueError) as exc:
                    aside = path.with_name(name + _CORRUPT)
                    os.replace(claimed, aside)
                    logger.warning("spool file %s is corrupt (%s); set aside as %s", name, exc, aside.name)
            if self._index and not exclude:
                self._indexed_at = float("-inf")  # files vanished under us: look again next time
            return None

    def done(self, claim: Claim) -> None:
        """The claimed batch was delivered (or rejected for good): forget it."""
        try:
            claim.path.unlink()
        except FileNotFoundError:
            pass

    def release(self, claim: Claim) -> None:
        """The claimed batch could not be delivered: put it back, still in its place."""
        with self._lock:
            self._unclaim(claim.path)

    def _unclaim(self, claimed: Path) -> None:
        original = claimed.name.split(_CLAIMED, 1)[0]
        try:
            os.replace(claimed, claimed.with_name(original))
            self._index[original] = (claimed.with_name(original).stat().st_size, count_of(claimed.with_name(original)))
        except FileNotFoundError:
            pass

    def split(self, claim: Claim, parts: Sequence[Sequence[bytes]]) -> None:
        """Replace a claimed batch by ``parts``, in its place in the order (to find one bad record)."""
        stem = _COUNT.split(claim.name)[0]
        with self._lock:
            for i, part in enumerate(parts):
                data = gzip.compress(b"\n".join(part) + b"\n", compresslevel=_GZIP_LEVEL, mtime=0)
                name = f"{stem}.{i}-n{len(part)}{_GZ}"
                write_private(self.directory / name, data)
                self._index[name] = (len(data), len(part))
        self.done(claim)

    def _release_stale_claims(self) -> None:
        """Claims of processes that died mid-replay go back to the queue."""
        try:
            entries = [p for p in self.directory.iterdir() if _CLAIMED in p.name]
        except FileNotFoundError:
            return
        now = time.time()
        for path in entries:
            pid_text = path.name.rsplit("-", 1)[-1]
            alive = pid_text.isdigit() and _pid_alive(int(pid_text))
            try:
                stale = now - path.stat().st_mtime > _STALE_CLAIM_S
            except FileNotFoundError:
                continue
            if not alive or (stale and int(pid_text) != os.getpid()):
                self._unclaim(path)

    # --- dead letters ----------------------------------------------------------

    def dead_letter(self, claim: Claim) -> None:
        """Move a claimed batch out of the queue into ``dead/``."""
        with self._lock:
            make_private_dir(self.dead_directory)
            os.replace(claim.path, self.dead_directory / claim.name)

    def dead_letters(self) -> List[Path]:
        try:
            return sorted(p for p in self.dead_directory.iterdir() if _is_batch(p.name))
        except FileNotFoundError:
            return []

    def revive(self) -> int:
        """Dead letters back into the queue (after the cause was fixed); returns the records moved."""
        moved = 0
        with self._lock:
            self._ensure_dir()
            for path in self.dead_letters():
                moved += count_of(path)
                os.replace(path, self.directory / path.name)
            self._indexed_at = float("-inf")
        return moved

    def purge(self, dead: bool = False) -> int:
        """Delete the queue (or the dead letters); returns the records deleted."""
        deleted = 0
        with self._lock:
            paths = self.dead_letters() if dead else [self.directory / name for name in self._scan(force=True)]
            for path in paths:
                count = count_of(path)
                try:
                    path.unlink()
                    deleted += count
                except FileNotFoundError:
                    pass
            self._indexed_at = float("-inf")
        return deleted

    def files(self) -> Iterator[Tuple[str, int, int]]:
        """(name, bytes, records) of each queued batch, oldest first."""
        with self._lock:
            items = sorted(self._scan(force=True).items())
        for name, (size, count) in items:
            yield name, size, count


class MemorySpool:
    """The spool's interface in memory, for ``spool=False``: outages survive, a restart does not.

    Bounded by ``max_bytes`` (oldest dropped first, counted); what is left at
    exit is counted as dropped by the worker. Dead letters are dropped (and
    counted as such by the worker): there is nowhere to keep them.
    """

    def __init__(self, max_bytes: int, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> None:
        self.max_bytes = max_bytes
        self.max_batch_bytes = max_batch_bytes
        self._batches: Deque[Tuple[str, List[bytes], int]] = collections.deque()
        self._bytes = 0
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._log = RateLimitedLogger(logger)

    def __repr__(self) -> str:
        return f"MemorySpool(max_bytes={self.max_bytes})"

    def put(self, lines: Sequence[bytes]) -> Tuple[int, int]:
        stored = dropped = 0
        with self._lock:
            for part in batches(lines, MAX_BATCH, self.max_batch_bytes):
                size = sum(len(line) + 1 for line in part)
                while self._batches and self._bytes + size > self.max_bytes:
                    _, old, old_size = self._batches.popleft()
                    self._bytes -= old_size
                    dropped += len(old)
                if size > self.max_bytes:
                    dropped += len(part)
                    continue
                self._batches.append((f"{next(self._sequence):012d}", list(part), size))
                self._bytes += size
                stored += len(part)
        if dropped:
            self._log.log(logging.ERROR, "full", "in-memory retry buffer full (%d bytes, spool off): dropped the %d "
                          "oldest records", self.max_bytes, dropped)  # fmt: skip
        return stored, dropped

    def size(self) -> int:
        return self._bytes

    def pending(self) -> int:
        with self._lock:
            return sum(len(lines) for _, lines, _ in self._batches)

    def claim(self, exclude: "frozenset[str]" = frozenset()) -> Optional[Claim]:
        with self._lock:
            for index, (name, lines, size) in enumerate(self._batches):
                if name not in exclude:
                    del self._batches[index]
                    self._bytes -= size
                    return Claim(Path(name), lines)
        return None

    def done(self, claim: Claim) -> None:
        pass

    def release(self, claim: Claim) -> None:
        self._insert([(claim.name, claim.lines)])

    def split(self, claim: Claim, parts: Sequence[Sequence[bytes]]) -> None:
        self._insert([(f"{claim.name}.{i}", list(part)) for i, part in enumerate(parts)])

    def _insert(self, items: Sequence[Tuple[str, List[bytes]]]) -> None:
        with self._lock:
            for name, lines in items:
                size = sum(len(line) + 1 for line in lines)
                self._batches.append((name, lines, size))
                self._bytes += size
            ordered = sorted(self._batches)
            self._batches.clear()
            self._batches.extend(ordered)

    def dead_letter(self, claim: Claim) -> None:
        pass  # nowhere to keep it: the worker counts and logs it


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
