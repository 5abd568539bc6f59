"""Our HTTP servers' common ground: uvicorn (httptools) underneath, a thin ASGI app on top.

uvicorn parses HTTP/1.1 (chunked bodies, keep-alive, pipelining, ``Expect:
100-continue``) and answers malformed requests with 400 itself. This module
adds what it leaves to the application, so that every server of ours holds
the same invariants:

- **Every request gets an answer.** A refusal is JSON ``{"ok": false,
  "error": reason}`` with a 4xx; anything unexpected is logged and answered
  500 in the same shape. Only a client that hangs up gets nothing.
- **Time is bounded.** A connection must deliver its request headers within
  ``header_timeout_s`` of its first byte (or of connecting); a kept-alive
  connection idles at most ``idle_timeout_s``; a body must arrive within
  ``body_timeout_s`` (else 408 and the connection closes), including a body
  the client keeps sending after it was refused.
- **Memory is bounded.** Headers over ``max_header_bytes`` get 431; bodies
  over ``max_body_bytes`` 413, and over ``max_decompressed_bytes`` once
  decoded; all bodies held at once, raw and decompressed, share one
  :class:`~promptwall_otel.serving.ByteBudget` (past it a request waits up
  to ``budget_wait_s``, then gets 503 with ``Retry-After``). At most
  ``max_concurrent_requests`` are worked on at once (others wait up to
  ``queue_wait_s``, then 503); idle connections past ``max_idle_connections``
  are closed oldest first, so idle sockets can never lock a client out.
- **The event loop never blocks**: handlers' work (parsing, SQLite,
  decoding) runs on a small thread pool.

Requires the ``server`` extra (uvicorn, httptools, zstandard).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import socket
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar

import orjson

from .serving import SUPPORTED_ENCODINGS, ByteBudget, HttpError, Limits, iter_decompress

logger = logging.getLogger("promptwall_otel.server")

_T = TypeVar("_T")


class Headers(Mapping[str, str]):
    """A request's headers, case-insensitive; repeated headers joined with ``, `` as HTTP allows."""

    def __init__(self, raw: Iterable[Tuple[bytes, bytes]]) -> None:
        self._items: Dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            self._items[key] = f"{self._items[key]}, {text}" if key in self._items else text

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return self._items.get(name.lower(), default)

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:  # keys travel in headers: never show values
        return f"Headers({sorted(self._items)})"


class Request:
    """One request as the handlers see it; ``body()`` reads it within the server's limits."""

    def __init__(self, service: "HttpService", scope: Dict[str, Any], receive: Callable[[], Awaitable[Dict[str, Any]]]) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"].rstrip("/") or "/"
        self.raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        self.query_string: bytes = scope.get("query_string", b"")
        self.headers = Headers(scope["headers"])
        client = scope.get("client")
        self.client_host: Optional[str] = client[0] if client else None  # the peer's address (a proxy's, behind one)
        self._service = service
        self._receive = receive
        self.complete = False  # the whole body has been received
        self.reserved = 0  # bytes of the budget this request holds

    async def body(self, content_types: Tuple[str, ...]) -> Tuple[bytes, str]:
        """The body decoded per ``Content-Encoding``, and its media type; HttpError for what is refused."""
        limits = self._service.limits
        media_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media_type not in content_types:
            raise HttpError(415, f"unsupported content type {media_type or '(none)'!r}; use {', '.join(content_types)}")
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in SUPPORTED_ENCODINGS:
            raise HttpError(415, f"unsupported content encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")
        declared = self.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limits.max_body_bytes:
            raise HttpError(413, f"body exceeds {limits.max_body_bytes} bytes")
        raw = await self._read_raw(limits)
        if encoding == "identity":
            return raw, media_type
        # On the event loop, a piece (~1 ms) at a time: each piece is budgeted before it is kept, and
        # waiting for budget holds no worker thread that a small request could use meanwhile.
        parts: List[bytes] = []
        for piece in iter_decompress(raw, encoding, limits.max_decompressed_bytes):
            await self._service.reserve(self, len(piece))
            parts.append(piece)
            await asyncio.sleep(0)
        del raw
        if len(parts) > 1:
            await self._service.reserve(self, sum(map(len, parts)))  # the joined copy exists beside the pieces
        return b"".join(parts), media_type

    async def _read_raw(self, limits: Limits) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.body_timeout_s
        parts: List[bytes] = []
        size = 0
        while not self.complete:
            remaining = deadline - loop.time()
            try:
                message = await asyncio.wait_for(self._receive(), max(remaining, 0.0))
            except asyncio.TimeoutError:
                raise HttpError(408, f"request body not received within {limits.body_timeout_s:g} s") from None
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            self.complete = not message.get("more_body", False)
            if not chunk:
                continue
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise HttpError(413, f"body exceeds {limits.max_body_bytes} bytes")
            await self._service.reserve(self, len(chunk))
            parts.append(chunk)
        if len(parts) > 1:
            await self._service.reserve(self, size)  # the joined copy exists beside the pieces
        return b"".join(parts)


