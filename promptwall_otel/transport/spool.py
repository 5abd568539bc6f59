"""On-disk queue for records the backend could not take yet.

One file per batch (JSON lines, one encoded record a line), named by time and
a sequence so that replay goes oldest first. Files are written to a temporary
name and renamed, so a killed process leaves either a whole batch or nothing.
Replaying a file claims it by renaming, so several processes sharing one
spool directory (gunicorn workers) never send the same file at once; and
since ``request_id`` is deterministic, a file sent twice after a crash is
stored once anyway.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

logger = logging.getLogger("promptwall_otel")

_SUFFIX = ".jsonl"
_CLAIMED = ".claimed"
_CORRUPT = ".corrupt"
_STALE_CLAIM_S = 300.0


class Spool:
    """A size-capped directory of pending batches. Thread- and process-safe."""

    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self._sequence = itertools.count()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Spool({str(self.directory)!r}, max_bytes={self.max_bytes})"

    def _ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def put(self, lines: Sequence[bytes]) -> Tuple[int, int]:
        """Store encoded records as one file; returns (stored, dropped to respect the size cap).

        When the spool is full the oldest files go first: the newest records are
        the ones a restarted backend is least likely to have.
        """
        if not lines:
            return 0, 0
        data = b"\n".join(lines) + b"\n"
        with self._lock:
            self._ensure_dir()
            dropped = self._make_room(len(data))
            if len(data) > self.max_bytes:
                return 0, len(lines) + dropped
            name = f"{time.time_ns():020d}-{os.getpid():07d}-{next(self._sequence):06d}"
            temporary = self.directory / f".{name}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.directory / (name + _SUFFIX))
        return len(lines), dropped

    def _files(self) -> List[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(_SUFFIX))
        except FileNotFoundError:
            return []

    def size(self) -> int:
        total = 0
        for path in self._files():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def pending(self) -> int:
        """Number of batches waiting (unclaimed)."""
        return len(self._files())

    def _make_room(self, incoming: int) -> int:
        dropped = 0
        files = self._files()
        total = sum(_size(p) for p in files)
        while files and total + incoming > self.max_bytes:
            oldest = files.pop(0)
            lines = _count_lines(oldest)
            size = _size(oldest)
            try:
                oldest.unlink()
            except FileNotFoundError:
                continue
            total -= size
            dropped += lines
        if dropped:
            logger.error("spool %s is full (%d bytes): dropped the %d oldest records", self.directory, self.max_bytes, dropped)
        return dropped

    def claim(self) -> Optional[Tuple[Path, List[bytes]]]:
        """The oldest batch, renamed so no other process takes it; None when empty.

        A file that cannot be parsed as lines is set aside as ``.corrupt`` with a
        warning and the next one is tried.
        """
        self._release_stale_claims()
        for path in self._files():
            claimed = path.with_name(f"{path.name}{_CLAIMED}-{os.getpid()}")
            try:
                os.replace(path, claimed)
            except FileNotFoundError:
                continue  # another process claimed it first
            try:
                lines = [line for line in claimed.read_bytes().split(b"\n") if line.strip()]
                for line in lines:
                    if not (line.startswith(b"{") and line.rstrip().endswith(b"}")):
                        raise ValueError("not a JSON object per line")
            except (OSError, ValueError) as exc:
                aside = path.with_name(path.name + _CORRUPT)
                os.replace(claimed, aside)
                logger.warning("spool file %s is corrupt (%s); set aside as %s", path.name, exc, aside.name)
                continue
            return claimed, lines
        return None

    def done(self, claimed: Path) -> None:
        """The claimed batch was delivered (or rejected for good): forget it."""
        try:
            claimed.unlink()
        except FileNotFoundError:
            pass

    def release(self, claimed: Path) -> None:
        """The claimed batch could not be delivered: put it back, still oldest."""
        original = claimed.name.split(_CLAIMED, 1)[0]
        try:
            os.replace(claimed, claimed.with_name(original))
        except FileNotFoundError:
            pass

    def _release_stale_claims(self) -> None:
        """Claims of processes that died mid-replay go back to the queue."""
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:
            return
        now = time.time()
        for path in entries:
            if _CLAIMED not in path.name:
                continue
            pid_text = path.name.rsplit("-", 1)[-1]
            alive = pid_text.isdigit() and _pid_alive(int(pid_text))
            try:
                stale = now - path.stat().st_mtime > _STALE_CLAIM_S
            except FileNotFoundError:
                continue
            if not alive or (stale and int(pid_text) != os.getpid()):
                self.release(path)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


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
