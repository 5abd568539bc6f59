"""One POST to ``/v1/events`` and what its answer means. No retries here: see :mod:`.worker`.

:class:`Destination` is what the sending worker needs of a target:
:class:`EventsClient` here, ``promptetheus.PromptetheusClient`` for agent runs.
"""

from __future__ import annotations

import enum
import gzip
import ipaddress
import json
import ssl
import time
from email.utils import parsedate_to_datetime
from typing import Any, Dict, Iterator, Mapping, NamedTuple, Optional, Protocol, Sequence
from urllib.parse import urlsplit

import httpx

from ..version import __version__
from .encoding import body_of

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def compression_for(endpoint: str, choice: str = "auto") -> str:
    """``gzip`` or ``none`` for requests to ``endpoint``. ``auto``: none when the endpoint is on this machine
    (a loopback address or ``localhost``: the local backend, a sidecar), where bandwidth costs nothing and
    gzip costs the sending process several µs of CPU per record with content; gzip otherwise."""
    if choice != "auto":
        return choice
    host = (urlsplit(endpoint).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return "none"
    try:
        return "none" if ipaddress.ip_address(host).is_loopback else "gzip"
    except ValueError:  # a name: it may resolve anywhere
        return "gzip"


class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 200/207/400: the backend decided about every record
    RETRY = "retry"  # transient: 429, 5xx, timeout, connection error
    TOO_LARGE = "too_large"  # 413: split and try again
    UNAUTHORIZED = "unauthorized"  # 401/403: the key is wrong; keep the records
    MISCONFIGURED = "misconfigured"  # 404, 415...: the endpoint is wrong; keep the records


class Answer(NamedTuple):
    verdict: Verdict
    status: Optional[int]
    body: Optional[Dict[str, Any]]
    retry_after_s: Optional[float]
    detail: str


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (now if now is not None else time.time()))


class Destination(Protocol):
    """Where a :class:`~.worker.SendingWorker` sends: one batch of encoded records, one :class:`Answer`.

    ``send`` never raises for what the network or the server does; a
    ``DELIVERED`` answer's body says what became of each record
    (``accepted``, ``skipped``, ``rejected`` as ``/v1/events`` does), and
    sending the same records again must never store them twice.
    """

    target: str  # who receives, for log lines: "PromptWall"
    endpoint_kind: str  # what the endpoint should be, for "... is not a {endpoint_kind} endpoint"
    endpoint: str
    has_key: bool

    def send(self, lines: Sequence[bytes]) -> Answer: ...

    def answers(self) -> Answer: ...

    def after_fork(self) -> None: ...

    def close(self) -> None: ...


class EventsClient:
    """A pooled HTTP client bound to one endpoint and key. The key lives only in the headers."""

    target = "PromptWall"
    endpoint_kind = "PromptWall events"

    def __init__(
        self,
        endpoint: str,
        api_key: Optional[str],
        headers: Optional[Mapping[str, str]] = None,
        timeout_s: float = 10.0,
        compression: str = "gzip",
        certificate_file: Optional[str] = None,
    ) -> None:
        self.endpoint = endpoint
        self.compression = compression
        self.has_key = bool(api_key)
        base_headers = {"Content-Type": "application/json", "User-Agent": f"promptwall-otel/{__version__}"}
        base_headers.update(headers or {})
        if api_key:
            base_headers["X-API-Key"] = api_key
        if compression == "gzip":
            base_headers["Content-Encoding"] = "gzip"
        verify: Any = ssl.create_default_context(cafile=certificate_file) if certificate_file else True

        def make() -> httpx.Client:
            # trust_env: HTTPS_PROXY / NO_PROXY and friends are honoured, as users expect.
            return httpx.Client(headers=base_headers, timeout=timeout_s, verify=verify, trust_env=True)

        self._make = make
        self._client = make()

    def after_fork(self) -> None:
        """New pool in a forked child; the parent's sockets stay the parent's (not closed here)."""
        self._client = self._make()

    def __repr__(self) -> str:
        return f"EventsClient(endpoint={self.endpoint!r}, api_key={'<set>' if self.has_key else '<missing>'})"

    def close(self) -> None:
        self._client.close()

    def answers(self) -> Answer:
        """Whether the backend is up and takes the key, without storing anything.

        An empty batch is refused by the backend with 400 (so DELIVERED here
        means: it answered, it is up), 401 if the key is wrong; a 5xx or no
        answer means it is down. Used to tell a bad batch from a bad backend.
        """
        return self.post(b'{"events":[]}')

    def send(self, lines: Sequence[bytes]) -> Answer:
        return self.post(body_of(lines))

    def post(self, payload: bytes) -> Answer:
        body = gzip_body(payload) if self.compression == "gzip" else payload
        return exchange(self._client, "POST", self.endpoint, body, _EVENTS_DECIDED)


