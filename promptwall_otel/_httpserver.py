"""What every HTTP endpoint of ours needs: bounded bodies, gzip, JSON replies, keys.

Built on the standard library's threading HTTP server so that the embedded
backend and the receiver add no web-framework dependency: each request runs on
its own thread, which suits SQLite and blocking forwarding alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Mapping, Optional, Tuple

logger = logging.getLogger("promptwall_otel")


_MAX_DISCARD_BYTES = 64 * 1024 * 1024


class HttpError(Exception):
    """A request we refuse, with the status and the message the client gets."""

    def __init__(self, status: int, message: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def api_key_from(headers: Mapping[str, str]) -> Optional[str]:
    """The caller's key from ``X-API-Key`` or ``Authorization: Bearer``; None if absent."""
    key = (headers.get("X-API-Key") or "").strip()
    if key:
        return key
    scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def key_fingerprint(key: str) -> str:
    """A short, non-reversible label for a key, safe to store and show."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def gunzip_capped(data: bytes, limit: int) -> bytes:
    """Decompress gzip, refusing with 413 once the output would pass ``limit`` (gzip bombs)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise HttpError(413, f"decompressed body exceeds {limit} bytes")
        out += inflater.flush()
    except zlib.error as exc:
        raise HttpError(400, f"invalid gzip body: {exc}") from None
    if len(out) > limit:
        raise HttpError(413, f"decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise HttpError(400, "invalid gzip body: truncated")
    return out


class QuietServer(ThreadingHTTPServer):
    """Threading server whose worker threads never keep the process alive."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class JsonHandler(BaseHTTPRequestHandler):
    """Request plumbing shared by our endpoints; subclasses route and decide."""

    protocol_version = "HTTP/1.1"
    server_version = "promptwall-otel"
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK adds ~40 ms.
    disable_nagle_algorithm = True
    sys_version = ""

    def parse_request(self) -> bool:
        # One handler serves every request of a kept-alive connection.
        self._body_read = False
        return super().parse_request()

    def read_body(
        self, max_bytes: int, max_decompressed: int, content_types: Iterable[str]
    ) -> Tuple[bytes, str]:
        """The request body, decompressed and within limits, and its media type.

        Everything that is wrong with the envelope becomes an :class:`HttpError`
        before a byte is parsed, so nothing downstream sees half a request.
        """
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "invalid Content-Length") from None
        if length < 0:
            raise HttpError(400, "invalid Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise HttpError(411, "chunked bodies are not accepted; send Content-Length")
        try:
            media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            allowed = tuple(content_types)
            if media_type not in allowed:
                raise HttpError(
                    415, f"unsupported content type {media_type or '(none)'!r}; use {', '.join(allowed)}"
                )
            encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
            if encoding not in ("identity", "gzip"):
                raise HttpError(415, f"unsupported content encoding {encoding!r}; use gzip or none")
            if length > max_bytes:
                raise HttpError(413, f"body exceeds {max_bytes} bytes")
        except HttpError:
            self._discard_body()
            raise
        data = self.rfile.read(length) if length else b""
        self._body_read = True
        if len(data) < length:
            raise HttpError(400, "body shorter than Content-Length")
        if encoding == "gzip":
            data = gunzip_capped(data, max_decompressed)
        return data, media_type

    def _discard_body(self) -> None:
        """Read and drop a refused body (bounded) so the client can read our answer.

        Closing with the body unread would make most clients see a reset
        instead of the 413/415 that explains what went wrong; keeping the
        connection with it unread would parse the body as the next request.
        """
        if self._body_read:
            return
        self._body_read = True
        try:
            length = max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            length = 0
        remaining = min(length, _MAX_DISCARD_BYTES)
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        if remaining or length > _MAX_DISCARD_BYTES:
            self.close_connection = True

    def send_bytes(
        self, status: int, body: bytes, content_type: str, headers: Optional[Mapping[str, str]] = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any, headers: Optional[Mapping[str, str]] = None) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_bytes(status, body, "application/json", headers)

    def send_error_json(self, error: HttpError) -> None:
        self._discard_body()
        self.send_json(error.status, {"ok": False, "error": error.message}, error.headers)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # Access lines at debug only; they never include headers, so keys stay out.
        logger.debug("%s %s", self.address_string(), format % args)