class ClientGone(Exception):
    """The client hung up before its request was read: there is nobody to answer."""


def _busy(reason: str) -> HttpError:
    return HttpError(503, reason, {"Retry-After": "1"})


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes, content_type: str = "application/json",
                 headers: Optional[Mapping[str, str]] = None) -> None:  # fmt: skip
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def json_response(status: int, payload: Any, headers: Optional[Mapping[str, str]] = None) -> Response:
    return Response(status, orjson.dumps(payload), "application/json", headers)


def error_response(error: HttpError) -> Response:
    return json_response(error.status, {"ok": False, "error": error.message}, error.headers)


class HttpService:
    """Base ASGI application: limits, budget, worker threads, errors to JSON. Subclasses implement ``handle``."""

    def __init__(self, limits: Optional[Limits] = None) -> None:
        self.limits = limits or Limits()
        self.budget = ByteBudget(self.limits.budget_bytes)
        self._executor = ThreadPoolExecutor(self.limits.workers, thread_name_prefix=type(self).__name__)
        self._slots: Optional[asyncio.Semaphore] = None

    async def handle(self, request: Request) -> Response:
        raise NotImplementedError

    async def run(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` on a worker thread, so the event loop keeps serving others meanwhile.

        This is where the concurrency cap applies: a request holds a slot only
        while its work runs, not while its client is still sending (slow
        senders are bounded by the body timeout and the byte budget instead).
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_concurrent_requests)
        if self._slots.locked():  # all taken: wait a little (wait_for costs a task, so only then)
            try:
                await asyncio.wait_for(self._slots.acquire(), self.limits.queue_wait_s)
            except asyncio.TimeoutError:
                raise _busy(f"more than {self.limits.max_concurrent_requests} requests at once") from None
        else:
            await self._slots.acquire()  # returns at once: a slot is free
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        finally:
            self._slots.release()

    async def reserve(self, request: Request, n: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.budget_wait_s
        while not self.budget.try_reserve(n):
            if n > self.budget.capacity or loop.time() >= deadline:
                raise _busy("request bodies in flight (raw and decompressed) are at their memory budget")
            await asyncio.sleep(0.01)
        request.reserved += n

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        request = Request(self, scope, receive)
        try:
            try:
                response = await self.handle(request)
            except HttpError as error:
                response = error_response(error)
            except ClientGone:
                return
            except Exception:
                logger.exception("%s %s failed", request.method, request.path)
                response = json_response(500, {"ok": False, "error": "internal error; see the server log"})
        finally:
            self.budget.release(request.reserved)
            request.reserved = 0
        headers = [(b"content-type", response.content_type.encode()),
                   (b"content-length", str(len(response.body)).encode())]  # fmt: skip
        for name, value in (response.headers or {}).items():
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        if not request.complete and response.status in (408, 503):
            # The body is slow or we will not wait for it: end the connection rather than drain it.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body if request.method != "HEAD" else b""})


def tune_interpreter_for_serving(receiver: bool = True) -> None:
    """Interpreter settings for a process that is only our server (``receive``, ``dev``, and ``serve`` with
    ``receiver=False``); never called in an application's process (the exporter changes nothing there).

    - ``gc.freeze()`` after start-up: the ~100k objects of the imported libraries are never traversed
      again by a collection.
    - A first-generation threshold of 10,000 instead of 700: a request's views and a step's records are
      thousands of young containers, collected fourteen times less often (-7% of the receiver's CPU per
      span beside rotel, benchmarks/README.md); the backend's batch of 500 parsed events is freed by
      reference counting before 10,000 are alive, so ingest collects nothing (-1 µs per event).
      Garbage cycles, such as an httpx exchange holding its body, live that much longer: measured, the
      receiver's peak RSS at twice its capacity stayed at 186 MiB (receiver_overload.py) and at
      saturation rose by ~5 MiB (receiver_throughput.py).
    - The receiver's: a GIL switch interval of 1 ms instead of 5: the event loop and the senders, which
      wait on sockets, get the interpreter back sooner while requests are being mapped (latency, not
      CPU). The backend alone keeps 5 ms: its threads want throughput.
    """
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    if receiver:
        sys.setswitchinterval(0.001)


# --- the connection layer -------------------------------------------------------


def _guarded_protocol(limits: Limits, max_idle: int) -> type:
    """uvicorn's httptools protocol plus header/idle deadlines, a header size cap and idle eviction."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    idle: "OrderedDict[Any, None]" = OrderedDict()  # connections waiting for a request, oldest first

    class GuardedProtocol(HttpToolsProtocol):  # type: ignore[misc]
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_bytes = 0
            self._awaiting = True  # between requests: no headers of a new request complete yet
            self._deadline: Optional[asyncio.TimerHandle] = None
            self._arm(limits.header_timeout_s)
            idle[self] = None
            while len(idle) > max_idle:
                oldest, _ = idle.popitem(last=False)
                oldest._close()

        def _arm(self, delay: float) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(delay, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _close(self) -> None:
            self._disarm()
            idle.pop(self, None)
            if not self.transport.is_closing():
                self.transport.close()

        def _refuse(self, status: int, reason: str) -> None:
            body = orjson.dumps({"ok": False, "error": reason})
            phrase = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, phrase, len(body), body))  # fmt: skip
            self._close()

        def _expire(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._awaiting and self._header_bytes:
                self._refuse(408, f"request headers not received within {limits.header_timeout_s:g} s")
            else:
                # Nothing was asked (an idle socket), or a refused body still trickling in.
                self._close()

        def data_received(self, data: bytes) -> None:
            if self._awaiting:
                room = max(0, limits.max_header_bytes - self._header_bytes)
                self._header_bytes += len(data)
                if self._header_bytes > limits.max_header_bytes and b"\r\n\r\n" not in data[:room + 4]:
                    # The headers do not end within the cap (the parser would keep them all): refuse now.
                    self._refuse(431, f"request headers exceed {limits.max_header_bytes} bytes")
                    return
                if self._deadline is None:
                    self._arm(limits.header_timeout_s)
            super().data_received(data)

        def on_headers_complete(self) -> None:
            self._awaiting = False
            self._header_bytes = 0
            self._disarm()
            idle.pop(self, None)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            cycle = self.cycle
            if cycle is not None and cycle.response_complete and not self.transport.is_closing():
                # A refused body finished arriving after our answer: the connection is idle again.
                self._idle_again()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.cycle is not None and self.cycle.more_body:
                # We answered before the body ended (e.g. 413): it may drain, but only for so long.
                self._arm(limits.body_timeout_s)
            else:
                self._idle_again()

        def _idle_again(self) -> None:
            self._awaiting = True
            self._header_bytes = 0
            self._disarm()  # uvicorn's keep-alive timer covers silence; data re-arms the header clock
            idle[self] = None
            idle.move_to_end(self)
            while len(idle) > max_idle:
                oldest, _ = idle.popitem(last=False)
                oldest._close()

        def connection_lost(self, exc: Optional[Exception]) -> None:
            self._disarm()
            idle.pop(self, None)
            super().connection_lost(exc)

    return GuardedProtocol


def _raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one (idle sockets must not starve accept()); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


_ACCEPT_BATCH = 128


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets that say they are TCP, and with
    # Nagle on, a reply written as headers then body waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(_ACCEPT_BATCH)
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """One :class:`HttpService` served by uvicorn on its own event loop thread. ``port=0`` picks a free port."""

    def __init__(self, service: HttpService, host: str = "127.0.0.1", port: int = 0, name: str = "http") -> None:
        import uvicorn

        self.service = service
        self._socket = _listen(host, port)
        self.host, self.port = self._socket.getsockname()[:2]
        fd_limit = _raise_fd_limit()
        # asyncio accepts up to `backlog` connections in one go before any of them can be evicted, so
        # idle connections stay that far below the descriptor limit, with as much again for the
        # process's own files, upstream sockets and requests in flight: accept() never hits EMFILE
        # (on which asyncio stops accepting for a whole second).
        max_idle = max(16, min(service.limits.max_idle_connections, (fd_limit - 2 * _ACCEPT_BATCH) // 2))
        config = uvicorn.Config(
            service,
            http=_guarded_protocol(service.limits, max_idle),
            loop="asyncio",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_keep_alive=max(1, int(service.limits.idle_timeout_s)),
            timeout_graceful_shutdown=5,
            backlog=_ACCEPT_BATCH,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True,
                                         name=f"promptwall-{name}")  # fmt: skip

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("HTTP server did not start")
        return self

    def stop(self, timeout_s: float = 7.0) -> None:
        """Stop accepting, let requests in flight finish (5 s at most), then return."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._socket.close()
        self.service.close()

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C or :meth:`stop` from another thread)."""
        while self._thread.is_alive():
            self._thread.join(0.2)