try:  # ISA-L's deflate (the server extra installs it): ~0.3 µs of CPU per record with content instead of ~5
    from isal import igzip as _isal_gzip

    def gzip_body(payload: bytes) -> bytes:
        """``payload`` as a gzip member: ISA-L's fastest level, about the size zlib's level 1 gives."""
        return _isal_gzip.compress(payload, 0)

except ImportError:  # the exporter-only install

    def gzip_body(payload: bytes) -> bytes:
        """``payload`` as a gzip member: level 1, most of the size gain for a fraction of the default's CPU."""
        return gzip.compress(payload, compresslevel=1)


_EVENTS_DECIDED = frozenset({200, 207, 400})  # /v1/events decided about every record


class _SentOnce:
    """A request body that httpx sends once and then no longer holds.

    httpx keeps each request reachable from its response, and the response
    sits in a reference cycle (``response.stream`` refers back to it), so a
    body given as ``bytes`` lives until the garbage collector's next pass over
    that generation, not until the exchange returns. A sending thread that
    replays a spool back to back allocates few objects and triggers few
    passes: 7 bodies of 2 MB (15 MB) were found alive at once after an
    outage. Given as this iterable (with its ``Content-Length``, so nothing is
    chunked), the body is handed to the connection and dropped.
    """

    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        body, self._body = self._body, b""
        yield body


def exchange(client: httpx.Client, method: str, url: str, content: Optional[bytes], decided: frozenset,
             label: str = "") -> Answer:  # fmt: skip
    """One request, and what its answer means; ``decided`` are the statuses that settle the records sent.

    Never raises for what the network or the server does. ``label`` says which
    request in a detail line (never the key: it lives in the client's headers).
    """
    try:
        if content is None:
            response = client.request(method, url)
        else:
            response = client.request(method, url, content=_SentOnce(content),
                                      headers={"Content-Length": str(len(content))})  # fmt: skip
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        return Answer(Verdict.MISCONFIGURED, None, None, None, f"not a usable URL ({exc}): {url!r}")
    except httpx.TimeoutException as exc:
        return Answer(Verdict.RETRY, None, None, None, f"timeout ({type(exc).__name__})")
    except httpx.HTTPError as exc:
        return Answer(Verdict.RETRY, None, None, None, f"connection error ({type(exc).__name__}) at {url}")
    except RuntimeError:  # the pool was closed under an in-flight request (shutdown)
        return Answer(Verdict.RETRY, None, None, None, "client closed")
    status = response.status_code
    try:
        parsed = response.json()
        data = parsed if isinstance(parsed, dict) else None
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        data = None
    detail = f"HTTP {status}{label}"
    if status in decided:
        return Answer(Verdict.DELIVERED, status, data, None, detail)
    if status in RETRYABLE_STATUSES:
        return Answer(Verdict.RETRY, status, data, parse_retry_after(response.headers.get("Retry-After")), detail)
    if status == 413:
        return Answer(Verdict.TOO_LARGE, status, data, None, detail)
    if status in (401, 403):
        return Answer(Verdict.UNAUTHORIZED, status, data, None, detail)
    return Answer(Verdict.MISCONFIGURED, status, data, None, detail)
