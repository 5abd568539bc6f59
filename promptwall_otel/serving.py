"""What every server of ours shares, whatever carries the bytes: refusals, keys, decoding, memory.

Pure Python with no server library, so the gRPC front end and the HTTP
servers (``promptwall_otel.webserver``) share one set of rules:

- :class:`HttpError` is a refusal with the status and reason the client gets;
- :func:`api_key_from` reads a caller's key the way PromptWall does;
- :func:`decompress` undoes ``gzip``, ``deflate`` or ``zstd`` and never
  produces more than the caller's cap (a 1 KB bomb stops at the cap, it is
  not inflated first and measured after);
- :class:`ByteBudget` bounds the bytes of request bodies held at once across
  all requests of a process, so concurrency multiplies nothing past it;
- :class:`Limits` holds every bound and its default (the CLI's help reads
  them here, so it needs no server library).
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass
from typing import Iterator, List, Mapping, Optional

__all__ = ["HttpError", "api_key_from", "decompress", "iter_decompress", "SUPPORTED_ENCODINGS", "ByteBudget", "Limits"]


class HttpError(Exception):
    """A request we refuse, with the status and the message the client gets."""

    def __init__(self, status: int, message: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def api_key_from(headers: Mapping[str, str]) -> Optional[str]:
    """The caller's key from ``X-API-Key`` or ``Authorization: Bearer``; None if absent.

    ``headers`` must answer to the canonical spellings used here (the HTTP
    servers pass a case-insensitive view, gRPC a dict it built so).
    """
    key = (headers.get("X-API-Key") or "").strip()
    if key:
        return key
    scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


SUPPORTED_ENCODINGS = ("identity", "gzip", "deflate") + (("zstd",) if _zstd_available() else ())
"""``Content-Encoding`` values accepted, as the Collector's OTLP receiver decodes them."""

try:  # ISA-L inflates gzip at ~0.4 of zlib's CPU, its CRC included (benchmarks/README.md): the same API
    from isal import isal_zlib as _inflating

    _INFLATE_ERRORS: tuple = (zlib.error, _inflating.error)
except ImportError:  # the server extra installs it; without it, zlib
    _inflating = zlib  # type: ignore[assignment]
    _INFLATE_ERRORS = (zlib.error,)

_STEP = 1 << 20  # inflate in 1 MiB steps so the cap is checked long before memory is spent


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """``data`` decoded per ``Content-Encoding``; 413 past ``limit`` bytes, 400 if corrupt, 415 if unknown."""
    return b"".join(iter_decompress(data, encoding, limit))


def iter_decompress(data: bytes, encoding: str, limit: int) -> Iterator[bytes]:
    """``data`` decoded in pieces of at most about 1 MiB, each costing about 1 ms of CPU.

    A caller can budget memory and yield to others between pieces; the
    HttpErrors are :func:`decompress`'s, raised when the piece that shows
    the problem is reached.
    """
    if encoding in ("", "identity"):
        return iter((data,))
    if encoding == "gzip":
        return _inflate(data, _inflating.decompressobj(16 + zlib.MAX_WBITS), limit, "gzip")
    if encoding == "deflate":
        # HTTP's "deflate" is zlib-wrapped, but some clients send raw deflate; accept both as browsers do.
        wrapped = len(data) >= 2 and (data[0] & 0x0F) == 8 and int.from_bytes(data[:2], "big") % 31 == 0
        return _inflate(data, _inflating.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS), limit,
                        "deflate")  # fmt: skip
    if encoding == "zstd" and "zstd" in SUPPORTED_ENCODINGS:
        return _unzstd(data, limit)
    raise HttpError(415, f"unsupported content encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def _too_big(limit: int) -> HttpError:
    return HttpError(413, f"decompressed body exceeds {limit} bytes")


def _inflate(data: bytes, inflater: "zlib._Decompress", limit: int, name: str) -> Iterator[bytes]:
    size = 0
    pending = data
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, min(_STEP, limit + 1 - size))
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                break  # wants more input than there is: truncated
            size += len(chunk)
            if size > limit:
                raise _too_big(limit)
            yield chunk
    except _INFLATE_ERRORS as exc:
        raise HttpError(400, f"invalid {name} body: {exc}") from None
    if not inflater.eof:
        raise HttpError(400, f"invalid {name} body: truncated")


# zstd has no output cap per call, so input goes in small slices: 256 bytes hold at most 64 block
# headers, and a block expands to at most 128 KiB, so the cap is overshot by 8 MiB at worst.
_ZSTD_SLICE = 256


def _unzstd(data: bytes, limit: int) -> Iterator[bytes]:
    import zstandard

    inflater = zstandard.ZstdDecompressor().decompressobj()
    size = 0
    view = memoryview(data)
    parts: List[bytes] = []
    held = 0
    try:
        for start in range(0, len(data), _ZSTD_SLICE):
            pending = view[start:start + _ZSTD_SLICE]
            while pending:
                if inflater.eof:
                    # A further frame: the Collector (Go's decoder) reads concatenated frames too.
                    inflater = zstandard.ZstdDecompressor().decompressobj()
                chunk = inflater.decompress(pending)
                pending = inflater.unused_data if inflater.eof else b""
                if chunk:
                    size += len(chunk)
                    if size > limit:
                        raise _too_big(limit)
                    parts.append(chunk)
                    held += len(chunk)
                    if held >= _STEP:
                        yield b"".join(parts)
                        parts, held = [], 0
    except zstandard.ZstdError as exc:
        raise HttpError(400, f"invalid zstd body: {exc}") from None
    if data and not inflater.eof:
        raise HttpError(400, "invalid zstd body: truncated")
    if parts:
        yield b"".join(parts)


class ByteBudget:
    """Bytes of request bodies (raw and decompressed) a process holds at once, across all requests.

    Invariant: the sum of granted, unreleased reservations never exceeds
    ``capacity``. Callers that cannot get bytes now decide how long to wait
    (the HTTP servers poll briefly, then answer 503). Thread-safe.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._lock = threading.Lock()

    def try_reserve(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.capacity:
                return False
            self.used += n
            return True

    def release(self, n: int) -> None:
        if n:
            with self._lock:
                self.used -= n


_MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Every bound one server enforces; the defaults are documented in docs/backend.md and docs/receiver.md."""

    max_body_bytes: int = 16 * _MiB
    max_decompressed_bytes: int = 32 * _MiB
    budget_bytes: int = 128 * _MiB
    budget_wait_s: float = 1.0
    max_concurrent_requests: int = 64
    queue_wait_s: float = 1.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_idle_connections: int = 1000
    workers: int = 4

    def __post_init__(self) -> None:
        if self.budget_bytes < 2 * (self.max_body_bytes + self.max_decompressed_bytes):
            # A body is held twice for a moment, raw and decoded alike: its pieces and their join.
            raise ValueError("budget_bytes must hold one request at its caps: 2 × (max_body_bytes + max_decompressed_bytes)")
