"""A fault-injecting HTTP proxy in front of a real backend, for exporter tests.

Retries, backoff and the spool are only proven by failures a real network
produces: statuses, resets, answers that come too late. This proxy produces
them on cue, per ``POST /v1/events``, and otherwise forwards to a real
:class:`~promptwall_otel.backend.LocalBackend`, so what the backend stores is
the ground truth a test checks.

    with LocalBackend(api_keys=["k"]) as backend, FaultServer(backend.url) as proxy:
        proxy.script(status(503), status(429, retry_after="1"), slow(2.0))
        ...point the exporter at proxy.url...
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import sys
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, ClassVar, Deque, Dict, Iterable, List, NamedTuple, Optional, Tuple, Union
from urllib.parse import urlsplit

import httpx

EVENTS_PATH = "/v1/events"
STOP_TIMEOUT = 1.5  # stop() gives in-flight handlers this long, then leaves them (they are daemons)

Outcome = Union[int, str]
"""What the client got: an HTTP status, ``"reset"``, or ``"timeout"`` (held, then dropped unanswered)."""

# Connection-level headers belong to one hop; Content-Length is recomputed for the body we send.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "expect", "host", "content-length",
})  # fmt: skip
# httpx hands us the decoded body, and our own server writes Server and Date.
_NOT_RELAYED = _HOP_BY_HOP | {"content-encoding", "server", "date"}


class RequestRecord(NamedTuple):
    """One ``POST /v1/events`` as the proxy saw it; ``events`` is None if the body was unread or not events."""

    at: float
    fault: str
    events: Optional[int]
    outcome: Outcome


class _Answer(NamedTuple):
    status: int
    headers: List[Tuple[str, str]]
    body: bytes


# --- faults -------------------------------------------------------------------


class Fault:
    """What the proxy does with one ``POST /v1/events``; build them with the functions below."""

    name: ClassVar[str]

    def apply(self, exchange: "_Handler") -> None:
        """Answer (or not) through ``exchange``; its ``relay``/``reset``/``drop`` log the outcome."""
        raise NotImplementedError


@dataclass(frozen=True)
class _Forward(Fault):
    name: ClassVar[str] = "forward"

    def apply(self, exchange: "_Handler") -> None:
        exchange.read_body()
        exchange.relay(exchange.call_upstream(exchange.body))


@dataclass(frozen=True)
class _Status(Fault):
    code: int
    retry_after: Optional[str]
    body: Optional[Dict[str, Any]]
    name: ClassVar[str] = "status"

    def apply(self, exchange: "_Handler") -> None:
        exchange.read_body()  # so the client is not cut off mid-send and keep-alive stays in sync
        payload = self.body if self.body is not None else {"ok": False, "error": f"injected {self.code}"}
        headers = [("Content-Type", "application/json")]
        if self.retry_after is not None:
            headers.append(("Retry-After", self.retry_after))
        exchange.relay(_Answer(self.code, headers, json.dumps(payload).encode("utf-8")))


@dataclass(frozen=True)
class _Slow(Fault):
    seconds: float
    then_forward: bool
    name: ClassVar[str] = "slow"

    def apply(self, exchange: "_Handler") -> None:
        exchange.read_body()
        # Forward first: the backend has committed by the time the client gives up.
        answer = exchange.call_upstream(exchange.body) if self.then_forward else None
        if not exchange.hold(self.seconds) or answer is None:
            exchange.drop()
        else:
            exchange.relay(answer)


@dataclass(frozen=True)
class _Reset(Fault):
    name: ClassVar[str] = "reset"

    def apply(self, exchange: "_Handler") -> None:
        exchange.read_body()
        exchange.reset()


@dataclass(frozen=True)
class _ResetBeforeRead(Fault):
    name: ClassVar[str] = "reset_before_read"

    def apply(self, exchange: "_Handler") -> None:
        exchange.reset()


@dataclass(frozen=True)
class _PartialReject(Fault):
    indices: Tuple[int, ...]
    name: ClassVar[str] = "partial_reject"

    def apply(self, exchange: "_Handler") -> None:
        exchange.read_body()
        events = _events_of(exchange.payload)
        body = exchange.body
        if events is not None:
            corrupted = []
            for index in self.indices:
                if 0 <= index < len(events) and isinstance(events[index], dict):
                    corrupted.append(events[index].get("request_id"))
                    events[index]["request_id"] = ""  # the backend rejects an empty id
            exchange.owner._note_corrupted(corrupted)
            body = json.dumps(exchange.payload).encode("utf-8")
            if exchange.gzipped:
                body = gzip.compress(body)
        exchange.relay(exchange.call_upstream(body))


_FORWARD = _Forward()


def forward() -> Fault:
    """Pass the request through: a placeholder in a script between faults."""
    return _FORWARD


def status(code: int, retry_after: Optional[str] = None, body: Optional[Dict[str, Any]] = None) -> Fault:
    """Answer ``code`` without forwarding; ``retry_after`` is sent verbatim (seconds or an HTTP date)."""
    return _Status(code, retry_after, body)


def slow(seconds: float, then_forward: bool = True) -> Fault:
    """Hold the answer ``seconds``: forward at once but relay late, or (``then_forward=False``) drop it."""
    return _Slow(seconds, then_forward)


def reset() -> Fault:
    """Read the request, then reset the connection (RST) without a response."""
    return _Reset()


def reset_before_read() -> Fault:
    """Reset the connection (RST) as soon as the request line and headers are in."""
    return _ResetBeforeRead()


def partial_reject(indices: Iterable[int]) -> Fault:
    """Blank the ``request_id`` of the events at ``indices`` so the real backend answers 207 (or 400)."""
    return _PartialReject(tuple(indices))


@dataclass(frozen=True)
class _Poison(Fault):
    marker: bytes
    name: ClassVar[str] = "poison"

    def apply(self, exchange: "_Handler") -> None:
        exchange.read_body()
        raw = gzip.decompress(exchange.body) if exchange.gzipped else exchange.body
        if self.marker in raw:
            exchange.reset()  # as a backend that dies on this record would: no answer at all
        else:
            exchange.relay(exchange.call_upstream(exchange.body))


def poison(marker: str) -> Fault:
    """Reset every request whose body contains ``marker``; forward the others (use with ``always``)."""
    return _Poison(marker.encode("utf-8"))


def _events_of(payload: Any) -> Optional[List[Any]]:
    """The events of a ``/v1/events`` body (a lone event counts as one), or None if it is not one."""
    if isinstance(payload, dict) and "events" in payload:
        events = payload["events"]
        return events if isinstance(events, list) else None
    return [payload] if isinstance(payload, dict) else None


# --- the proxy ----------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """One client connection; faults are built from its read_body/call_upstream/relay/hold/drop/reset."""

    protocol_version = "HTTP/1.1"
    server: "_ProxyServer"

    body: bytes = b""
    payload: Any = None
    gzipped: bool = False
    pending: Optional[Tuple[float, str]] = None  # (arrival, fault name) of a POST /v1/events not yet logged

    @property
    def owner(self) -> "FaultServer":
        return self.server.owner

    def setup(self) -> None:
        super().setup()
        threading.current_thread().name = f"fault-server:{self.server.server_address[1]}"
        self.owner._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.owner._untrack(self.connection)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        if not self.owner.faulted(urlsplit(self.path).path.rstrip("/")):
            self._passthrough()
            return
        self.body, self.payload, self.gzipped = b"", None, False  # the handler outlives a request
        fault = self.owner._next_fault()
        self.pending = (time.monotonic(), fault.name)
        fault.apply(self)

    def _passthrough(self) -> None:
        self.read_body()
        self.relay(self.call_upstream(self.body))

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _passthrough  # noqa: N815

    def read_body(self) -> None:
        """Read the body by Content-Length (the backend refuses chunked ones) and parse it if JSON."""
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True  # an unread chunked body must not be parsed as a request
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.gzipped = (self.headers.get("Content-Encoding") or "").strip().lower() == "gzip"
        try:
            self.payload = json.loads(gzip.decompress(self.body) if self.gzipped else self.body)
        except (OSError, EOFError, zlib.error, ValueError):
            self.payload = None  # forwarded as is: the backend says what is wrong with it

    def call_upstream(self, body: bytes) -> _Answer:
        """Send this request, with ``body``, to the upstream; a 502 answer if it cannot be reached."""
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        try:
            response = self.owner._client.request(
                self.command, self.owner.upstream + self.path, headers=headers, content=body or None
            )
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: stop() closed the client
            error = {"ok": False, "error": f"fault server: upstream failed: {exc!r}"}
            return _Answer(502, [("Content-Type", "application/json")], json.dumps(error).encode("utf-8"))
        relayed = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _NOT_RELAYED]
        return _Answer(response.status_code, relayed, response.content)

    def relay(self, answer: _Answer) -> None:
        """Write ``answer`` to the client; a client that already left is not an error."""
        self._log(answer.status)
        try:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer.body)
        except OSError:
            self.close_connection = True

    def hold(self, seconds: float) -> bool:
        """Wait ``seconds``; False if the proxy is stopping meanwhile."""
        return not self.owner._stopping.wait(seconds)

    def drop(self) -> None:
        """End the connection with an orderly close (FIN) and no answer."""
        self._log("timeout")
        self.close_connection = True

    def reset(self) -> None:
        """Abort the connection: SO_LINGER 0 makes close() send RST instead of FIN."""
        self._log("reset")
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # it holds a reference that would otherwise delay the close
        self.connection.close()

    def _log(self, outcome: Outcome) -> None:
        """Log a POST /v1/events before the client can see its outcome, so a test never races it."""
        if self.pending is None:
            return  # a passthrough request
        (arrived, fault), self.pending = self.pending, None
        events = _events_of(self.payload)
        self.owner._record(RequestRecord(arrived, fault, None if events is None else len(events), outcome))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # test output stays readable; the request log is what tests inspect


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: "FaultServer") -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanish and stop() cuts connections: that is the point here, not an error.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FaultServer:
    """A proxy to ``upstream`` that fails ``POST /v1/events`` on cue and forwards everything else.

    ``script`` queues faults consumed one per ``POST /v1/events`` (empty: forward);
    ``always`` overrides the script, without consuming it, until cleared with None.
    ``requests`` logs every ``POST /v1/events`` in arrival order, as it is answered;
    ``corrupted_ids`` lists the original ``request_id`` of every event
    :func:`partial_reject` blanked.
    """

    def __init__(self, upstream: str, faulted: Callable[[str], bool] = lambda path: path == EVENTS_PATH) -> None:
        self.upstream = upstream.rstrip("/")
        self.faulted = faulted  # which POST paths take faults (the rest pass through): /v1/events by default
        self.url = ""
        self.requests: List[RequestRecord] = []
        self.corrupted_ids: List[Any] = []
        self._script: Deque[Fault] = deque()
        self._always: Optional[Fault] = None
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._active: Dict[socket.socket, threading.Thread] = {}
        self._client = httpx.Client(timeout=30.0, trust_env=False)
        self._httpd: Optional[_ProxyServer] = None
        self._serving: Optional[threading.Thread] = None

    def __repr__(self) -> str:
        return f"FaultServer(url={self.url!r}, upstream={self.upstream!r})"

    def start(self) -> "FaultServer":
        """Listen on a free port of 127.0.0.1; ``url`` is set from here on."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        if self._client.is_closed:
            self._client = httpx.Client(timeout=30.0, trust_env=False)
        self._httpd = _ProxyServer(self)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._serving = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"fault-server:{self._httpd.server_address[1]}",
        )
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop listening, cut every connection, wake held answers; returns within ~STOP_TIMEOUT."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            active = dict(self._active)
        for connection in active:
            _shutdown(connection)
        for thread in [*active.values(), self._serving]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._client.close()

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def script(self, *faults: Fault) -> None:
        """Append faults to the queue; each ``POST /v1/events`` consumes one."""
        with self._lock:
            self._script.extend(faults)

    def always(self, fault: Optional[Fault]) -> None:
        """Apply ``fault`` to every ``POST /v1/events`` (the script waits) until called with None."""
        with self._lock:
            self._always = fault

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Block until ``n`` requests are logged; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.requests) >= n, timeout)

    # --- used by the handler threads ---

    def _next_fault(self) -> Fault:
        with self._lock:
            if self._always is not None:
                return self._always
            return self._script.popleft() if self._script else _FORWARD

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            index = len(self.requests)  # answers can finish out of order (slow); keep arrival order
            while index and self.requests[index - 1].at > record.at:
                index -= 1
            self.requests.insert(index, record)
            self._lock.notify_all()

    def _note_corrupted(self, request_ids: List[Any]) -> None:
        with self._lock:
            self.corrupted_ids.extend(request_ids)

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._active[connection] = threading.current_thread()
            if self._stopping.is_set():  # accepted as stop() took its snapshot
                _shutdown(connection)

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._active.pop(connection, None)


def _shutdown(connection: socket.socket) -> None:
    """Wake a thread blocked reading this connection (keep-alive clients idle between requests)."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by a reset or by the client
